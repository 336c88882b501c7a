//! Listening sockets, the accept loop and one connection's life.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION};
use hyper::server::conn::http1;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

use super::slots::{Activity, QuietLimits, Slots, Tracked};
use super::stall::StallGuard;
use super::{route, unauthorized, Body, ReloadingWeb, Routes};
use crate::share::Scraper;

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {address}: {source}")]
pub struct ListenError {
    pub address: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

/// Bounds that keep slow, greedy or hostile clients from exhausting the
/// collector: with these, kernel and user memory spent on clients is
/// bounded by the connection count whatever the number of clients.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Open connections served at once; a newcomer beyond them takes the
    /// slot of the connection quiet longest, or waits while all are busy.
    pub max_connections: usize,
    /// A client must send its request headers (and finish a TLS handshake)
    /// within this time.
    pub header_read_timeout: Duration,
    /// Longest life of one connection, keep-alive included.
    pub connection_lifetime: Duration,
    /// Largest request head (line plus headers) read; bigger ones get 431.
    pub max_request_bytes: usize,
    /// A response none of whose bytes the client took for this long is cut.
    pub write_stall_timeout: Duration,
    /// Kernel send and receive buffers per connection (the kernel doubles
    /// both), set on the listening socket so accepted ones inherit them
    /// from the handshake on. Socket memory is kernel memory the client
    /// decides to fill: small buffers times few connections bound it.
    pub send_buffer_bytes: usize,
    pub receive_buffer_bytes: usize,
    /// Completed handshakes the kernel queues before they are accepted.
    pub backlog: i32,
    /// When a quiet connection may be given up for a newcomer.
    pub quiet: QuietLimits,
}

impl ServerLimits {
    /// The main listener: scrapers (an HA pair of Prometheus servers), the
    /// odd `curl`, and whatever else a pod on the node sends.
    pub fn metrics() -> Self {
        ServerLimits {
            max_connections: 32,
            header_read_timeout: Duration::from_secs(5),
            connection_lifetime: Duration::from_secs(300),
            max_request_bytes: 16 * 1024,
            // Prometheus' default scrape timeout: a scraper that has not read
            // anything for that long has given up on this scrape already.
            write_stall_timeout: Duration::from_secs(10),
            // 32 KiB in flight per connection: a gzip scrape of 3,000
            // interfaces (about 200 KiB) in a few round trips.
            send_buffer_bytes: 16 * 1024,
            receive_buffer_bytes: 8 * 1024,
            // While every slot is busy, newcomers wait here, unaccepted. A
            // full queue makes the kernel drop handshakes, and some of those
            // clients are later reset, so it holds a burst of a few hundred
            // scrapers (each queued handshake holds at most its receive
            // buffer: 16 KiB).
            backlog: 256,
            quiet: QuietLimits {
                after_a_request: Duration::from_millis(250),
                before_a_request: Duration::from_secs(1),
            },
        }
    }

    /// The health listener: the kubelet's probes, a few bytes each way.
    pub fn health() -> Self {
        ServerLimits {
            max_connections: 8,
            send_buffer_bytes: 4 * 1024,
            receive_buffer_bytes: 4 * 1024,
            backlog: 64,
            // A probe is a request sent right after connecting and an
            // answer within microseconds: a connection quiet for a tenth
            // of a second is not one.
            quiet: QuietLimits {
                after_a_request: Duration::from_millis(100),
                before_a_request: Duration::from_millis(100),
            },
            ..ServerLimits::metrics()
        }
    }
}

/// One listener and what it serves.
pub struct Endpoint {
    pub listener: std::net::TcpListener,
    pub routes: Routes,
    pub limits: ServerLimits,
    /// The web config file (TLS, basic auth), if any.
    pub web: Option<Arc<ReloadingWeb>>,
}

/// Binds `address` with `limits`' buffer sizes and backlog (before
/// capabilities are dropped, so a privileged port still works).
pub fn bind(
    address: SocketAddr,
    limits: &ServerLimits,
) -> Result<std::net::TcpListener, ListenError> {
    let open = || -> std::io::Result<std::net::TcpListener> {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(address),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        socket.set_reuse_address(true)?;
        socket.set_send_buffer_size(limits.send_buffer_bytes)?;
        socket.set_recv_buffer_size(limits.receive_buffer_bytes)?;
        socket.bind(&address.into())?;
        socket.listen(limits.backlog)?;
        socket.set_nonblocking(true)?;
        Ok(socket.into())
    };
    open().map_err(|source| ListenError { address, source })
}

