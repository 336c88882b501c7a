//! A fixed number of connection slots, and who gives one up when all are
//! taken: the connection that has been quiet longest.
//!
//! Quiet means of no use to anyone right now: waiting for a request head
//! (slow headers, an idle keep-alive) or for a client that stopped reading
//! its response, for longer than the listener's [`QuietLimits`]. A response
//! being collected or flowing is never quiet. A scraper's request is in the
//! socket by the time it is accepted, so its connection turns busy at once;
//! hostile clients holding every slot only ever displace each other, and
//! while every connection is busy newcomers wait rather than being reset.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::Notify;

/// How long a connection must have been quiet before it can be given up.
#[derive(Debug, Clone, Copy)]
pub struct QuietLimits {
    /// After a request: a response flowing through a full send buffer
    /// waits for moments, never this long, while a client that stopped
    /// reading, or an idle keep-alive, is quiet for good.
    pub after_a_request: Duration,
    /// Before the first whole request: a client sends it right after
    /// connecting, but one starved of CPU (or far away) can take a while,
    /// and is reset if given up.
    pub before_a_request: Duration,
}

/// ns since a process-wide epoch, plus one so that 0 can mean "never".
fn now() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64 + 1
}

/// What one connection is doing, shared by its task, its socket wrapper,
/// its response body and the slots.
pub struct Activity {
    /// When a write began to wait for the client; 0 while none waits.
    waiting_since: AtomicU64,
    /// When the connection last became idle (waiting for a request head,
    /// or a response done); 0 while a request is being served and from
    /// accept until a first read finds nothing, so a request already in
    /// the socket is read before its connection can be given up.
    idle_since: AtomicU64,
    serving: AtomicBool,
    /// Whether a request head was ever complete on this connection.
    requested: AtomicBool,
    /// Set before the connection is dropped for any cut: its socket is
    /// then reset, not closed gracefully.
    cut: AtomicBool,
    evict: Notify,
}

impl Activity {
    fn new() -> Self {
        Activity {
            waiting_since: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            serving: AtomicBool::new(false),
            requested: AtomicBool::new(false),
            cut: AtomicBool::new(false),
            evict: Notify::new(),
        }
    }

    /// A write is waiting for the client (kept from the first wait on).
    pub fn write_waits(&self) {
        let _ = self
            .waiting_since
            .compare_exchange(0, now(), Ordering::Relaxed, Ordering::Relaxed);
    }

    /// A write went through.
    pub fn write_done(&self) {
        self.waiting_since.store(0, Ordering::Relaxed);
    }

