//! TLS for the main listener, with the certificate reloaded when its files
//! change: cert-manager and Kubernetes secrets rotate certificates in
//! place, and a restart would reset every eBPF counter.
//!
//! Each handshake stats the files (three `stat` calls: nothing next to a
//! handshake); when one changed since the last attempt the configuration is
//! rebuilt. A change that does not load (a half-written file, a key that
//! does not match) is logged and the previous certificate kept; the next
//! change is tried again.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::web_config::{ClientAuth, TlsFiles, TlsVersion};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}")]
    Pem {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{what} {path} holds no certificate")]
    NoCertificate { what: &'static str, path: PathBuf },
    #[error("client CA file {path}")]
    ClientCa {
        path: PathBuf,
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    #[error("certificate {cert} with key {key}")]
    Config {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
}

/// Identity of a file's current content, as far as `stat` tells.
type Stamp = Vec<Option<(SystemTime, u64, u64)>>;

pub struct ReloadingTls {
    files: TlsFiles,
    current: Mutex<(Stamp, TlsAcceptor)>,
}

impl ReloadingTls {
    /// Loads the files now: a certificate that does not load stops the
    /// start with an error naming the file.
    pub fn new(files: TlsFiles) -> Result<Self, TlsError> {
        let stamp = stamp(&files);
        let acceptor = TlsAcceptor::from(load(&files)?);
        Ok(ReloadingTls {
            files,
            current: Mutex::new((stamp, acceptor)),
        })
    }

    /// The acceptor for a new connection, reloaded first if a file changed.
    pub fn acceptor(&self) -> TlsAcceptor {
        let now = stamp(&self.files);
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if current.0 != now {
            current.0 = now;
            match load(&self.files) {
                Ok(config) => {
                    tracing::info!(cert = %self.files.cert_file.display(), "TLS certificate reloaded");
                    current.1 = TlsAcceptor::from(config);
                }
                Err(error) => {
                    let cause = std::error::Error::source(&error).map(ToString::to_string);
                    tracing::warn!(
                        %error,
                        cause = cause.unwrap_or_default(),
                        "TLS files changed but do not load; serving the previous certificate"
                    );
                }
            }
        }
        current.1.clone()
    }
}

fn stamp(files: &TlsFiles) -> Stamp {
    let paths = [
        Some(&files.cert_file),
        Some(&files.key_file),
        files.client_ca_file.as_ref(),
    ];
    paths
        .into_iter()
        .flatten()
        .map(|path| {
            use std::os::unix::fs::MetadataExt;
            // Follows symlinks: a Kubernetes secret swaps its `..data` link.
            let meta = std::fs::metadata(path).ok()?;
            Some((meta.modified().ok()?, meta.len(), meta.ino()))
        })
        .collect()
}

fn certificates(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = |source| TlsError::Pem {
        what,
        path: path.to_path_buf(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn load(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = certificates("certificate file", &files.cert_file)?;
    let key = PrivateKeyDer::from_pem_file(&files.key_file).map_err(|source| TlsError::Pem {
        what: "key file",
        path: files.key_file.clone(),
        source,
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = [
        (TlsVersion::TLS12, &rustls::version::TLS12),
        (TlsVersion::TLS13, &rustls::version::TLS13),
    ]
    .into_iter()
    .filter(|(version, _)| (files.min_version..=files.max_version).contains(version))
    .map(|(_, supported)| supported)
    .collect();
    let config_error = |source| TlsError::Config {
        cert: files.cert_file.clone(),
        key: files.key_file.clone(),
        source,
    };
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&versions)
        .map_err(config_error)?;
    let builder = match (&files.client_ca_file, files.client_auth) {
        (
            Some(ca),
            ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert,
        ) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates("client CA file", ca)? {
                roots.add(cert).map_err(config_error)?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if files.client_auth == ClientAuth::VerifyClientCertIfGiven {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier.build().map_err(|source| TlsError::ClientCa {
                path: ca.clone(),
                source,
            })?;
            builder.with_client_cert_verifier(verifier)
        }
        // web_config refuses every other combination.
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key).map_err(config_error)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
