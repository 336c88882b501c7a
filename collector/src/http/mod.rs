//! HTTP surface on hyper directly: `/metrics`, `/healthz`, `/readyz` on the
//! main listener (optionally TLS and basic auth), and `/healthz`, `/readyz`
//! alone on a health listener of their own for the kubelet's probes.
//!
//! Three read-only paths need no router framework, and owning the accept
//! loop and the connection gives what a port every pod can reach must
//! bound: a few connections, each with small kernel buffers, the one quiet
//! longest given up for a newcomer ([`slots`]), header and stall timeouts,
//! and resets instead of orphaned sockets ([`stall`]).

mod auth;
mod encoding;
mod server;
mod slots;
mod stall;
mod tls;
mod turns;
mod web;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use http_body_util::{Either, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{
    HeaderValue, ACCEPT_ENCODING, ALLOW, CONTENT_ENCODING, CONTENT_TYPE, VARY, WWW_AUTHENTICATE,
};
use hyper::{Method, Request, Response, StatusCode};

pub use server::{bind, serve, Endpoint, ListenError, ServerLimits};
pub use tls::TlsError;
pub use web::{ReloadingWeb, WebError};

use crate::output::prometheus;
use crate::share::{Encoding, Scraper, SharedBody};

pub type Body = Either<SharedBody, Full<Bytes>>;

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routes {
    /// `/metrics`, `/healthz` and `/readyz`.
    All,
    /// `/healthz` and `/readyz` only: the kubelet's probes.
    Health,
}

impl Routes {
    fn serves(self, path: &str) -> bool {
        match self {
            Routes::All => matches!(path, "/metrics" | "/healthz" | "/readyz"),
            Routes::Health => matches!(path, "/healthz" | "/readyz"),
        }
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Either::Right(Full::new(body.into())));
    *response.status_mut() = status;
    response
}

/// The answer to a request whose credentials did not pass.
fn unauthorized() -> Response<Body> {
    let mut response = text(StatusCode::UNAUTHORIZED, "unauthorized\n");
    response.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"collector\""),
    );
    response
}

/// GET or HEAD on the listener's paths, once admitted (basic auth comes
/// first, on every path, as in exporter-toolkit: see `server`); other paths
/// 404, other methods 405.
pub async fn route(
    scraper: &Arc<Scraper>,
    routes: Routes,
    request: &Request<Incoming>,
) -> Response<Body> {
    let path = request.uri().path();
    if !routes.serves(path) {
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
        "/metrics" => metrics(scraper, request).await,
        "/healthz" => match scraper.health() {
            Ok(()) => text(StatusCode::OK, "ok\n"),
            Err(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("unhealthy: {why}\n"),
            ),
        },
        _ if scraper.is_ready() => text(StatusCode::OK, "ready\n"),
        _ => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "no successful collection yet\n",
        ),
    }
}

async fn metrics(scraper: &Arc<Scraper>, request: &Request<Incoming>) -> Response<Body> {
    let gzip = encoding::accepts_gzip(
        request
            .headers()
            .get_all(ACCEPT_ENCODING)
            .iter()
            .filter_map(|value| value.to_str().ok()),
    );
    let (encoding, counter) = if gzip {
        (Encoding::Gzip, &scraper.http.gzip_responses)
    } else {
        (Encoding::Identity, &scraper.http.plain_responses)
    };
    // HEAD is answered from the headers alone: a collection (eBPF map
    // reads, a netlink dump, pod identity) only to count a body that is
    // never sent would let any client trigger them for free. The length
    // is left out, as RFC 9110 allows for values known only once the
    // content is made.
    let mut response = if request.method() == Method::HEAD {
        Response::new(Either::Right(Full::new(Bytes::new())))
    } else {
        counter.fetch_add(1, Ordering::Relaxed);
        let Some(collected) = scraper.collect().await else {
            return text(StatusCode::SERVICE_UNAVAILABLE, "the collection failed\n");
        };
        Response::new(Either::Left(scraper.body(&collected, encoding)))
    };
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
