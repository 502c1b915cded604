//! The listener loop: hyper (HTTP/1.1 and h2) under hard limits, so a slow,
//! idle or hostile client cannot hold the relay (interface.md §6):
//! - a connection must complete its first request (request line and
//!   headers, or the h2 preface and a HEADERS frame) within
//!   `FIRST_REQUEST_TIMEOUT` of the accept, whatever it sends or withholds;
//! - between requests, an HTTP/1 client that starts a request must finish
//!   its headers within `HEADER_READ_TIMEOUT` of that first byte;
//! - a connection with no request in flight is closed after `IDLE_TIMEOUT`
//!   (HTTP/1 keep-alive and h2 alike; h2 pings do not keep it open);
//! - headers are capped at `MAX_HEADER_BYTES` (431 / connection closed);
//! - at most `limits.connections_per_address` connections per source
//!   address (one more is closed at once), and at most `max_connections()`
//!   in all (the next accept waits for a free slot instead of running out
//!   of file descriptors);
//! - on shutdown: stop accepting, close idle connections, let in-flight
//!   requests finish (the caller bounds how long).
//!
//! Every request carries the peer address as `ConnectInfo<SocketAddr>`
//! (auth failures are counted per source address).

use super::limit::AddressGroup;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use std::collections::HashMap;
use std::net::IpAddr;

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

pub const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
pub const MAX_HEADER_BYTES: usize = 32 * 1024;
pub const MAX_CONNECTIONS: usize = 10_000;
/// File descriptors kept free for the database, provider connections and files.
const RESERVED_FDS: u64 = 64;

use crate::telemetry::CONNECTIONS_CLOSED as CLOSED;

/// Why the relay closed a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    FirstRequestTimeout,
    HeaderTimeout,
    Idle,
    PerAddressCap,
}

impl CloseReason {
    pub const ALL: [CloseReason; 4] = [CloseReason::FirstRequestTimeout, CloseReason::HeaderTimeout, CloseReason::Idle, CloseReason::PerAddressCap];
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::FirstRequestTimeout => "first_request_timeout",
            CloseReason::HeaderTimeout => "header_timeout",
            CloseReason::Idle => "idle",
            CloseReason::PerAddressCap => "per_address_cap",
        }
    }
}

/// How many connections may be open at once: `MAX_CONNECTIONS`, or fewer
/// when the process may not open that many files.
pub fn max_connections() -> usize {
    #[cfg(unix)]
    {
        // Raise the soft limit to the hard one (what a service manager allows).
        if let Ok((soft, hard)) = rlimit::Resource::NOFILE.get() {
            let soft = if soft < hard && rlimit::Resource::NOFILE.set(hard, hard).is_ok() { hard } else { soft };
            return (soft.saturating_sub(RESERVED_FDS).max(16) as usize).min(MAX_CONNECTIONS);
        }
    }
    MAX_CONNECTIONS
}

/// Open connections per source address group (an IPv6 /64 is one group).
#[derive(Default)]
struct PerAddress {
    limit: usize,
    open: Mutex<HashMap<AddressGroup, usize>>,
}

/// One connection counted against its address group; uncounted on drop.
struct AddressSlot {
    table: Arc<PerAddress>,
    ip: AddressGroup,
}

