//! Turns to run a password check: one at a time (bcrypt is slow on purpose
//! and would take the CPU from collections), taken in rotation among client
//! addresses, first come first served within one address.
//!
//! First come first served alone would put a scraper behind every guess
//! queued before it, one per connection slot: tens of bcrypt checks, longer
//! than a scrape timeout. In rotation, requests from another address wait
//! for at most one check per address with requests waiting.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

#[derive(Default)]
pub struct Turns {
    queue: Mutex<Queue>,
    changed: Notify,
}

#[derive(Default)]
struct Queue {
    running: bool,
    next_ticket: u64,
    /// Tickets waiting, each with its client's address.
    waiting: Vec<(u64, IpAddr)>,
    /// For each address with requests waiting, the ticket number of its
    /// last turn; an address absent has not had one while it waited.
    last_turn: HashMap<IpAddr, u64>,
}

impl Queue {
    /// The ticket whose turn is next: of the address served longest ago,
    /// the oldest.
    fn next(&self) -> Option<u64> {
        self.waiting
            .iter()
            .min_by_key(|(ticket, peer)| (self.last_turn.get(peer).copied(), *ticket))
            .map(|(ticket, _)| *ticket)
    }

    fn leave(&mut self, ticket: u64) {
        self.waiting.retain(|(waiting, _)| *waiting != ticket);
        let waiting = &self.waiting;
        self.last_turn
            .retain(|peer, _| waiting.iter().any(|(_, p)| p == peer));
    }
}

/// The one check running; the next turn is given when it is dropped.
pub struct Turn {
    turns: Arc<Turns>,
}

/// A place in the queue, given up if the request is (its connection cut).
struct Waiting<'a> {
    turns: &'a Turns,
    ticket: u64,
}

impl Turns {
    /// Waits for the turn of a request from `peer`.
    pub async fn take(self: &Arc<Self>, peer: IpAddr) -> Turn {
        let ticket = {
            let mut queue = self.lock();
            let ticket = queue.next_ticket;
            queue.next_ticket += 1;
            queue.waiting.push((ticket, peer));
            ticket
        };
        let place = Waiting {
            turns: self,
            ticket,
        };
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut queue = self.lock();
                if !queue.running && queue.next() == Some(ticket) {
                    queue.running = true;
                    queue.leave(ticket);
                    if queue.waiting.iter().any(|(_, p)| *p == peer) {
                        queue.last_turn.insert(peer, ticket);
                    }
                    std::mem::forget(place);
                    return Turn {
                        turns: Arc::clone(self),
                    };
                }
            }
            changed.await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.turns.lock().leave(self.ticket);
        self.turns.changed.notify_waiters();
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.turns.lock().running = false;
        self.turns.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
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
}
