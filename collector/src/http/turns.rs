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
mod tests;
