//! Connection slots: who gives way, who never does, who waits.

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
