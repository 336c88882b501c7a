//! The web config file in force on the main listener, reloaded whole when
//! it or a file it names changes (as exporter-toolkit re-reads it): users,
//! certificates and TLS settings change without a restart, which would
//! reset every eBPF counter. cert-manager and Kubernetes secrets replace
//! files in place.
//!
//! Each connection and each request stats the files (nothing beside a
//! handshake or a bcrypt check). A version that does not load (a
//! half-written file, a bad hash, a key that does not match) is logged and
//! counted, and the last good one stays in force until the next change.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio_rustls::TlsAcceptor;

use super::auth::{BasicAuth, Checks, NoRandomness};
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

/// The files of one reading (the web config, then those it names), each
/// with what `stat` told of its content before it was read.
type Stamp = Vec<(PathBuf, Option<(SystemTime, u64, u64)>)>;

pub struct ReloadingWeb {
    path: PathBuf,
    checks: Arc<Checks>,
    /// The last reading, whether it loaded or not, and the settings in force.
    current: Mutex<(Stamp, Arc<WebSettings>)>,
}

impl ReloadingWeb {
    /// Loads the file now: one that does not load stops the start with an
    /// error naming the file and the setting.
    pub fn load(path: &Path) -> Result<Self, WebError> {
        let checks = Checks::new()?;
        let (stamp, settings) = read(path, None, &checks);
        let current = Mutex::new((stamp, Arc::new(settings?)));
        let path = path.to_path_buf();
        Ok(ReloadingWeb {
            path,
            checks,
            current,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Stamp, Arc<WebSettings>)> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The settings in force, without looking for changes.
    pub fn in_force(&self) -> Arc<WebSettings> {
        Arc::clone(&self.lock().1)
    }

    /// The settings for a new connection or request, reloaded first if a
    /// file changed; `failures` counts changes that did not load.
    pub fn current(&self, failures: &AtomicU64) -> Arc<WebSettings> {
        let mut current = self.lock();
        let (stamp, settings) = &mut *current;
        if stamp.iter().any(|(path, stat)| self::stat(path) != *stat) {
            // Stamped as read whatever the outcome, so that the same bad
            // content is not tried again at every connection.
            let loaded;
            (*stamp, loaded) = read(&self.path, Some(settings.tls.is_some()), &self.checks);
            match loaded {
                Ok(loaded) => {
                    tracing::info!(path = %self.path.display(), "web config reloaded");
                    if loaded.tls.is_some() {
                        tracing::info!("TLS certificate reloaded");
                    }
                    *settings = Arc::new(loaded);
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
        Arc::clone(settings)
    }
}

/// Reads `path` and the files it names; `had_tls` is whether the listener
/// serves TLS (`None` at start, when the file decides).
fn read(
    path: &Path,
    had_tls: Option<bool>,
    checks: &Arc<Checks>,
) -> (Stamp, Result<WebSettings, WebError>) {
    // Each file is stamped before it is read: a change made meanwhile is
    // seen at the next look.
    let stamped = |path: &Path| (path.to_path_buf(), stat(path));
    let mut stamp = vec![stamped(path)];
    let config = match WebConfig::load(path) {
        Ok(config) => config,
        Err(error) => return (stamp, Err(error.into())),
    };
    if let Some(files) = &config.tls {
        let named = [Some(&files.cert_file), Some(&files.key_file)];
        let named = named.into_iter().chain([files.client_ca_file.as_ref()]);
        stamp.extend(named.flatten().map(|path| stamped(path)));
    }
    if let Some(had) = had_tls.filter(|had| *had != config.tls.is_some()) {
        let (path, change) = (path.to_path_buf(), if had { "removed" } else { "added" });
        return (stamp, Err(WebError::TlsSwitch { path, change }));
    }
    let tls = match config.tls.as_ref().map(tls::load).transpose() {
        Ok(tls) => tls.map(TlsAcceptor::from),
        Err(error) => return (stamp, Err(error.into())),
    };
    let users = (!config.users.is_empty()).then_some(config.users);
    let auth = users.map(|users| Arc::new(BasicAuth::new(users, Arc::clone(checks))));
    (stamp, Ok(WebSettings { tls, auth }))
}

fn stat(path: &Path) -> Option<(SystemTime, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    // Follows symlinks: a Kubernetes secret swaps its `..data` link.
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len(), meta.ino()))
}

#[cfg(test)]
mod tests;
