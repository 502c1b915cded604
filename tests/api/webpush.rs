//! Web Push (interface.md §9) end to end: browsers registered natively or
//! by RFC 8599 SIP REGISTER, pushed through the strict Web Push mock,
//! which checks VAPID and decrypts with the subscription's own keys.
use crate::helpers::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use pushrelay_mock::webpush::Subscription;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn browser(app: &TestApp, device: &str, sub: &Subscription) {
    let r = app.put_native("alice", device, &json!({"channel": "WEBPUSH", "application": APP, "subscription": sub.to_json()})).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
}

fn now_s() -> i64 {
    pushrelay::domain::now_ms() / 1000
}

#[tokio::test]
async fn a_call_wakes_a_browser_with_a_push_only_that_browser_can_read() {
    let (app, m) = spawn_app_with_mocks().await;
    app.with_hms_and_webpush(&m).await;
    let sub = m.subscription();
    browser(&app, "firefox", &sub).await;
    let r = app.put_native("alice", "firefox", &json!({"channel": "WEBPUSH", "application": APP, "subscription": sub.to_json()})).await;
    assert_eq!(r.status(), 200, "the same device again is a replacement");
    let shown: Value = r.json().await.unwrap();
    assert_eq!(shown["token_suffix"].as_str().unwrap().len(), 8);
    assert!(!shown.to_string().contains(&sub.endpoint), "never the whole endpoint");

    let report: Value = app
        .post_call(&json!({"user": "alice", "pushid": "p1", "displayname": "Bob", "displaynumber": "1002", "ring_seconds": 20}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(report["deliveries"][0]["outcome"], "delivered", "{report}");
    assert_eq!(report["deliveries"][0]["channel"], "WEBPUSH");
    assert_eq!(report["deliveries"][0]["provider_status"], 201);
    let msgs = m.webpush.messages();
    assert_eq!(msgs.len(), 1);
    let msg = &msgs[0];
    assert_eq!(msg.endpoint, sub.endpoint);
    let payload: Value = serde_json::from_slice(msg.plaintext.as_ref().expect("an encrypted payload")).unwrap();
    assert_eq!((payload["displayname"].as_str(), payload["displaynumber"].as_str()), (Some("Bob"), Some("1002")), "{payload}");
    assert!((15..=20).contains(&msg.ttl), "TTL {} is the ring left", msg.ttl);
    assert_eq!(msg.urgency.as_deref(), Some("high"));
    assert_eq!(msg.header("content-encoding"), Some("aes128gcm"));
    assert_eq!(msg.vapid_aud, m.webpush.origin());
    assert_eq!(msg.vapid_sub, "mailto:ops@example.com");
    assert!(msg.vapid_exp > now_s() && msg.vapid_exp <= now_s() + 24 * 3600, "exp within a day");
    assert_eq!(URL_SAFE_NO_PAD.encode(&msg.vapid_public_key), VAPID_PUBLIC);

    // The app shows the public key a page needs, never the private one.
    let view = app_view_with_health(&app, "webpush", "ok").await;
    assert_eq!(view["webpush"]["publicKey"], VAPID_PUBLIC);
    assert_eq!(view["webpush"]["health"]["state"], "ok");
    assert!(!view.to_string().contains(VAPID_PRIVATE));
    // The subscription's auth secret is sealed at rest; the device list shows a suffix only.
    assert!(!app.raw_secret_columns().await.contains(&sub.auth));
    let list = app.devices("alice").await;
    assert_eq!(list[0]["channel"], "WEBPUSH");
    assert_eq!(list[0]["dialect"], "native");
    assert!(!list.to_string().contains(&sub.endpoint));
    let delivered = metric(&app, r#"pushrelay_pushes_total{provider="webpush",outcome="delivered"}"#).await;
    assert!(delivered >= 1.0, "{delivered}");
}

#[tokio::test]
async fn an_unsubscribed_browser_is_removed_and_429_or_5xx_are_retried() {
    let (app, m) = spawn_app_with_mocks().await;
    app.with_hms_and_webpush(&m).await;
    let (gone, forgotten, flaky) = (m.subscription(), m.subscription(), m.subscription());
    browser(&app, "gone", &gone).await;
    browser(&app, "forgotten", &forgotten).await;
    browser(&app, "flaky", &flaky).await;
    m.webpush.unsubscribe(&gone.endpoint);
    m.webpush.forget(&forgotten.endpoint);
    m.webpush.script_with_retry_after(&flaky.endpoint, vec![429, 503], Some(1));
    let started = Instant::now();
    let report: Value = app.post_call(&json!({"user": "alice", "pushid": "p", "ring_seconds": 10})).await.json().await.unwrap();
    let by = |d: &str| report["deliveries"].as_array().unwrap().iter().find(|x| x["device"] == d).unwrap().clone();
    assert_eq!((by("gone")["outcome"].as_str(), by("gone")["provider_status"].as_u64()), (Some("token_removed"), Some(410)), "{report}");
    assert_eq!((by("forgotten")["outcome"].as_str(), by("forgotten")["provider_status"].as_u64()), (Some("token_removed"), Some(404)));
    assert_eq!(by("flaky")["outcome"], "delivered", "{report}");
    assert_eq!(by("flaky")["attempts"], 3);
    assert!(started.elapsed() >= Duration::from_secs(1), "Retry-After honoured");
    let left: Vec<Value> = app.devices("alice").await.as_array().unwrap().iter().map(|d| d["device"].clone()).collect();
    assert_eq!(left, vec![json!("flaky")]);
}

#[tokio::test]
async fn a_subscription_made_for_another_vapid_key_fails_with_the_services_reason() {
    let (app, m) = spawn_app_with_mocks().await;
    app.with_hms_and_webpush(&m).await;
    // Another P-256 public key (RFC 8291 appendix A's receiver).
    let other_key = URL_SAFE_NO_PAD.decode("BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4").unwrap();
    let sub = m.webpush.subscribe(Some(&other_key));
    browser(&app, "chrome", &sub).await;
    let report: Value = app.post_call(&json!({"user": "alice", "pushid": "p"})).await.json().await.unwrap();
    let d = &report["deliveries"][0];
    assert_eq!(d["outcome"], "failed", "{d}");
    assert_eq!(d["provider_status"], 403);
    assert_eq!(d["attempts"], 1);
    assert!(d["reason"].as_str().unwrap().starts_with("http_403"), "{d}");
    assert_eq!(app.devices("alice").await.as_array().unwrap().len(), 1, "kept: the key, not the browser, is wrong");
    let view = app_view_with_health(&app, "webpush", "failing").await;
    assert_eq!(view["webpush"]["health"]["state"], "failing", "{view}");
}

#[tokio::test]
async fn bad_vapid_keys_and_bad_subscriptions_get_a_400_and_store_nothing() {
    let (app, m) = spawn_app_with_mocks().await;
    for (body, field) in [
        (json!({"vapidPrivateKey": "AAAA", "subject": "mailto:ops@example.com"}), "vapidPrivateKey"),
        (json!({"vapidPrivateKey": URL_SAFE_NO_PAD.encode([0u8; 32]), "subject": "mailto:ops@example.com"}), "vapidPrivateKey"),
        (
            json!({"vapidPrivateKey": "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----", "subject": "mailto:ops@example.com"}),
            "vapidPrivateKey",
        ),
        (json!({"vapidPrivateKey": VAPID_PRIVATE, "subject": "ops@example.com"}), "subject"),
        (json!({"vapidPrivateKey": VAPID_PRIVATE}), "subject"),
    ] {
        let r = app.put_json(&format!("/v1/apps/{APP}/webpush"), &body).await;
        assert_eq!(r.status(), 400, "{body}");
        let e: Value = r.json().await.unwrap();
        assert!(e["message"].as_str().unwrap().contains(field), "{body}: {e}");
    }
    assert_eq!(app.admin(reqwest::Method::GET, &format!("/v1/apps/{APP}")).send().await.unwrap().status(), 404, "nothing stored");

    app.with_hms_and_webpush(&m).await;
    let sub = m.subscription();
    let port = sub.endpoint.split(':').nth(2).unwrap().split('/').next().unwrap().to_string();
    let with_endpoint = |endpoint: &str| json!({"channel": "WEBPUSH", "application": APP, "subscription": {"endpoint": endpoint, "keys": {"p256dh": sub.p256dh, "auth": sub.auth}}});
    for (body, words) in [
        (with_endpoint(&sub.endpoint.replace("https://", "http://")), "https"),
        (with_endpoint("https://evil.example/push/secret-path"), "evil.example"),
        // Loopback, private and link-local addresses are refused unless listed exactly (only 127.0.0.1 is).
        (with_endpoint(&format!("https://127.0.0.2:{port}/push/secret-path")), "127.0.0.2"),
        (with_endpoint(&format!("https://[::1]:{port}/push/secret-path")), "::1"),
        (with_endpoint("https://169.254.169.254/latest/secret-path"), "169.254.169.254"),
        (with_endpoint("https://user:pw@127.0.0.1/secret-path"), "user info"),
        (json!({"channel": "WEBPUSH", "application": APP, "subscription": {"endpoint": sub.endpoint}}), "keys"),
        (
            json!({"channel": "WEBPUSH", "application": APP, "subscription": {"endpoint": sub.endpoint, "keys": {"p256dh": "BAAA", "auth": sub.auth}}}),
            "p256dh",
        ),
        (
            json!({"channel": "WEBPUSH", "application": APP, "subscription": {"endpoint": sub.endpoint, "keys": {"p256dh": sub.p256dh, "auth": "AAAA"}}}),
            "auth",
        ),
        (json!({"channel": "WEBPUSH", "application": APP, "token": sub.endpoint}), "subscription"),
    ] {
        let r = app.put_native("alice", "browser", &body).await;
        assert_eq!(r.status(), 400, "{body}");
        let e: Value = r.json().await.unwrap();
        assert!(e["error"] == "invalid_subscription" || e["error"] == "invalid_field", "{e}");
        assert!(e["message"].as_str().unwrap().contains(words), "{body}: {e}");
        assert!(!e.to_string().contains("secret-path"), "the endpoint's path is never echoed: {e}");
    }
    assert_eq!(app.devices("alice").await, json!([]), "nothing stored");
    assert!(m.webpush.requests().is_empty(), "nothing was sent anywhere");
}

#[tokio::test]
async fn an_oversize_payload_fails_before_sending() {
    let (app, m) = spawn_app_with_mocks().await;
    app.with_hms_and_webpush(&m).await;
    browser(&app, "firefox", &m.subscription()).await;
    let huge = "😀".repeat(1000);
    let report: Value = app
        .post_call(&json!({"user": "alice", "pushid": "p", "displayname": huge, "displaynumber": huge, "huntpilotdn": huge}))
        .await
        .json()
        .await
        .unwrap();
    let d = &report["deliveries"][0];
    assert_eq!(d["outcome"], "failed", "{report}");
    assert!(d["reason"].as_str().unwrap().starts_with("payload_too_large"), "{d}");
    assert!(m.webpush.requests().is_empty());
}

#[tokio::test]
async fn rfc_8599_webpush_bindings_get_a_push_without_payload() {
    let (app, m) = spawn_app_with_mocks().await;
    app.with_hms_and_webpush(&m).await;
    let sub = m.subscription();
    let register = |prid: &str| {
        format!(
            "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/WSS 198.51.100.7;branch=z9hG4bK1\r\nFrom: <sip:alice@example.com>;tag=1\r\nTo: <sip:alice@example.com>\r\n\
             Call-ID: wp1@example.com\r\nCSeq: 1 REGISTER\r\nContact: <sip:alice@198.51.100.7;transport=ws;pn-provider=webpush;pn-prid={prid}>;expires=3600\r\n\
             User-Agent: JsSIP 3.10\r\nContent-Length: 0\r\n\r\n"
        )
    };
    let sip = |body: String| app.admin(reqwest::Method::POST, "/sip/register").header("content-type", "message/sip").body(body).send();
    let r = sip(register("https://evil.example/push/x")).await.unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert!(e["message"].as_str().unwrap().contains("pn-prid"), "{e}");
    let r = sip(register(&sub.endpoint)).await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let list = app.devices("alice").await;
    assert_eq!((list[0]["channel"].as_str(), list[0]["dialect"].as_str()), (Some("WEBPUSH"), Some("sip")), "{list}");

    let report: Value = app.post_call(&json!({"user": "alice", "pushid": "p"})).await.json().await.unwrap();
    assert_eq!(report["deliveries"][0]["outcome"], "delivered", "{report}");
    let msgs = m.webpush.messages();
    assert_eq!(msgs[0].plaintext, None, "RFC 8599 gives no keys: the push carries no payload");
    assert_eq!(msgs[0].urgency.as_deref(), Some("high"));
}

#[tokio::test]
async fn test_push_reaches_a_subscription_and_reports_a_dead_one() {
    let (app, m) = spawn_app_with_mocks().await;
    app.with_hms_and_webpush(&m).await;
    let sub = m.subscription();
    let test_push = |token: String| {
        let app = &app;
        async move { app.test_push(&json!({"token": token, "channel": "WEBPUSH"})).await }
    };
    let r = test_push(sub.endpoint.clone()).await;
    assert_eq!(r["outcome"], "delivered", "{r}");
    assert_eq!(m.webpush.messages()[0].urgency.as_deref(), Some("normal"), "a test is not urgent");
    m.webpush.unsubscribe(&sub.endpoint);
    let r = test_push(sub.endpoint.clone()).await;
    assert_eq!(r["outcome"], "token_invalid", "{r}");
    // The allow-list holds for test pushes too.
    let r = test_push("https://10.0.0.1/push/x".into()).await;
    assert_eq!(r["outcome"], "failed", "{r}");
    assert!(r["reason"].as_str().unwrap().starts_with("endpoint_not_allowed"), "{r}");
    let console = app.admin(reqwest::Method::GET, "/console").send().await.unwrap().text().await.unwrap();
    assert!(console.contains("VAPID BP4z9KsN6nGR"), "the console describes the VAPID credentials");
}
