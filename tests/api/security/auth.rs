//! Finding 4: password guessing was free, every guess cost an Argon2 run,
//! and unknown user names answered fast enough to enumerate users.
use super::spawn_with_env;
use crate::helpers::*;
use std::time::{Duration, Instant};

#[tokio::test]
async fn guessing_a_uds_password_is_locked_out_and_answered_without_hashing() {
    let (app, m) = spawn_with_env(&[]).await;
    app.with_mock_credentials(&m).await;
    let (k, _) = device_key();
    let doc = uds_xml(&apns_token(), "APNS", &k, APP);
    let mut statuses = Vec::new();
    let mut locked_took = Duration::MAX;
    for i in 0..40 {
        let started = Instant::now();
        let r = app.put_uds("alice", &format!("guess-{i}"), "d", doc.clone()).await;
        statuses.push(r.status().as_u16());
        if r.status() == 429 {
            locked_took = locked_took.min(started.elapsed());
            assert!(r.headers().get("retry-after").is_some());
            let body = r.text().await.unwrap();
            assert!(body.starts_with("<error><code>too_many_failures</code>"), "{body}");
        }
    }
    let first_429 = statuses.iter().position(|s| *s == 429).expect("guessing is throttled");
    assert_eq!(first_429, 11, "ten failures a minute (and the one that crossed the limit) get 401: {statuses:?}");
    assert!(statuses[first_429..].iter().all(|s| *s == 429), "{statuses:?}");
    assert!(locked_took < Duration::from_millis(50), "a locked-out attempt is not hashed ({locked_took:?})");
    // While locked, even the right password waits: the lock is on the name.
    assert_eq!(app.put_uds("alice", "pw-alice", "d", doc.clone()).await.status(), 429);
    assert_eq!(app.devices("alice").await.as_array().unwrap().len(), 0, "nothing was stored");
}

#[tokio::test]
async fn unknown_and_known_users_cost_the_same() {
    let (app, m) = spawn_with_env(&[("PUSHRELAY_LIMITS_AUTH_FAILURES_PER_MINUTE", "0")]).await;
    app.with_mock_credentials(&m).await;
    let (k, _) = device_key();
    let doc = uds_xml(&apns_token(), "APNS", &k, APP);
    let time = |user: &'static str| {
        let (app, doc) = (&app, doc.clone());
        async move {
            let mut t = Vec::new();
            for i in 0..7 {
                let started = Instant::now();
                let r = app.put_uds(user, &format!("wrong-{i}"), "d", doc.clone()).await;
                assert_eq!(r.status(), 401);
                t.push(started.elapsed());
            }
            t.sort();
            t[3]
        }
    };
    let known = time("alice").await;
    let unknown = time("nobody-here").await;
    let ratio = unknown.as_secs_f64() / known.as_secs_f64();
    eprintln!("median wrong password: known user {known:?}, unknown user {unknown:?}, ratio {ratio:.2}");
    assert!((0.5..2.0).contains(&ratio), "unknown {unknown:?} vs known {known:?}: user names can be told apart");
}

#[tokio::test]
async fn bad_bearer_tokens_are_locked_out_but_a_valid_one_never_is() {
    let (app, _m) = spawn_with_env(&[("PUSHRELAY_LIMITS_AUTH_FAILURES_PER_MINUTE", "5")]).await;
    let mut statuses = Vec::new();
    for i in 0..8 {
        let r = app.client.get(app.url("/v1/users/alice/devices")).bearer_auth(format!("guess-{i}")).send().await.unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses, vec![401, 401, 401, 401, 401, 401, 429, 429]);
    // The operator behind the same address is not locked out.
    let r = app.admin(reqwest::Method::PUT, "/v1/users/alice").json(&serde_json::json!({"password": "pw"})).send().await.unwrap();
    assert_eq!(r.status(), 201);
    // Nor is an API key.
    let r = app.admin(reqwest::Method::POST, "/v1/api-keys").json(&serde_json::json!({"name": "k", "scopes": ["read"]})).send().await.unwrap();
    let key = r.json::<serde_json::Value>().await.unwrap()["key"].as_str().unwrap().to_string();
    let r = app.client.get(app.url("/v1/users/alice/devices")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn acrobits_basic_failures_count_too() {
    let (app, _m) = spawn_with_env(&[("PUSHRELAY_LIMITS_AUTH_FAILURES_PER_MINUTE", "2")]).await;
    assert_eq!(app.put_user("johndow", "12345678").await.status(), 201);
    let query = String::from_utf8(fixture("acrobits/get-query.txt")).unwrap();
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let r = app.client.get(app.url(&format!("/acrobits/token?{}", query.trim()))).basic_auth("johndow", Some("nope")).send().await.unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses, vec![401, 401, 401, 429]);
}
