//! The smaller findings of the tenants review (issue "Tenants", finding 7),
//! each over real sockets: address groups for IPv6, the header deadline
//! whatever the method, password guesses spread over many names, client
//! request ids, the console's forms, and the mode of the files that hold
//! tokens and keys.
use super::env_of;
use crate::helpers::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Add loopback addresses for a test (needs root, as CI runs; `None`
/// when this machine does not allow it).
struct LoopbackAddrs(Vec<String>);

impl LoopbackAddrs {
    fn add(addrs: &[&str]) -> Option<Self> {
        let mut added = Vec::new();
        for a in addrs {
            let ok = std::process::Command::new("ip")
                .args(["-6", "addr", "add", &format!("{a}/128"), "dev", "lo"])
                .output()
                .is_ok_and(|o| o.status.success());
            if !ok {
                drop(LoopbackAddrs(added));
                return None;
            }
            added.push(a.to_string());
        }
        // Duplicate address detection does not run on lo; give the kernel a moment anyway.
        std::thread::sleep(Duration::from_millis(100));
        Some(LoopbackAddrs(added))
    }
}

impl Drop for LoopbackAddrs {
    fn drop(&mut self) {
        for a in &self.0 {
            let _ = std::process::Command::new("ip").args(["-6", "addr", "del", &format!("{a}/128"), "dev", "lo"]).output();
        }
    }
}

/// A blocking connection to `to` from the local address `src`.
async fn connect_from(src: &str, to: std::net::SocketAddr) -> std::io::Result<TcpStream> {
    let sock = tokio::net::TcpSocket::new_v6()?;
    sock.bind(std::net::SocketAddr::new(src.parse().unwrap(), 0))?;
    let s = sock.connect(to).await?.into_std()?;
    s.set_nonblocking(false)?;
    Ok(s)
}

/// Whether the relay closed `s` without answering (within 2 s).
fn closed_at_once(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf).map_err(|e| e.kind()), Ok(0) | Err(std::io::ErrorKind::ConnectionReset))
}

