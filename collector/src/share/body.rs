//! One collection's exposition, rendered and gzip-compressed once for
//! every scrape that shares it (level 1: repetitive text shrinks tenfold
//! even so), and the responses that stream it.
//!
//! A response copies the gzip member out a chunk at a time, as it is or
//! through flate2's gzip decoder for a client that does not take gzip: it
//! holds a chunk (and a decoder, about 45 KiB), never a body, and only a
//! weak reference to the body. The newest [`RETAINED_BODIES`] bodies with
//! readers are kept; an older one is let go, and its readers are cut at
//! their next read. So clients that never read pin a chunk each.

use std::collections::VecDeque;
use std::io::{BufRead, Read, Write};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};

use flate2::bufread::GzDecoder;
use flate2::write::GzEncoder;
use hyper::body::{Bytes, Frame};

use super::Scraper;
use crate::model::{HttpStats, Snapshot};
use crate::output::prometheus::{self, Profile};

/// Bodies with unfinished readers kept at once (about 60 KiB per 1,000
/// interfaces each): more means some client reads far slower than scrapes
/// arrive.
pub const RETAINED_BODIES: usize = 4;
/// What a response produces at a time: what one stalled client pins.
const CHUNK_BYTES: usize = 16 * 1024;

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
            gzip.write_all(piece.as_bytes()).expect("gzip into memory");
        });
        let mut gzip = gzip.finish().expect("gzip into memory");
        gzip.shrink_to_fit();
        let collections_total = snapshot.sources.collections_total;
        RenderedBody {
            collections_total,
            gzip,
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

/// The bodies responses are reading, oldest first.
#[derive(Default)]
pub struct Bodies(Mutex<VecDeque<Arc<RenderedBody>>>);

impl Bodies {
    /// A new reader's hold on `body`, kept from now on in place of the
    /// oldest beyond [`RETAINED_BODIES`] (freed at once).
    fn read(&self, body: &Arc<RenderedBody>) -> Weak<RenderedBody> {
        let mut kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
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
        let kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
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
    /// Bytes of the response still to come, and (gzip) of the body taken.
    left: usize,
    taken: usize,
    /// Identity only: what decompresses the body (flate2 keeps no buffer
    /// beside its 32 KiB window).
    gunzip: Option<Box<GzDecoder<Source>>>,
}

/// The body as a decoder reads it, held only while a chunk is read.
struct Source(Option<Arc<RenderedBody>>, usize);

impl Read for Source {
    fn read(&mut self, into: &mut [u8]) -> std::io::Result<usize> {
        let read = self.fill_buf()?.read(into)?;
        self.consume(read);
        Ok(read)
    }
}

impl BufRead for Source {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        // Only flate2's header parser reads before a body is held: it
        // tries again at the first chunk.
        let body = self.0.as_ref().ok_or(std::io::ErrorKind::WouldBlock)?;
        Ok(&body.gzip[self.1..])
    }

    fn consume(&mut self, read: usize) {
        self.1 += read;
    }
}

impl SharedBody {
    pub(super) fn new(scraper: &Arc<Scraper>, body: &Arc<RenderedBody>, how: Encoding) -> Self {
        let identity = how == Encoding::Identity;
        SharedBody {
            body: scraper.bodies.read(body),
            scraper: Arc::downgrade(scraper),
            left: body.len(how),
            taken: 0,
            gunzip: identity.then(|| Box::new(GzDecoder::new(Source(None, 0)))),
        }
    }

    fn next_chunk(&mut self, body: Arc<RenderedBody>) -> std::io::Result<Bytes> {
        let want = CHUNK_BYTES.min(self.left);
        let Some(gunzip) = &mut self.gunzip else {
            let chunk = Bytes::copy_from_slice(&body.gzip[self.taken..][..want]);
            self.taken += want;
            return Ok(chunk);
        };
        let mut chunk = Vec::with_capacity(want);
        gunzip.get_mut().0 = Some(body);
        let read = gunzip.by_ref().take(want as u64).read_to_end(&mut chunk);
        gunzip.get_mut().0 = None;
        read.map(|_| Bytes::from(chunk))
    }
}

impl hyper::body::Body for SharedBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let Some(body) = self.body.upgrade() else {
            if let Some(scraper) = self.scraper.upgrade() {
                let evicted = &scraper.http.evicted_responses_cut;
                evicted.fetch_add(1, Ordering::Relaxed);
            }
            return Poll::Ready(Some(Err(BodyError::Evicted)));
        };
        let chunk = match self.next_chunk(body) {
            // Never by construction, but a short body must not spin.
            Ok(chunk) if chunk.is_empty() => Err(std::io::ErrorKind::UnexpectedEof.into()),
            chunk => chunk,
        };
        let frame = chunk.map(|chunk| {
            self.left = self.left.saturating_sub(chunk.len());
            Frame::data(chunk)
        });
        Poll::Ready(Some(frame.map_err(BodyError::from)))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }
}
