//! A response streaming a shared, compressed body in small chunks: as gzip
//! (a fixed header, the collection's deflate stream, the trailer), or
//! inflated on the fly for a client that does not take gzip. Either way a
//! response holds one chunk and, for identity, one inflate state (about
//! 40 KiB), never a whole body.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use flate2::{Decompress, FlushDecompress, Status};
use hyper::body::{Bytes, Frame, SizeHint};

use super::{BodyRegistry, Collected, Encoding, Scraper, RETAINED_BODIES};

/// Size of the chunks a response streams: what one stalled client pins.
const CHUNK_BYTES: usize = 32 * 1024;
/// RFC 1952 member header: deflate, no flags, no mtime, OS unknown.
pub(super) const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
/// CRC-32 and length of the text, both little-endian.
pub(super) const GZIP_TRAILER: usize = 8;

/// Why a response ended before its last byte.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("response body evicted: this client read slower than {RETAINED_BODIES} newer scrapes")]
    Evicted,
    #[error("the shared body does not inflate: {0}")]
    Corrupt(#[from] flate2::DecompressError),
    #[error("the shared body ended {0} bytes early")]
    Truncated(usize),
}

/// A response streaming a shared body in copied chunks.
pub struct SharedBody {
    collected: Weak<Collected>,
    registry: Arc<BodyRegistry>,
    scraper: Weak<Scraper>,
    encoding: Encoding,
    /// Bytes of the response produced so far, and its whole length.
    offset: usize,
    len: usize,
    /// Identity only: where inflating the shared stream has got to.
    inflate: Option<Box<Decompress>>,
}

impl SharedBody {
    pub(super) fn new(
        collected: &Arc<Collected>,
        registry: Arc<BodyRegistry>,
        scraper: Weak<Scraper>,
        encoding: Encoding,
    ) -> Self {
        SharedBody {
            collected: Arc::downgrade(collected),
            registry,
            scraper,
            encoding,
            offset: 0,
            len: collected.len(encoding),
            inflate: None,
        }
    }

    fn next_chunk(&mut self, collected: &Collected) -> Result<Bytes, BodyError> {
        let want = CHUNK_BYTES.min(self.len - self.offset);
        let chunk = match self.encoding {
            Encoding::Gzip => gzip_chunk(collected, self.offset, want),
            Encoding::Identity => {
                let state = self
                    .inflate
                    .get_or_insert_with(|| Box::new(Decompress::new(false)));
                inflate_chunk(state, &collected.deflate, want)?
            }
        };
        self.offset += chunk.len();
        Ok(Bytes::from(chunk))
    }
}

/// `want` bytes of the gzip member from `offset` on.
fn gzip_chunk(collected: &Collected, offset: usize, want: usize) -> Vec<u8> {
    let mut trailer = [0; GZIP_TRAILER];
    trailer[..4].copy_from_slice(&collected.crc.to_le_bytes());
    // ISIZE is the length modulo 2^32 (RFC 1952).
    trailer[4..].copy_from_slice(&(collected.text_len as u32).to_le_bytes());
    let parts: [&[u8]; 3] = [&GZIP_HEADER, &collected.deflate, &trailer];
    let mut chunk = Vec::with_capacity(want);
    let mut skip = offset;
    for part in parts {
        if skip >= part.len() {
            skip -= part.len();
            continue;
        }
        let take = (part.len() - skip).min(want - chunk.len());
        chunk.extend_from_slice(&part[skip..skip + take]);
        skip = 0;
        if chunk.len() == want {
            break;
        }
    }
    chunk
}

/// The next `want` bytes of text inflated from `deflate`.
fn inflate_chunk(
    state: &mut Decompress,
    deflate: &[u8],
    want: usize,
) -> Result<Vec<u8>, BodyError> {
    let mut chunk = vec![0; want];
    let mut filled = 0;
    while filled < want {
        let (read, written) = (state.total_in(), state.total_out());
        let status = state.decompress(
            &deflate[read as usize..],
            &mut chunk[filled..],
            FlushDecompress::None,
        )?;
        filled += (state.total_out() - written) as usize;
        let stuck = state.total_in() == read && state.total_out() == written;
        if status == Status::StreamEnd || stuck {
            break;
        }
    }
    chunk.truncate(filled);
    Ok(chunk)
}

impl hyper::body::Body for SharedBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if self.offset >= self.len {
            return Poll::Ready(None);
        }
        let Some(collected) = self.collected.upgrade() else {
            if let Some(scraper) = self.scraper.upgrade() {
                scraper
                    .http
                    .evicted_responses_cut
                    .fetch_add(1, Ordering::Relaxed);
            }
            return Poll::Ready(Some(Err(BodyError::Evicted)));
        };
        let chunk = match self.next_chunk(&collected) {
            Ok(chunk) if chunk.is_empty() => {
                // The stream ended before its recorded length: never by
                // construction, but a short body must not spin.
                let missing = self.len - self.offset;
                return Poll::Ready(Some(Err(BodyError::Truncated(missing))));
            }
            Ok(chunk) => chunk,
            Err(error) => return Poll::Ready(Some(Err(error))),
        };
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.offset >= self.len
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact((self.len - self.offset) as u64)
    }
}

impl Drop for SharedBody {
    fn drop(&mut self) {
        self.registry.release(&self.collected);
    }
}
