//! Spark/Webex (seeds/000): register, webhook with X-Spark-Signature, cancel.
use crate::helpers::*;
use serde_json::{json, Value};
use std::time::Duration;

const PERSON: &str = "Y2lzY29zcGFyazovL3VzL1BFT1BMRS9jYWxsZWU";
const VOIP: &str = "5c0a2f1e9b7d4c3a8e6f1d2b3c4a5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d";
const MSG: &str = "b4cce23749d42e1b53cfbd1d8521b1f9e16bd6e4961cdada7c8a3a5f5022faeb";

async fn register_fixture(app: &TestApp, file: &str) -> reqwest::Response {
    app.admin(reqwest::Method::POST, &format!("/register?app={APP}"))
        .header("content-type", "application/json")
        .body(fixture(file))
        .send()
        .await
        .unwrap()
}

/// A webhook fixture as Webex would send it now (its `created` times are
/// set to the current time: older events are ignored as stale).
pub fn fresh(file: &str) -> Vec<u8> {
    let now = time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap();
    let created = regex::Regex::new(r#""created":"[^"]*""#).unwrap();
    created.replace_all(&String::from_utf8(fixture(file)).unwrap(), format!(r#""created":"{now}""#).as_str()).into_owned().into_bytes()
}

pub async fn webhook(app: &TestApp, body: Vec<u8>, sig: Option<String>) -> reqwest::Response {
    let mut req = app.client.post(app.url(&format!("/webhook?app={APP}"))).header("content-type", "application/json").body(body);
    if let Some(s) = sig {
        req = req.header("X-Spark-Signature", s);
    }
    req.send().await.unwrap()
}

/// Wait for a report written by a background dispatch.
async fn report(app: &TestApp, call_id: &str) -> Value {
    for _ in 0..100 {
        let r = app.admin(reqwest::Method::GET, &format!("/v1/calls/{call_id}")).send().await.unwrap();
        if r.status() == 200 {
            return r.json().await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no report for {call_id}");
}

#[tokio::test]
async fn the_seed_registration_then_a_signed_webhook_wakes_the_iphone() {
    let (app, m) = spawn_app_with_mocks().await;
    assert_eq!(app.put_apns(APP, &m.apns_body()).await.status(), 200);
    let r = register_fixture(&app, "spark/register.json").await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let list = app.devices(PERSON).await;
    assert_eq!(list[0]["dialect"], "spark");
    assert_eq!(list[0]["channel"], "APNS");

    let secret = "whsec-0123456789";
    let r = app.put_json(&format!("/v1/apps/{APP}/webex"), &json!({"webhookSecret": secret})).await;
    assert_eq!(r.status(), 200);
    assert!(!r.text().await.unwrap().contains(secret));

    let body = fresh("spark/webhook-call.json");
    let sig = pushrelay::dialect::spark::sign(secret.as_bytes(), &body);
    let r = webhook(&app, body, Some(sig.to_uppercase())).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let rep = report(&app, v["call_id"].as_str().unwrap()).await;
    assert_eq!(rep["deliveries"][0]["outcome"], "delivered", "{rep}");

    let reqs = m.apns.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].path, format!("/3/device/{VOIP}"));
    assert_eq!(reqs[0].header("apns-push-type"), Some("voip"));
    assert_eq!(reqs[0].header("apns-topic"), Some("com.example.KitchenSink.voip"));
    let p: Value = serde_json::from_slice(&reqs[0].body).unwrap();
    assert_eq!(p["aps"], json!({}));
    assert_eq!(p["webex"]["callId"], "Y2lzY29zcGFyazovL3VzL0NBTEwvMQ");
    assert_eq!(p["webex"]["personId"], PERSON);
    assert_eq!(p["webex"]["actorId"], "Y2lzY29zcGFyazovL3VzL1BFT1BMRS9jYWxsZXI");
    assert_eq!(p["webex"]["event"], "incoming_call");

    // Cancel: an alert to the message token, never VoIP.
    let r = app.admin(reqwest::Method::POST, &format!("/v1/calls/{}/cancel", v["call_id"].as_str().unwrap())).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let c: Value = r.json().await.unwrap();
    assert_eq!(c["deliveries"][0]["outcome"], "delivered", "{c}");
    let reqs = m.apns.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[1].path, format!("/3/device/{MSG}"));
    assert_eq!(reqs[1].header("apns-push-type"), Some("alert"));
    assert_eq!(reqs[1].header("apns-topic"), Some("com.example.KitchenSink"));
    assert!(reqs[1].header("apns-collapse-id").is_some());
}

#[tokio::test]
async fn a_wrong_or_missing_signature_is_401_and_nothing_is_sent() {
    let (app, m) = spawn_app_with_mocks().await;
    assert_eq!(app.put_apns(APP, &m.apns_body()).await.status(), 200);
    assert_eq!(register_fixture(&app, "spark/register.json").await.status(), 200);
    assert_eq!(app.put_json(&format!("/v1/apps/{APP}/webex"), &json!({"webhookSecret": "right"})).await.status(), 200);
    let body = fresh("spark/webhook-call.json");
    let wrong = pushrelay::dialect::spark::sign(b"wrong", &body);
    assert_eq!(webhook(&app, body.clone(), Some(wrong)).await.status(), 401);
    assert_eq!(webhook(&app, body.clone(), None).await.status(), 401);
    // A signature over other bytes (one space added) fails too.
    let sig = pushrelay::dialect::spark::sign(b"right", &body);
    let mut changed = body.clone();
    changed.push(b' ');
    assert_eq!(webhook(&app, changed, Some(sig)).await.status(), 401);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(m.apns.requests().len(), 0);
}

#[tokio::test]
async fn other_webhook_events_are_ignored_with_200() {
    let (app, m) = spawn_app_with_mocks().await;
    assert_eq!(app.put_apns(APP, &m.apns_body()).await.status(), 200);
    assert_eq!(register_fixture(&app, "spark/register.json").await.status(), 200);
    assert_eq!(app.put_json(&format!("/v1/apps/{APP}/webex"), &json!({"webhookSecret": "s"})).await.status(), 200);
    for f in ["spark/webhook-message.json", "spark/webhook-joined.json"] {
        let body = fresh(f);
        let sig = pushrelay::dialect::spark::sign(b"s", &body);
        let r = webhook(&app, body, Some(sig)).await;
        assert_eq!(r.status(), 200, "{f}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["ignored"], true, "{f}");
    }
    let sig = pushrelay::dialect::spark::sign(b"s", b"{not json");
    let r = webhook(&app, b"{not json".to_vec(), Some(sig)).await;
    assert_eq!(r.status(), 400);
    assert_eq!(m.apns.requests().len(), 0);
}

#[tokio::test]
async fn bad_registrations_are_400_and_unregister_removes_the_device() {
    let (app, m) = spawn_app_with_mocks().await;
    assert_eq!(app.put_apns(APP, &m.apns_body()).await.status(), 200);
    let r = register_fixture(&app, "spark/register-bad-token.json").await;
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert!(e["message"].as_str().unwrap().to_lowercase().contains("token"), "{e}");
    let r = app.admin(reqwest::Method::POST, "/register").json(&json!({"personId": PERSON, "voipToken": VOIP})).send().await.unwrap();
    assert_eq!(r.status(), 400, "no ?app=");
    let r = app.admin(reqwest::Method::POST, "/register?app=com.unknown").body(fixture("spark/register.json")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(app.client.post(app.url(&format!("/register?app={APP}"))).body(fixture("spark/register.json")).send().await.unwrap().status(), 401);

    assert_eq!(register_fixture(&app, "spark/register-sandbox.json").await.status(), 200);
    let list = app.devices(PERSON).await;
    assert_eq!(list[0]["channel"], "APNS:dev");
    let token = "5c0a2f1e9b7d4c3a8e6f1d2b3c4a5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d";
    let del = |t: String| app.admin(reqwest::Method::DELETE, &format!("/register/{t}")).send();
    assert_eq!(del(token.to_string()).await.unwrap().status(), 204);
    assert_eq!(del(token.to_string()).await.unwrap().status(), 404);
    assert_eq!(del("not-hex".to_string()).await.unwrap().status(), 400);
    assert_eq!(app.devices(PERSON).await.as_array().unwrap().len(), 0);
}
