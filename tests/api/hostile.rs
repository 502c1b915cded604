//! Hostile clients: slow headers, slow bodies, oversize headers, XML bombs.
use crate::helpers::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn addr(app: &TestApp) -> String {
    app.base.trim_start_matches("http://").to_string()
}

/// Send `head`, then wait: how long until the server answers or closes?
fn hold_open(addr: String, head: Vec<u8>) -> (Duration, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let started = Instant::now();
    s.write_all(&head).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    (started.elapsed(), String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test]
async fn slow_headers_and_slow_bodies_are_cut_off() {
    let app = spawn_app().await;
    let a = addr(&app);
    let slow_head = tokio::task::spawn_blocking({
        let a = a.clone();
        move || hold_open(a, b"PUT /v1/users/x HTTP/1.1\r\nHost: x\r\nX-Slow: ".to_vec())
    });
    let slow_body = tokio::task::spawn_blocking({
        let a = a.clone();
        move || {
            hold_open(
                a,
                format!("PUT /v1/users/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"pass").into_bytes(),
            )
        }
    });
    let (t1, out1) = slow_head.await.unwrap();
    let (t2, out2) = slow_body.await.unwrap();
    assert!(t1 < Duration::from_secs(13), "slow header held for {t1:?}");
    assert!(!out1.contains("200"), "{out1}");
    assert!(t2 < Duration::from_secs(13), "slow body held for {t2:?}");
    assert!(out2.starts_with("HTTP/1.1 408"), "{out2}");
    // The relay still serves everyone else.
    assert_eq!(app.client.get(app.url("/healthz")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn oversize_headers_are_refused() {
    let app = spawn_app().await;
    let big = "a".repeat(100 * 1024);
    let r = app.client.get(app.url("/healthz")).header("x-big", big).send().await;
    match r {
        Ok(resp) => assert_eq!(resp.status(), 431),
        Err(e) => assert!(e.is_request() || e.is_connect() || e.to_string().contains("connection"), "{e}"),
    }
    assert_eq!(app.client.get(app.url("/healthz")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn deep_nesting_and_entity_expansion_in_uds_are_refused() {
    let app = spawn_app().await;
    app.with_app_and_user().await;
    let deep = format!("<token>{}{}</token>", "<a>".repeat(1000), "</a>".repeat(1000));
    let r = app.put_uds("alice", "pw-alice", "d", deep).await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("<code>malformed_xml</code>"));
    let r = app.put_uds("alice", "pw-alice", "d", fixture("uds/billion-laughs.xml")).await;
    assert_eq!(r.status(), 400);
    let r = app.put_uds("alice", "pw-alice", "d", vec![0xffu8, 0xfe, 0x00, 0x3c]).await;
    assert_eq!(r.status(), 400);
    assert_eq!(app.devices("alice").await.as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn undecodable_queries_and_paths_get_the_usual_error_shape() {
    let app = spawn_app().await;
    let r = app.admin(reqwest::Method::GET, "/v1/devices/stale?limit=null&limit=null").send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    let e: serde_json::Value = r.json().await.unwrap();
    assert_eq!(e["error"], "bad_request");
    let r = app.admin(reqwest::Method::GET, "/v1/users/%FF%FE/devices").send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    let r = app.client.delete(app.url("/cucm-uds/user/%FF/device/d/devicetoken")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().starts_with("<error><code>bad_request</code>"));
}
