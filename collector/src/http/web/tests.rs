//! Reloading the web config: a good change in force at once, a bad one never.

use super::*;
use crate::http::auth::header;
use std::net::{IpAddr, Ipv4Addr};

fn users(password: &str) -> String {
    let hash = bcrypt::hash(password, 4).unwrap();
    format!("basic_auth_users:\n  prom: '{hash}'\n")
}

/// Replaced whole, as a Secret update does: a new inode each time.
fn replace(path: &Path, text: &str) {
    let aside = path.with_extension("new");
    std::fs::write(&aside, text).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn a_change_is_in_force_at_once_and_a_bad_one_or_a_switch_to_https_never() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("web.yml");
    replace(&path, &users("first"));
    let web = ReloadingWeb::load(&path).unwrap();
    let failures = AtomicU64::new(0);
    let admits = |password: &'static str| {
        let auth = web.current(&failures).auth.clone().expect("basic auth");
        async move {
            let header = header("prom", password);
            let peer = IpAddr::V4(Ipv4Addr::LOCALHOST);
            auth.admits(Some(header.as_bytes()), peer, || {}).await
        }
    };
    assert!(admits("first").await);
    replace(&path, &users("second"));
    assert!(admits("second").await);
    assert!(!admits("first").await);
    assert_eq!(failures.load(Ordering::Relaxed), 0);

    let https = "tls_server_config:\n  cert_file: a.pem\n  key_file: a.key\n";
    let bad = [
        "basic_auth_users: [".to_string(),
        "basic_auth_users:\n  prom: plain\n".to_string(),
        format!("{https}{}", users("third")),
    ];
    for (count, bad) in bad.iter().enumerate() {
        replace(&path, bad);
        assert!(admits("second").await, "{bad}");
        assert!(!admits("third").await, "{bad}");
        // Counted once per change, not at every look.
        assert!(admits("second").await);
        assert_eq!(failures.load(Ordering::Relaxed), count as u64 + 1);
    }
    assert!(web.in_force().tls.is_none());
    std::fs::remove_file(&path).unwrap();
    assert!(
        admits("second").await,
        "a file gone keeps the last good one"
    );
}
