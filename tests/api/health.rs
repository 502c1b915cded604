use crate::helpers::*;

#[tokio::test]
async fn health_and_readiness_answer_ok_with_a_request_id() {
    let app = spawn_app().await;
    for path in ["/healthz", "/readyz"] {
        let r = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers().get("x-request-id").is_some(), "{path} has a request id");
        assert_eq!(r.text().await.unwrap(), "ok");
    }
}

#[tokio::test]
async fn metrics_count_registrations_by_dialect() {
    let app = spawn_app().await;
    app.with_app_and_user().await;
    assert_eq!(app.put_uds("alice", "pw-alice", "m1", uds_xml(APNS_TOKEN, "APNS", KEY_B64, APP)).await.status(), 200);
    let text = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let line = text.lines().find(|l| l.starts_with("pushrelay_registrations_total{dialect=\"uds\"}")).unwrap_or_else(|| panic!("{text}"));
    let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= 1.0, "{line}");
}

#[tokio::test]
async fn every_route_is_in_the_openapi_document() {
    let found: std::collections::HashSet<(String, String)> = documented_routes().into_iter().collect();
    let routes = pushrelay::http::routes();
    for (method, path) in &routes {
        assert!(found.contains(&(method.to_string(), path.to_string())), "{method} {path} missing from schemas/openapi.yaml");
    }
    // And nothing is documented that the relay does not serve.
    for (method, path) in &found {
        assert!(routes.iter().any(|(m, p)| m == method && p == path), "{method} {path} is in schemas/openapi.yaml but not in http::ROUTES");
    }
}

/// `http::ROUTES` is what the router serves: every listed (method, path)
/// reaches a handler (not the fallback's "no such route", not 405).
#[tokio::test]
async fn every_listed_route_is_served() {
    let app = spawn_app().await;
    for (method, path) in pushrelay::http::routes() {
        let concrete = path
            .replace("{app_id}", "com.example.app")
            .replace("{userId}", "alice")
            .replace("{devicePkid}", "dev1")
            .replace("{call_id}", "00000000-0000-4000-8000-000000000000")
            .replace("{tenant}", "default");
        let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let r = app.client.request(m, app.url(&concrete)).send().await.unwrap();
        assert_ne!(r.status(), 405, "{method} {path}");
        let body = r.text().await.unwrap();
        assert!(!body.contains("no such route"), "{method} {path} fell through to the fallback");
    }
    let r = app.client.get(app.url("/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("no such route"));
}
