//! Concurrent scrapes share one collection and one rendered body, and what
//! slow readers can pin stays bounded.
//!
//! A scrape that arrives while a collection runs joins it. Each collection
//! is rendered and deflate-compressed once, on the collection thread, and
//! only the compressed stream is kept: a tenth of the text. Every response
//! streams it in small chunks, as gzip (header, the stream, trailer) or
//! inflated on the fly for clients that do not take gzip, holding only a
//! weak reference to it (see [`body`]). The bodies with readers are kept
//! alive here, at most [`RETAINED_BODIES`] of them: when a newer one would
//! exceed that, the oldest is let go and its remaining readers are cut at
//! their next read. So clients that never read pin one chunk each, not a
//! whole body each.

mod body;

use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use hyper::body::Bytes;
use tokio::sync::watch;

use crate::collect::Collector;
use crate::model::{HttpStats, Snapshot};
use crate::output::prometheus::{self, Profile};

pub use body::{BodyError, SharedBody};

/// Bodies with unfinished readers kept at once (a compressed body is about
/// 60 KiB per 1,000 interfaces); more distinct bodies in flight means some
/// client reads far slower than scrapes arrive.
pub const RETAINED_BODIES: usize = 4;
/// Consecutive failed netlink collections after which /healthz fails.
const UNHEALTHY_AFTER_FAILURES: u64 = 3;

/// One collection's Prometheus text, rendered once for every scrape that
/// shares it and kept only as a raw deflate stream (level 1: repetitive
/// exposition text compresses about 10x even at the fastest level).
pub struct Collected {
    /// `collector_collections_total` of this collection.
    pub collections_total: u64,
    deflate: Bytes,
    crc: u32,
    text_len: usize,
}

/// How a response carries the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
}

impl Collected {
    /// Renders and compresses `snapshot` a family at a time; blocks for
    /// milliseconds, so call it off the async workers.
    pub fn new(snapshot: &Snapshot, http: &HttpStats, profile: Profile) -> Self {
        let mut encoder =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut crc = flate2::Crc::new();
        let mut text_len = 0;
        prometheus::render_pieces(snapshot, http, profile, &mut |piece| {
            crc.update(piece.as_bytes());
            text_len += piece.len();
            // Writing into a Vec cannot fail.
            encoder
                .write_all(piece.as_bytes())
                .expect("deflate into memory");
        });
        let deflate = encoder.finish().expect("deflate into memory");
        Collected {
            collections_total: snapshot.sources.collections_total,
            deflate: Bytes::from(deflate),
            crc: crc.sum(),
            text_len,
        }
    }

    /// Length of the response body in `encoding`.
    pub fn len(&self, encoding: Encoding) -> usize {
        match encoding {
            Encoding::Identity => self.text_len,
            Encoding::Gzip => body::GZIP_HEADER.len() + self.deflate.len() + body::GZIP_TRAILER,
        }
    }
}

/// What the scrapes that join a collection wait on: `None` until it is
/// done, then its result. A collection task that fails drops the sender
/// without a value, which ends every wait with nothing.
type SharedCollection = watch::Receiver<Option<Arc<Collected>>>;

/// Counters of the HTTP layer itself, served beside the snapshot.
#[derive(Debug, Default)]
pub struct HttpCounters {
    pub connections_rejected: AtomicU64,
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
    bodies: Arc<BodyRegistry>,
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
            bodies: Arc::new(BodyRegistry::default()),
            http: HttpCounters::default(),
        })
    }

    pub fn http_stats(&self) -> HttpStats {
        HttpStats {
            connections_rejected: self.http.connections_rejected.load(Ordering::Relaxed),
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
    pub async fn collect(self: &Arc<Self>) -> Option<Arc<Collected>> {
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
                        if let Some(collected) = scraper.run_collection().await {
                            done.send_replace(Some(collected));
                        }
                    });
                    *slot = Some((Instant::now(), shared.clone()));
                    shared
                }
            }
        };
        // Err: the task ended without a result (its sender dropped).
        let result = shared.wait_for(Option::is_some).await;
        result.ok().and_then(|collected| collected.clone())
    }

    async fn run_collection(self: Arc<Self>) -> Option<Arc<Collected>> {
        let collected = self.collect_blocking().await;
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        // If a collection panicked, serve what a failed netlink read would,
        // from a second one, instead of nothing.
        let (collected, netlink_error) = match collected {
            Ok(collected) => collected,
            Err(error) => {
                tracing::error!(%error, "collection task failed");
                match self.collect_blocking().await {
                    Ok(collected) => collected,
                    Err(error) => {
                        tracing::error!(%error, "the second collection failed too");
                        return None;
                    }
                }
            }
        };
        self.record_outcome(netlink_error);
        Some(Arc::new(collected))
    }

    /// A collection, rendered; the snapshot itself is dropped on the
    /// blocking thread, only its netlink error kept for health.
    async fn collect_blocking(
        &self,
    ) -> Result<(Collected, Option<String>), tokio::task::JoinError> {
        let collector = Arc::clone(&self.collector);
        let (http, profile) = (self.http_stats(), self.profile);
        tokio::task::spawn_blocking(move || {
            let snapshot = collector.collect();
            let collected = Collected::new(&snapshot, &http, profile);
            (collected, snapshot.sources.netlink_error)
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

    /// A response body streaming `collected` in `encoding`.
    pub fn body(self: &Arc<Self>, collected: &Arc<Collected>, encoding: Encoding) -> SharedBody {
        self.bodies.acquire(collected);
        SharedBody::new(
            collected,
            Arc::clone(&self.bodies),
            Arc::downgrade(self),
            encoding,
        )
    }
}
/// The bodies that have readers, oldest first, each with its reader count.
#[derive(Default)]
pub(crate) struct BodyRegistry {
    live: Mutex<VecDeque<(Arc<Collected>, usize)>>,
}

impl BodyRegistry {
    fn acquire(&self, collected: &Arc<Collected>) {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        match live.iter_mut().find(|(c, _)| Arc::ptr_eq(c, collected)) {
            Some((_, readers)) => *readers += 1,
            None => {
                live.push_back((Arc::clone(collected), 1));
                while live.len() > RETAINED_BODIES {
                    // Its readers hold weak references and are cut on their
                    // next read; its memory is freed now.
                    live.pop_front();
                }
            }
        }
    }

    fn release(&self, collected: &Weak<Collected>) {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(index) = live
            .iter()
            .position(|(c, _)| std::ptr::eq(Arc::as_ptr(c), collected.as_ptr()))
        {
            live[index].1 -= 1;
            if live[index].1 == 0 {
                live.remove(index);
            }
        }
    }

    fn retained(&self) -> usize {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests;
