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
mod tests {
    use super::*;

    const QUIET: QuietLimits = QuietLimits {
        after_a_request: Duration::from_millis(100),
        before_a_request: Duration::from_millis(300),
    };

    async fn told_to_go(slot: &Slot) {
        tokio::time::timeout(Duration::from_secs(1), slot.conn.displaced())
            .await
            .expect("told to go");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_quietest_connection_gives_way_and_busy_ones_never_do() {
        let slots = Slots::new(3, QUIET);
        let (first, _) = slots.try_take().unwrap();
        std::thread::sleep(Duration::from_millis(2));
        let (second, _) = slots.try_take().unwrap();
        let (third, _) = slots.try_take().unwrap();
        // Waiting for a first request, but not for long enough yet.
        std::thread::sleep(QUIET.after_a_request);
        assert!(slots.try_take().is_none());
        std::thread::sleep(QUIET.before_a_request - QUIET.after_a_request);
        // The first is quiet longest: it gives way, and learns it.
        let (fourth, displaced) = slots.try_take().unwrap();
        assert!(displaced);
        told_to_go(&first).await;
        drop(first);
        assert_eq!(slots.held().len(), 3, "its slot stays with the newcomer");

        // A request being answered is never given up; a stalled response is.
        for slot in [&second, &third, &fourth] {
            slot.conn.set(Phase::Busy);
        }
        std::thread::sleep(QUIET.before_a_request);
        assert!(slots.try_take().is_none());
        third.conn.set(Phase::Client);
        std::thread::sleep(QUIET.after_a_request);
        let (fifth, displaced) = slots.try_take().unwrap();
        assert!(displaced);
        told_to_go(&third).await;
        drop((second, third, fourth));
        assert_eq!(slots.held().len(), 1);
        drop(fifth);
        assert_eq!(slots.held().len(), 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_request_waiting_for_its_check_gives_way_and_one_being_checked_does_not() {
        let slots = Slots::new(2, QUIET);
        let (waiting, _) = slots.try_take().unwrap();
        let (checked, _) = slots.try_take().unwrap();
        waiting.conn.set(Phase::Request);
        checked.conn.set(Phase::Request);
        checked.conn.set(Phase::Busy);
        // Judged as before a first request: nothing was busy yet.
        std::thread::sleep(QUIET.after_a_request);
        assert!(slots.try_take().is_none());
        std::thread::sleep(QUIET.before_a_request - QUIET.after_a_request);
        let (_newcomer, displaced) = slots.try_take().unwrap();
        assert!(displaced);
        told_to_go(&waiting).await;
        assert!(slots.try_take().is_none(), "the check runs on");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_newcomer_waits_while_all_are_busy_and_gets_the_first_slot_given_back() {
        let slots = Slots::new(1, QUIET);
        let (busy, _) = slots.try_take().unwrap();
        busy.conn.set(Phase::Busy);
        let waiting = tokio::spawn({
            let slots = Arc::clone(&slots);
            async move { slots.take().await }
        });
        tokio::time::sleep(QUIET.before_a_request * 2).await;
        assert!(
            !waiting.is_finished(),
            "a busy connection is never given up"
        );
        drop(busy);
        let (_, displaced) = tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("admitted once the slot was given back")
            .unwrap();
        assert!(!displaced);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_stall_is_noticed_after_its_limit_and_never_while_busy() {
        let conn = Conn::new();
        let limit = Duration::from_millis(40);
        conn.set(Phase::Busy);
        let waited = tokio::time::timeout(limit * 3, conn.stalled(limit)).await;
        assert!(waited.is_err(), "a busy connection never stalls");
        conn.set(Phase::Client);
        let started = Instant::now();
        conn.stalled(limit).await;
        assert!(started.elapsed() >= limit);
    }
}
