//! Concurrent scrapes share one collection and its rendered body
//! ([`body`]), and the collector's health follows their outcomes.

mod body;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::collect::Collector;
use crate::model::HttpStats;
use crate::output::prometheus::Profile;

pub use body::{BodyError, Encoding, RenderedBody, SharedBody, RETAINED_BODIES};

/// Consecutive failed netlink collections after which /healthz fails.
const UNHEALTHY_AFTER_FAILURES: u64 = 3;

/// Counters of the HTTP layer itself, served beside the snapshot.
#[derive(Debug, Default)]
pub struct HttpCounters {
    pub connections_displaced: AtomicU64,
    /// /metrics responses sent plain and gzip-compressed.
    pub plain_responses: AtomicU64,
    pub gzip_responses: AtomicU64,
    pub stalled_responses_cut: AtomicU64,
    pub evicted_responses_cut: AtomicU64,
    pub web_config_reload_failures: AtomicU64,
}

/// Whether a collection ever read netlink, and the failures since the
/// last one that did.
#[derive(Default)]
struct Outcomes {
    ready: bool,
    failures: u64,
    last_error: Option<String>,
}

/// The collection running, since when, and what the scrapes joining it
/// wait on: `None` until it is done, then its result. A task that fails
/// drops the sender, which ends every wait with nothing.
type InFlight = (Instant, watch::Receiver<Option<Arc<RenderedBody>>>);

pub struct Scraper {
    collector: Arc<Collector>,
    in_flight: Mutex<Option<InFlight>>,
    outcomes: Mutex<Outcomes>,
    /// A collection running longer than this is reported as wedged.
    wedged_after: Duration,
    profile: Profile,
    bodies: body::Bodies,
    pub http: HttpCounters,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Scraper {
    pub fn new(collector: Arc<Collector>, wedged_after: Duration, profile: Profile) -> Arc<Self> {
        Arc::new(Scraper {
            collector,
            in_flight: Mutex::default(),
            outcomes: Mutex::default(),
            wedged_after,
            profile,
            bodies: body::Bodies::default(),
            http: HttpCounters::default(),
        })
    }

    pub fn http_stats(&self) -> HttpStats {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let http = &self.http;
        HttpStats {
            connections_displaced: get(&http.connections_displaced),
            plain_responses: get(&http.plain_responses),
            gzip_responses: get(&http.gzip_responses),
            stalled_responses_cut: get(&http.stalled_responses_cut),
            evicted_responses_cut: get(&http.evicted_responses_cut),
            web_config_reload_failures: get(&http.web_config_reload_failures),
            retained_bodies: self.bodies.retained() as u64,
        }
    }

    /// Ready once a collection has read netlink successfully.
    pub fn is_ready(&self) -> bool {
        lock(&self.outcomes).ready
    }

    /// `Err(why)` when the collector cannot serve true numbers: a collection
    /// has been running for longer than it ever should, or the last few all
    /// failed to read netlink.
    pub fn health(&self) -> Result<(), String> {
        let running = lock(&self.in_flight).as_ref().map(|(at, _)| at.elapsed());
        if let Some(running) = running.filter(|running| *running > self.wedged_after) {
            let running = running.as_secs_f64();
            return Err(format!("a collection has been running for {running:.1}s"));
        }
        let outcomes = lock(&self.outcomes);
        if outcomes.failures >= UNHEALTHY_AFTER_FAILURES {
            let error = outcomes.last_error.as_deref().unwrap_or("unknown error");
            let failures = outcomes.failures;
            return Err(format!(
                "the last {failures} netlink collections failed: {error}"
            ));
        }
        Ok(())
    }

    /// The result of the in-flight collection, or of a new one; `None` only
    /// if the collection task itself failed (it never panics by design).
    ///
    /// The collection runs in a task of its own, so it completes, records
    /// its outcome and clears the slot even when every scrape waiting for
    /// it has gone: a waiter that disconnects strands nothing.
    pub async fn collect(self: &Arc<Self>) -> Option<Arc<RenderedBody>> {
        let mut shared = {
            // Held while spawning, so that the task's own clean-up cannot
            // run before its receiver is published here.
            let mut in_flight = lock(&self.in_flight);
            let (_, shared) = in_flight.get_or_insert_with(|| {
                let (done, shared) = watch::channel(None);
                let scraper = Arc::clone(self);
                tokio::spawn(async move {
                    if let Some(rendered) = scraper.run_collection().await {
                        done.send_replace(Some(rendered));
                    }
                });
                (Instant::now(), shared)
            });
            shared.clone()
        };
        // Err: the task ended without a result (its sender dropped).
        let result = shared.wait_for(Option::is_some).await;
        result.ok().and_then(|rendered| rendered.clone())
    }

    async fn run_collection(self: Arc<Self>) -> Option<Arc<RenderedBody>> {
        let first = self.collect_blocking().await;
        lock(&self.in_flight).take();
        // If a collection panicked, serve what a failed netlink read would,
        // from a second one, instead of nothing.
        let done = match first {
            Err(error) => {
                tracing::error!(%error, "collection task failed");
                self.collect_blocking().await
            }
            done => done,
        };
        let done = done.inspect_err(|error| tracing::error!(%error, "the second one failed too"));
        let (rendered, netlink_error) = done.ok()?;
        let mut outcomes = lock(&self.outcomes);
        outcomes.ready |= netlink_error.is_none();
        outcomes.failures = netlink_error.as_ref().map_or(0, |_| outcomes.failures + 1);
        outcomes.last_error = netlink_error.or(outcomes.last_error.take());
        Some(Arc::new(rendered))
    }

    /// A collection, rendered; the snapshot's interfaces go back to the
    /// collector and the rest is dropped on the blocking thread, only its
    /// netlink error kept for health.
    async fn collect_blocking(
        &self,
    ) -> Result<(RenderedBody, Option<String>), tokio::task::JoinError> {
        let collector = Arc::clone(&self.collector);
        let (http, profile) = (self.http_stats(), self.profile);
        tokio::task::spawn_blocking(move || {
            let snapshot = collector.collect();
            let rendered = RenderedBody::new(&snapshot, &http, profile);
            collector.recycle(snapshot.interfaces);
            (rendered, snapshot.sources.netlink_error)
        })
        .await
    }

    /// A response body streaming `body` in `encoding`.
    pub fn body(self: &Arc<Self>, body: &Arc<RenderedBody>, encoding: Encoding) -> SharedBody {
        SharedBody::new(self, body, encoding)
    }
}

#[cfg(test)]
mod tests;
