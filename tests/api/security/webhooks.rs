//! Finding 1 and 2: anyone could ring any user's phone through `/webhook`,
//! and a signed webhook rang too much (other dialects, replays, stale events).
use super::spawn_with_env;
use crate::helpers::*;
use crate::spark::fresh;
use pushrelay::dialect::spark::sign;
use serde_json::{json, Value};
use std::time::Duration;

const PERSON: &str = "Y2lzY29zcGFyazovL3VzL1BFT1BMRS9jYWxsZWU";
const SECRET: &str = "whsec-0123456789";

/// The person of the seed webhook with a UDS device (and a password), and
/// the app's APNs credentials; no Spark registration yet.
async fn person_with_a_uds_device(app: &TestApp, m: &Mocks) -> String {
    app.with_mock_credentials(m).await;
    assert_eq!(app.put_user(PERSON, "pw").await.status(), 201);
    let (k, _) = device_key();
    let uds_token = apns_token();
    assert_eq!(app.put_uds(PERSON, "pw", "desk-phone", uds_xml(&uds_token, "APNS", &k, APP)).await.status(), 200);
    uds_token
}

async fn spark_register(app: &TestApp, app_id: &str, voip: &str) {
    let body = json!({"personId": PERSON, "voipToken": voip, "email": "callee@example.com"});
    let r = app.admin(reqwest::Method::POST, &format!("/register?app={app_id}")).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

async fn set_secret(app: &TestApp, app_id: &str) {
    assert_eq!(app.put_json(&format!("/v1/apps/{app_id}/webex"), &json!({"webhookSecret": SECRET})).await.status(), 200);
}

async fn post_hook(app: &TestApp, app_id: &str, body: Vec<u8>, sig: Option<String>) -> reqwest::Response {
    let mut req = app.client.post(app.url(&format!("/webhook?app={app_id}"))).header("content-type", "application/json").body(body);
    if let Some(s) = sig {
        req = req.header("X-Spark-Signature", s);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn an_unsigned_webhook_for_an_unknown_app_is_404_and_rings_nobody() {
    let (app, m) = spawn_with_env(&[]).await;
    person_with_a_uds_device(&app, &m).await;
    let r = post_hook(&app, "no.such.app", fresh("spark/webhook-call.json"), None).await;
    assert_eq!(r.status(), 404);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"], "not_found");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(m.apns.requests().len(), 0, "no push for an unknown app");
}

#[tokio::test]
async fn an_app_without_a_webhook_secret_refuses_every_webhook() {
    let (app, m) = spawn_with_env(&[]).await;
    person_with_a_uds_device(&app, &m).await;
    spark_register(&app, APP, &apns_token()).await;
    let r = post_hook(&app, APP, fresh("spark/webhook-call.json"), None).await;
    assert_eq!(r.status(), 401);
    let e: Value = r.json().await.unwrap();
    assert!(e["message"].as_str().unwrap().contains("/webex"), "the message says how to fix it: {e}");
    // Even a "signature" under an empty secret does not help.
    let body = fresh("spark/webhook-call.json");
    let r = post_hook(&app, APP, body.clone(), Some(sign(b"", &body))).await;
    assert_eq!(r.status(), 401);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(m.apns.requests().len(), 0);
}

#[tokio::test]
async fn a_signed_call_wakes_only_that_apps_spark_devices_once() {
    let (app, m) = spawn_with_env(&[]).await;
    let uds_token = person_with_a_uds_device(&app, &m).await;
    let voip = apns_token();
    spark_register(&app, APP, &voip).await;
    // The same person registered for a second app too.
    app.put_mock_apns(&m, "com.example.Other", "com.example.Other").await;
    let other_voip = apns_token();
    spark_register(&app, "com.example.Other", &other_voip).await;
    set_secret(&app, APP).await;

    let body = fresh("spark/webhook-call.json");
    let sig = sign(SECRET.as_bytes(), &body);
    let r = post_hook(&app, APP, body.clone(), Some(sig.clone())).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert!(v["call_id"].is_string(), "{v}");
    for _ in 0..100 {
        if !m.apns.requests().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let paths: Vec<String> = m.apns.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, vec![format!("/3/device/{voip}")], "only this app's Spark device; never {uds_token} (UDS) or {other_voip} (other app)");

    // The very same envelope again (a replay, or Webex retrying): nothing sent.
    let r = post_hook(&app, APP, body, Some(sig)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"duplicate": true}));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(m.apns.requests().len(), 1, "a replay rings nothing");
}

#[tokio::test]
async fn a_stale_event_is_ignored_and_rings_nothing() {
    let (app, m) = spawn_with_env(&[]).await;
    person_with_a_uds_device(&app, &m).await;
    spark_register(&app, APP, &apns_token()).await;
    set_secret(&app, APP).await;
    let hour_ago = (time::OffsetDateTime::now_utc() - time::Duration::hours(1)).format(&time::format_description::well_known::Rfc3339).unwrap();
    let body = String::from_utf8(fixture("spark/webhook-call.json")).unwrap().replace("2026-11-25T07:00:00.000Z", &hour_ago).into_bytes();
    let r = post_hook(&app, APP, body.clone(), Some(sign(SECRET.as_bytes(), &body))).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"ignored": "stale"}));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(m.apns.requests().len(), 0);
}

#[tokio::test]
async fn webhooks_are_rate_limited_per_app_and_bad_signatures_lock_the_sender_out() {
    let (app, m) = spawn_with_env(&[("PUSHRELAY_LIMITS_WEBHOOKS_PER_SECOND", "1"), ("PUSHRELAY_LIMITS_AUTH_FAILURES_PER_MINUTE", "3")]).await;
    person_with_a_uds_device(&app, &m).await;
    set_secret(&app, APP).await;
    let body = fresh("spark/webhook-message.json");
    let sig = sign(SECRET.as_bytes(), &body);
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(webhook_status(&app, body.clone(), Some(sig.clone())).await);
    }
    assert_eq!(statuses, vec![200, 200, 429, 429], "a burst of two seconds' worth, then 429");
    // Guessing signatures: 401 three times, then 429 without checking.
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(webhook_status(&app, body.clone(), Some("0".repeat(40))).await);
    }
    assert_eq!(statuses, vec![401, 401, 401, 401, 429]);
}

async fn webhook_status(app: &TestApp, body: Vec<u8>, sig: Option<String>) -> u16 {
    post_hook(app, APP, body, sig).await.status().as_u16()
}
