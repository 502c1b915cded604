//! Faults: a flaky provider, a dead provider, GOAWAY mid-burst, and kill -9
//! of the relay during a burst of registrations.
use crate::helpers::*;
use pushrelay_mock::apns::ScriptedReply;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// `n` users with one APNs device each; returns their tokens by user.
async fn users_with_devices(app: &TestApp, n: usize) -> Vec<(String, String)> {
    let (k, _) = device_key();
    let mut out = Vec::new();
    for i in 0..n {
        let user = format!("u{i}");
        assert_eq!(app.put_user(&user, "pw").await.status(), 201);
        let t = apns_token();
        let r = app.put_uds(&user, "pw", "phone", uds_xml(&t, "APNS", &k, APP)).await;
        assert_eq!(r.status(), 200);
        out.push((user, t));
    }
    out
}

async fn call_all(app: &TestApp, users: &[(String, String)], ring: u32) -> Vec<Value> {
    let calls = users.iter().map(|(u, _)| {
        let req = app.admin(reqwest::Method::POST, "/v1/calls").json(&json!({"user": u, "pushid": format!("p-{u}"), "ring_seconds": ring}));
        async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
    });
    futures::future::join_all(calls).await
}

#[tokio::test]
async fn half_the_pushes_throttled_with_retry_after_all_arrive_within_the_ring() {
    let (app, m) = spawn_app_with_mocks().await;
    app.with_mock_credentials(&m).await;
    let users = users_with_devices(&app, 30).await;
    for (i, (_, t)) in users.iter().enumerate() {
        if i % 2 == 0 {
            let first = if i % 4 == 0 { ScriptedReply::error(429, "TooManyRequests") } else { ScriptedReply::error(503, "ServiceUnavailable") };
            m.apns.script_token(t, vec![first.with_retry_after(1), ScriptedReply::ok()]);
        }
    }
    let started = Instant::now();
    let reports = call_all(&app, &users, 6).await;
    assert!(started.elapsed() < Duration::from_secs(6));
    for (i, r) in reports.iter().enumerate() {
        let d = &r["deliveries"][0];
        assert_eq!(d["outcome"], "delivered", "{r}");
        assert_eq!(d["attempts"], if i % 2 == 0 { 2 } else { 1 }, "{r}");
    }
}

#[tokio::test]
async fn a_provider_that_is_down_reports_expired_by_the_ring_end() {
    // A port with nothing listening: every connect is refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut env = base_env(dir.path()).await;
    env.insert("PUSHRELAY_APNS_PRODUCTION_URL".to_string(), format!("https://{closed}"));
    let app = spawn_with(dir, env).await;
    app.with_app_and_user().await;
    let (k, _) = device_key();
    assert_eq!(app.put_uds("alice", "pw-alice", "phone", uds_xml(&apns_token(), "APNS", &k, APP)).await.status(), 200);
    let started = Instant::now();
    let r: Value = app.post_call(&json!({"user": "alice", "pushid": "p", "ring_seconds": 2})).await.json().await.unwrap();
    let took = started.elapsed();
    assert!(took <= Duration::from_millis(2500), "{took:?}");
    let d = &r["deliveries"][0];
    assert_eq!(d["outcome"], "expired", "{r}");
    assert!(d["reason"].as_str().unwrap().contains("connect"), "{r}");
    assert!(d["attempts"].as_u64().unwrap() >= 2);
}