impl PerAddress {
    fn take(self: &Arc<Self>, ip: IpAddr) -> Option<AddressSlot> {
        let ip = AddressGroup::of(ip);
        let mut open = self.open.lock().expect("per-address lock");
        let n = open.entry(ip).or_insert(0);
        if self.limit != 0 && *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(AddressSlot { table: self.clone(), ip })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.table.open.lock().expect("per-address lock");
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

const NONE: u64 = u64::MAX;

/// What the watchdog of one connection knows: times are milliseconds since
/// the accept.
struct ConnWatch {
    accepted: Instant,
    requests: AtomicU64,
    in_flight: AtomicUsize,
    /// When the last request finished (or the accept).
    idle_since: AtomicU64,
    /// First byte read while no request was in flight (HTTP/1 only), else `NONE`.
    first_byte: AtomicU64,
    /// The connection speaks HTTP/2 (known from its first request's
    /// version, never from what a client wrote: an HTTP/1 request with the
    /// method `PRI` is still HTTP/1 and keeps its header deadline).
    h2: AtomicBool,
    /// Wakes the watchdog when a deadline may have moved.
    changed: tokio::sync::Notify,
}

impl ConnWatch {
    fn new() -> Self {
        Self {
            accepted: Instant::now(),
            requests: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            first_byte: AtomicU64::new(NONE),
            h2: AtomicBool::new(false),
            changed: tokio::sync::Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.accepted.elapsed().as_millis() as u64
    }

    fn at(&self, ms: u64) -> Instant {
        self.accepted + Duration::from_millis(ms)
    }

    fn read(&self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if self.in_flight.load(Ordering::Relaxed) == 0 && self.first_byte.load(Ordering::Relaxed) == NONE {
            self.first_byte.store(self.now_ms(), Ordering::Relaxed);
            self.changed.notify_one();
        }
    }

    fn request_started(self: &Arc<Self>, version: hyper::Version) -> InFlight {
        if version == hyper::Version::HTTP_2 {
            self.h2.store(true, Ordering::Relaxed);
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.first_byte.store(NONE, Ordering::Relaxed);
        self.changed.notify_one();
        InFlight(self.clone())
    }

    /// When this connection must be closed if nothing changes, and why.
    fn deadline(&self) -> Option<(Instant, CloseReason)> {
        if self.requests.load(Ordering::Relaxed) == 0 {
            return Some((self.accepted + FIRST_REQUEST_TIMEOUT, CloseReason::FirstRequestTimeout));
        }
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let idle = (self.at(self.idle_since.load(Ordering::Relaxed)) + IDLE_TIMEOUT, CloseReason::Idle);
        let first_byte = self.first_byte.load(Ordering::Relaxed);
        if first_byte != NONE && !self.h2.load(Ordering::Relaxed) {
            let header = (self.at(first_byte) + HEADER_READ_TIMEOUT, CloseReason::HeaderTimeout);
            return Some(if header.0 < idle.0 { header } else { idle });
        }
        Some(idle)
    }

    /// Resolves when the connection has outlived its deadline. Sleeps until
    /// the deadline or until the state changes (a request starts or ends,
    /// a first byte arrives), whichever comes first.
    async fn expired(&self) -> CloseReason {
        loop {
            let changed = self.changed.notified();
            match self.deadline() {
                Some((at, reason)) if at <= Instant::now() => return reason,
                Some((at, _)) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = changed => {}
                    }
                }
                None => changed.await,
            }
        }
    }
}

/// A request in flight on a watched connection.
struct InFlight(Arc<ConnWatch>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let w = &self.0;
        w.idle_since.store(w.now_ms(), Ordering::Relaxed);
        w.in_flight.fetch_sub(1, Ordering::Relaxed);
        w.changed.notify_one();
    }
}

/// The socket, telling its watchdog about every read.
struct Watched<S> {
    inner: S,
    watch: Arc<ConnWatch>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &polled {
            self.watch.read(&buf.filled()[before..]);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[std::io::IoSlice<'_>]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A value replaced while the relay runs (SIGHUP): readers take the
/// current one per use.
pub struct Live<T>(std::sync::RwLock<Arc<T>>);

impl<T> Live<T> {
    pub fn new(value: T) -> Self {
        Self(std::sync::RwLock::new(Arc::new(value)))
    }
    pub fn get(&self) -> Arc<T> {
        self.0.read().expect("live value lock").clone()
    }
    pub fn set(&self, value: T) {
        *self.0.write().expect("live value lock") = Arc::new(value);
    }
}

/// The HTTPS configuration of the listener (`tls.cert_file`/`key_file`),
/// replaced on SIGHUP: new connections get the new certificate, open ones
/// keep theirs.
pub type ServerTls = Arc<Live<rustls::ServerConfig>>;

/// A rustls server config for `listen`: h2 and HTTP/1.1 through ALPN.
pub fn server_tls_config(
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
) -> Result<rustls::ServerConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

/// One accepted connection and what serving it needs.
struct Conn {
    builder: Arc<Builder<TokioExecutor>>,
    router: Router,
    watch: Arc<ConnWatch>,
    peer: std::net::SocketAddr,
    shutdown: CancellationToken,
}

impl Conn {
    /// Serve requests on `stream` until the client leaves, the watchdog
    /// closes it, or shutdown has drained it (idle connections close at
    /// once, in-flight requests finish).
    async fn run<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(self, stream: S) {
        let (router, peer, svc_watch) = (self.router.clone(), self.peer, self.watch.clone());
        let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            let in_flight = svc_watch.request_started(req.version());
            let answer = router.clone().oneshot(req);
            async move {
                let r = answer.await;
                drop(in_flight);
                r
            }
        });
        let io = TokioIo::new(Watched { inner: stream, watch: self.watch.clone() });
        let conn = self.builder.serve_connection_with_upgrades(io, svc);
        tokio::pin!(conn);
        let mut draining = false;
        loop {
            tokio::select! {
                ended = conn.as_mut() => {
                    if let Err(e) = ended {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    return;
                }
                reason = self.watch.expired() => {
                    metrics::counter!(CLOSED, "reason" => reason.as_str()).increment(1);
                    tracing::debug!(peer = %peer.ip(), reason = reason.as_str(), "connection closed by the relay");
                    return;
                }
                _ = self.shutdown.cancelled(), if !draining => {
                    conn.as_mut().graceful_shutdown();
                    draining = true;
                }
            }
        }
    }
}

/// Serve `router` on `listener` (HTTPS when `tls` is given) until
/// `shutdown` is cancelled, then drain. `per_address` = 0 means no
/// per-address cap.
pub async fn serve(listener: TcpListener, router: Router, shutdown: CancellationToken, per_address: u32, tls: Option<ServerTls>) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // hyper's own timer runs from the start of each wait for a request
        // head: the idle bound. The watchdog below does the stricter ones.
        .header_read_timeout(IDLE_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    let builder = Arc::new(builder);
    let connections = tokio_util::task::TaskTracker::new();
    let slots = Arc::new(Semaphore::new(max_connections()));
    let addresses = Arc::new(PerAddress { limit: per_address as usize, open: Mutex::default() });
    for reason in CloseReason::ALL {
        metrics::counter!(CLOSED, "reason" => reason.as_str()).absolute(0);
    }
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(s) => s,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let Some(address_slot) = addresses.take(peer.ip()) else {
            metrics::counter!(CLOSED, "reason" => CloseReason::PerAddressCap.as_str()).increment(1);
            tracing::debug!(peer = %peer.ip(), "too many connections from one address: closed");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = Conn { builder: builder.clone(), router: router.clone(), watch: Arc::new(ConnWatch::new()), peer, shutdown: shutdown.clone() };
        let acceptor = tls.as_ref().map(|t| tokio_rustls::TlsAcceptor::from(t.get()));
        connections.spawn(async move {
            let _slots = (permit, address_slot);
            let Some(acceptor) = acceptor else { return conn.run(stream).await };
            // The handshake counts against the first-request deadline.
            let deadline = conn.watch.accepted + FIRST_REQUEST_TIMEOUT;
            match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
                Ok(Ok(tls_stream)) => conn.run(tls_stream).await,
                Ok(Err(e)) => tracing::debug!(peer = %peer.ip(), error = %e, "TLS handshake failed"),
                Err(_) => {
                    metrics::counter!(CLOSED, "reason" => CloseReason::FirstRequestTimeout.as_str()).increment(1);
                    tracing::debug!(peer = %peer.ip(), "TLS handshake not finished within the first-request deadline");
                }
            }
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_watchdog_knows_each_deadline() {
        let w = Arc::new(ConnWatch::new());
        assert_eq!(w.deadline().unwrap().1, CloseReason::FirstRequestTimeout);
        w.read(b"GET / HTTP/1.1\r\n");
        assert_eq!(w.deadline().unwrap().1, CloseReason::FirstRequestTimeout, "bytes alone do not count");
        let req = w.request_started(hyper::Version::HTTP_11);
        assert!(w.deadline().is_none(), "a request in flight is never cut off here");
        tokio::time::advance(Duration::from_secs(5)).await;
        drop(req);
        let (at, reason) = w.deadline().unwrap();
        assert_eq!(reason, CloseReason::Idle);
        assert_eq!(at, w.accepted + Duration::from_secs(5) + IDLE_TIMEOUT);
        tokio::time::advance(Duration::from_secs(1)).await;
        w.read(b"GE");
        assert_eq!(w.deadline().unwrap(), (w.accepted + Duration::from_secs(6) + HEADER_READ_TIMEOUT, CloseReason::HeaderTimeout));
    }

    #[test]
    fn h2_pings_do_not_start_a_header_timeout() {
        let w = Arc::new(ConnWatch::new());
        w.read(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        drop(w.request_started(hyper::Version::HTTP_2));
        w.read(b"\x00\x00\x08\x06");
        assert_eq!(w.deadline().unwrap().1, CloseReason::Idle);
    }

    #[test]
    fn an_http1_request_with_the_method_pri_keeps_the_header_deadline() {
        let w = Arc::new(ConnWatch::new());
        w.read(b"PRI /x HTTP/1.1\r\nHost: a\r\n\r\n");
        drop(w.request_started(hyper::Version::HTTP_11));
        w.read(b"G");
        assert_eq!(w.deadline().unwrap().1, CloseReason::HeaderTimeout);
    }

    #[test]
    fn the_per_address_cap_counts_open_connections() {
        let t = Arc::new(PerAddress { limit: 2, open: Mutex::default() });
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let a = t.take(ip).unwrap();
        let _b = t.take(ip).unwrap();
        assert!(t.take(ip).is_none());
        assert!(t.take("127.0.0.2".parse().unwrap()).is_some(), "other addresses are not affected");
        let v6 = Arc::new(PerAddress { limit: 2, open: Mutex::default() });
        let _c = v6.take("2001:db8::1".parse().unwrap()).unwrap();
        let _d = v6.take("2001:db8::2".parse().unwrap()).unwrap();
        assert!(v6.take("2001:db8::ffff".parse().unwrap()).is_none(), "one /64 is one address");
        assert!(v6.take("2001:db8:0:1::1".parse().unwrap()).is_some());
        drop(a);
        assert!(t.take(ip).is_some());
    }
}