    /// A read found nothing to read.
    pub fn read_waits(&self) {
        if !self.serving.load(Ordering::Relaxed) {
            let _ =
                self.idle_since
                    .compare_exchange(0, now(), Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// A request head is complete; its response is being made.
    pub fn busy(&self) {
        self.requested.store(true, Ordering::Relaxed);
        self.serving.store(true, Ordering::Relaxed);
        self.idle_since.store(0, Ordering::Relaxed);
    }

    /// A request head is complete, and waits for its turn to have its
    /// credentials checked: of no use to anyone until admitted, so quiet
    /// from now on. A check's turn or an admission marks it [`busy`]:
    /// guesses queued behind each other never pin a slot, and the one
    /// check running at a time holds one for a bounded time.
    ///
    /// [`busy`]: Activity::busy
    pub fn awaits_check(&self) {
        self.serving.store(false, Ordering::Relaxed);
        self.idle_since.store(now(), Ordering::Relaxed);
    }

    fn idle(&self) {
        self.serving.store(false, Ordering::Relaxed);
        self.idle_since.store(now(), Ordering::Relaxed);
    }

    /// Since when the connection has been of no use, if it has been for
    /// long enough to be given up.
    fn quiet_enough_since(&self, now: u64, limits: QuietLimits) -> Option<u64> {
        let since = [&self.waiting_since, &self.idle_since]
            .iter()
            .map(|at| at.load(Ordering::Relaxed))
            .filter(|at| *at != 0)
            .min()?;
        let enough = if self.requested.load(Ordering::Relaxed) {
            limits.after_a_request
        } else {
            limits.before_a_request
        };
        (now.saturating_sub(since) >= enough.as_nanos() as u64).then_some(since)
    }

    pub fn mark_cut(&self) {
        self.cut.store(true, Ordering::Relaxed);
    }

    pub fn is_cut(&self) -> bool {
        self.cut.load(Ordering::Relaxed)
    }

    /// Resolves (marking the connection cut) once writes have waited for
    /// longer than `limit`.
    pub async fn stalled_longer_than(&self, limit: Duration) {
        let tick = (limit / 4).max(Duration::from_millis(10));
        loop {
            tokio::time::sleep(tick).await;
            let since = self.waiting_since.load(Ordering::Relaxed);
            if since != 0 && Duration::from_nanos(now().saturating_sub(since)) > limit {
                self.mark_cut();
                return;
            }
        }
    }

    /// Resolves (marking the connection cut) once its slot was given to a
    /// newer connection.
    pub async fn evicted(&self) {
        self.evict.notified().await;
        self.mark_cut();
    }
}

/// The slots of one listener.
pub struct Slots {
    live: Mutex<Vec<Option<Arc<Activity>>>>,
    quiet: QuietLimits,
    /// Signalled when a connection gives its slot back.
    released: Notify,
}

/// A connection's hold on a slot; released on drop unless it was given away.
pub struct Slot {
    slots: Arc<Slots>,
    index: usize,
    pub activity: Arc<Activity>,
}

/// How a new connection got its slot.
enum Admission {
    Free(Slot),
    /// The connection quiet longest was told to close for this one.
    Evicted(Slot),
    /// Every connection is in use.
    Full,
}

impl Slots {
    pub fn new(count: usize, quiet: QuietLimits) -> Arc<Self> {
        Arc::new(Slots {
            live: Mutex::new(vec![None; count]),
            quiet,
            released: Notify::new(),
        })
    }

    /// A slot for a connection just accepted, waiting while every
    /// connection is busy (newer handshakes queue in the kernel's backlog
    /// meanwhile, and are never reset for it). The wait ends when a
    /// connection ends or one has been quiet long enough to give way; a
    /// busy one is over within a collection, a stall timeout or, at the
    /// very most, its lifetime. `Some(true)`: another connection gave way.
    pub async fn wait_for_slot(self: &Arc<Self>) -> (Slot, bool) {
        loop {
            match self.admit() {
                Admission::Free(slot) => return (slot, false),
                Admission::Evicted(slot) => return (slot, true),
                Admission::Full => {
                    tokio::select! {
                        () = self.released.notified() => {}
                        () = tokio::time::sleep(self.quiet.after_a_request / 5) => {}
                    }
                }
            }
        }
    }

    fn admit(self: &Arc<Self>) -> Admission {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let activity = Arc::new(Activity::new());
        let slot = |index| Slot {
            slots: Arc::clone(self),
            index,
            activity: Arc::clone(&activity),
        };
        if let Some(index) = live.iter().position(Option::is_none) {
            live[index] = Some(Arc::clone(&activity));
            return Admission::Free(slot(index));
        }
        let now = now();
        let quietest = live
            .iter()
            .enumerate()
            .filter_map(|(index, held)| {
                Some((held.as_ref()?.quiet_enough_since(now, self.quiet)?, index))
            })
            .min();
        let Some((_, index)) = quietest else {
            return Admission::Full;
        };
        if let Some(previous) = live[index].replace(Arc::clone(&activity)) {
            previous.evict.notify_one();
        }
        Admission::Evicted(slot(index))
    }

    #[cfg(test)]
    fn held(&self) -> usize {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.iter().flatten().count()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut live = self.slots.live.lock().unwrap_or_else(|p| p.into_inner());
        if live[self.index]
            .as_ref()
            .is_some_and(|held| Arc::ptr_eq(held, &self.activity))
        {
            live[self.index] = None;
            self.slots.released.notify_one();
        }
    }
}

/// A response body that marks its connection busy while it exists.
pub struct Tracked<B> {
    inner: B,
    activity: Arc<Activity>,
}

impl<B> Tracked<B> {
    pub fn new(inner: B, activity: Arc<Activity>) -> Self {
        Tracked { inner, activity }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for Tracked<B> {
    fn drop(&mut self) {
        self.activity.idle();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUIET: QuietLimits = QuietLimits {
        after_a_request: Duration::from_millis(100),
        before_a_request: Duration::from_millis(300),
    };

    fn admitted(admission: Admission) -> (Slot, bool) {
        match admission {
            Admission::Free(slot) => (slot, false),
            Admission::Evicted(slot) => (slot, true),
            Admission::Full => panic!("no slot"),
        }
    }

    async fn told_to_close(slot: &Slot) {
        tokio::time::timeout(Duration::from_secs(1), slot.activity.evicted())
            .await
            .expect("told to close");
        assert!(slot.activity.is_cut());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_quietest_connection_gives_way_and_busy_ones_never_do() {
        let slots = Slots::new(3, QUIET);
        let (first, _) = admitted(slots.admit());
        let (second, _) = admitted(slots.admit());
        let (third, _) = admitted(slots.admit());
        // Just accepted, nothing read yet: none can be given up.
        assert!(matches!(slots.admit(), Admission::Full));
        first.activity.read_waits();
        std::thread::sleep(Duration::from_millis(2));
        second.activity.read_waits();
        third.activity.read_waits();
        // Quiet, but not for long enough yet: none has sent a request.
        std::thread::sleep(QUIET.after_a_request);
        assert!(matches!(slots.admit(), Admission::Full));
        std::thread::sleep(QUIET.before_a_request - QUIET.after_a_request);
        // The first is idle longest: it gives way, and learns it.
        let (fourth, evicted) = admitted(slots.admit());
        assert!(evicted);
        told_to_close(&first).await;
        drop(first);
        assert_eq!(slots.held(), 3, "its slot stays with the newcomer");

        // A response being served is never given up; a stalled one is.
        for slot in [&second, &third, &fourth] {
            slot.activity.busy();
        }
        assert!(matches!(slots.admit(), Admission::Full));
        third.activity.write_waits();
        std::thread::sleep(QUIET.after_a_request);
        let (fifth, evicted) = admitted(slots.admit());
        assert!(evicted);
        told_to_close(&third).await;
        drop((second, third, fourth));
        assert_eq!(slots.held(), 1);
        drop(fifth);
        assert_eq!(slots.held(), 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_request_waiting_for_its_check_gives_way_and_one_being_checked_does_not() {
        let slots = Slots::new(2, QUIET);
        let (waiting, _) = admitted(slots.admit());
        let (checked, _) = admitted(slots.admit());
        waiting.activity.awaits_check();
        checked.activity.awaits_check();
        checked.activity.busy();
        // Judged as before a first request: nothing was admitted yet.
        std::thread::sleep(QUIET.after_a_request);
        assert!(matches!(slots.admit(), Admission::Full));
        std::thread::sleep(QUIET.before_a_request - QUIET.after_a_request);
        let (_newcomer, evicted) = admitted(slots.admit());
        assert!(evicted);
        told_to_close(&waiting).await;
        assert!(
            matches!(slots.admit(), Admission::Full),
            "the check runs on"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_newcomer_waits_while_all_are_busy_and_gets_the_first_slot_given_back() {
        let slots = Slots::new(1, QUIET);
        let (busy, _) = admitted(slots.admit());
        busy.activity.busy();
        let waiting = tokio::spawn({
            let slots = Arc::clone(&slots);
            async move { slots.wait_for_slot().await }
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
    async fn a_stall_is_noticed_after_its_limit_and_progress_resets_it() {
        let activity = Activity::new();
        activity.write_waits();
        let limit = Duration::from_millis(40);
        let started = Instant::now();
        activity.stalled_longer_than(limit).await;
        assert!(started.elapsed() >= limit);
        assert!(activity.is_cut());
        activity.write_done();
        assert_eq!(activity.waiting_since.load(Ordering::Relaxed), 0);
    }
}
