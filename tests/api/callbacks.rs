//! Delivery callbacks (interface.md §7): the final report of a call is
//! POSTed to the app's callback URL, signed, retried with backoff, and kept
//! in the store across a restart.
use crate::helpers::*;
use hmac::Mac;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SECRET: &str = "callback-secret-0123456789";

/// What the receiver saw: (signature header, body).
pub type Seen = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A callback receiver on `port` (0: any) answering the scripted statuses
/// in turn, then 200.
pub async fn receiver(port: u16, script: Vec<u16>) -> (String, Seen, tokio::task::JoinHandle<()>) {
    let seen: Seen = Arc::default();
    let script = Arc::new(Mutex::new(std::collections::VecDeque::from(script)));
    let (s, sc) = (seen.clone(), script.clone());
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let (s, sc) = (s.clone(), sc.clone());
            async move {
                let sig = headers.get("x-pushrelay-signature").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                s.lock().unwrap().push((sig, body.to_vec()));
                let status = sc.lock().unwrap().pop_front().unwrap_or(200);
                axum::http::StatusCode::from_u16(status).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let url = format!("http://127.0.0.1:{}/hook", listener.local_addr().unwrap().port());
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (url, seen, task)
}

fn verify(sig: &str, body: &[u8]) -> bool {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    sig.strip_prefix("sha256=").and_then(|h| hex::decode(h).ok()).is_some_and(|given| mac.verify_slice(&given).is_ok())
}

async fn until_seen(seen: &Seen, n: usize, limit: Duration) {
    let started = Instant::now();
    while seen.lock().unwrap().len() < n {
        assert!(started.elapsed() < limit, "the receiver got {} of {n} posts", seen.lock().unwrap().len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn set_callback(app: &TestApp, url: &str) -> reqwest::Response {
    app.admin(reqwest::Method::PUT, &format!("/v1/apps/{APP}/callback")).json(&json!({"url": url, "secret": SECRET})).send().await.unwrap()
}

async fn call_alice(app: &TestApp, pushid: &str) -> Value {
    let (key, _) = device_key();
    let r = app.put_uds("alice", "pw-alice", "dev-1", uds_xml(&apns_token(), "APNS", &key, APP)).await;
    assert_eq!(r.status(), 200);
    app.post_call(&json!({"user": "alice", "pushid": pushid})).await.json().await.unwrap()
}

#[tokio::test]
async fn the_final_report_is_posted_signed_and_retried_until_the_receiver_takes_it() {
    let (app, m) = spawn_app_with_mocks().await;
    app.with_mock_credentials(&m).await;
    let (url, seen, _rx) = receiver(0, vec![500]).await;
    let r = set_callback(&app, &url).await;
    let status = r.status();
    let view: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["callback"]["url"], url.as_str());
    assert!(!view.to_string().contains(SECRET), "the secret is never shown");

    let rep = call_alice(&app, "cb-1").await;
    // The first post gets a 500, the retry (about 2 s later) a 200.
    until_seen(&seen, 2, Duration::from_secs(10)).await;
    let posts = seen.lock().unwrap().clone();
    for (sig, body) in &posts {
        assert!(verify(sig, body), "signature {sig} does not match the body");
    }
    assert_eq!(posts[0].1, posts[1].1, "the same report both times");
    let body: Value = serde_json::from_slice(&posts[1].1).unwrap();
    assert_eq!(body["call_id"], rep["call_id"]);
    assert_eq!(body["app_id"], APP);
    assert_eq!(body["deliveries"][0]["outcome"], "delivered", "{body}");
    // Taken: nothing more arrives.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn a_queued_callback_survives_a_restart() {
    let (app, m) = spawn_app_with_mocks().await;
    app.with_mock_credentials(&m).await;
    // The receiver is down when the call ends.
    let port = free_port();
    assert_eq!(set_callback(&app, &format!("http://127.0.0.1:{port}/hook")).await.status(), 200);
    let rep = call_alice(&app, "cb-2").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let app = app.restart().await;
    let (_, seen, _rx) = receiver(port, vec![]).await;
    until_seen(&seen, 1, Duration::from_secs(15)).await;
    let body: Value = serde_json::from_slice(&seen.lock().unwrap()[0].1).unwrap();
    assert_eq!(body["call_id"], rep["call_id"]);
    drop(app);
}

#[tokio::test]
async fn bad_callback_settings_are_refused_and_delete_stops_posting() {
    let (app, m) = spawn_app_with_mocks().await;
    app.with_mock_credentials(&m).await;
    for (body, want) in [
        (json!({"url": "ftp://example.com/x", "secret": SECRET}), "invalid_url"),
        (json!({"url": "not a url", "secret": SECRET}), "invalid_url"),
        (json!({"url": "https://user:pw@example.com/x", "secret": SECRET}), "invalid_url"),
        (json!({"url": "https://example.com/x", "secret": "short"}), "invalid_field"),
        (json!({"url": "https://example.com/x"}), "invalid_json"),
    ] {
        let r = app.admin(reqwest::Method::PUT, &format!("/v1/apps/{APP}/callback")).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 400, "{body}");
        assert_eq!(r.json::<Value>().await.unwrap()["error"], want, "{body}");
    }
    let r = app
        .admin(reqwest::Method::PUT, "/v1/apps/no.such.app/callback")
        .json(&json!({"url": "http://127.0.0.1:9/x", "secret": SECRET}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // Loopback and private addresses are accepted (backends live there).
    let (url, seen, _rx) = receiver(0, vec![]).await;
    assert_eq!(set_callback(&app, &url).await.status(), 200);
    let r = app.admin(reqwest::Method::DELETE, &format!("/v1/apps/{APP}/callback")).send().await.unwrap();
    assert_eq!(r.status(), 204);
    call_alice(&app, "cb-3").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(seen.lock().unwrap().is_empty(), "no callback after DELETE");
}
