//! The web config file in force on the main listener, reloaded whole when
//! it or a file it names changes (as exporter-toolkit re-reads it): users,
//! certificates and TLS settings change without a restart, which would
//! reset every eBPF counter. cert-manager and Kubernetes secrets replace
//! files in place.
//!
//! Each connection and each request stats the files (a few `stat` calls:
//! nothing beside a handshake or a bcrypt check); when one changed since
//! the last attempt the whole configuration is loaded again. One that does
//! not load (a half-written file, a bad hash, a key that does not match)
//! is logged and counted, and the last good one stays in force; the next
//! change is tried again.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio_rustls::TlsAcceptor;

use super::auth::{BasicAuth, NoRandomness};
use super::tls::{self, TlsError};
use crate::web_config::{WebConfig, WebConfigError};

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error(transparent)]
    Config(#[from] WebConfigError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Auth(#[from] NoRandomness),
    /// The listener's protocol is chosen at start: a file edit never turns
    /// HTTPS into plain HTTP.
    #[error("web config {path}: tls_server_config {change}; switching between HTTP and HTTPS needs a restart")]
    TlsSwitch { path: PathBuf, change: &'static str },
}

/// What one version of the file serves.
pub struct WebSettings {
    pub tls: Option<TlsAcceptor>,
    pub auth: Option<Arc<BasicAuth>>,
}

/// Identity of each watched file's content, as far as `stat` tells.
type Stamp = Vec<Option<(SystemTime, u64, u64)>>;

pub struct ReloadingWeb {
    path: PathBuf,
    current: Mutex<Current>,
}

struct Current {
    /// The web config file and the files it named when last read.
    watched: Vec<PathBuf>,
    stamp: Stamp,
    settings: Arc<WebSettings>,
}

impl ReloadingWeb {
    /// Loads the file now: one that does not load stops the start with an
    /// error naming the file and the setting.
    pub fn load(path: &Path) -> Result<Self, WebError> {
        let attempt = attempt(path, None);
        Ok(ReloadingWeb {
            path: path.to_path_buf(),
            current: Mutex::new(Current {
                settings: Arc::new(attempt.settings?),
                watched: attempt.watched,
                stamp: attempt.stamp,
            }),
        })
    }

    /// The settings in force, without looking for changes.
    pub fn in_force(&self) -> Arc<WebSettings> {
        let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(&current.settings)
    }

    /// The settings for a new connection or request, reloaded first if a
    /// file changed; `failures` counts changes that did not load.
    pub fn current(&self, failures: &AtomicU64) -> Arc<WebSettings> {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if stamp(&current.watched) != current.stamp {
            let attempt = attempt(&self.path, Some(current.settings.tls.is_some()));
            // Stamped as read whatever the outcome, so that the same bad
            // content is not tried again at every connection.
            current.watched = attempt.watched;
            current.stamp = attempt.stamp;
            match attempt.settings {
                Ok(settings) => {
                    tracing::info!(path = %self.path.display(), "web config reloaded");
                    if settings.tls.is_some() {
                        tracing::info!("TLS certificate reloaded");
                    }
                    current.settings = Arc::new(settings);
                }
                Err(error) => {
                    failures.fetch_add(1, Ordering::Relaxed);
                    let cause = std::error::Error::source(&error).map(ToString::to_string);
                    tracing::warn!(
                        %error,
                        cause = cause.unwrap_or_default(),
                        "web config or the files it names changed but do not load; \
                         serving the last good configuration"
                    );
                }
            }
        }
        Arc::clone(&current.settings)
    }
}

/// One reading of the file and of the files it names.
struct Attempt {
    watched: Vec<PathBuf>,
    stamp: Stamp,
    settings: Result<WebSettings, WebError>,
}

/// Reads `path` and what it names; `had_tls` is whether the listener
/// serves TLS (`None` at start, when the file decides).
fn attempt(path: &Path, had_tls: Option<bool>) -> Attempt {
    // Each file is stamped before it is read: a change made meanwhile is
    // seen at the next look.
    let mut watched = vec![path.to_path_buf()];
    let mut stamp = stamp(&watched);
    let config = match WebConfig::load(path) {
        Ok(config) => config,
        Err(error) => {
            return Attempt {
                watched,
                stamp,
                settings: Err(error.into()),
            }
        }
    };
    if let Some(files) = &config.tls {
        let named = [Some(&files.cert_file), Some(&files.key_file)];
        let named: Vec<PathBuf> = named
            .into_iter()
            .chain([files.client_ca_file.as_ref()])
            .flatten()
            .cloned()
            .collect();
        stamp.extend(self::stamp(&named));
        watched.extend(named);
    }
    let settings = match had_tls {
        Some(had) if had != config.tls.is_some() => Err(WebError::TlsSwitch {
            path: path.to_path_buf(),
            change: if had { "removed" } else { "added" },
        }),
        _ => settings(&config),
    };
    Attempt {
        watched,
        stamp,
        settings,
    }
}

fn settings(config: &WebConfig) -> Result<WebSettings, WebError> {
    let tls = config
        .tls
        .as_ref()
        .map(tls::load)
        .transpose()?
        .map(TlsAcceptor::from);
    let auth = if config.users.is_empty() {
        None
    } else {
        Some(Arc::new(BasicAuth::new(config.users.clone())?))
    };
    Ok(WebSettings { tls, auth })
}

fn stamp(paths: &[PathBuf]) -> Stamp {
    paths
        .iter()
        .map(|path| {
            use std::os::unix::fs::MetadataExt;
            // Follows symlinks: a Kubernetes secret swaps its `..data` link.
            let meta = std::fs::metadata(path).ok()?;
            Some((meta.modified().ok()?, meta.len(), meta.ino()))
        })
        .collect()
}
