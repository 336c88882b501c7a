//! HTTP basic authentication against bcrypt hashes (`basic_auth_users`).
//!
//! bcrypt is slow on purpose (tens of ms per check), so a check runs on the
//! blocking pool, one at a time ([`Turns`]), and recent verdicts are kept:
//! a scraper presenting the same credentials every 15 s costs one hash, and
//! a client guessing passwords queues behind its own guesses.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::hmac;

use super::turns::Turns;

/// Failed attempts whose verdict is kept: about 20 KiB of tags.
const FAILED_KEPT: usize = 256;

/// HMAC-SHA-256 of an attempt under a key made at start: the cache keeps
/// no password, and its tags mean nothing outside this process.
type Tag = [u8; 32];

#[derive(Debug, thiserror::Error)]
#[error("basic auth: the system gave no randomness for the key of its cache")]
pub struct NoRandomness;

/// The users of one version of the web config.
pub struct BasicAuth {
    users: BTreeMap<String, String>,
    /// What a password for a user not configured is checked against, its
    /// verdict ignored, so that time does not tell which users exist: the
    /// costliest configured hash (of their cost and variant by
    /// construction, and nothing to compute at start).
    decoy: Option<String>,
    checks: Arc<Checks>,
}

/// What outlives a reload of the web config: the turns, and the verdicts,
/// true still since each is tagged with the hash it was checked against.
pub struct Checks {
    tag_key: hmac::Key,
    recent: Mutex<Recent>,
    turns: Arc<Turns>,
}

impl Checks {
    pub fn new() -> Result<Arc<Self>, NoRandomness> {
        let tag_key = hmac::Key::generate(hmac::HMAC_SHA256, &ring::rand::SystemRandom::new())
            .map_err(|_| NoRandomness)?;
        Ok(Arc::new(Checks {
            tag_key,
            recent: Mutex::default(),
            turns: Arc::default(),
        }))
    }

    fn tag(&self, user: &str, hash: &str, password: &[u8]) -> Tag {
        let mut context = hmac::Context::with_key(&self.tag_key);
        for part in [user.as_bytes(), hash.as_bytes(), password] {
            context.update(&(part.len() as u64).to_le_bytes());
            context.update(part);
        }
        let mut tag = [0; 32];
        tag.copy_from_slice(context.sign().as_ref());
        tag
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Verdicts of recent checks, by the tag of user, hash and password (as
/// exporter-toolkit keys its cache).
#[derive(Default)]
struct Recent {
    /// Per configured user, the password that last passed: only someone
    /// who knows it can put one here, so guesses never push it out.
    passed: HashMap<String, Tag>,
    /// Failed attempts, oldest first, at most [`FAILED_KEPT`] (and a set of
    /// the same for lookups).
    failed: VecDeque<Tag>,
    failed_set: HashSet<Tag>,
}

impl Recent {
    fn verdict(&self, user: &str, tag: &Tag) -> Option<bool> {
        if self
            .passed
            .get(user)
            .is_some_and(|passed| constant_time_eq(passed, tag))
        {
            return Some(true);
        }
        self.failed_set.contains(tag).then_some(false)
    }

    fn remember(&mut self, user: String, tag: Tag, admitted: bool) {
        if admitted {
            self.passed.insert(user, tag);
        } else if self.failed_set.insert(tag) {
            self.failed.push_back(tag);
            if self.failed.len() > FAILED_KEPT {
                if let Some(oldest) = self.failed.pop_front() {
                    self.failed_set.remove(&oldest);
                }
            }
        }
    }
}

impl BasicAuth {
    /// `users`: name to bcrypt hash, validated by `web_config`.
    pub fn new(users: BTreeMap<String, String>, checks: Arc<Checks>) -> Self {
        let decoy = users
            .values()
            .max_by_key(|hash| {
                hash.parse::<bcrypt::HashParts>()
                    .map_or(0, |parts| parts.get_cost())
            })
            .cloned();
        // One password kept per user configured now, whatever came before.
        checks
            .recent()
            .passed
            .retain(|user, _| users.contains_key(user));
        BasicAuth {
            users,
            decoy,
            checks,
        }
    }

    /// Whether an `Authorization` header value names a user and the
    /// password of its hash. `on_turn` runs when a check begins, after its
    /// turn as a request from `peer` ([`Turns`]; none for a recent attempt).
    pub async fn admits(
        &self,
        header: Option<&[u8]>,
        peer: IpAddr,
        on_turn: impl FnOnce(),
    ) -> bool {
        let Some((user, password)) = header.and_then(credentials) else {
            return false;
        };
        let known = self.users.get(&user);
        let Some(hash) = known.or(self.decoy.as_ref()) else {
            return false;
        };
        let tag = self.checks.tag(&user, hash, &password);
        if let Some(verdict) = self.checks.recent().verdict(&user, &tag) {
            return verdict;
        }
        let turn = self.checks.turns.take(peer).await;
        on_turn();
        let hash = hash.clone();
        // The turn goes with the check: a request given up meanwhile (its
        // connection cut) does not let the next one run beside it.
        let verified = tokio::task::spawn_blocking(move || {
            let _turn = turn;
            bcrypt::verify(password, &hash)
        })
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(false);
        let admitted = verified && known.is_some();
        self.checks.recent().remember(user, tag, admitted);
        admitted
    }
}

/// The user and password of `Basic base64(user:password)` (RFC 7617: the
/// scheme is case-insensitive, the user ends at the first colon), decoded
/// with bcrypt's own `base64`: the `headers` crate's typed header would
/// bring a second `base64` and a SHA-1 for a one-line split.
fn credentials(header: &[u8]) -> Option<(String, Vec<u8>)> {
    let header = std::str::from_utf8(header).ok()?.trim();
    let (scheme, encoded) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(encoded.trim_start()).ok()?;
    let colon = decoded.iter().position(|b| *b == b':')?;
    let user = String::from_utf8(decoded[..colon].to_vec()).ok()?;
    Some((user, decoded[colon + 1..].to_vec()))
}

/// Equal bytes, in time independent of where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// For tests elsewhere: the header value for `user` and `password`.
#[cfg(test)]
pub fn header(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

#[cfg(test)]
mod tests;
