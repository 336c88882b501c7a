//! Listening sockets, the accept loop and one connection's life.
//!
//! hyper reads request heads within a deadline and bounds their size. The
//! rest, which no crate offers, is here: a connection is cut when its slot
//! goes to a newcomer ([`Slots`]), when its client took nothing of a
//! response for [`STALL_TIMEOUT`] (hyper has no write timeout), or at the end
//! of its [`LIFETIME`]; a cut resets it (`SO_LINGER` 0), freeing its kernel
//! buffers at once, and so does an error with bytes still queued. One that
//! ends well is closed once its client has acknowledged every byte, so it
//! leaves no orphan holding buffers either.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

use super::slots::{Conn, Phase, QuietLimits, Slot, Slots};
use super::{answer, ReloadingWeb, Routes};
use crate::share::Scraper;

/// A request head (and a TLS handshake) must arrive within this time, and
/// fit in [`MAX_HEAD_BYTES`] (431 beyond).
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Longest life of one connection, keep-alive included.
const LIFETIME: Duration = Duration::from_secs(300);
/// Prometheus' default scrape timeout: a scraper that has taken nothing for
/// that long has given up on this scrape already.
const STALL_TIMEOUT: Duration = Duration::from_secs(10);

/// What bounds one listener's clients: the kernel and user memory they
/// cost is bounded by the connection count, whatever their number.
struct Limits {
    /// Connections served at once (see [`Slots`]).
    connections: usize,
    /// Kernel send and receive buffers per connection (the kernel doubles
    /// both), set on the listening socket so that accepted ones have them
    /// from the handshake on.
    buffers: (usize, usize),
    /// Handshakes the kernel queues while every slot is busy.
    backlog: i32,
    quiet: QuietLimits,
}

impl Routes {
    /// The main listener serves scrapers (an HA pair of Prometheus), the odd
    /// `curl` and whatever else a pod sends: 32 KiB in flight moves a gzip
    /// scrape of 3,000 interfaces (200 KiB) in a few round trips, and the
    /// backlog holds a burst of a few hundred scrapers. The health listener
    /// serves the kubelet's probes, sent at once, answered within microseconds.
    fn limits(self) -> Limits {
        let ms = Duration::from_millis;
        match self {
            Routes::All => Limits {
                connections: 32,
                buffers: (16 << 10, 8 << 10),
                backlog: 256,
                quiet: QuietLimits {
                    after_a_request: ms(250),
                    before_a_request: ms(1000),
                },
            },
            Routes::Health => Limits {
                connections: 8,
                buffers: (4 << 10, 4 << 10),
                backlog: 64,
                quiet: QuietLimits {
                    after_a_request: ms(100),
                    before_a_request: ms(100),
                },
            },
        }
    }
}

/// One listener, what it serves, and the web config file (TLS, basic auth).
pub struct Endpoint {
    pub listener: std::net::TcpListener,
    pub routes: Routes,
    pub web: Option<Arc<ReloadingWeb>>,
}

/// Binds `address` with the buffer sizes and backlog of `routes`' listener
/// (before capabilities are dropped, so a privileged port still works).
pub fn bind(address: SocketAddr, routes: Routes) -> std::io::Result<std::net::TcpListener> {
    let limits = routes.limits();
    let open = || -> std::io::Result<std::net::TcpListener> {
        let domain = socket2::Domain::for_address(address);
        let socket = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        socket.set_send_buffer_size(limits.buffers.0)?;
        socket.set_recv_buffer_size(limits.buffers.1)?;
        socket.bind(&address.into())?;
        socket.listen(limits.backlog)?;
        socket.set_nonblocking(true)?;
        Ok(socket.into())
    };
    let context = |e: std::io::Error| format!("cannot listen on {address}: {e}");
    open().map_err(|e| std::io::Error::new(e.kind(), context(e)))
}

/// What the connections of one listener share.
pub(super) struct Site {
    pub scraper: Arc<Scraper>,
    pub routes: Routes,
    pub web: Option<Arc<ReloadingWeb>>,
}

