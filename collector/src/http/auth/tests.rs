//! Basic auth: the right password only, refusals that do not tell users apart, the verdicts kept.

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
