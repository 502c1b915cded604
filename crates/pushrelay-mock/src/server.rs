//! The TLS accept loop shared by the mocks: tokio-rustls handshake, then
//! hyper HTTP/2 (APNs) or HTTP/1.1+h2 auto-detection (FCM/OAuth), with a
//! per-connection request counter that can trigger a graceful shutdown
//! (GOAWAY) after N requests, and a "silence" fault: connections open at
//! that moment stop answering without FIN or RST (a NAT or load balancer
//! that forgot them), while new connections are served as usual.

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinSet;

/// What the handler knows about the connection a request came on.
#[derive(Debug)]
pub struct ConnInfo {
    /// 1-based, in accept order.
    pub id: u64,
    /// The negotiated ALPN protocol.
    pub alpn: Option<Vec<u8>>,
    /// Whether the client presented a certificate (already verified against the CA).
    pub client_cert: bool,
    /// Subject of the client certificate if any (raw DER of the leaf).
    pub client_cert_der: Option<Vec<u8>>,
}

pub(crate) type Handler = Arc<dyn Fn(Arc<ConnInfo>, Request<Incoming>) -> BoxFuture<'static, Response<Full<Bytes>>> + Send + Sync>;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    H2Only,
    Auto,
}

/// 127.0.0.1 on a port the kernel picks (tests and benchmarks).
pub(crate) const LOOPBACK_ANY_PORT: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

pub(crate) struct Server {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicU64>,
    /// 0 = never; else every connection is gracefully shut down (GOAWAY)
    /// once it has received this many requests.
    pub goaway_after: Arc<AtomicU64>,
    /// Connections accepted before this many `silence()` calls go silent.
    silenced: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

/// A TCP stream that turns into a black hole once its server is silenced
/// after it was accepted: reads never complete, writes are dropped. The
/// peer sees neither data nor FIN nor RST, as behind a NAT that forgot the
/// connection.
struct Silenceable {
    tcp: tokio::net::TcpStream,
    epoch: u64,
    silenced: Arc<AtomicU64>,
}

impl Silenceable {
    fn silent(&self) -> bool {
        self.silenced.load(Ordering::SeqCst) > self.epoch
    }
}

impl tokio::io::AsyncRead for Silenceable {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.silent() {
            return std::task::Poll::Pending;
        }
        std::pin::Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Silenceable {
    fn poll_write(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>, buf: &[u8]) -> std::task::Poll<std::io::Result<usize>> {
        if self.silent() {
            return std::task::Poll::Ready(Ok(buf.len()));
        }
        std::pin::Pin::new(&mut self.tcp).poll_write(cx, buf)
    }
    fn poll_flush(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        if self.silent() {
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.tcp).poll_flush(cx)
    }
    fn poll_shutdown(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        if self.silent() {
            return std::task::Poll::Pending;
        }
        std::pin::Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    pub async fn start(bind: SocketAddr, tls: rustls::ServerConfig, proto: Protocol, handler: Handler) -> std::io::Result<Server> {
        let listener = TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let connections = Arc::new(AtomicU64::new(0));
        let goaway_after = Arc::new(AtomicU64::new(0));
        let silenced = Arc::new(AtomicU64::new(0));
        let (conns, goaway, silence) = (connections.clone(), goaway_after.clone(), silenced.clone());
        let task = tokio::spawn(async move {
            let mut set = JoinSet::new();
            loop {
                let (tcp, _) = match listener.accept().await {
                    Ok(x) => x,
                    Err(_) => continue,
                };
                let _ = tcp.set_nodelay(true);
                let id = conns.fetch_add(1, Ordering::SeqCst) + 1;
                let (acceptor, handler, goaway) = (acceptor.clone(), handler.clone(), goaway.clone());
                let tcp = Silenceable { tcp, epoch: silence.load(Ordering::SeqCst), silenced: silence.clone() };
                set.spawn(async move {
                    let Ok(stream) = acceptor.accept(tcp).await else { return };
                    let (_, session) = stream.get_ref();
                    let leaf = session.peer_certificates().and_then(|c| c.first()).map(|c| c.as_ref().to_vec());
                    let info = Arc::new(ConnInfo {
                        id,
                        alpn: session.alpn_protocol().map(|p| p.to_vec()),
                        client_cert: leaf.is_some(),
                        client_cert_der: leaf,
                    });
                    serve(stream, info, proto, handler, goaway).await;
                });
                while set.try_join_next().is_some() {}
            }
        });
        Ok(Server { addr, connections, goaway_after, silenced, task })
    }

    /// Every connection open now stops answering, without FIN or RST; new
    /// connections are served as usual.
    pub fn silence_open_connections(&self) {
        self.silenced.fetch_add(1, Ordering::SeqCst);
    }
}

async fn serve(
    stream: tokio_rustls::server::TlsStream<Silenceable>,
    info: Arc<ConnInfo>,
    proto: Protocol,
    handler: Handler,
    goaway_after: Arc<AtomicU64>,
) {
    let count = Arc::new(AtomicU64::new(0));
    let shutdown = Arc::new(Notify::new());
    let svc = {
        let (count, shutdown) = (count.clone(), shutdown.clone());
        hyper::service::service_fn(move |req: Request<Incoming>| {
            let n = count.fetch_add(1, Ordering::SeqCst) + 1;
            let limit = goaway_after.load(Ordering::SeqCst);
            if limit != 0 && n == limit {
                shutdown.notify_one();
            }
            let fut = handler(info.clone(), req);
            async move { Ok::<_, std::convert::Infallible>(fut.await) }
        })
    };
    let io = TokioIo::new(stream);
    match proto {
        Protocol::H2Only => {
            let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new()).max_concurrent_streams(1000).serve_connection(io, svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = shutdown.notified() => conn.as_mut().graceful_shutdown(),
            }
            let _ = conn.await;
        }
        Protocol::Auto => {
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(io, svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = shutdown.notified() => conn.as_mut().graceful_shutdown(),
            }
            let _ = conn.await;
        }
    }
}

/// A response with a body and content type.
pub(crate) fn respond(status: u16, content_type: Option<&str>, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut b = Response::builder().status(status);
    if let Some(ct) = content_type {
        b = b.header("content-type", ct);
    }
    b.body(Full::new(Bytes::from(body))).expect("response")
}

/// `application/x-www-form-urlencoded` decoding of one name or value.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// An `application/x-www-form-urlencoded` body (the OAuth token endpoints).
pub(crate) fn parse_form(body: &[u8]) -> Option<std::collections::HashMap<String, String>> {
    let text = std::str::from_utf8(body).ok()?;
    let mut m = std::collections::HashMap::new();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        m.insert(percent_decode(k)?, percent_decode(v)?);
    }
    Some(m)
}

pub(crate) fn now_s() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Split a compact JWS into (header JSON, claims JSON, signing input, signature b64url).
pub(crate) fn split_jwt(jwt: &str) -> Option<(serde_json::Value, serde_json::Value, String, String)> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let mut parts = jwt.split('.');
    let (h, c, s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let header: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).ok()?).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(c).ok()?).ok()?;
    if !header.is_object() || !claims.is_object() {
        return None;
    }
    Some((header, claims, format!("{h}.{c}"), s.to_string()))
}
