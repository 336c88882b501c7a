//! HTTP on hyper: `/metrics`, `/healthz`, `/readyz` on the main listener
//! (optionally TLS and basic auth), and `/healthz`, `/readyz` alone on a
//! health listener of their own for the kubelet's probes. Three read-only
//! paths need no router; what a port every pod can reach must bound is in
//! [`server`] and [`slots`].

mod auth;
mod server;
mod slots;
mod tls;
mod turns;
mod web;

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use http_body_util::{Either, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

pub use server::{bind, serve, Endpoint};
pub use tls::TlsError;
pub use web::{ReloadingWeb, WebError};

use crate::output::prometheus;
use crate::share::{Encoding, Scraper, SharedBody};
use server::Site;
use slots::{Conn, Phase};

pub type Body = Either<SharedBody, Full<Bytes>>;

/// What a listener serves: `/metrics`, `/healthz` and `/readyz`, or the
/// latter two only (the kubelet's probes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routes {
    All,
    Health,
}

impl Routes {
    fn paths(self) -> &'static [&'static str] {
        match self {
            Routes::All => &["/metrics", "/healthz", "/readyz"],
            Routes::Health => &["/healthz", "/readyz"],
        }
    }
}

/// A short text response. Lengths are stated: bodies reach hyper behind a
/// wrapper that counts their chunks and hides their size.
fn text(status: StatusCode, body: impl Into<Bytes>, headers: Headers) -> Response<Body> {
    let body: Bytes = body.into();
    let mut response = Response::builder().status(status);
    response = response.header(header::CONTENT_LENGTH, body.len());
    for (name, value) in headers {
        response = response.header(name, *value);
    }
    response
        .body(Either::Right(Full::new(body)))
        .expect("valid headers")
}

type Headers<'a> = &'a [(header::HeaderName, &'static str)];

/// Credentials first, on every path as in exporter-toolkit, then the
/// route. A request waiting for its turn at a check is quiet, so guesses
/// never pin a slot ([`slots`]).
async fn answer(
    site: &Site,
    peer: IpAddr,
    conn: &Conn,
    request: &Request<Incoming>,
) -> Response<Body> {
    let scraper = &site.scraper;
    // Users as the file says now, on a connection opened before a change too.
    let failures = &scraper.http.web_config_reload_failures;
    let settings = site.web.as_ref().map(|web| web.current(failures));
    if let Some(auth) = settings.as_ref().and_then(|s| s.auth.as_ref()) {
        conn.set(Phase::Request);
        let header = request.headers().get(header::AUTHORIZATION);
        let header = header.map(HeaderValue::as_bytes);
        if !auth.admits(header, peer, || conn.set(Phase::Busy)).await {
            let challenge = [(header::WWW_AUTHENTICATE, "Basic realm=\"collector\"")];
            return text(StatusCode::UNAUTHORIZED, "unauthorized\n", &challenge);
        }
    }
    conn.set(Phase::Busy);
    let path = request.uri().path();
    if !site.routes.paths().contains(&path) {
        return text(StatusCode::NOT_FOUND, "not found\n", &[]);
    }
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        let allow = [(header::ALLOW, "GET, HEAD")];
        let not_allowed = StatusCode::METHOD_NOT_ALLOWED;
        return text(not_allowed, "method not allowed\n", &allow);
    }
    let unavailable = StatusCode::SERVICE_UNAVAILABLE;
    match path {
        "/metrics" => metrics(scraper, request).await,
        "/healthz" => match scraper.health() {
            Ok(()) => text(StatusCode::OK, "ok\n", &[]),
            Err(why) => text(unavailable, format!("unhealthy: {why}\n"), &[]),
        },
        _ if scraper.is_ready() => text(StatusCode::OK, "ready\n", &[]),
        _ => text(unavailable, "no successful collection yet\n", &[]),
    }
}

async fn metrics(scraper: &Arc<Scraper>, request: &Request<Incoming>) -> Response<Body> {
    let accepted = request.headers().get_all(header::ACCEPT_ENCODING);
    let gzip = accepts_gzip(accepted.iter().filter_map(|value| value.to_str().ok()));
    let (encoding, counter) = match gzip {
        true => (Encoding::Gzip, &scraper.http.gzip_responses),
        false => (Encoding::Identity, &scraper.http.plain_responses),
    };
    let mut response = Response::builder()
        .header(header::CONTENT_TYPE, prometheus::CONTENT_TYPE)
        .header(header::VARY, "accept-encoding");
    if gzip {
        response = response.header(header::CONTENT_ENCODING, "gzip");
    }
    // HEAD is answered from the headers alone: a collection (eBPF map
    // reads, a netlink dump, pod identity) only to count a body never sent
    // would let any client trigger them for free. Its length is left out,
    // as RFC 9110 allows for values known only once the content is made.
    if request.method() == Method::HEAD {
        return response
            .body(Either::Right(Full::default()))
            .expect("valid headers");
    }
    counter.fetch_add(1, Ordering::Relaxed);
    let Some(rendered) = scraper.collect().await else {
        let failed = "the collection failed\n";
        return text(StatusCode::SERVICE_UNAVAILABLE, failed, &[]);
    };
    let response = response.header(header::CONTENT_LENGTH, rendered.len(encoding));
    let body = scraper.body(&rendered, encoding);
    response.body(Either::Left(body)).expect("valid headers")
}

/// Whether `Accept-Encoding` (its values are one comma-separated list)
/// takes gzip (RFC 9110 §12.5.3): `gzip` or `x-gzip` with a weight above 0,
/// or `*` when gzip is not named, and no lower than `identity`'s (gzip wins
/// a tie: it costs the network less). A malformed weight voids its entry.
fn accepts_gzip<'a>(values: impl IntoIterator<Item = &'a str>) -> bool {
    // The weights of gzip, identity and `*`, the highest where one repeats.
    let mut weights = [None::<f32>; 3];
    for entry in values.into_iter().flat_map(|value| value.split(',')) {
        let mut parts = entry.split(';').map(str::trim);
        let coding = parts.next().unwrap_or_default().to_ascii_lowercase();
        let coding = if coding == "x-gzip" { "gzip" } else { &coding };
        let Some(slot) = ["gzip", "identity", "*"].iter().position(|c| *c == coding) else {
            continue;
        };
        let mut q = parts.filter_map(|p| p.strip_prefix("q=").or(p.strip_prefix("Q=")));
        let weight = match q.next_back().map(str::parse::<f32>) {
            None => 1.0,
            Some(Ok(q)) if (0.0..=1.0).contains(&q) => q,
            Some(_) => continue,
        };
        weights[slot] = Some(weights[slot].map_or(weight, |w| w.max(weight)));
    }
    let [gzip, identity, any] = weights;
    let gzip = gzip.or(any).unwrap_or(0.0);
    gzip > 0.0 && gzip >= identity.or(any).unwrap_or(0.0)
}

#[cfg(test)]
mod tests;
