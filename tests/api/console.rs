//! The operator console (`/console`): sign-in, what it shows, CSRF, and a
//! real headless Chromium session (tests/console/console.mjs) that saves
//! the screenshot the README shows (docs/console.png).
use crate::helpers::*;
use serde_json::{json, Value};
use std::time::Duration;

/// A client that does not follow redirects (to see the 303s).
fn browserless() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

async fn placed_call(app: &TestApp, m: &Mocks) -> Value {
    app.with_mock_credentials(m).await;
    let (key, _) = device_key();
    assert_eq!(app.put_uds("alice", "pw-alice", "iphone", uds_xml(&apns_token(), "APNS", &key, APP)).await.status(), 200);
    let rep: Value = app.post_call(&json!({"user": "alice", "pushid": "console-call-1", "displaynumber": "1001"})).await.json().await.unwrap();
    assert_eq!(rep["deliveries"][0]["outcome"], "delivered", "{rep}");
    rep
}

#[tokio::test]
async fn sign_in_sessions_csrf_and_refusals() {
    let (app, m) = spawn_app_with_mocks().await;
    placed_call(&app, &m).await;
    let c = browserless();
    // No session: to the sign-in form.
    let r = c.get(app.url("/console")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/console/login");
    let form = c.get(app.url("/console/login")).send().await.unwrap();
    assert!(form.headers()["content-security-policy"].to_str().unwrap().contains("default-src 'none'"));
    assert!(form.text().await.unwrap().contains("name=token"));

    // A bearer with scope read sees the page; a register-only key does not.
    let (_, read) = new_key(&app, &["read"], None).await;
    let page = c.get(app.url("/console")).bearer_auth(&read).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let text = page.text().await.unwrap();
    assert!(text.contains(APP) && text.contains("console-call-1"), "{text}");
    assert!(!text.contains("<script"), "no script on the page");
    let (_, register) = new_key(&app, &["register"], None).await;
    assert_eq!(c.get(app.url("/console")).bearer_auth(&register).send().await.unwrap().status(), 403);

    // Sign in with the form: a session cookie, HttpOnly and SameSite=Strict.
    let admin = app.env["PUSHRELAY_ADMIN_TOKEN"].clone();
    let r = c.post(app.url("/console/login")).form(&[("token", admin.as_str())]).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    let session = cookie.split(';').next().unwrap().to_string();
    let page = c.get(app.url("/console")).header("cookie", &session).send().await.unwrap().text().await.unwrap();
    let csrf = page.split("name=csrf value=\"").nth(1).unwrap().split('"').next().unwrap().to_string();

    // Sign-out without the CSRF token is refused and the session lives on.
    let r = c.post(app.url("/console/logout")).header("cookie", &session).form(&[("csrf", "forged")]).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(c.get(app.url("/console")).header("cookie", &session).send().await.unwrap().status(), 200);
    let r = c.post(app.url("/console/logout")).header("cookie", &session).form(&[("csrf", csrf.as_str())]).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(c.get(app.url("/console")).header("cookie", &session).send().await.unwrap().status(), 303, "the session ended");

    // Bad input: a forged cookie, a bad filter, wrong tokens until locked out.
    assert_eq!(c.get(app.url("/console")).header("cookie", "pushrelay_console=forged").send().await.unwrap().status(), 303);
    let r = c.get(app.url("/console?app=no%20such")).bearer_auth(&read).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let mut statuses = Vec::new();
    for _ in 0..12 {
        let r = c.post(app.url("/console/login")).form(&[("token", "wrong")]).send().await.unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses[0], 401);
    assert_eq!(*statuses.last().unwrap(), 429, "wrong console tokens count toward the lock-out: {statuses:?}");
}

#[tokio::test]
async fn chromium_signs_in_and_sees_health_and_the_call_it_just_placed() {
    let (app, m) = spawn_app_with_mocks().await;
    let rep = placed_call(&app, &m).await;
    // A test push proves the credentials: health shows ok.
    let r = app
        .admin(reqwest::Method::POST, &format!("/v1/apps/{APP}/test-push"))
        .json(&json!({"token": apns_token(), "channel": "APNS"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    tokio::time::sleep(Duration::from_millis(5500)).await; // provider minutes reach the store every 5 s
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("tests/console/console.mjs");
    assert!(
        root.join("tests/console/node_modules/playwright-core").exists() && std::path::Path::new("/usr/bin/chromium").exists(),
        "run tests/console/setup.sh first (tests/run.sh does): it installs chromium and playwright-core"
    );
    let shot = root.join("docs/console.png");
    let out = tokio::process::Command::new("node")
        .arg(&script)
        .args([app.base.as_str(), app.env["PUSHRELAY_ADMIN_TOKEN"].as_str(), shot.to_str().unwrap(), APP, "console-call-1"])
        .output();
    let out = tokio::time::timeout(Duration::from_secs(90), out).await.expect("chromium finished within 90 s").unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let found: Value = serde_json::from_str(stdout.trim().lines().last().unwrap()).unwrap();
    assert_eq!(found["call"], true, "{found}");
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000, "a real screenshot");
    assert!(rep["call_id"].is_string());
}
