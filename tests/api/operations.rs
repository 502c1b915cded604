//! Operating the relay (interface.md §7): HTTPS on `listen` with SIGHUP
//! reload, `/metrics` on its own listener with every series from the start,
//! and provider traffic through an HTTP CONNECT proxy.
use crate::helpers::*;
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A client that trusts only `ca_pem`.
fn https_client(ca_pem: &str) -> reqwest::Client {
    pushrelay::startup::install_crypto_provider();
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

fn write_identity(dir: &std::path::Path, pki: &pushrelay_mock::TestPki) {
    let (chain, key) = pki.server_pem();
    std::fs::write(dir.join("cert.pem"), chain).unwrap();
    std::fs::write(dir.join("key.pem"), key).unwrap();
}

fn sighup(relay: &RelayProcess) {
    let status = std::process::Command::new("kill").args(["-HUP", &relay.child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn https_on_listen_speaks_h2_and_http1_and_sighup_swaps_the_certificate_without_dropping_requests() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = base_env(dir.path()).await;
    let first = pushrelay_mock::TestPki::generate();
    write_identity(dir.path(), &first);
    env.insert("PUSHRELAY_TLS_CERT_FILE".into(), dir.path().join("cert.pem").display().to_string());
    env.insert("PUSHRELAY_TLS_KEY_FILE".into(), dir.path().join("key.pem").display().to_string());
    let relay = RelayProcess::start(&env, None).expect("starts with HTTPS");
    let url = |path: &str| format!("https://localhost:{}{path}", relay.port);

    let old_ca = https_client(&first.ca_pem());
    let r = old_ca.get(url("/healthz")).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.version()), (200, reqwest::Version::HTTP_2), "h2 through ALPN");
    let http1 = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(first.ca_pem().as_bytes()).unwrap())
        .http1_only()
        .build()
        .unwrap();
    let r = http1.get(url("/healthz")).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.version()), (200, reqwest::Version::HTTP_11));
    // Plain HTTP on the HTTPS port gets no answer.
    let plain = reqwest::Client::builder().timeout(Duration::from_secs(3)).build().unwrap();
    assert!(plain.get(format!("http://127.0.0.1:{}/healthz", relay.port)).send().await.is_err());

    // A request in flight across the reload: its body trickles in.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let body = reqwest::Body::wrap(http_body_util::StreamBody::new(tokio_stream_from(rx)));
    let admin = env["PUSHRELAY_ADMIN_TOKEN"].clone();
    let in_flight = tokio::spawn({
        let req = old_ca.post(url("/v1/calls")).bearer_auth(&admin).header("content-type", "application/json").body(body);
        async move { req.send().await.map(|r| r.status().as_u16()) }
    });
    tx.send(Ok(br#"{"user":"nobody","pu"#.to_vec())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let second = pushrelay_mock::TestPki::generate();
    write_identity(dir.path(), &second);
    sighup(&relay);
    let new_ca = https_client(&second.ca_pem());
    let started = Instant::now();
    loop {
        if new_ca.get(url("/healthz")).send().await.is_ok() {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "the new certificate was not served: {}", relay.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // New connections present the new certificate only.
    assert!(https_client(&first.ca_pem()).get(url("/healthz")).send().await.is_err());
    tx.send(Ok(br#"shid":"p-1"}"#.to_vec())).await.unwrap();
    drop(tx);
    let status = in_flight.await.unwrap().expect("the in-flight request was answered, not dropped");
    assert_eq!(status, 404, "no such user: the request itself went through");
    assert!(relay.log().contains("configuration reloaded"), "{}", relay.log());

    // A reload with a broken key changes nothing and says so.
    std::fs::write(dir.path().join("key.pem"), "not a key").unwrap();
    sighup(&relay);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(new_ca.get(url("/healthz")).send().await.is_ok());
    assert!(relay.log().contains("refused"), "{}", relay.log());
}

/// A stream of body frames from a channel.
fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures::Stream<Item = Result<hyper::body::Frame<bytes::Bytes>, std::io::Error>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|o| o.map(|r| r.map(|v| hyper::body::Frame::data(bytes::Bytes::from(v))))))
}

#[tokio::test]
async fn metrics_listen_serves_metrics_alone_and_every_series_starts_at_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = base_env(dir.path()).await;
    let port = free_port();
    env.insert("PUSHRELAY_METRICS_LISTEN".into(), format!("127.0.0.1:{port}"));
    let relay = RelayProcess::start(&env, None).expect("starts");
    let r = reqwest::get(relay.url("/metrics")).await.unwrap();
    assert_eq!(r.status(), 404, "not on the public listener");
    let mut text = String::new();
    for _ in 0..50 {
        if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await {
            text = r.text().await.unwrap();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for series in [
        r#"pushrelay_pushes_total{provider="apns",outcome="delivered"} 0"#,
        r#"pushrelay_pushes_total{provider="fcm",outcome="token_removed"} 0"#,
        r#"pushrelay_registrations_total{dialect="uds"} 0"#,
        r#"pushrelay_registrations_total{dialect="sip"} 0"#,
        r#"pushrelay_retries_total{provider="apns"} 0"#,
        r#"pushrelay_tokens_removed_total{provider="fcm"} 0"#,
        "pushrelay_store_errors_total 0",
        "pushrelay_auth_lockouts_total 0",
        r#"pushrelay_webhooks_refused_total{reason="stale"} 0"#,
        r#"pushrelay_connections_closed_total{reason="idle"} 0"#,
        r#"pushrelay_provider_latency_seconds_count{provider="apns"} 0"#,
        &format!(r#"pushrelay_build_info{{version="{}"}} 1"#, env!("CARGO_PKG_VERSION")),
    ] {
        assert!(text.contains(series), "{series} missing from a fresh /metrics:\n{text}");
    }
    // Every metric the README's list names is there.
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let list = readme.lines().find(|l| l.starts_with("Metrics at `GET /metrics`")).expect("the README's metrics list");
    let listed = regex::Regex::new(r"`(pushrelay_[a-z_]+)").unwrap();
    for name in listed.captures_iter(list).map(|c| c[1].to_string()) {
        if name == "pushrelay_credential_expiry_timestamp_seconds" {
            continue; // only for apps with certificate credentials
        }
        assert!(text.contains(&name), "README lists {name}, /metrics does not have it");
    }
}

/// A minimal HTTP CONNECT proxy on loopback: counts tunnels, records targets.
async fn connect_proxy() -> (u16, Arc<AtomicUsize>, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (count, targets) = (Arc::new(AtomicUsize::new(0)), Arc::new(Mutex::new(Vec::new())));
    let (c, t) = (count.clone(), targets.clone());
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let (c, t) = (c.clone(), t.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                    if client.read_exact(&mut byte).await.is_err() {
                        return;
                    }
                    head.push(byte[0]);
                }
                let text = String::from_utf8_lossy(&head).to_string();
                let Some(target) = text.strip_prefix("CONNECT ").and_then(|r| r.split(' ').next()).map(str::to_string) else {
                    let _ = client.write_all(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n").await;
                    return;
                };
                let Ok(mut upstream) = tokio::net::TcpStream::connect(&target).await else {
                    let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
                    return;
                };
                c.fetch_add(1, Ordering::SeqCst);
                t.lock().unwrap().push(target);
                let _ = client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await;
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    (port, count, targets)
}

#[tokio::test]
async fn provider_requests_go_through_the_connect_proxy() {
    let (port, tunnels, targets) = connect_proxy().await;
    let proxy = format!("http://127.0.0.1:{port}");
    let (app, m) = spawn_app_with_mocks_and_env("", &[("PUSHRELAY_PROVIDERS_PROXY", &proxy)]).await;
    app.with_mock_credentials(&m).await;
    let (key, _) = device_key();
    let token = apns_token();
    assert_eq!(app.put_uds("alice", "pw-alice", "dev-1", uds_xml(&token, "APNS", &key, APP)).await.status(), 200);
    let rep: serde_json::Value = app.post_call(&json!({"user": "alice", "pushid": "px-1"})).await.json().await.unwrap();
    assert_eq!(rep["deliveries"][0]["outcome"], "delivered", "{rep}");
    assert!(tunnels.load(Ordering::SeqCst) >= 1);
    let apns_host = m.apns.url().trim_start_matches("https://").trim_end_matches('/').to_string();
    assert!(targets.lock().unwrap().iter().any(|t| *t == apns_host), "{:?} vs {apns_host}", targets.lock().unwrap());
}

#[test]
fn a_proxy_that_is_not_http_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pushrelay"))
        .args(["check-config"])
        .current_dir(dir.path())
        .env("PUSHRELAY_PROVIDERS_PROXY", "socks5://127.0.0.1:1080")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("providers.proxy"));
}
