//! Huawei Push Kit (interface.md §9) end to end: the relay against the
//! strict HMS mock (OAuth client credentials + `messages:send`) over TLS.
use crate::helpers::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const TOKEN: &str = "IQAAAACy0kYkAAB6hRm0f6H_huawei-phone-token-01";

async fn huawei_phone(app: &TestApp, device: &str, token: &str) {
    let r = app.put_native("alice", device, &json!({"channel": "HMS", "application": APP, "token": token})).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
}

fn sent_message(m: &Mocks, i: usize) -> Value {
    let sends = m.hms.sends();
    serde_json::from_slice(&sends[i].body).unwrap()
}

#[tokio::test]
async fn a_call_wakes_a_huawei_phone_with_a_high_urgency_voip_data_message() {
    let (app, m) = spawn_app_with_mocks().await;
    app.with_hms_and_webpush(&m).await;
    huawei_phone(&app, "mate", TOKEN).await;
    let (key, key_bytes) = device_key();
    let r = app.put_native("alice", "mate-v2", &json!({"channel": "HMS", "application": APP, "token": "IQAAAAv2-token", "key": key})).await;
    assert_eq!(r.status(), 201);

    let report: Value =
        app.post_call(&json!({"user": "alice", "pushid": "p1", "displayname": "Bob", "ring_seconds": 20})).await.json().await.unwrap();
    for d in report["deliveries"].as_array().unwrap() {
        assert_eq!(d["outcome"], "delivered", "{d}");
        assert_eq!(d["channel"], "HMS");
    }
    assert_eq!(m.hms.sends().len(), 2);
    let mut plain = None;
    let mut jwe = None;
    for i in 0..2 {
        let body = sent_message(&m, i);
        let msg = &body["message"];
        assert_eq!(msg["android"]["urgency"], "HIGH");
        assert_eq!(msg["android"]["category"], "VOIP");
        let ttl: u64 = msg["android"]["ttl"].as_str().unwrap().trim_end_matches('s').parse().unwrap();
        assert!((15..=20).contains(&ttl), "ttl {ttl} is the ring left");
        let data: Value = serde_json::from_str(msg["data"].as_str().unwrap()).unwrap();
        match msg["token"][0].as_str().unwrap() {
            TOKEN => plain = Some(data),
            _ => jwe = Some(data),
        }
        assert!(m.hms.sends()[i].path.ends_with(&format!("/v1/{HMS_APP_ID}/messages:send")));
    }
    assert_eq!(plain.unwrap()["displayname"], "Bob");
    let jwe = jwe.unwrap()["body"].as_str().unwrap().to_string();
    let v2: Value = serde_json::from_slice(&pushrelay::jwe::decrypt(&jwe, &key_bytes).unwrap()).unwrap();
    assert_eq!(v2["displayname"], "Bob", "the V2 JWE under the device key: {v2}");

    // A second call reuses the access token.
    app.post_call(&json!({"user": "alice", "pushid": "p2"})).await;
    assert_eq!(m.hms.tokens_issued(), 1, "one OAuth grant serves both calls");
    let delivered = metric(&app, r#"pushrelay_pushes_total{provider="hms",outcome="delivered"}"#).await;
    assert!(delivered >= 4.0, "two devices, two calls (other tests of this process may add): {delivered}");
}

#[tokio::test]
async fn an_invalid_token_is_removed_and_other_devices_still_ring() {
    let (app, m) = spawn_app_with_mocks().await;
    app.with_hms_and_webpush(&m).await;
    huawei_phone(&app, "old", "IQAAAAold-token").await;
    huawei_phone(&app, "new", TOKEN).await;
    m.hms.invalidate_token("IQAAAAold-token");
    let report: Value = app.post_call(&json!({"user": "alice", "pushid": "p"})).await.json().await.unwrap();
    let by = |d: &str| report["deliveries"].as_array().unwrap().iter().find(|x| x["device"] == d).unwrap().clone();
    assert_eq!(by("old")["outcome"], "token_removed", "{report}");
    assert!(by("old")["reason"].as_str().unwrap().starts_with("80300007"), "{report}");
    assert_eq!(by("new")["outcome"], "delivered");
    let left: Vec<Value> = app.devices("alice").await.as_array().unwrap().iter().map(|d| d["device"].clone()).collect();
    assert_eq!(left, vec![json!("new")]);
}

#[tokio::test]
async fn an_expired_access_token_is_renewed_once_and_the_push_goes_through() {
    let (app, m) = spawn_app_with_mocks().await;
    app.with_hms_and_webpush(&m).await;
    huawei_phone(&app, "mate", TOKEN).await;
    let first: Value = app.post_call(&json!({"user": "alice", "pushid": "p1"})).await.json().await.unwrap();
    assert_eq!(first["deliveries"][0]["outcome"], "delivered");
    m.hms.expire_access_tokens();
    let second: Value = app.post_call(&json!({"user": "alice", "pushid": "p2"})).await.json().await.unwrap();
    assert_eq!(second["deliveries"][0]["outcome"], "delivered", "{second}");
    assert_eq!(second["deliveries"][0]["attempts"], 1, "the refresh is inside one attempt");
    assert_eq!(m.hms.tokens_issued(), 2);
    let refused = m.hms.requests().iter().filter(|r| r.reason.as_deref() == Some("80200003")).count();
    assert_eq!(refused, 1, "Huawei said 80200003 once, then the new token worked");
}

#[tokio::test]
async fn flow_control_is_retried_within_the_ring_honouring_retry_after() {
    let (app, m) = spawn_app_with_mocks().await;
    app.with_hms_and_webpush(&m).await;
    huawei_phone(&app, "mate", TOKEN).await;
    m.hms.flow_control(2, Some(1));
    let started = Instant::now();
    let report: Value = app.post_call(&json!({"user": "alice", "pushid": "p", "ring_seconds": 10})).await.json().await.unwrap();
    let d = &report["deliveries"][0];
    assert_eq!(d["outcome"], "delivered", "{d}");
    assert_eq!(d["attempts"], 3);
    assert!(started.elapsed() >= Duration::from_secs(1), "Retry-After: 1 was honoured");

    // Flow control that outlasts the ring ends in `expired`, and the device stays.
    m.hms.flow_control(1000, None);
    let report: Value = app.post_call(&json!({"user": "alice", "pushid": "q", "ring_seconds": 2})).await.json().await.unwrap();
    assert_eq!(report["deliveries"][0]["outcome"], "expired", "{report}");
    assert_eq!(report["deliveries"][0]["provider_status"], 503);
    assert_eq!(app.devices("alice").await.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_wrong_client_secret_fails_with_huaweis_reason_and_marks_the_credentials_failing() {
    let (app, m) = spawn_app_with_mocks().await;
    let r = app.put_json(&format!("/v1/apps/{APP}/hms"), &json!({"appId": HMS_APP_ID, "clientSecret": "not-the-secret"})).await;
    assert_eq!(r.status(), 200, "Huawei alone can judge a secret");
    let summary: Value = r.json().await.unwrap();
    assert_eq!(summary["hms"]["clientSecret"], "set");
    assert!(!summary.to_string().contains("not-the-secret"));
    assert_eq!(app.put_user("alice", "pw-alice").await.status(), 201);
    huawei_phone(&app, "mate", TOKEN).await;
    let report: Value = app.post_call(&json!({"user": "alice", "pushid": "p"})).await.json().await.unwrap();
    let d = &report["deliveries"][0];
    assert_eq!(d["outcome"], "failed", "{d}");
    assert_eq!(d["attempts"], 1);
    assert!(d["reason"].as_str().unwrap().contains("invalid client_secret"), "{d}");
    assert_eq!(m.hms.sends().len(), 0, "nothing sent without an access token");
    assert_eq!(app.devices("alice").await.as_array().unwrap().len(), 1, "the device is kept");
    let app_view = app_view_with_health(&app, "hms", "failing").await;
    assert_eq!(app_view["hms"]["health"]["state"], "failing", "{app_view}");
    assert!(app_view["hms"]["health"]["last_reason"].as_str().unwrap().contains("invalid client_secret"));
}

#[tokio::test]
async fn bad_hms_credentials_and_tokens_get_a_400_naming_the_field_and_store_nothing() {
    let (app, m) = spawn_app_with_mocks().await;
    app.with_hms_and_webpush(&m).await;
    for (body, field) in [
        (json!({"appId": "com.example", "clientSecret": "x"}), "appId"),
        (json!({"appId": HMS_APP_ID}), "clientSecret"),
        (json!({"appId": HMS_APP_ID, "clientSecret": "two words"}), "clientSecret"),
    ] {
        let r = app.put_json("/v1/apps/com.example.Other/hms", &body).await;
        assert_eq!(r.status(), 400, "{body}");
        let e: Value = r.json().await.unwrap();
        assert!(e["message"].as_str().unwrap().contains(field), "{e}");
    }
    let r = app.admin(reqwest::Method::GET, "/v1/apps/com.example.Other").send().await.unwrap();
    assert_eq!(r.status(), 404, "no app was created by refused bodies");
    for (body, field) in [
        (json!({"channel": "HMS", "application": APP, "token": "x".repeat(513)}), "token"),
        (json!({"channel": "HMS", "application": APP}), "token"),
        (json!({"channel": "HMS", "application": APP, "token": "tok", "format": "v3"}), "format"),
        (json!({"channel": "HUAWEI", "application": APP, "token": "tok"}), "channel"),
    ] {
        let r = app.put_native("alice", "mate", &body).await;
        assert_eq!(r.status(), 400, "{body}");
        let e: Value = r.json().await.unwrap();
        assert!(e["message"].as_str().unwrap().contains(field), "{e}");
    }
    // An app without HMS credentials refuses HMS devices.
    assert_eq!(app.put_apns("com.example.NoHms", &m.apns_body()).await.status(), 200);
    let r = app.put_native("alice", "mate", &json!({"channel": "HMS", "application": "com.example.NoHms", "token": TOKEN})).await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "no_credentials");
    assert_eq!(app.devices("alice").await, json!([]));
}

#[tokio::test]
async fn test_push_and_the_console_show_huawei() {
    let (app, m) = spawn_app_with_mocks().await;
    app.with_hms_and_webpush(&m).await;
    let r = app.test_push(&json!({"token": TOKEN, "channel": "HMS"})).await;
    assert_eq!(r["outcome"], "delivered", "{r}");
    let sent = sent_message(&m, 0);
    assert_eq!(serde_json::from_str::<Value>(sent["message"]["data"].as_str().unwrap()).unwrap()["type"], "test");
    assert!(sent["message"]["android"].get("category").is_none(), "a test push is not a VoIP call");
    m.hms.invalidate_token(TOKEN);
    let r = app.test_push(&json!({"token": TOKEN, "channel": "HMS"})).await;
    assert_eq!(r["outcome"], "token_invalid", "{r}");
    let console = app.admin(reqwest::Method::GET, "/console").send().await.unwrap().text().await.unwrap();
    assert!(console.contains(&format!("app {HMS_APP_ID}")), "the console describes the HMS credentials");
}
