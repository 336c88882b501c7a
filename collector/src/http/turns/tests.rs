//! Turns at a password check: in rotation among addresses, in order within one.

use super::*;
use std::time::Duration;

fn address(last: u8) -> IpAddr {
    IpAddr::from([10, 0, 0, last])
}

/// The order in which requests queued behind a running check get
/// their turns.
async fn order(requests: &[u8]) -> Vec<usize> {
    let turns = Arc::new(Turns::default());
    let running = turns.take(address(250)).await;
    let (done, mut order) = tokio::sync::mpsc::unbounded_channel();
    for (index, peer) in requests.iter().enumerate() {
        let (turns, done) = (Arc::clone(&turns), done.clone());
        let peer = address(*peer);
        tokio::spawn(async move {
            let _turn = turns.take(peer).await;
            done.send(index).unwrap();
        });
        tokio::task::yield_now().await;
    }
    drop((running, done));
    let mut seen = Vec::new();
    while let Some(index) = order.recv().await {
        seen.push(index);
    }
    seen
}

#[tokio::test(flavor = "current_thread")]
async fn one_address_is_served_in_order_and_another_is_not_queued_behind_it() {
    assert_eq!(order(&[1, 1, 1]).await, [0, 1, 2]);
    // Five guesses from .1 queued first; .2's request is second.
    assert_eq!(order(&[1, 1, 1, 1, 1, 2]).await, [0, 5, 1, 2, 3, 4]);
    assert_eq!(order(&[1, 1, 2, 2, 3]).await, [0, 2, 4, 1, 3]);
}

#[tokio::test(flavor = "current_thread")]
async fn a_request_given_up_leaves_its_place_and_the_queue_moves_on() {
    let turns = Arc::new(Turns::default());
    let running = turns.take(address(1)).await;
    let given_up = tokio::spawn({
        let turns = Arc::clone(&turns);
        async move { turns.take(address(2)).await }
    });
    let next = tokio::spawn({
        let turns = Arc::clone(&turns);
        async move { turns.take(address(3)).await }
    });
    tokio::task::yield_now().await;
    given_up.abort();
    let _ = given_up.await;
    drop(running);
    tokio::time::timeout(Duration::from_secs(1), next)
        .await
        .expect("the next request got its turn")
        .unwrap();
    assert!(turns.lock().waiting.is_empty());
    assert!(turns.lock().last_turn.is_empty());
}
