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
    for f in ["spark/webhook-joined.json"] {
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

/// A signed webhook of `body` under secret `s`.
async fn signed(app: &TestApp, body: Vec<u8>) -> reqwest::Response {
    let sig = pushrelay::dialect::spark::sign(b"s", &body);
    webhook(app, body, Some(sig)).await
}

async fn until_requests(m: &Mocks, n: usize) -> Vec<pushrelay_mock::apns::RecordedRequest> {
    for _ in 0..100 {
        let reqs = m.apns.requests();
        if reqs.len() >= n {
            return reqs;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the mock APNs did not get {n} requests");
}

#[tokio::test]
async fn a_message_from_someone_else_alerts_the_webhook_owner_on_the_message_token() {
    let (app, m) = spawn_app_with_mocks().await;
    assert_eq!(app.put_apns(APP, &m.apns_body()).await.status(), 200);
    assert_eq!(register_fixture(&app, "spark/register.json").await.status(), 200);
    assert_eq!(app.put_json(&format!("/v1/apps/{APP}/webex"), &json!({"webhookSecret": "s"})).await.status(), 200);

    // seeds/000: createdBy (the webhook's owner, PERSON) ≠ actorId (the sender).
    let r = signed(&app, fresh("spark/webhook-message.json")).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["notified"], 1, "{v}");
    let reqs = until_requests(&m, 1).await;
    assert_eq!(reqs[0].path, format!("/3/device/{MSG}"), "the message token, never the VoIP token");
    assert_eq!(reqs[0].header("apns-push-type"), Some("alert"));
    assert_eq!(reqs[0].header("apns-topic"), Some("com.example.KitchenSink"), "the bundle-id topic, not .voip");
    let p: Value = serde_json::from_slice(&reqs[0].body).unwrap();
    assert_eq!(p["aps"]["alert"]["title"], "New Message");
    assert_eq!(p["aps"]["alert"]["body"], "bob@example.com");

    // The owner's own message sends nothing; a replay sends nothing.
    let own = String::from_utf8(fresh("spark/webhook-message.json"))
        .unwrap()
        .replace(r#""actorId":"Y2lzY29zcGFyazovL3VzL1BFT1BMRS9jYWxsZXI""#, &format!(r#""actorId":"{PERSON}""#));
    let v: Value = signed(&app, own.into_bytes()).await.json().await.unwrap();
    assert_eq!(v["ignored"], true, "{v}");
    let body = fresh("spark/webhook-message.json");
    let v: Value = signed(&app, body).await.json().await.unwrap();
    assert_eq!(v["duplicate"], true, "{v}");

    // A messages event without createdBy: 400, nothing sent.
    let bad = String::from_utf8(fresh("spark/webhook-message.json"))
        .unwrap()
        .replace(&format!(r#""createdBy":"{PERSON}","#), "")
        .replace("MESSAGE/92", "MESSAGE/93");
    let r = signed(&app, bad.into_bytes()).await;
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert!(e["message"].as_str().unwrap().contains("createdBy"), "{e}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(m.apns.requests().len(), 1, "only the first message alerted");
}

#[tokio::test]
async fn registrations_are_looked_up_by_email_with_the_read_scope_and_token_suffixes_only() {
    let (app, m) = spawn_app_with_mocks().await;
    assert_eq!(app.put_apns(APP, &m.apns_body()).await.status(), 200);
    assert_eq!(register_fixture(&app, "spark/register.json").await.status(), 200);

    let (_, read) = new_key(&app, &["read"], None).await;
    let r = with_key(&app, &read, reqwest::Method::GET, "/register?email=Alice@Example.com").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(!text.contains(VOIP) && !text.contains(MSG), "never a whole token: {text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v[0]["personId"], PERSON);
    assert_eq!(v[0]["application"], APP);
    assert_eq!(v[0]["channel"], "APNS");
    assert_eq!(v[0]["token_suffix"], &VOIP[VOIP.len() - 8..]);

    let v: Value = with_key(&app, &read, reqwest::Method::GET, "/register?email=nobody@example.com").send().await.unwrap().json().await.unwrap();
    assert_eq!(v, json!([]));
    // Bad input: no address, a malformed one, a key without `read`.
    let r = with_key(&app, &read, reqwest::Method::GET, "/register").send().await.unwrap();
    assert_eq!(r.status(), 400);
    let r = with_key(&app, &read, reqwest::Method::GET, "/register?email=not-an-address").send().await.unwrap();
    assert_eq!(r.status(), 400);
    let (_, register) = new_key(&app, &["register"], None).await;
    let r = with_key(&app, &register, reqwest::Method::GET, "/register?email=alice@example.com").send().await.unwrap();
    assert_eq!(r.status(), 403);
    // A key bound to another app sees nothing of this one.
    let (_, other) = new_key(&app, &["read"], Some("com.example.other")).await;
    let r = with_key(&app, &other, reqwest::Method::GET, "/register?email=alice@example.com").send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap(), json!([]));
}
