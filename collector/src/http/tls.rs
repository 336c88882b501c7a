//! The rustls configuration of the main listener, built from the files the
//! web config names (reloaded with it: see `web`).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::version::{TLS12, TLS13};
use rustls::{RootCertStore, ServerConfig};

use crate::web_config::{ClientAuth, TlsFiles, TlsVersion};

/// What does not load, naming the file and why.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(String);

fn certificates(what: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let path_ = path.display();
    let certs = CertificateDer::pem_file_iter(path).and_then(Iterator::collect);
    let certs: Vec<_> = certs.map_err(|e| TlsError(format!("cannot read {what} {path_}: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError(format!("{what} {path_} holds no certificate")));
    }
    Ok(certs)
}

pub fn load(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = certificates("certificate file", &files.cert_file)?;
    let (cert_file, key_file) = (files.cert_file.display(), files.key_file.display());
    let key = PrivateKeyDer::from_pem_file(&files.key_file)
        .map_err(|e| TlsError(format!("cannot read key file {key_file}: {e}")))?;
    let config_error = |e| TlsError(format!("certificate {cert_file} with key {key_file}: {e}"));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: Vec<_> = [(TlsVersion::TLS12, &TLS12), (TlsVersion::TLS13, &TLS13)]
        .into_iter()
        .filter(|(version, _)| (files.min_version..=files.max_version).contains(version))
        .map(|(_, supported)| supported)
        .collect();
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&versions)
        .map_err(config_error)?;
    // web_config refuses a client_auth_type that verifies without a CA file.
    let verify = [
        ClientAuth::VerifyClientCertIfGiven,
        ClientAuth::RequireAndVerifyClientCert,
    ];
    let builder = match &files.client_ca_file {
        Some(ca) if verify.contains(&files.client_auth) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates("client CA file", ca)? {
                roots.add(cert).map_err(config_error)?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = match files.client_auth {
                ClientAuth::VerifyClientCertIfGiven => verifier.allow_unauthenticated(),
                _ => verifier,
            };
            let ca = ca.display();
            let verifier = verifier
                .build()
                .map_err(|e| TlsError(format!("client CA file {ca}: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key).map_err(config_error)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