/// Serves `endpoint` until the future is dropped.
pub async fn serve(scraper: Arc<Scraper>, endpoint: Endpoint) -> std::io::Result<()> {
    let listener = TcpListener::from_std(endpoint.listener)?;
    let site = Arc::new(Site {
        routes: endpoint.routes,
        limits: endpoint.limits,
        web: endpoint.web,
    });
    if let Ok(bound) = listener.local_addr() {
        let paths = match site.routes {
            Routes::All => "/metrics, /healthz, /readyz",
            Routes::Health => "/healthz, /readyz",
        };
        let settings = site.web.as_ref().map(|web| web.in_force());
        let (tls, auth) = settings.map_or((false, false), |settings| {
            (settings.tls.is_some(), settings.auth.is_some())
        });
        let tls = if tls { "https" } else { "http" };
        let auth = if auth { ", basic auth" } else { "" };
        tracing::info!(address = %bound, "serving {paths} ({tls}{auth})");
    }
    let slots = Slots::new(site.limits.max_connections, site.limits.quiet);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (slot, displaced) = slots.wait_for_slot().await;
        if displaced {
            count_rejected(&scraper);
            tracing::debug!(%peer, "connection limit reached, the quietest connection gave way");
        }
        let (scraper, site) = (Arc::clone(&scraper), Arc::clone(&site));
        tokio::spawn(async move {
            let activity = Arc::clone(&slot.activity);
            serve_connection(&scraper, &site, stream, peer.ip(), activity).await;
            drop(slot);
        });
    }
}

fn count_rejected(scraper: &Scraper) {
    scraper
        .http
        .connections_displaced
        .fetch_add(1, Ordering::Relaxed);
}

struct Site {
    routes: Routes,
    limits: ServerLimits,
    web: Option<Arc<ReloadingWeb>>,
}

async fn serve_connection(
    scraper: &Arc<Scraper>,
    site: &Arc<Site>,
    stream: TcpStream,
    peer: IpAddr,
    activity: Arc<Activity>,
) {
    let limits = site.limits;
    let io = StallGuard::new(stream, Arc::clone(&activity));
    let work = async {
        let settings = site
            .web
            .as_ref()
            .map(|web| web.current(&scraper.http.web_config_reload_failures));
        match settings.and_then(|settings| settings.tls.clone()) {
            None => serve_http(scraper, site, io, peer, &activity).await,
            Some(tls) => {
                let handshake = tls.accept(io);
                match tokio::time::timeout(limits.header_read_timeout, handshake).await {
                    Ok(Ok(stream)) => serve_http(scraper, site, stream, peer, &activity).await,
                    Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
                    Err(_) => {
                        activity.mark_cut();
                        tracing::debug!("TLS handshake timed out");
                    }
                }
            }
        }
    };
    // Every cut marks the connection before its socket is dropped, so the
    // socket is reset (see `stall`).
    let lifetime = async {
        tokio::time::sleep(limits.connection_lifetime).await;
        activity.mark_cut();
    };
    tokio::select! {
        _ = work => {}
        _ = lifetime => {}
        _ = activity.stalled_longer_than(limits.write_stall_timeout) => {
            scraper.http.stalled_responses_cut.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("client stopped reading its response, resetting");
        }
        _ = activity.evicted() => {
            tracing::debug!("connection given up for a newer one, resetting");
        }
    }
}

async fn serve_http<S>(
    scraper: &Arc<Scraper>,
    site: &Arc<Site>,
    io: S,
    peer: IpAddr,
    activity: &Arc<Activity>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = {
        let (scraper, site, activity) =
            (Arc::clone(scraper), Arc::clone(site), Arc::clone(activity));
        hyper::service::service_fn(move |request: Request<Incoming>| {
            let (scraper, site, activity) = (
                Arc::clone(&scraper),
                Arc::clone(&site),
                Arc::clone(&activity),
            );
            async move {
                let response = answer(&scraper, &site, peer, &activity, &request).await;
                Ok::<_, Infallible>(response.map(|body| Tracked::new(body, activity)))
            }
        })
    };
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(site.limits.header_read_timeout)
        .max_buf_size(site.limits.max_request_bytes);
    if let Err(error) = builder.serve_connection(TokioIo::new(io), service).await {
        tracing::debug!(%error, "connection ended");
    }
}

/// Credentials first, then the route. A request waiting for its check is
/// quiet, so guesses never pin a slot (see [`Activity::awaits_check`]).
async fn answer(
    scraper: &Arc<Scraper>,
    site: &Site,
    peer: IpAddr,
    activity: &Activity,
    request: &Request<Incoming>,
) -> Response<Body> {
    // Users as the file says now, on a connection opened before a change too.
    let settings = site
        .web
        .as_ref()
        .map(|web| web.current(&scraper.http.web_config_reload_failures));
    if let Some(auth) = settings
        .as_ref()
        .and_then(|settings| settings.auth.as_ref())
    {
        activity.awaits_check();
        let header = request.headers().get(AUTHORIZATION);
        let admitted = auth
            .admits(header.map(HeaderValue::as_bytes), peer, || activity.busy())
            .await;
        if !admitted {
            return unauthorized();
        }
    }
    activity.busy();
    route(scraper, site.routes, request).await
}
