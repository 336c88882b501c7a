//! HTTP basic authentication against bcrypt hashes (`basic_auth_users`).
//!
//! bcrypt is slow on purpose (tens of ms per check at the usual cost), so
//! a check runs on the blocking pool, one at a time ([`Turns`]), and the
//! password that last passed for each user is remembered: a scraper
//! presenting the same credentials every 15 s costs one hash, and a client
//! guessing passwords queues behind its own guesses instead of taking the
//! async workers or the scraper's turn.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use headers::authorization::Basic;
use headers::{Authorization, Header};
use hyper::header::HeaderValue;
use ring::hmac;

use super::turns::Turns;

/// Failed attempts whose verdict is kept: about 20 KiB of tags (32 bytes,
/// held twice, plus the set's overhead).
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
    /// verdict ignored: so that refusing one costs a check like refusing a
    /// known user, and time does not tell which users exist. The costliest
    /// of the configured hashes: of their cost and bcrypt variant by
    /// construction, and nothing to compute at start (hashing a decoy at the
    /// configured cost would cost a check there, or far more).
    decoy: Option<String>,
    checks: Arc<Checks>,
}

/// What outlives a reload of the web config: the one-at-a-time turns, and
/// the verdicts, which stay true since each is tagged with the hash it was
/// checked against (a certificate rotation costs the scraper no check).
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
/// exporter-toolkit keys its cache), so that a scraper's every request and
/// a replayed guess cost no check.
#[derive(Default)]
struct Recent {
    /// Per configured user, the password that last passed: only someone
    /// who knows it can put one here, so guesses never push it out.
    passed: HashMap<String, Tag>,
    /// Failed attempts, oldest first, at most [`FAILED_KEPT`]; the set
    /// holds the same tags for lookups.
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
    /// password of its hash. `on_turn` runs when a check itself begins
    /// (none does for an attempt seen recently), after waiting for its
    /// turn (see [`Turns`]) as a request from `peer`.
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
        // The turn goes with the check: a request given up while its hash
        // is computed (its connection cut) does not let the next one run
        // beside it.
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

/// The user and password of `Basic base64(user:password)` (RFC 7617; the
/// scheme is case-insensitive), parsed by the `headers` crate.
fn credentials(header: &[u8]) -> Option<(String, Vec<u8>)> {
    let value = HeaderValue::from_bytes(header).ok()?;
    let Authorization(basic) = Authorization::<Basic>::decode(&mut std::iter::once(&value)).ok()?;
    Some((basic.username().into(), basic.password().into()))
}

/// Equal bytes, in time independent of where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// For tests elsewhere: the header value for `user` and `password`.
#[cfg(test)]
pub fn header(user: &str, password: &str) -> String {
    let mut values = Vec::new();
    Authorization::basic(user, password).encode(&mut values);
    values[0].to_str().unwrap().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    /// One user, `prom`, whose password is hashed at bcrypt `cost`.
    fn prom_only(password: &str, cost: u32) -> BasicAuth {
        let hash = bcrypt::hash(password, cost).unwrap();
        BasicAuth::new(
            BTreeMap::from([("prom".to_string(), hash)]),
            Checks::new().unwrap(),
        )
    }

    fn auth() -> Arc<BasicAuth> {
        Arc::new(prom_only("s3cret:with colon", 4))
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_right_password_passes_and_nothing_else_does() {
        let auth = auth();
        let right = header("prom", "s3cret:with colon");
        assert!(auth.admits(Some(right.as_bytes()), PEER, || {}).await);
        // Remembered now, and still only for the right password.
        assert!(auth.admits(Some(right.as_bytes()), PEER, || {}).await);
        let lower = right.replacen("Basic", "basic", 1);
        assert!(auth.admits(Some(lower.as_bytes()), PEER, || {}).await);
        for wrong in [
            header("prom", "s3cret"),
            header("prom", "s3cret:with colon "),
            header("other", "s3cret:with colon"),
            "Bearer abc".to_string(),
            "Basic !!!".to_string(),
            "Basic".to_string(),
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("no colon")
            ),
        ] {
            assert!(
                !auth.admits(Some(wrong.as_bytes()), PEER, || {}).await,
                "{wrong}"
            );
        }
        assert!(!auth.admits(None, PEER, || {}).await);
        assert!(!auth.admits(Some(&[0xff, 0xfe]), PEER, || {}).await);
    }

    /// How long `tries` wrong passwords for `user` take to be refused,
    /// each one new while fewer than `FAILED_KEPT` are kept: numbered on
    /// from the count kept.
    async fn refusing(auth: &BasicAuth, user: &str, tries: usize) -> std::time::Duration {
        let first = auth.checks.recent().failed.len();
        let started = std::time::Instant::now();
        for guess in first..first + tries {
            let wrong = header(user, &format!("guess {guess}"));
            assert!(!auth.admits(Some(wrong.as_bytes()), PEER, || {}).await);
        }
        started.elapsed()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_unknown_user_is_refused_no_faster_than_a_known_one() {
        let auth = prom_only("right", 8);
        // Alternated, so that load from other tests slows both alike.
        let (mut known, mut unknown) = (Vec::new(), Vec::new());
        for _ in 0..7 {
            known.push(refusing(&auth, "prom", 1).await);
            unknown.push(refusing(&auth, "nobody", 1).await);
        }
        known.sort();
        unknown.sort();
        let (known, unknown) = (known[3], unknown[3]);
        let ratio = unknown.as_secs_f64() / known.as_secs_f64();
        println!("median refusal: known user {known:?}, unknown user {unknown:?} ({ratio:.3})");
        assert!(
            (0.5..2.0).contains(&ratio),
            "an unknown user is told apart by time: {unknown:?} against {known:?}"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_replayed_guess_costs_no_check() {
        let auth = prom_only("right", 8);
        let first = refusing(&auth, "prom", 1).await;
        let started = std::time::Instant::now();
        for _ in 0..10 {
            let replayed = header("prom", "guess 0");
            assert!(!auth.admits(Some(replayed.as_bytes()), PEER, || {}).await);
        }
        let replays = started.elapsed();
        println!("a guess: {first:?}; the same guess 10 times again: {replays:?}");
        let replayed = header("prom", "guess 0");
        let checked = std::cell::Cell::new(false);
        assert!(
            !auth
                .admits(Some(replayed.as_bytes()), PEER, || checked.set(true))
                .await
        );
        assert!(!checked.get(), "a replayed guess was checked again");
        assert!(
            replays < first / 2,
            "replays cost checks: {replays:?} for 10, {first:?} for the first"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn failed_attempts_kept_are_bounded_and_never_push_out_a_password_that_passed() {
        let auth = auth();
        let right = header("prom", "s3cret:with colon");
        assert!(auth.admits(Some(right.as_bytes()), PEER, || {}).await);
        refusing(&auth, "prom", FAILED_KEPT + 10).await;
        refusing(&auth, "nobody", 10).await;
        {
            let recent = auth.checks.recent();
            assert_eq!(recent.failed.len(), FAILED_KEPT);
            assert_eq!(recent.failed_set.len(), FAILED_KEPT);
            assert_eq!(recent.passed.len(), 1);
        }
        let checked = std::cell::Cell::new(false);
        let check = || checked.set(true);
        assert!(auth.admits(Some(right.as_bytes()), PEER, check).await);
        assert!(!checked.get(), "the scraper's password was checked again");
        // The oldest guesses were forgotten, so they cost a check again.
        let oldest = header("prom", "guess 0");
        assert!(!auth.admits(Some(oldest.as_bytes()), PEER, check).await);
        assert!(checked.get());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn verdicts_outlive_a_reload_and_a_user_removed_is_refused() {
        let auth = auth();
        let right = header("prom", "s3cret:with colon");
        assert!(auth.admits(Some(right.as_bytes()), PEER, || {}).await);
        let checked = std::cell::Cell::new(false);
        let check = || checked.set(true);
        let reloaded = BasicAuth::new(auth.users.clone(), Arc::clone(&auth.checks));
        assert!(reloaded.admits(Some(right.as_bytes()), PEER, check).await);
        assert!(!checked.get(), "checked again after a reload");
        let other = bcrypt::hash("other", 4).unwrap();
        let without = BTreeMap::from([("other".to_string(), other)]);
        let without = BasicAuth::new(without, Arc::clone(&auth.checks));
        assert!(!without.admits(Some(right.as_bytes()), PEER, check).await);
        assert!(checked.get(), "a user removed is checked against the decoy");
        assert!(without.checks.recent().passed.is_empty());
    }

    #[test]
    fn comparison_is_exact() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
