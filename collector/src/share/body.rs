//! One collection's exposition, rendered and gzip-compressed once for every
//! scrape that shares it, and the responses that stream it.
//!
//! Only the gzip member is kept: a tenth of the text. A response copies it
//! out a chunk at a time, as it is for a client that takes gzip, or through
//! flate2's gzip decoder for one that does not; either way it holds a chunk
//! (and a decoder, about 80 KiB), never a body, and only a weak reference to
//! the body. The bodies with readers are kept here, at most
//! [`RETAINED_BODIES`]: a newer one lets the oldest go, and its readers are
//! cut at their next read. So clients that never read pin a chunk each, not
//! a whole body each.

use std::collections::VecDeque;
use std::io::Write;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};

use flate2::write::{GzDecoder, GzEncoder};
use hyper::body::{Bytes, Frame, SizeHint};

use super::Scraper;
use crate::model::{HttpStats, Snapshot};
use crate::output::prometheus::{self, Profile};

/// Bodies with unfinished readers kept at once (gzip is about 60 KiB per
/// 1,000 interfaces); more distinct bodies in flight means some client
/// reads far slower than scrapes arrive.
pub const RETAINED_BODIES: usize = 4;
/// What a response produces at a time: what one stalled client pins.
const CHUNK_BYTES: usize = 16 * 1024;
/// Compressed bytes fed to a decoder at a time (about 10 KiB of text).
const GUNZIP_INPUT_BYTES: usize = 1024;

/// One collection's Prometheus text, rendered once for every scrape that
/// shares it and kept only as gzip (level 1: repetitive exposition text
/// compresses about 10x even at the fastest level).
pub struct RenderedBody {
    /// `collector_collections_total` of this collection.
    pub collections_total: u64,
    gzip: Vec<u8>,
    text_len: usize,
}

/// How a response carries the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
}

impl RenderedBody {
    /// Renders and compresses `snapshot` a family at a time; blocks for
    /// milliseconds, so call it off the async workers.
    pub fn new(snapshot: &Snapshot, http: &HttpStats, profile: Profile) -> Self {
        let mut gzip = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut text_len = 0;
        prometheus::render_pieces(snapshot, http, profile, &mut |piece| {
            text_len += piece.len();
            // Writing into a Vec cannot fail.
            gzip.write_all(piece.as_bytes()).expect("gzip into memory");
        });
        RenderedBody {
            collections_total: snapshot.sources.collections_total,
            gzip: gzip.finish().expect("gzip into memory"),
            text_len,
        }
    }

    /// Length of the response body in `encoding`.
    pub fn len(&self, encoding: Encoding) -> usize {
        match encoding {
            Encoding::Identity => self.text_len,
            Encoding::Gzip => self.gzip.len(),
        }
    }
}

/// The bodies that responses are reading, oldest first.
#[derive(Default)]
pub struct Bodies(Mutex<VecDeque<Arc<RenderedBody>>>);

impl Bodies {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<RenderedBody>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A reader's hold on `body`, which is kept from now on in place of the
    /// oldest beyond [`RETAINED_BODIES`]: its readers hold weak references
    /// and are cut at their next read; its memory is freed now.
    fn read(&self, body: &Arc<RenderedBody>) -> Weak<RenderedBody> {
        let mut kept = self.lock();
        // Bodies whose readers are all done, and this one, leave their place.
        kept.retain(|old| Arc::weak_count(old) > 0 && !Arc::ptr_eq(old, body));
        kept.push_back(Arc::clone(body));
        if kept.len() > RETAINED_BODIES {
            kept.pop_front();
        }
        Arc::downgrade(body)
    }

    /// Bodies kept that still have readers.
    pub fn retained(&self) -> usize {
        let kept = self.lock();
        kept.iter().filter(|body| Arc::weak_count(body) > 0).count()
    }
}

/// Why a response ended before its last byte.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("response body evicted: this client read slower than {RETAINED_BODIES} newer scrapes")]
    Evicted,
    #[error("the shared body does not decompress: {0}")]
    Gunzip(#[from] std::io::Error),
}

/// A response streaming a shared body in copied chunks.
pub struct SharedBody {
    body: Weak<RenderedBody>,
    scraper: Weak<Scraper>,
    /// Bytes of the gzip member taken so far, and of the response to come.
    taken: usize,
    left: usize,
    /// Identity only: what decompresses the gzip member.
    gunzip: Option<Box<GzDecoder<Vec<u8>>>>,
}

impl SharedBody {
    /// A response carrying `body` in `encoding`.
    pub(super) fn new(scraper: &Arc<Scraper>, body: &Arc<RenderedBody>, encoding: Encoding) -> Self {
        SharedBody {
            body: scraper.bodies.read(body),
            scraper: Arc::downgrade(scraper),
            taken: 0,
            left: body.len(encoding),
            gunzip: (encoding == Encoding::Identity).then(|| Box::new(GzDecoder::new(Vec::new()))),
        }
    }

    fn next_chunk(&mut self, gzip: &[u8]) -> std::io::Result<Bytes> {
        let Some(gunzip) = &mut self.gunzip else {
            let end = (self.taken + CHUNK_BYTES).min(gzip.len());
            let chunk = Bytes::copy_from_slice(&gzip[self.taken..end]);
            self.taken = end;
            return Ok(chunk);
        };
        while gunzip.get_ref().len() < CHUNK_BYTES && self.taken < gzip.len() {
            let end = (self.taken + GUNZIP_INPUT_BYTES).min(gzip.len());
            gunzip.write_all(&gzip[self.taken..end])?;
            self.taken = end;
        }
        if self.taken == gzip.len() {
            // Checks the CRC and length of the trailer too.
            gunzip.try_finish()?;
        } else {
            gunzip.flush()?;
        }
        Ok(Bytes::from(std::mem::take(gunzip.get_mut())))
    }
}

impl hyper::body::Body for SharedBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let Some(body) = self.body.upgrade() else {
            if let Some(scraper) = self.scraper.upgrade() {
                let cut = &scraper.http.evicted_responses_cut;
                cut.fetch_add(1, Ordering::Relaxed);
            }
            return Poll::Ready(Some(Err(BodyError::Evicted)));
        };
        let chunk = match self.next_chunk(&body.gzip) {
            // Never by construction, but a short body must not spin.
            Ok(chunk) if chunk.is_empty() => Err(std::io::ErrorKind::UnexpectedEof.into()),
            other => other,
        };
        Poll::Ready(Some(match chunk {
            Ok(chunk) => {
                self.left = self.left.saturating_sub(chunk.len());
                Ok(Frame::data(chunk))
            }
            Err(error) => Err(error.into()),
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left as u64)
    }
}
