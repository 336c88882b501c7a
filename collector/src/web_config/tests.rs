//! Parsing and validation of the web configuration file.

use super::*;

/// A real bcrypt hash (cost 4) of "secret".
fn hash() -> String {
    bcrypt::hash("secret", 4).unwrap()
}

fn parse(text: &str) -> Result<WebConfig, WebConfigError> {
    WebConfig::parse(text, Path::new("/etc/collector/web.yml"))
}

#[test]
fn the_toolkit_format_parses_with_paths_relative_to_the_file() {
    let text = format!(
        "# node_exporter style\ntls_server_config:\n  cert_file: tls.crt\n  key_file: /abs/tls.key\n  \
         client_ca_file: ca.crt\n  client_auth_type: RequireAndVerifyClientCert\n  min_version: TLS13\n\
         basic_auth_users:\n  prometheus: '{}'\n",
        hash()
    );
    let config = parse(&text).expect("valid");
    let tls = config.tls.expect("TLS on");
    assert_eq!(tls.cert_file, Path::new("/etc/collector/tls.crt"));
    assert_eq!(tls.key_file, Path::new("/abs/tls.key"));
    assert_eq!(
        tls.client_ca_file.as_deref(),
        Some(Path::new("/etc/collector/ca.crt"))
    );
    assert_eq!(tls.client_auth, ClientAuth::RequireAndVerifyClientCert);
    assert_eq!(
        (tls.min_version, tls.max_version),
        (TlsVersion::TLS13, TlsVersion::TLS13)
    );
    assert_eq!(config.users.len(), 1);
}

#[test]
fn an_empty_file_means_plain_http_without_auth() {
    for text in ["", "\n# nothing\n", "{}"] {
        assert_eq!(parse(text).expect(text), WebConfig::default(), "{text:?}");
    }
    let auth_only = parse(&format!("basic_auth_users:\n  a: '{}'\n", hash())).unwrap();
    assert!(auth_only.tls.is_none());
}

/// Each bad file and a piece of what its error must say.
const BAD: &[(&str, &str)] = &[
    ("tls_server_config: [", "/etc/collector/web.yml"),
    ("tls_server_config:\n  key_file: k\n", "cert_file"),
    ("tls_server_config:\n  cert_file: c\n  key_file: k\n  cipher_suites: []\n", "unknown field `cipher_suites`"),
    ("tls_server_config:\n  cert_file: c\n  key_file: k\n  cipher_suites: []\n", "line 4"),
    ("tls_server_config:\n  cert_file: [c]\n  key_file: k\n", "expected string scalar at line 2"),
    ("basic_auth_users:\n  a: x\n  a: y\n", "duplicate mapping key: a"),
    ("http_server_config:\n  http2: false\n", "http_server_config"),
    ("basic_auth_users:\n  alice: plaintext\n", "user `alice`"),
    ("basic_auth_users:\n  bob: '$2y$99$mDwo.lAisC94iLAyP81MCesa29IzH37oigHC/42V2pdJlUprsJPze'\n", "user `bob`"),
    ("tls_server_config:\n  cert_file: c\n  key_file: k\n  client_ca_file: ca\n", "NoClientCert"),
    ("tls_server_config:\n  cert_file: c\n  key_file: k\n  client_auth_type: RequireAndVerifyClientCert\n", "needs client_ca_file"),
    ("tls_server_config:\n  cert_file: c\n  key_file: k\n  client_auth_type: RequireAnyClientCert\n", "not supported"),
    ("tls_server_config:\n  cert_file: c\n  key_file: k\n  client_auth_type: Sometimes\n", "Sometimes"),
    ("tls_server_config:\n  cert_file: c\n  key_file: k\n  min_version: TLS13\n  max_version: TLS12\n", "min_version"),
    ("tls_server_config:\n  cert_file: ''\n  key_file: k\n", "empty"),
];

/// The error and its causes, as the binary prints them.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        text.push_str(&format!(": {next}"));
        cause = next.source();
    }
    text
}

#[test]
fn bad_files_are_refused_naming_the_file_and_the_setting() {
    for (text, expected) in BAD {
        let error = chain(&parse(text).expect_err(text));
        assert!(error.contains("/etc/collector/web.yml"), "{error}");
        assert!(error.contains(expected), "{text:?}: {error}");
    }
}

#[test]
fn a_missing_file_is_an_error_naming_it() {
    let error = chain(&WebConfig::load(Path::new("/nonexistent/web.yml")).expect_err("missing"));
    assert!(error.contains("/nonexistent/web.yml"), "{error}");
}
