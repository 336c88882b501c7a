//! HTTP basic authentication against bcrypt hashes (`basic_auth_users`).
//!
//! bcrypt is slow on purpose (tens of ms per check at the usual cost), so
//! a check runs on the blocking pool, one at a time ([`Turns`]), and the
//! password that last passed for each user is remembered: a scraper
//! presenting the same credentials every 15 s costs one hash, and a client
//! guessing passwords queues behind its own guesses instead of taking the
//! async workers or the scraper's turn.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use base64::Engine;
use std::net::IpAddr;

use super::turns::Turns;

pub struct BasicAuth {
    users: BTreeMap<String, String>,
    /// What a password for a user not configured is checked against, its
    /// verdict ignored: so that refusing one costs a check like refusing a
    /// known user, and time does not tell which users exist. The costliest
    /// of the configured hashes: of their cost and bcrypt variant by
    /// construction, and nothing to compute at start (a decoy made at the
    /// configured cost would cost a check, or far more at a high cost).
    decoy: Option<String>,
    passed: Mutex<HashMap<String, Vec<u8>>>,
    turns: Arc<Turns>,
}

impl BasicAuth {
    /// `users`: name to bcrypt hash, validated by `web_config`.
    pub fn new(users: BTreeMap<String, String>) -> Self {
        let decoy = users
            .values()
            .max_by_key(|hash| {
                hash.parse::<bcrypt::HashParts>()
                    .map_or(0, |parts| parts.get_cost())
            })
            .cloned();
        BasicAuth {
            users,
            decoy,
            passed: Mutex::new(HashMap::new()),
            turns: Arc::default(),
        }
    }

    /// Whether an `Authorization` header value names a user and the
    /// password of its hash. `on_turn` runs when the check itself begins,
    /// after waiting for its turn (see [`Turns`]) as a request from `peer`.
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
        if self.remembered(&user, &password) {
            return true;
        }
        let turn = self.turns.take(peer).await;
        on_turn();
        let (hash, candidate) = (hash.clone(), password.clone());
        // The turn goes with the check: a request given up while its hash
        // is computed (its connection cut) does not let the next one run
        // beside it.
        let verified = tokio::task::spawn_blocking(move || {
            let _turn = turn;
            bcrypt::verify(candidate, &hash)
        })
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(false)
            && known.is_some();
        if verified {
            let mut passed = self.passed.lock().unwrap_or_else(|p| p.into_inner());
            passed.insert(user, password);
        }
        verified
    }

    fn remembered(&self, user: &str, password: &[u8]) -> bool {
        let passed = self.passed.lock().unwrap_or_else(|p| p.into_inner());
        passed
            .get(user)
            .is_some_and(|known| constant_time_eq(known, password))
    }
}

/// `Basic base64(user:password)` (RFC 7617); the scheme is case-insensitive.
fn credentials(header: &[u8]) -> Option<(String, Vec<u8>)> {
    let header = std::str::from_utf8(header).ok()?.trim();
    let (scheme, encoded) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
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
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn auth() -> Arc<BasicAuth> {
        let hash = bcrypt::hash("s3cret:with colon", 4).unwrap();
        Arc::new(BasicAuth::new(BTreeMap::from([("prom".to_string(), hash)])))
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
    /// each one new.
    async fn refusing(auth: &BasicAuth, user: &str, tries: usize) -> std::time::Duration {
        let started = std::time::Instant::now();
        for guess in 0..tries {
            let wrong = header(user, &format!("guess {guess}"));
            assert!(!auth.admits(Some(wrong.as_bytes()), PEER, || {}).await);
        }
        started.elapsed()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_unknown_user_is_refused_no_faster_than_a_known_one() {
        let hash = bcrypt::hash("right", 8).unwrap();
        let auth = BasicAuth::new(BTreeMap::from([("prom".to_string(), hash)]));
        let known = refusing(&auth, "prom", 6).await;
        let unknown = refusing(&auth, "nobody", 6).await;
        let ratio = unknown.as_secs_f64() / known.as_secs_f64();
        println!("6 wrong passwords: known user {known:?}, unknown user {unknown:?} ({ratio:.3})");
        assert!(
            (0.5..2.0).contains(&ratio),
            "an unknown user is told apart by time: {unknown:?} against {known:?}"
        );
    }

    #[test]
    fn comparison_is_exact() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