/// Serves `endpoint` until the future is dropped.
pub async fn serve(scraper: Arc<Scraper>, endpoint: Endpoint) -> std::io::Result<()> {
    let (routes, web) = (endpoint.routes, endpoint.web);
    let listener = TcpListener::from_std(endpoint.listener)?;
    let settings = web.as_ref().map(|web| web.in_force());
    let tls = settings.as_ref().is_some_and(|s| s.tls.is_some());
    let basic_auth = settings.is_some_and(|s| s.auth.is_some());
    let address = listener.local_addr()?;
    tracing::info!(%address, tls, basic_auth, "serving {}", routes.paths().join(", "));
    let limits = routes.limits();
    let slots = Slots::new(limits.connections, limits.quiet);
    let site = Arc::new(Site {
        scraper,
        routes,
        web,
    });
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
        let (slot, displaced) = slots.take().await;
        if displaced {
            let displaced = &site.scraper.http.connections_displaced;
            displaced.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, "every slot taken: the quietest connection gave way");
        }
        tokio::spawn(connection(Arc::clone(&site), stream, peer.ip(), slot));
    }
}

/// One connection, from its slot to its close.
async fn connection(site: Arc<Site>, stream: TcpStream, peer: IpAddr, slot: Slot) {
    // The socket's own descriptor, beside the stream hyper owns: what
    // closes the connection, however it ended.
    let Ok(socket) = stream.as_fd().try_clone_to_owned() else {
        return;
    };
    let (conn, http) = (&slot.conn, &site.scraper.http);
    let web = site
        .web
        .as_ref()
        .map(|web| web.current(&http.web_config_reload_failures));
    let ended = async {
        let served = match web.and_then(|web| web.tls.clone()) {
            None => serve_http(&site, Box::new(stream), peer, conn).await,
            Some(tls) => match tokio::time::timeout(HEAD_TIMEOUT, tls.accept(stream)).await {
                Ok(Ok(tls)) => serve_http(&site, Box::new(tls), peer, conn).await,
                Ok(Err(error)) => Err(error.to_string()),
                Err(_) => Err("TLS handshake timed out".to_string()),
            },
        };
        match served {
            Ok(()) => drained(&socket, conn).await,
            Err(error) => tracing::debug!(%error, "connection failed"),
        }
    };
    let cut = tokio::select! {
        () = ended => false,
        () = tokio::time::sleep(LIFETIME) => true,
        () = conn.stalled(STALL_TIMEOUT) => {
            http.stalled_responses_cut.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("client stopped reading its response, resetting");
            true
        }
        () = conn.displaced() => {
            tracing::debug!("connection given up for a newer one, resetting");
            true
        }
    };
    if cut || unsent_bytes(&socket) > 0 {
        if let Err(error) = socket2::SockRef::from(&socket).set_linger(Some(Duration::ZERO)) {
            tracing::debug!(%error, "cannot set SO_LINGER 0; the close may leave an orphan");
        }
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// HTTP on `io`; `Err` when it ended on an error (a timeout, a malformed
/// request, a response cut short), its last bytes then not worth waiting for.
async fn serve_http(
    site: &Arc<Site>,
    io: Box<dyn Io>,
    peer: IpAddr,
    conn: &Arc<Conn>,
) -> Result<(), String> {
    let (site, conn) = (Arc::clone(site), Arc::clone(conn));
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let (site, conn) = (Arc::clone(&site), Arc::clone(&conn));
        async move {
            let response = answer(&site, peer, &conn, &request).await;
            conn.set(Phase::Client);
            // Each chunk the client has room for is progress.
            let response = response.map(|body| {
                body.map_frame(move |frame| {
                    conn.set(Phase::Client);
                    frame
                })
            });
            Ok::<_, Infallible>(response)
        }
    });
    let served = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES)
        .serve_connection(TokioIo::new(io), service)
        .await;
    served.map_err(|error| error.to_string())
}

/// Waits until the client has acknowledged every byte sent, the end of
/// the stream included. Each byte it takes is progress, so only a client
/// that stopped reading stalls here (and is cut).
async fn drained(socket: &OwnedFd, conn: &Conn) {
    let (mut queued, mut pause) = (usize::MAX, Duration::from_millis(1));
    loop {
        let now = unsent_bytes(socket);
        if now < queued {
            conn.set(Phase::Client);
        }
        if now == 0 {
            return;
        }
        // Soon at first: on a LAN the last bytes are acknowledged within a
        // millisecond, and the slot is held meanwhile.
        tokio::time::sleep(pause).await;
        (queued, pause) = (now, (pause * 2).min(Duration::from_millis(20)));
    }
}

/// Bytes in the socket's send queue that the peer has not acknowledged.
fn unsent_bytes(socket: &OwnedFd) -> usize {
    let mut queued: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one int through the pointer,
    // which points at a live c_int; the fd is owned by `socket`.
    let result = unsafe { libc::ioctl(socket.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
    usize::try_from(queued)
        .ok()
        .filter(|_| result == 0)
        .unwrap_or(0)
}