#[tokio::test]
async fn goaway_mid_burst_loses_and_duplicates_nothing() {
    // GOAWAY alone: a 10 s answer bound, so that a CPU-starved test machine
    // (the suite runs beside it) cannot turn a slow answer into a retry,
    // which may push twice by design (README "Failure modes").
    let (app, m) = spawn_app_with_mocks_and_env("", &[("PUSHRELAY_PROVIDERS_ANSWER_TIMEOUT_MS", "10000")]).await;
    app.with_mock_credentials(&m).await;
    let users = users_with_devices(&app, 40).await;
    m.apns.goaway_after(7);
    let reports = call_all(&app, &users, 10).await;
    for r in &reports {
        assert_eq!(r["deliveries"][0]["outcome"], "delivered", "{r}");
    }
    let mut delivered: HashMap<String, usize> = HashMap::new();
    for req in m.apns.requests() {
        if req.status == 200 {
            *delivered.entry(req.path.trim_start_matches("/3/device/").to_string()).or_default() += 1;
        }
    }
    for (_, t) in &users {
        assert_eq!(delivered.get(t), Some(&1), "token {t} delivered exactly once");
    }
    // The connection that sent GOAWAY is gone: the next push needs (and gets) a new one.
    let (k, _) = device_key();
    assert_eq!(app.put_user("late", "pw").await.status(), 201);
    assert_eq!(app.put_uds("late", "pw", "phone", uds_xml(&apns_token(), "APNS", &k, APP)).await.status(), 200);
    let r = call_all(&app, &[("late".to_string(), String::new())], 10).await;
    assert_eq!(r[0]["deliveries"][0]["outcome"], "delivered", "{}", r[0]);
    assert!(m.apns.connections_accepted() >= 2, "GOAWAY forced a new connection");
}

