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
    assert!(targets.lock().unwrap().contains(&apns_host), "{:?} vs {apns_host}", targets.lock().unwrap());
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

async fn test_push(app: &TestApp, body: serde_json::Value) -> (u16, serde_json::Value) {
    let r = app.admin(reqwest::Method::POST, &format!("/v1/apps/{APP}/test-push")).json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

async fn app_view(app: &TestApp) -> serde_json::Value {
    app.admin(reqwest::Method::GET, &format!("/v1/apps/{APP}")).send().await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn a_test_push_reports_the_providers_own_answer_and_stores_nothing() {
    let (app, m) = spawn_app_with_mocks().await;
    app.with_mock_credentials(&m).await;
    let good = apns_token();
    let (status, v) = test_push(&app, json!({"token": good, "channel": "APNS"})).await;
    assert_eq!((status, v["outcome"].as_str(), v["provider_status"].as_u64()), (200, Some("delivered"), Some(200)), "{v}");
    let req = &m.apns.requests()[0];
    assert_eq!(req.header("apns-push-type"), Some("voip"));
    let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(body["test"], true);
    let (_, v) = test_push(&app, json!({"token": good, "channel": "APNS", "type": "alert"})).await;
    assert_eq!(v["outcome"], "delivered");
    assert_eq!(m.apns.requests()[1].header("apns-push-type"), Some("alert"));

    // A token of the other environment: Apple's own words come back.
    let dev_token = apns_token();
    m.apns.script_token(&dev_token, vec![pushrelay_mock::apns::ScriptedReply::error(400, "BadDeviceToken")]);
    let (_, v) = test_push(&app, json!({"token": dev_token, "channel": "APNS"})).await;
    assert_eq!((v["outcome"].as_str(), v["provider_status"].as_u64()), (Some("token_invalid"), Some(400)), "{v}");
    assert!(v["reason"].as_str().unwrap().contains("BadDeviceToken"), "{v}");

    // FCM: SENDER_ID_MISMATCH is the app's credentials, and health says so.
    let fcm_token = "fcm-token:APA91bHun4MxP5egoKMwt2KZFBaFUH";
    m.fcm.script_token(fcm_token, vec![pushrelay_mock::fcm::FcmReply::sender_id_mismatch()]);
    let (_, v) = test_push(&app, json!({"token": fcm_token, "channel": "FCM"})).await;
    assert_eq!(v["outcome"], "failed", "{v}");
    assert!(v["reason"].as_str().unwrap().contains("SENDER_ID_MISMATCH"), "{v}");
    let view = app_view(&app).await;
    assert_eq!(view["fcm"]["health"]["state"], "failing", "{view}");
    assert!(view["fcm"]["health"]["last_reason"].as_str().unwrap().contains("SENDER_ID_MISMATCH"), "{view}");
    assert_eq!(view["apns"]["health"]["state"], "ok", "{view}");
    assert!(view["apns"]["health"]["last_success_at"].as_str().is_some(), "{view}");

    // Nothing stored: no call report, no user, no device.
    let calls: serde_json::Value = app.admin(reqwest::Method::GET, "/v1/calls").send().await.unwrap().json().await.unwrap_or(json!(null));
    assert!(calls.to_string().find(&good[good.len() - 8..]).is_none(), "{calls}");

    // Bad input: 4xx with the field named.
    for (body, want) in [
        (json!({"token": "xyz", "channel": "APNS"}), "invalid_token"),
        (json!({"token": good, "channel": "APNS:prod"}), "invalid_channel"),
        (json!({"token": good, "channel": "APNS", "type": "video"}), "invalid_field"),
        (json!({"token": good}), "invalid_json"),
    ] {
        let (status, v) = test_push(&app, body).await;
        assert_eq!((status, v["error"].as_str()), (400, Some(want)), "{v}");
    }
    let r = app.admin(reqwest::Method::POST, "/v1/apps/no.such.app/test-push").json(&json!({"token": good, "channel": "APNS"})).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn an_auth_refusal_marks_the_credentials_failing_until_a_push_succeeds() {
    let (app, m) = spawn_app_with_mocks().await;
    // Credentials signed with a key the mock APNs does not know.
    let (p8, key_id) = pushrelay_mock::fixtures::apns_p8();
    let body = json!({"keyId": key_id, "bundleId": APP, "teamId": m.team_id, "keyFile": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &p8)});
    assert_eq!(app.put_apns(APP, &body).await.status(), 200);
    let (_, v) = test_push(&app, json!({"token": apns_token(), "channel": "APNS"})).await;
    assert_eq!(v["outcome"], "failed", "{v}");
    assert!(v["reason"].as_str().unwrap().contains("InvalidProviderToken"), "{v}");
    let view = app_view(&app).await;
    assert_eq!(view["apns"]["health"]["state"], "failing", "{view}");
    assert!(view["apns"]["health"]["last_reason"].as_str().unwrap().contains("InvalidProviderToken"));
    // The right key: the next answer makes it ok again.
    assert_eq!(app.put_apns(APP, &m.apns_body()).await.status(), 200);
    let (_, v) = test_push(&app, json!({"token": apns_token(), "channel": "APNS"})).await;
    assert_eq!(v["outcome"], "delivered", "{v}");
    assert_eq!(app_view(&app).await["apns"]["health"]["state"], "ok");
}

#[tokio::test]
async fn a_certificate_credential_shows_its_expiry_in_the_app_and_in_metrics() {
    let app = spawn_app().await;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["VoIP Services: com.example.KitchenSink".into()]).unwrap();
    params.not_after = rcgen::date_time_ymd(2027, 1, 2);
    let cert = params.self_signed(&key).unwrap();
    let pem = format!("{}{}", cert.pem(), key.serialize_pem());
    let r =
        app.put_apns(APP, &json!({"bundleId": APP, "certificate": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &pem)})).await;
    assert_eq!(r.status(), 200);
    let view = app_view(&app).await;
    assert_eq!(view["apns"]["health"]["expires_at"], "2027-01-02T00:00:00Z", "{view}");
    assert_eq!(view["apns"]["health"]["state"], "unknown");
    let metrics = reqwest::get(app.url("/metrics")).await.unwrap().text().await.unwrap();
    let line = format!(r#"pushrelay_credential_expiry_timestamp_seconds{{app="{APP}",provider="apns"}} 1798848000"#);
    assert!(metrics.contains(&line), "{line} not in /metrics");
}

#[tokio::test]
async fn pushrelay_push_sends_a_test_push_from_the_command_line() {
    let (app, m) = spawn_app_with_mocks().await;
    app.with_mock_credentials(&m).await;
    let token = apns_token();
    let run = |args: &[&str]| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_pushrelay"));
        cmd.arg("push").args(args);
        for (k, v) in &app.env {
            if k.starts_with("PUSHRELAY_") {
                cmd.env(k, v);
            }
        }
        // The mocks run on this test's runtime: wait without blocking it.
        async move { cmd.output().await.unwrap() }
    };
    let out = run(&["--app", APP, "--token", &token, "--channel", "APNS:dev"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout} {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["outcome"], "delivered");
    assert_eq!(m.apns_dev.requests().len(), 1, "APNS:dev goes to the sandbox");
    let out = run(&["--app", APP, "--token", "not-hex", "--channel", "APNS"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--token"));
}
