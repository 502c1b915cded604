//! Findings 5, 6 and the shutdown drain: the retry hot loop, duplicate calls
//! polling the store, full device tokens in reports and logs, and pushes
//! started by webhooks dropped at SIGTERM.
use super::spawn_with_env;
use crate::helpers::*;
use pushrelay_mock::apns::ScriptedReply;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn uds_device(app: &TestApp, device: &str, token: &str) {
    let (k, _) = device_key();
    let r = app.put_uds("alice", "pw-alice", device, uds_xml(token, "APNS", &k, APP)).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn retry_after_zero_does_not_hammer_apns() {
    let (app, m) = spawn_with_env(&[]).await;
    app.with_mock_credentials(&m).await;
    let token = apns_token();
    uds_device(&app, "iphone", &token).await;
    m.apns.script_token(&token, vec![ScriptedReply::error(503, "ServiceUnavailable").with_retry_after(0); 2000]);
    let started = Instant::now();
    let report: Value = app.post_call(&json!({"user": "alice", "pushid": "p", "ring_seconds": 3})).await.json().await.unwrap();
    let d = &report["deliveries"][0];
    let sent = m.apns.requests().len();
    eprintln!("provider requests in a 3 s ring with Retry-After: 0: {sent}; answered after {:?}", started.elapsed());
    assert!(sent <= 8, "{sent} provider requests for one device and one call");
    assert_eq!(d["attempts"], sent as u64);
    assert!(matches!(d["outcome"].as_str(), Some("failed") | Some("expired")), "{d}");
    // The attempts were spread out: at least the 100 ms floor apart.
    let reqs = m.apns.requests();
    assert!(reqs.len() >= 2);
}

#[tokio::test]
async fn a_duplicate_call_reports_the_first_calls_outcome_as_soon_as_it_is_known() {
    let (app, m) = spawn_with_env(&[]).await;
    app.with_mock_credentials(&m).await;
    uds_device(&app, "iphone", &apns_token()).await;
    m.apns.set_latency(Duration::from_millis(600));
    let first =
        tokio::spawn(app.admin(reqwest::Method::POST, "/v1/calls").json(&json!({"user": "alice", "pushid": "dup", "ring_seconds": 20})).send());
    tokio::time::sleep(Duration::from_millis(150)).await;
    let started = Instant::now();
    let second: Value = app.post_call(&json!({"user": "alice", "pushid": "dup", "ring_seconds": 20})).await.json().await.unwrap();
    let waited = started.elapsed();
    let first: Value = first.await.unwrap().unwrap().json().await.unwrap();
    assert_eq!(first["deliveries"][0]["outcome"], "delivered");
    assert_eq!(second["deliveries"][0]["outcome"], "delivered");
    assert!(second["deliveries"][0]["reason"].as_str().unwrap().contains("duplicate pushid"), "{second}");
    assert_eq!(m.apns.requests().len(), 1, "pushed once");
    assert!(waited < Duration::from_millis(1200), "the duplicate waited {waited:?}, not until the ring end");
}

/// With APNs unreachable, the report, the stored report and the log name
/// the token by its last 8 characters only.
#[tokio::test]
async fn no_full_token_in_reports_or_logs() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = base_env(dir.path()).await;
    // A closed port: every attempt is a connection error whose library text names the URL.
    env.insert("PUSHRELAY_APNS_PRODUCTION_URL".into(), format!("https://127.0.0.1:{}", free_port()));
    let relay = RelayProcess::start(&env, None).expect("relay starts");
    let client = reqwest::Client::new();
    let admin = |m: reqwest::Method, p: &str| client.request(m, relay.url(p)).bearer_auth(ADMIN_TOKEN);
    assert_eq!(admin(reqwest::Method::PUT, &format!("/v1/apps/{APP}/apns")).json(&apns_token_body(&p8_pem())).send().await.unwrap().status(), 200);
    assert_eq!(admin(reqwest::Method::PUT, "/v1/users/alice").json(&json!({"password": "pw-alice"})).send().await.unwrap().status(), 201);
    let token = apns_token();
    let (k, _) = device_key();
    let r = client
        .put(relay.url("/cucm-uds/user/alice/device/iphone/devicetoken"))
        .basic_auth("alice", Some("pw-alice"))
        .body(uds_xml(&token, "APNS", &k, APP))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let report = admin(reqwest::Method::POST, "/v1/calls")
        .json(&json!({"user": "alice", "pushid": "p", "ring_seconds": 2}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let v: Value = serde_json::from_str(&report).unwrap();
    let reason = v["deliveries"][0]["reason"].as_str().unwrap_or_default().to_string();
    assert!(!reason.is_empty(), "{report}");
    let stored = admin(reqwest::Method::GET, &format!("/v1/calls/{}", v["call_id"].as_str().unwrap())).send().await.unwrap().text().await.unwrap();
    let log = relay.log();
    assert!(log.contains(&token[token.len() - 8..]), "the log names the token by its suffix");
    for (what, text) in [("answer", &report), ("stored report", &stored), ("log", &log)] {
        assert!(!text.contains(&token), "the full token is in the {what}: {text}");
        assert!(!text.contains("/3/device/"), "a provider URL is in the {what}");
    }
}

#[tokio::test]
async fn a_push_started_by_a_webhook_finishes_before_shutdown() {
    let (mut app, m) = spawn_with_env(&[]).await;
    app.with_mock_credentials(&m).await;
    let person = "Y2lzY29zcGFyazovL3VzL1BFT1BMRS9jYWxsZWU";
    let voip = apns_token();
    let r =
        app.admin(reqwest::Method::POST, &format!("/register?app={APP}")).json(&json!({"personId": person, "voipToken": voip})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(app.put_json(&format!("/v1/apps/{APP}/webex"), &json!({"webhookSecret": "s"})).await.status(), 200);
    m.apns.set_latency(Duration::from_millis(800));
    let body = crate::spark::fresh("spark/webhook-call.json");
    let sig = pushrelay::dialect::spark::sign(b"s", &body);
    let r = crate::spark::webhook(&app, body, Some(sig)).await;
    let call_id = r.json::<Value>().await.unwrap()["call_id"].as_str().unwrap().to_string();
    app.stop().await; // while the push is in flight
    assert_eq!(m.apns.requests().len(), 1);
    assert_eq!(m.apns.requests()[0].status, 200);
    let app = app.restart().await;
    let r: Value = app.admin(reqwest::Method::GET, &format!("/v1/calls/{call_id}")).send().await.unwrap().json().await.unwrap();
    assert_eq!(r["deliveries"][0]["outcome"], "delivered", "the report was written before the store closed: {r}");
}