/// kill -9 while registrations are streaming in: every registration that was
/// acknowledged with 200 is there after a restart.
#[tokio::test]
async fn kill_9_during_a_registration_burst_loses_no_acknowledged_registration() {
    use std::process::{Command, Stdio};
    pushrelay::startup::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    // SQLite in the temp dir, or a fresh PostgreSQL database in the PostgreSQL pass.
    let db = test_database_url(dir.path()).await;
    let start = || {
        Command::new(env!("CARGO_BIN_EXE_pushrelay"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .current_dir(dir.path())
            .env("PUSHRELAY_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("PUSHRELAY_DATABASE_URL", &db)
            .env("PUSHRELAY_MASTER_KEY_FILE", dir.path().join("master.key"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let wait_up = |client: reqwest::Client, base: String| async move {
        for _ in 0..200 {
            if client.get(format!("{base}/healthz")).send().await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("relay did not start");
    };
    let mut child = start();
    wait_up(client.clone(), base.clone()).await;
    let admin = |m: reqwest::Method, p: &str| client.request(m, format!("{base}{p}")).bearer_auth(ADMIN_TOKEN);
    assert_eq!(admin(reqwest::Method::PUT, &format!("/v1/apps/{APP}/apns")).json(&apns_token_body(&p8_pem())).send().await.unwrap().status(), 200);
    assert_eq!(admin(reqwest::Method::PUT, "/v1/users/alice").json(&json!({"password": "pw-alice"})).send().await.unwrap().status(), 201);

    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let (k, _) = device_key();
    let mut writers = Vec::new();
    for w in 0..4 {
        let (client, base, acked, k) = (client.clone(), base.clone(), acked.clone(), k.clone());
        writers.push(tokio::spawn(async move {
            for i in 0..10_000 {
                let dev = format!("w{w}-{i}");
                let r = client
                    .put(format!("{base}/cucm-uds/user/alice/device/{dev}/devicetoken"))
                    .basic_auth("alice", Some("pw-alice"))
                    .header("content-type", "application/xml")
                    .body(uds_xml(&apns_token(), "APNS", &k, APP))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => acked.lock().unwrap().push(dev),
                    _ => return,
                }
            }
        }));
    }
    // Let the burst run, then kill -9 in the middle of it.
    for _ in 0..100 {
        if acked.lock().unwrap().len() >= 40 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    for w in writers {
        let _ = w.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 10, "burst too short to mean anything ({})", acked.len());

    let mut child = start();
    wait_up(client.clone(), base.clone()).await;
    let list: Value = admin(reqwest::Method::GET, "/v1/users/alice/devices").send().await.unwrap().json().await.unwrap();
    let stored: std::collections::HashSet<String> = list.as_array().unwrap().iter().map(|d| d["device"].as_str().unwrap().to_string()).collect();
    let _ = child.kill();
    let _ = child.wait();
    let lost: Vec<_> = acked.iter().filter(|d| !stored.contains(*d)).collect();
    assert!(lost.is_empty(), "{} acknowledged registrations lost: {lost:?}", lost.len());
}

/// PostgreSQL: every connection of the relay is cut (a failover, a
/// restarted server, an idle-connection reaper). Each dead connection fails
/// the one request that next uses it — a clean 500, nothing half-written —
/// and is replaced: the pool's (at most its 16 connections, no test before
/// acquire) and the call writer's own, which reopens on the next batch.
/// Then calls are pushed and reported again. Skipped on SQLite.
#[tokio::test]
async fn the_call_path_recovers_when_postgresql_cuts_every_connection() {
    if !on_postgres() {
        return;
    }
    let (app, m) = spawn_app_with_mocks().await;
    app.with_mock_credentials(&m).await;
    let users = users_with_devices(&app, 1).await;
    let call = |n: u32| app.admin(reqwest::Method::POST, "/v1/calls").json(&json!({"user": users[0].0, "pushid": format!("cut-{n}")}));
    assert_eq!(call(0).send().await.unwrap().status(), 200);
    sqlx::any::install_default_drivers();
    let admin = sqlx::AnyPool::connect(app.database_url()).await.unwrap();
    let cut = sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
        .fetch_all(&admin)
        .await
        .unwrap();
    assert!(cut.len() >= 2, "the pool and the call writer had connections: {}", cut.len());
    admin.close().await;
    let (mut failed, mut in_a_row, mut last) = (0, 0, None);
    for n in 1..=40 {
        let r = call(n).send().await.unwrap();
        if r.status() == 200 {
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["deliveries"][0]["outcome"], "delivered", "{v}");
            last = v["call_id"].as_str().map(str::to_string);
            in_a_row += 1;
            if in_a_row == 10 {
                break;
            }
        } else {
            assert_eq!(r.status(), 503, "a call on a cut connection fails cleanly, never 500");
            failed += 1;
            in_a_row = 0;
        }
    }
    assert_eq!(in_a_row, 10, "the relay did not recover: {failed} failed calls");
    assert!(failed <= 17, "more failures ({failed}) than dead connections");
    let id = last.unwrap();
    assert_eq!(app.admin(reqwest::Method::GET, &format!("/v1/calls/{id}")).send().await.unwrap().status(), 200, "the report was written");
}

/// The APNs connection goes silent (a NAT forgot it: no FIN, no RST), then
/// nothing happens for `quiet`, then a call with a 30 s ring. Returns how
/// long the push took and how many attempts it needed.
async fn call_after_a_silent_loss(quiet: Duration) -> (Duration, u64) {
    let (app, m) = spawn_app_with_mocks().await;
    app.with_mock_credentials(&m).await;
    let users = users_with_devices(&app, 1).await;
    let first = call_all(&app, &users, 30).await;
    assert_eq!(first[0]["deliveries"][0]["outcome"], "delivered");
    assert_eq!(m.apns.connections_accepted(), 1);
    m.apns.silence_open_connections();
    tokio::time::sleep(quiet).await;
    let started = Instant::now();
    let r = app.post_call(&json!({"user": users[0].0, "pushid": "after-the-loss", "ring_seconds": 30})).await;
    let took = started.elapsed();
    let v: Value = r.json().await.unwrap();
    let d = &v["deliveries"][0];
    assert_eq!(d["outcome"], "delivered", "{v}");
    assert_eq!(m.apns.connections_accepted(), 2, "the push went out on a new connection");
    println!("silent loss, call {quiet:?} later: delivered after {took:?} in {} attempt(s)", d["attempts"]);
    (took, d["attempts"].as_u64().unwrap())
}

/// A call 5 s after the loss finds the dead connection: the answer bound
/// (2 s) replaces it and the retry delivers, well inside the ring.
#[tokio::test]
async fn a_call_5_s_after_a_silent_connection_loss_is_delivered_within_3_s() {
    let (took, attempts) = call_after_a_silent_loss(Duration::from_secs(5)).await;
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(attempts, 2, "one attempt into the hole, one on the new connection");
}

/// A call 90 s after the loss: the keep-alive PING found the dead
/// connection long before, so the push goes out at once.
#[tokio::test]
async fn a_call_90_s_after_a_silent_connection_loss_is_delivered_at_once() {
    let (took, attempts) = call_after_a_silent_loss(Duration::from_secs(90)).await;
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert_eq!(attempts, 1);
}
