//! A fixed number of connection slots, and who gives one up when all are
//! taken: the connection that has been quiet longest.
//!
//! Quiet means of no use to anyone right now: waiting for a request head,
//! for a turn at a basic-auth check, or for a client to take its response,
//! for longer than the listener's [`QuietLimits`]. A request being
//! collected or checked is never quiet, nor a response whose chunks keep
//! flowing. A scraper's request is in the socket when it is accepted, so its
//! connection turns busy at once: hostile clients holding every slot only
//! displace each other, and while every connection is busy newcomers wait
//! (in the kernel's backlog) rather than being reset.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// How long a connection must have been quiet before it can be given up.
#[derive(Debug, Clone, Copy)]
pub struct QuietLimits {
    /// After a request: a response flowing waits for moments, never this
    /// long, while a client that stopped reading is quiet for good.
    pub after_a_request: Duration,
    /// Before the first: a client sends it right after connecting (or its
    /// TLS handshake), but one starved of CPU or far away can take a while.
    pub before_a_request: Duration,
}

/// What a connection waits for, if anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Nothing: a request is being collected, or its password checked.
    Busy,
    /// A request head, or a turn at a password check.
    Request,
    /// Its client, to take (the rest of) a response: set again at each
    /// chunk it has room for.
    Client,
}

/// One connection, as its task, its responses and the slots see it: one
/// record behind one lock.
pub struct Conn {
    /// The phase, since when, and whether a request was ever busy (which
    /// quiet limit applies).
    state: Mutex<(Phase, Instant, bool)>,
    displaced: Notify,
}

impl Conn {
    fn new() -> Self {
        Conn {
            state: Mutex::new((Phase::Request, Instant::now(), false)),
            displaced: Notify::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, (Phase, Instant, bool)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set(&self, phase: Phase) {
        let mut state = self.state();
        *state = (phase, Instant::now(), state.2 || phase == Phase::Busy);
    }

    /// Since when the connection has been quiet, if for long enough to be
    /// given up.
    fn quiet_since(&self, limits: QuietLimits) -> Option<Instant> {
        let (phase, since, requested) = *self.state();
        let enough = match requested {
            true => limits.after_a_request,
            false => limits.before_a_request,
        };
        (phase != Phase::Busy && since.elapsed() >= enough).then_some(since)
    }

    /// Resolves once the client has taken nothing of a response for longer
    /// than `limit`.
    pub async fn stalled(&self, limit: Duration) {
        loop {
            tokio::time::sleep(limit / 4).await;
            let (phase, since, _) = *self.state();
            if phase == Phase::Client && since.elapsed() > limit {
                return;
            }
        }
    }

    /// Resolves once the connection's slot was given to a newer one.
    pub async fn displaced(&self) {
        self.displaced.notified().await;
    }
}

/// The slots of one listener.
pub struct Slots {
    held: Mutex<Vec<Arc<Conn>>>,
    count: usize,
    quiet: QuietLimits,
    /// Signalled when a connection gives its slot back.
    freed: Notify,
}

/// A connection's slot, given back on drop unless it went to a newer one.
pub struct Slot {
    slots: Arc<Slots>,
    pub conn: Arc<Conn>,
}

impl Slots {
    pub fn new(count: usize, quiet: QuietLimits) -> Arc<Self> {
        let held = Mutex::new(Vec::with_capacity(count));
        let freed = Notify::new();
        Arc::new(Slots {
            held,
            count,
            quiet,
            freed,
        })
    }

    fn held(&self) -> MutexGuard<'_, Vec<Arc<Conn>>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for a connection just accepted, and whether another was
    /// displaced for it. While every connection is busy it waits for one to
    /// end or go quiet: a busy one is over within a collection, a check, a
    /// stall timeout or, at the very most, its lifetime.
    pub async fn take(self: &Arc<Self>) -> (Slot, bool) {
        loop {
            if let Some(taken) = self.try_take() {
                return taken;
            }
            tokio::select! {
                () = self.freed.notified() => {}
                () = tokio::time::sleep(self.quiet.after_a_request / 5) => {}
            }
        }
    }

    fn try_take(self: &Arc<Self>) -> Option<(Slot, bool)> {
        let mut held = self.held();
        let displacing = held.len() >= self.count;
        if displacing {
            let (quietest, _) = (held.iter().enumerate())
                .filter_map(|(index, conn)| Some((index, conn.quiet_since(self.quiet)?)))
                .min_by_key(|(_, since)| *since)?;
            held.swap_remove(quietest).displaced.notify_one();
        }
        let conn = Arc::new(Conn::new());
        held.push(Arc::clone(&conn));
        let slots = Arc::clone(self);
        Some((Slot { slots, conn }, displacing))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.slots.held();
        if let Some(index) = held.iter().position(|c| Arc::ptr_eq(c, &self.conn)) {
            held.swap_remove(index);
            self.slots.freed.notify_one();
        }
    }
}

#[cfg(test)]
mod tests;
