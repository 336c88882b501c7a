//! HTTP surface: `/metrics`, `/healthz`, `/readyz`, on hyper directly.
//!
//! Three read-only paths need no router framework, and owning the accept
//! loop and the connection gives what the scrape path must bound: a
//! connection cap, a header timeout, small socket send buffers, and a cut
//! for responses whose client stopped reading (see [`StallGuard`]).

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body_util::{Either, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ACCEPT_ENCODING, ALLOW, CONTENT_ENCODING, CONTENT_TYPE, VARY};
use hyper::server::conn::http1;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

mod encoding;

use crate::output::prometheus;
use crate::share::{Encoding, Scraper, SharedBody};

pub type Body = Either<SharedBody, Full<Bytes>>;

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {address}: {source}")]
pub struct ListenError {
    pub address: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

/// Bounds that keep slow or greedy clients from exhausting the collector.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Open connections served at once; more are closed on accept.
    pub max_connections: usize,
    /// A client must send its request headers within this time.
    pub header_read_timeout: Duration,
    /// Longest life of one connection, keep-alive included.
    pub connection_lifetime: Duration,
    /// Largest request head (line plus headers) read; bigger ones get 431.
    pub max_request_bytes: usize,
    /// A response none of whose bytes the client took for this long is cut.
    pub write_stall_timeout: Duration,
    /// Kernel send buffer per connection (the kernel doubles it). Socket
    /// memory is charged to the pod's memory cgroup, so a client that never
    /// reads must not be able to park megabytes there.
    pub send_buffer_bytes: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_connections: 512,
            header_read_timeout: Duration::from_secs(5),
            connection_lifetime: Duration::from_secs(300),
            max_request_bytes: 16 * 1024,
            // Prometheus' default scrape timeout: a scraper that has not read
            // anything for that long has given up on this scrape already.
            write_stall_timeout: Duration::from_secs(10),
            send_buffer_bytes: 128 * 1024,
        }
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::from_static(
        body.as_bytes(),
    ))));
    *response.status_mut() = status;
    response
}

/// GET/HEAD on the three paths; other paths 404, other methods 405.
pub async fn route(scraper: &Arc<Scraper>, request: &Request<Incoming>) -> Response<Body> {
    let path = request.uri().path();
    if !matches!(path, "/metrics" | "/healthz" | "/readyz") {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match path {
        "/metrics" => {
            let encoding = if accepts_gzip(request) {
                Encoding::Gzip
            } else {
                Encoding::Identity
            };
            let counter = match encoding {
                Encoding::Gzip => &scraper.http.gzip_responses,
                Encoding::Identity => &scraper.http.plain_responses,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            let Some(collected) = scraper.collect().await else {
                return text(StatusCode::SERVICE_UNAVAILABLE, "the collection failed\n");
            };
            if encoding == Encoding::Gzip {
                let prepare = Arc::clone(&collected);
                // Compression takes milliseconds: off the async workers.
                let _ = tokio::task::spawn_blocking(move || {
                    prepare.encoded(Encoding::Gzip);
                })
                .await;
            }
            let mut response = Response::new(Either::Left(scraper.body(&collected, encoding)));
            let headers = response.headers_mut();
            headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static(prometheus::CONTENT_TYPE),
            );
            headers.insert(VARY, HeaderValue::from_static("accept-encoding"));
            if encoding == Encoding::Gzip {
                headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            }
            response
        }
        "/healthz" => match scraper.health() {
            Ok(()) => text(StatusCode::OK, "ok\n"),
            Err(why) => {
                let mut response = text(StatusCode::SERVICE_UNAVAILABLE, "");
                *response.body_mut() =
                    Either::Right(Full::new(Bytes::from(format!("unhealthy: {why}\n"))));
                response
            }
        },
        _ if scraper.is_ready() => text(StatusCode::OK, "ready\n"),
        _ => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "no successful collection yet\n",
        ),
    }
}

/// Whether the request's `Accept-Encoding` admits gzip.
fn accepts_gzip(request: &Request<Incoming>) -> bool {
    encoding::accepts_gzip(
        request
            .headers()
            .get_all(ACCEPT_ENCODING)
            .iter()
            .filter_map(|value| value.to_str().ok()),
    )
}

/// Binds `address` (before capabilities are dropped, so a privileged port
/// still works).
pub async fn bind(address: SocketAddr) -> Result<TcpListener, ListenError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| ListenError { address, source })
}

/// Serves on `listener` until `shutdown` resolves.
pub async fn serve(
    scraper: Arc<Scraper>,
    listener: TcpListener,
    limits: ServerLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    if let Ok(bound) = listener.local_addr() {
        tracing::info!(address = %bound, "serving /metrics, /healthz, /readyz");
    }
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            scraper
                .http
                .connections_rejected
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, "connection limit reached, closing");
            drop(stream);
            continue;
        };
        let scraper = Arc::clone(&scraper);
        tokio::spawn(async move {
            serve_connection(&scraper, stream, limits).await;
            drop(slot);
        });
    }
}

async fn serve_connection(scraper: &Arc<Scraper>, stream: TcpStream, limits: ServerLimits) {
    if let Err(error) =
        socket2::SockRef::from(&stream).set_send_buffer_size(limits.send_buffer_bytes)
    {
        tracing::debug!(%error, "cannot bound the send buffer");
    }
    let progress = Arc::new(WriteProgress::new());
    let io = TokioIo::new(StallGuard {
        inner: stream,
        progress: Arc::clone(&progress),
    });
    let service = {
        let scraper = Arc::clone(scraper);
        hyper::service::service_fn(move |request: Request<Incoming>| {
            let scraper = Arc::clone(&scraper);
            async move { Ok::<_, Infallible>(route(&scraper, &request).await) }
        })
    };
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_request_bytes);
    let connection = builder.serve_connection(io, service);
    let stalled = progress.stalled_longer_than(limits.write_stall_timeout);
    tokio::select! {
        _ = tokio::time::timeout(limits.connection_lifetime, connection) => {}
        _ = stalled => {
            scraper.http.stalled_responses_cut.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("client stopped reading its response, closing");
        }
    }
}

/// Since when the connection's writes have been waiting for the client.
struct WriteProgress {
    epoch: Instant,
    /// ns since `epoch` plus one when a write began to wait; 0 while none waits.
    waiting_since: AtomicU64,
}

impl WriteProgress {
    fn new() -> Self {
        WriteProgress {
            epoch: Instant::now(),
            waiting_since: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64 + 1
    }

    /// Resolves once writes have been waiting for longer than `limit`.
    async fn stalled_longer_than(&self, limit: Duration) {
        let tick = (limit / 4).max(Duration::from_millis(10));
        loop {
            tokio::time::sleep(tick).await;
            let since = self.waiting_since.load(Ordering::Relaxed);
            if since != 0 && Duration::from_nanos(self.now() - since) > limit {
                return;
            }
        }
    }
}

/// A TCP stream that records when writes began to wait on a client that
/// does not read; hyper has no write timeout of its own.
struct StallGuard {
    inner: TcpStream,
    progress: Arc<WriteProgress>,
}

impl StallGuard {
    fn note<T>(&self, poll: &Poll<T>) {
        match poll {
            Poll::Pending => {
                let _ = self.progress.waiting_since.compare_exchange(
                    0,
                    self.progress.now(),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
            Poll::Ready(_) => self.progress.waiting_since.store(0, Ordering::Relaxed),
        }
    }
}

impl AsyncRead for StallGuard {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for StallGuard {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note(&poll);
        poll
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.note(&poll);
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
