//! Concurrent scrapes share one collection and one rendered body, and the
//! collector's health follows their outcomes.
//!
//! A scrape that arrives while a collection runs joins it. Each collection
//! is rendered and compressed once, on the collection thread ([`body`]:
//! what a response holds of it stays bounded).

mod body;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::collect::Collector;
use crate::model::HttpStats;
use crate::output::prometheus::Profile;

pub use body::{BodyError, Encoding, RenderedBody, SharedBody, RETAINED_BODIES};
use body::Bodies;

/// Consecutive failed netlink collections after which /healthz fails.
const UNHEALTHY_AFTER_FAILURES: u64 = 3;

/// What the scrapes that join a collection wait on: `None` until it is
/// done, then its result. A collection task that fails drops the sender
/// without a value, which ends every wait with nothing.
type SharedCollection = watch::Receiver<Option<Arc<RenderedBody>>>;

/// Counters of the HTTP layer itself, served beside the snapshot.
#[derive(Debug, Default)]
pub struct HttpCounters {
    pub connections_displaced: AtomicU64,
    /// /metrics responses sent plain and gzip-compressed.
    pub plain_responses: AtomicU64,
    pub gzip_responses: AtomicU64,
    pub stalled_responses_cut: AtomicU64,
    pub evicted_responses_cut: AtomicU64,
    /// Changes of the web config file that did not load.
    pub web_config_reload_failures: AtomicU64,
}

pub struct Scraper {
    collector: Arc<Collector>,
    in_flight: Mutex<Option<(Instant, SharedCollection)>>,
    ready: AtomicBool,
    consecutive_failures: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// A collection running longer than this is reported as wedged.
    wedged_after: Duration,
    profile: Profile,
    bodies: Bodies,
    pub http: HttpCounters,
}

impl Scraper {
    pub fn new(collector: Arc<Collector>, wedged_after: Duration, profile: Profile) -> Arc<Self> {
        Arc::new(Scraper {
            collector,
            in_flight: Mutex::new(None),
            ready: AtomicBool::new(false),
            consecutive_failures: AtomicU64::new(0),
            last_error: Mutex::new(None),
            wedged_after,
            profile,
            bodies: Bodies::default(),
            http: HttpCounters::default(),
        })
    }

    pub fn http_stats(&self) -> HttpStats {
        HttpStats {
            connections_displaced: self.http.connections_displaced.load(Ordering::Relaxed),
            plain_responses: self.http.plain_responses.load(Ordering::Relaxed),
            gzip_responses: self.http.gzip_responses.load(Ordering::Relaxed),
            stalled_responses_cut: self.http.stalled_responses_cut.load(Ordering::Relaxed),
            evicted_responses_cut: self.http.evicted_responses_cut.load(Ordering::Relaxed),
            web_config_reload_failures: self
                .http
                .web_config_reload_failures
                .load(Ordering::Relaxed),
            retained_bodies: self.bodies.retained() as u64,
        }
    }

    /// Ready once a collection has read netlink successfully.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// `Err(why)` when the collector cannot serve true numbers: a collection
    /// has been running for longer than it ever should, or the last few all
    /// failed to read netlink.
    pub fn health(&self) -> Result<(), String> {
        let slot = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((started, _)) = slot.as_ref() {
            let running = started.elapsed();
            if running > self.wedged_after {
                return Err(format!(
                    "a collection has been running for {:.1}s",
                    running.as_secs_f64()
                ));
            }
        }
        drop(slot);
        let failures = self.consecutive_failures.load(Ordering::Relaxed);
        if failures >= UNHEALTHY_AFTER_FAILURES {
            let error = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
            return Err(format!(
                "the last {failures} netlink collections failed: {}",
                error.as_deref().unwrap_or("unknown error")
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
            // Held while spawning so the task's own clean-up cannot run
            // before its receiver is published in the slot.
            let mut slot = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            match slot.as_ref() {
                Some((_, shared)) => shared.clone(),
                None => {
                    let (done, shared) = watch::channel(None);
                    let scraper = Arc::clone(self);
                    tokio::spawn(async move {
                        if let Some(rendered) = scraper.run_collection().await {
                            done.send_replace(Some(rendered));
                        }
                    });
                    *slot = Some((Instant::now(), shared.clone()));
                    shared
                }
            }
        };
        // Err: the task ended without a result (its sender dropped).
        let result = shared.wait_for(Option::is_some).await;
        result.ok().and_then(|rendered| rendered.clone())
    }

    async fn run_collection(self: Arc<Self>) -> Option<Arc<RenderedBody>> {
        let rendered = self.collect_blocking().await;
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        // If a collection panicked, serve what a failed netlink read would,
        // from a second one, instead of nothing.
        let (rendered, netlink_error) = match rendered {
            Ok(rendered) => rendered,
            Err(error) => {
                tracing::error!(%error, "collection task failed");
                match self.collect_blocking().await {
                    Ok(rendered) => rendered,
                    Err(error) => {
                        tracing::error!(%error, "the second collection failed too");
                        return None;
                    }
                }
            }
        };
        self.record_outcome(netlink_error);
        Some(Arc::new(rendered))
    }

    /// A collection, rendered; the snapshot itself is dropped on the
    /// blocking thread, only its netlink error kept for health.
    async fn collect_blocking(
        &self,
    ) -> Result<(RenderedBody, Option<String>), tokio::task::JoinError> {
        let collector = Arc::clone(&self.collector);
        let (http, profile) = (self.http_stats(), self.profile);
        tokio::task::spawn_blocking(move || {
            let snapshot = collector.collect();
            let rendered = RenderedBody::new(&snapshot, &http, profile);
            (rendered, snapshot.sources.netlink_error)
        })
        .await
    }

    fn record_outcome(&self, netlink_error: Option<String>) {
        match netlink_error {
            None => {
                self.ready.store(true, Ordering::Relaxed);
                self.consecutive_failures.store(0, Ordering::Relaxed);
            }
            Some(error) => {
                self.consecutive_failures.fetch_add(1, Ordering::Relaxed);
                *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
            }
        }
    }

    /// A response body streaming `body` in `encoding`.
    pub fn body(self: &Arc<Self>, body: &Arc<RenderedBody>, encoding: Encoding) -> SharedBody {
        SharedBody::new(self, body, encoding)
    }
}

#[cfg(test)]
mod tests;