/// Two addresses of one IPv6 /64 are one address for the per-address cap
/// (the review filled a 336-slot relay from 2 addresses).
#[tokio::test]
async fn addresses_of_one_ipv6_64_share_one_connection_cap() {
    let Some(_addrs) = LoopbackAddrs::add(&["fd00:7:7:7::1", "fd00:7:7:7::2", "fd00:7:7:8::1"]) else {
        eprintln!("skipped: cannot add IPv6 loopback addresses here (not root)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut env = base_env(dir.path()).await;
    env.extend(env_of(&[("PUSHRELAY_LISTEN", "[::1]:0"), ("PUSHRELAY_LIMITS_CONNECTIONS_PER_ADDRESS", "4")]));
    let app = spawn_with(dir, env).await;
    let to: std::net::SocketAddr = app.base.trim_start_matches("http://").parse().unwrap();
    let mut held = Vec::new();
    for i in 0..4 {
        held.push(connect_from(if i % 2 == 0 { "fd00:7:7:7::1" } else { "fd00:7:7:7::2" }, to).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (mut fifth, mut other_64) = (connect_from("fd00:7:7:7::2", to).await.unwrap(), connect_from("fd00:7:7:8::1", to).await.unwrap());
    let (fifth_closed, other) = tokio::task::spawn_blocking(move || {
        let fifth_closed = closed_at_once(&mut fifth);
        other_64.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        other_64.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut out = String::new();
        let _ = other_64.read_to_string(&mut out);
        (fifth_closed, out)
    })
    .await
    .unwrap();
    assert!(fifth_closed, "a fifth connection from the same /64 (another address) is closed at once");
    assert!(other.starts_with("HTTP/1.1 200"), "another /64 is served: {other}");
    drop(held);
}

/// A first request with the method `PRI` (not the h2 preface) switched off
/// the header deadline: the next request's headers could trickle for 60 s.
#[tokio::test]
async fn a_request_with_the_method_pri_keeps_the_header_deadline() {
    let app = spawn_app().await;
    let (first, took) = super::connections::header_deadline_after(&app, b"PRI /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(first.starts_with("HTTP/1.1 405") || first.starts_with("HTTP/1.1 404"), "{first}");
    assert!(took >= Duration::from_secs(9) && took < Duration::from_secs(13), "closed after {took:?}, not by the 10 s header deadline");
}

/// Wrong passwords spread over many known user names were never counted
/// against the source address: 10 guesses for each of N names, no 429.
#[tokio::test]
async fn password_guesses_spread_over_many_names_lock_the_address_out() {
    let app = spawn_app().await;
    app.with_app_and_user().await;
    for u in ["bob", "carol", "dave"] {
        assert_eq!(app.put_user(u, &format!("pw-{u}")).await.status(), 201);
    }
    let mut statuses = Vec::new();
    for u in ["alice", "bob", "carol", "dave"] {
        for _ in 0..4 {
            statuses.push(app.put_uds(u, "wrong", "d1", uds_xml(APNS_TOKEN, "APNS", KEY_B64, APP)).await.status().as_u16());
        }
    }
    // At most 4 per name (under the limit of 10 per name): only the address counts.
    assert_eq!(statuses.iter().filter(|s| **s == 401).count(), 11, "{statuses:?}");
    assert!(statuses[11..].iter().all(|s| *s == 429), "{statuses:?}");
    // A valid bearer from the same address is never refused.
    assert_eq!(app.admin(reqwest::Method::GET, "/v1/apps/com.example.KitchenSink").send().await.unwrap().status(), 200);
}

/// A client's X-Request-Id went into the log as sent (up to 32 KiB).
#[tokio::test]
async fn a_client_request_id_is_kept_only_when_it_is_a_short_token() {
    let app = spawn_app().await;
    let id_of = |v: &'static str| {
        let client = app.client.clone();
        let url = app.url("/healthz");
        async move { client.get(url).header("x-request-id", v).send().await.unwrap().headers()["x-request-id"].to_str().unwrap().to_string() }
    };
    assert_eq!(id_of("cucm-7.a_b-9").await, "cucm-7.a_b-9");
    let long: &'static str = Box::leak("a".repeat(65).into_boxed_str());
    for bad in [long, "id\" user=admin", "a b", "x;y=1"] {
        let got = id_of(bad).await;
        assert_ne!(got, bad);
        assert!(uuid::Uuid::parse_str(&got).is_ok(), "{bad:?} was replaced by a fresh id, got {got:?}");
    }
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

async fn login(app: &TestApp, origin: Option<&str>, body: String) -> reqwest::Response {
    let mut r = no_redirects().post(app.url("/console/login")).header("content-type", "application/x-www-form-urlencoded");
    if let Some(o) = origin {
        r = r.header("origin", o);
    }
    r.body(body).send().await.unwrap()
}

/// Sign-in accepted a cross-site Origin (login CSRF), read 2 MB bodies
/// without authentication, and the cookie was `Secure` only when the relay
/// terminated TLS itself.
#[tokio::test]
async fn console_sign_in_refuses_other_origins_and_big_forms() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = base_env(dir.path()).await;
    env.insert("PUSHRELAY_PUBLIC_URL".into(), "https://Push.Example.com/relay/".into());
    let app = spawn_with(dir, env).await;
    let form = format!("token={ADMIN_TOKEN}");
    let own = app.base.clone();
    for bad in ["https://evil.example", "null", "http://127.0.0.1:1"] {
        let r = login(&app, Some(bad), form.clone()).await;
        assert_eq!(r.status(), 403, "Origin {bad}");
        assert!(r.headers().get("set-cookie").is_none());
    }
    for good in [Some(own.as_str()), Some("https://push.example.com"), None] {
        let r = login(&app, good, form.clone()).await;
        assert_eq!(r.status(), 303, "Origin {good:?}");
        let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
        assert!(cookie.contains("; Secure"), "public_url is https: the cookie is Secure behind a TLS proxy: {cookie}");
    }
    let big = format!("token={ADMIN_TOKEN}&pad={}", "x".repeat(5000));
    assert_eq!(login(&app, None, big.clone()).await.status(), 413);
    let r =
        no_redirects().post(app.url("/console/logout")).header("content-type", "application/x-www-form-urlencoded").body(big).send().await.unwrap();
    assert_eq!(r.status(), 413);
}

/// Run from source with umask 022, the database and its WAL were created
/// 0644 — and they hold full device tokens.
#[tokio::test]
async fn the_database_its_wal_and_the_master_key_are_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("relay.db");
    let key = dir.path().join("relay.master.key");
    let port = free_port();
    let mut child = std::process::Command::new("sh")
        .args(["-c", "umask 022 && exec \"$0\" serve", env!("CARGO_BIN_EXE_pushrelay")])
        .env("PUSHRELAY_LISTEN", format!("127.0.0.1:{port}"))
        .env("PUSHRELAY_DATABASE_URL", format!("sqlite://{}", db.display()))
        .env("PUSHRELAY_MASTER_KEY_FILE", &key)
        .env("PUSHRELAY_ADMIN_TOKEN", ADMIN_TOKEN)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    // Write something, so the WAL exists.
    loop {
        let r = client
            .put(format!("http://127.0.0.1:{port}/v1/users/alice"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&serde_json::json!({"password": "pw"}))
            .send()
            .await;
        if r.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        assert!(Instant::now() < deadline, "relay did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mode = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.permissions().mode() & 0o777);
    let wal = dir.path().join("relay.db-wal");
    let (db_mode, wal_mode, key_mode) = (mode(&db), mode(&wal), mode(&key));
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(db_mode.unwrap(), 0o600, "database");
    assert_eq!(wal_mode.unwrap(), 0o600, "write-ahead log");
    assert_eq!(key_mode.unwrap(), 0o600, "master key");
}
