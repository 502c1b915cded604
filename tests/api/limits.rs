//! Rate limits per key (429 + Retry-After), stale devices, retention.
use crate::helpers::*;
use reqwest::Method;
use serde_json::{json, Value};

async fn limited_app() -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut env = base_env(dir.path()).await;
    env.insert("PUSHRELAY_LIMITS_CALLS_PER_SECOND".to_string(), "2".to_string());
    env.insert("PUSHRELAY_LIMITS_REGISTRATIONS_PER_SECOND".to_string(), "2".to_string());
    spawn_with(dir, env).await
}

#[tokio::test]
async fn calls_over_the_rate_get_429_with_retry_after_and_other_keys_are_unaffected() {
    let app = limited_app().await;
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for i in 0..8 {
        let r = app.post_call(&json!({"user": "nobody", "pushid": format!("p{i}")})).await;
        if r.status() == 429 {
            retry_after = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
            let e: Value = r.json().await.unwrap();
            assert_eq!(e["error"], "rate_limited");
            statuses.push(429);
        } else {
            statuses.push(r.status().as_u16());
        }
    }
    assert_eq!(statuses.iter().filter(|s| **s == 404).count(), 4, "burst of 2 s × 2/s: {statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");
    assert_eq!(retry_after.as_deref(), Some("1"));
    // Another key has its own bucket.
    let v: Value =
        app.admin(Method::POST, "/v1/api-keys").json(&json!({"name": "k", "scopes": ["calls"]})).send().await.unwrap().json().await.unwrap();
    let r = app
        .client
        .post(app.url("/v1/calls"))
        .bearer_auth(v["key"].as_str().unwrap())
        .json(&json!({"user": "nobody", "pushid": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn uds_registrations_over_the_rate_get_429_in_xml() {
    let app = limited_app().await;
    app.with_app_and_user().await;
    let mut saw = None;
    for i in 0..8 {
        let r = app.put_uds("alice", "pw-alice", &format!("d{i}"), uds_xml(&apns_token(), "APNS", KEY_B64, APP)).await;
        if r.status() == 429 {
            assert!(r.headers().contains_key("retry-after"));
            saw = Some(r.text().await.unwrap());
            break;
        }
    }
    let body = saw.expect("a 429 within 8 quick registrations");
    assert!(body.contains("<code>rate_limited</code>"), "{body}");
}

#[tokio::test]
async fn stale_devices_are_reported_not_deleted() {
    let app = spawn_app().await;
    app.with_app_and_user().await;
    assert_eq!(app.put_uds("alice", "pw-alice", "old", uds_xml(&apns_token(), "APNS", KEY_B64, APP)).await.status(), 200);
    // Nothing is stale after a day's threshold; everything is with 0 days… which is refused.
    let v: Value = app.admin(Method::GET, "/v1/devices/stale?days=1").send().await.unwrap().json().await.unwrap();
    assert_eq!(v["devices"].as_array().unwrap().len(), 0);
    assert_eq!(app.admin(Method::GET, "/v1/devices/stale?days=0").send().await.unwrap().status(), 400);
    // Age the row in the database, then it is reported (and still there).
    {
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(app.database_url()).await.unwrap();
        sqlx::query("UPDATE devices SET updated_at = updated_at - 8640000000").execute(&pool).await.unwrap();
        pool.close().await;
    }
    let v: Value = app.admin(Method::GET, "/v1/devices/stale").send().await.unwrap().json().await.unwrap();
    assert_eq!(v["days"], 90);
    assert_eq!(v["devices"][0]["device"], "old");
    assert_eq!(v["devices"][0]["user"], "alice");
    assert_eq!(app.devices("alice").await.as_array().unwrap().len(), 1);
}
