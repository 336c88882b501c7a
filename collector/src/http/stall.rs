//! The accepted TCP stream, wrapped so that no socket outlives its slot
//! holding kernel memory.
//!
//! Writes that wait on a client record when they began ([`Activity`]);
//! hyper has no write timeout of its own. A graceful close first waits
//! until the client has acknowledged every byte (the send queue is empty),
//! so what is closed holds no buffers; a connection dropped with bytes
//! still queued, or cut, is reset (`SO_LINGER` 0), which frees its buffers
//! at once instead of leaving an orphan that keeps them until the client
//! reads or the kernel gives up minutes later.

use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

use super::slots::Activity;

/// How often a closing connection looks at its send queue: soon at first
/// (on a LAN the last bytes are acknowledged within a millisecond, and the
/// slot is held meanwhile), then less often.
const DRAIN_FIRST_POLL: Duration = Duration::from_millis(1);
const DRAIN_POLL: Duration = Duration::from_millis(20);

pub struct StallGuard {
    inner: TcpStream,
    activity: Arc<Activity>,
    /// While a graceful close waits for the send queue to drain: the
    /// timer, the bytes queued at the last look, the current interval.
    drain: Option<(Pin<Box<Sleep>>, usize, Duration)>,
}

/// Bytes in the socket's send queue not yet acknowledged by the peer.
fn unsent_bytes(stream: &TcpStream) -> io::Result<usize> {
    let mut queued: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one int through the pointer,
    // which points at a live c_int; the fd is owned by `stream`.
    let result = unsafe { libc::ioctl(stream.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
    if result < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(queued).unwrap_or(0))
}

impl StallGuard {
    pub fn new(inner: TcpStream, activity: Arc<Activity>) -> Self {
        StallGuard {
            inner,
            activity,
            drain: None,
        }
    }

    fn note<T>(&self, poll: &Poll<T>) {
        match poll {
            Poll::Pending => self.activity.write_waits(),
            Poll::Ready(_) => self.activity.write_done(),
        }
    }

    /// Pending until the send queue is empty; each drained byte counts as
    /// progress, so only a client that stopped reading stalls here.
    fn poll_drained(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let queued = unsent_bytes(&self.inner).unwrap_or(0);
            if queued == 0 {
                self.drain = None;
                self.activity.write_done();
                return Poll::Ready(());
            }
            match &mut self.drain {
                Some((sleep, last, interval)) => {
                    if queued < *last {
                        self.activity.write_done();
                    }
                    *last = queued;
                    self.activity.write_waits();
                    ready!(sleep.as_mut().poll(cx));
                    *interval = (*interval * 2).min(DRAIN_POLL);
                    sleep
                        .as_mut()
                        .reset(tokio::time::Instant::now() + *interval);
                }
                None => {
                    self.activity.write_waits();
                    let sleep = Box::pin(tokio::time::sleep(DRAIN_FIRST_POLL));
                    self.drain = Some((sleep, queued, DRAIN_FIRST_POLL));
                }
            }
        }
    }
}

impl Drop for StallGuard {
    fn drop(&mut self) {
        let queued = unsent_bytes(&self.inner).unwrap_or(0);
        if self.activity.is_cut() || queued > 0 {
            if let Err(error) = socket2::SockRef::from(&self.inner).set_linger(Some(Duration::ZERO))
            {
                tracing::debug!(%error, "cannot set SO_LINGER 0; the close may leave an orphan");
            }
        }
    }
}

impl AsyncRead for StallGuard {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if poll.is_pending() {
            self.activity.read_waits();
        }
        poll
    }
}

impl AsyncWrite for StallGuard {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note(&poll);
        poll
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.note(&poll);
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drained(cx));
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
