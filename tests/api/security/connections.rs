//! Finding 3: idle sockets were never closed, and 90 of them under a file
//! limit of 96 made `/healthz` stop answering.
use super::env_of;
use crate::helpers::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Open a connection, send `head`, and measure how long until the relay
/// closes it (bounded by 20 s).
fn closed_after(addr: &str, head: &[u8]) -> (Duration, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let started = Instant::now();
    s.write_all(head).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    (started.elapsed(), out)
}

#[tokio::test]
async fn silent_and_half_open_connections_are_closed_within_the_first_request_deadline() {
    let app = spawn_app().await;
    let addr = app.base.trim_start_matches("http://").to_string();
    let cases: [(&str, &[u8]); 3] = [
        ("no bytes at all", b""),
        ("half an HTTP/2 preface", b"PRI * HTTP/2.0\r\n"),
        ("a request line without its headers", b"GET /healthz HTTP/1.1\r\n"),
    ];
    let handles: Vec<_> = cases
        .iter()
        .map(|(name, head)| {
            let (addr, head, name) = (addr.clone(), head.to_vec(), name.to_string());
            tokio::task::spawn_blocking(move || (name, closed_after(&addr, &head)))
        })
        .collect();
    for h in handles {
        let (name, (took, out)) = h.await.unwrap();
        assert!(took >= Duration::from_secs(9) && took < Duration::from_secs(13), "{name}: closed after {took:?}");
        assert!(!String::from_utf8_lossy(&out).contains("200 OK"), "{name}");
    }
    assert_eq!(app.client.get(app.url("/healthz")).send().await.unwrap().status(), 200);
}

/// On one connection: send `first` (a whole request) and read its answer,
/// then start a second request whose headers never end. The first answer,
/// and how long the relay took to close the connection after that start.
pub async fn header_deadline_after(app: &TestApp, first: &'static [u8]) -> (String, Duration) {
    let addr = app.base.trim_start_matches("http://").to_string();
    tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(first).unwrap();
        let mut buf = [0u8; 2048];
        let n = s.read(&mut buf).unwrap();
        let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
        std::thread::sleep(Duration::from_millis(500));
        let started = Instant::now();
        s.write_all(b"GET /healthz HTTP/1.1\r\nX-Slow: ").unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        (answer, started.elapsed())
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn a_keep_alive_client_that_starts_a_request_must_finish_its_headers_in_time() {
    let app = spawn_app().await;
    // One complete request keeps the connection open, then a second one never finishes its headers.
    let (first, took) = header_deadline_after(&app, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert!(took >= Duration::from_secs(9) && took < Duration::from_secs(13), "closed after {took:?}");
}

#[tokio::test]
async fn one_address_cannot_take_every_connection() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = base_env(dir.path()).await;
    env.insert("PUSHRELAY_LIMITS_CONNECTIONS_PER_ADDRESS".into(), "8".into());
    let app = spawn_with(dir, env).await;
    let addr: std::net::SocketAddr = app.base.trim_start_matches("http://").parse().unwrap();
    let (held, ninth) = tokio::task::spawn_blocking(move || {
        let held: Vec<TcpStream> = (0..8).map(|_| TcpStream::connect(addr).unwrap()).collect();
        std::thread::sleep(Duration::from_millis(200));
        // The ninth from the same address is closed at once.
        let mut ninth = TcpStream::connect(addr).unwrap();
        ninth.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let started = Instant::now();
        let mut buf = [0u8; 16];
        let read = ninth.read(&mut buf).map_err(|e| e.kind());
        (held, (read, started.elapsed()))
    })
    .await
    .unwrap();
    assert!(matches!(ninth.0, Ok(0) | Err(std::io::ErrorKind::ConnectionReset)), "closed without an answer: {ninth:?}");
    assert!(ninth.1 < Duration::from_secs(2), "{ninth:?}");
    // Another address is served meanwhile.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut other = sock.connect(addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    other.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), other.read_to_string(&mut out)).await.unwrap().unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    drop(held);
}

/// The reported case: the relay's file limit at 96, 90 idle sockets from
/// one address. `/healthz` from another address still answers at once, and
/// the idle ones are closed by the first-request deadline.
#[tokio::test]
async fn ninety_idle_sockets_under_a_file_limit_of_96_do_not_stop_health_checks() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = base_env(dir.path()).await;
    env.extend(env_of(&[("PUSHRELAY_LIMITS_CONNECTIONS_PER_ADDRESS", "16")]));
    let relay = RelayProcess::start(&env, Some(96)).expect("relay starts under ulimit -n 96");
    let addr = format!("127.0.0.1:{}", relay.port);
    let idle: Vec<TcpStream> = (0..90).filter_map(|_| TcpStream::connect(&addr).ok()).collect();
    assert!(idle.len() >= 80, "opened {}", idle.len());
    let port = relay.port;
    let health = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let sock = socket2_connect_from("127.0.0.2", port);
        let mut s = sock.expect("connect from 127.0.0.2");
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        (started.elapsed(), out)
    })
    .await
    .unwrap();
    assert!(health.1.starts_with("HTTP/1.1 200"), "{:?}", health);
    assert!(health.0 < Duration::from_secs(2), "healthz took {:?}", health.0);
    // The idle sockets the relay accepted are closed by the deadline.
    let started = Instant::now();
    let mut closed = 0;
    for mut s in idle {
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut b = [0u8; 1];
        if matches!(s.read(&mut b), Ok(0) | Err(_)) {
            closed += 1;
        }
    }
    assert!(closed >= 80, "{closed} closed");
    assert!(started.elapsed() < Duration::from_secs(14), "{:?}", started.elapsed());
}

/// A blocking TCP connection from a chosen loopback source address.
fn socket2_connect_from(ip: &str, port: u16) -> std::io::Result<TcpStream> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let s = rt.block_on(async {
        let sock = tokio::net::TcpSocket::new_v4()?;
        sock.bind(format!("{ip}:0").parse().unwrap())?;
        sock.connect(format!("127.0.0.1:{port}").parse().unwrap()).await
    })?;
    let std = s.into_std()?;
    std.set_nonblocking(false)?;
    Ok(std)
}
