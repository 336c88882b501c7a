//! `--web.config.file`: node_exporter's web configuration (the Prometheus
//! exporter-toolkit format), so TLS and basic auth are set up as for every
//! other exporter on the node.
//!
//! Supported: `tls_server_config` with `cert_file`, `key_file`,
//! `client_ca_file`, `client_auth_type` (`NoClientCert`,
//! `VerifyClientCertIfGiven`, `RequireAndVerifyClientCert`),
//! `min_version`/`max_version` (`TLS12`, `TLS13`), and `basic_auth_users`
//! with bcrypt hashes. Anything else is refused with its name rather than
//! ignored: a setting silently dropped would serve weaker than asked.
//! Relative paths are relative to the file's directory, as in the toolkit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    #[error("cannot read the web config {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("web config {path}")]
    Syntax {
        path: PathBuf,
        #[source]
        // Boxed: the parser's error, with its locations, is several times
        // the size of the other variants.
        source: Box<serde_saphyr::Error>,
    },
    #[error("web config {path}: basic_auth_users: the hash of user `{user}` is not a bcrypt hash ($2a$, $2b$ or $2y$, cost 4 to 31)")]
    Hash {
        path: PathBuf,
        user: String,
        #[source]
        source: bcrypt::BcryptError,
    },
    #[error("web config {path}: tls_server_config: {why}")]
    Tls { path: PathBuf, why: String },
}

/// The client certificate policies of exporter-toolkit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum ClientAuth {
    #[default]
    NoClientCert,
    RequestClientCert,
    RequireAnyClientCert,
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub enum TlsVersion {
    TLS12,
    TLS13,
}

/// What the TLS listener needs, validated: the files exist when loaded
/// (see `http::ReloadingWeb`), the policy is one rustls can enforce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// With a verifying policy only.
    pub client_ca_file: Option<PathBuf>,
    pub client_auth: ClientAuth,
    pub min_version: TlsVersion,
    pub max_version: TlsVersion,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebConfig {
    pub tls: Option<TlsFiles>,
    /// User name to bcrypt hash; empty for no authentication.
    pub users: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct File {
    tls_server_config: Option<TlsSection>,
    #[serde(default)]
    basic_auth_users: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsSection {
    cert_file: PathBuf,
    key_file: PathBuf,
    client_ca_file: Option<PathBuf>,
    #[serde(default)]
    client_auth_type: ClientAuth,
    min_version: Option<TlsVersion>,
    max_version: Option<TlsVersion>,
}

impl WebConfig {
    /// Reads and validates the file; every error names the file and the
    /// setting at fault.
    pub fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| WebConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    fn parse(text: &str, path: &Path) -> Result<WebConfig, WebConfigError> {
        // An empty file (or only comments) is a valid, empty configuration.
        let file: File = if text.lines().all(|l| {
            let l = l.trim();
            l.is_empty() || l.starts_with('#')
        }) {
            File::default()
        } else {
            // The error on one line, with its line and column: the snippet
            // rendering would spread the file's text over the log.
            let options = serde_saphyr::options! { with_snippet: false };
            serde_saphyr::from_str_with_options(text, options).map_err(|source| {
                WebConfigError::Syntax {
                    path: path.to_path_buf(),
                    source: Box::new(source),
                }
            })?
        };
        for (user, hash) in &file.basic_auth_users {
            hash.parse::<bcrypt::HashParts>()
                .and_then(|parts| match parts.get_cost() {
                    4..=31 => Ok(()),
                    cost => Err(bcrypt::BcryptError::CostNotAllowed(cost)),
                })
                .map_err(|source| WebConfigError::Hash {
                    path: path.to_path_buf(),
                    user: user.clone(),
                    source,
                })?;
        }
        let base = path.parent().unwrap_or(Path::new("."));
        let tls = file
            .tls_server_config
            .map(|section| tls_files(section, base))
            .transpose()
            .map_err(|why| WebConfigError::Tls {
                path: path.to_path_buf(),
                why,
            })?;
        Ok(WebConfig {
            tls,
            users: file.basic_auth_users,
        })
    }
}

fn tls_files(section: TlsSection, base: &Path) -> Result<TlsFiles, String> {
    let client_auth = section.client_auth_type;
    match (client_auth, &section.client_ca_file) {
        (ClientAuth::RequestClientCert | ClientAuth::RequireAnyClientCert, _) => {
            return Err(format!(
                "client_auth_type {client_auth:?} accepts client certificates without verifying \
                 them and is not supported; use VerifyClientCertIfGiven or \
                 RequireAndVerifyClientCert with client_ca_file"
            ));
        }
        (ClientAuth::NoClientCert, Some(_)) => {
            return Err(
                "client_ca_file is set but client_auth_type is NoClientCert (the \
                        default); set client_auth_type to RequireAndVerifyClientCert or \
                        VerifyClientCertIfGiven"
                    .to_string(),
            );
        }
        (ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert, None) => {
            return Err(format!(
                "client_auth_type {client_auth:?} needs client_ca_file to verify against"
            ));
        }
        _ => {}
    }
    let min_version = section.min_version.unwrap_or(TlsVersion::TLS12);
    let max_version = section.max_version.unwrap_or(TlsVersion::TLS13);
    if min_version > max_version {
        return Err(format!(
            "min_version {min_version:?} is above max_version {max_version:?}"
        ));
    }
    let resolve = |file: PathBuf| {
        if file.as_os_str().is_empty() {
            Err("a file name is empty".to_string())
        } else {
            Ok(base.join(file))
        }
    };
    Ok(TlsFiles {
        cert_file: resolve(section.cert_file)?,
        key_file: resolve(section.key_file)?,
        client_ca_file: section.client_ca_file.map(resolve).transpose()?,
        client_auth,
        min_version,
        max_version,
    })
}

#[cfg(test)]
mod tests;
