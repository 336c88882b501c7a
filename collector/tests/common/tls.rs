//! Throwaway certificate authorities, certificates and web configuration
//! files for the TLS and basic-auth tests, in a temporary directory.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};

/// A certificate authority that signs server and client certificates.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        TestCa { issuer }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A leaf certificate for `names` (IP addresses become IP SANs) and its
    /// key, both PEM, for a server or a client.
    pub fn leaf(&self, names: &[&str], client: bool) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).unwrap();
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        params.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// Files for one collector: CA, server certificate and key, and the web
/// configuration naming them.
pub struct TlsFixture {
    pub dir: tempfile::TempDir,
    pub ca: TestCa,
}

impl TlsFixture {
    /// A CA, a server certificate for 127.0.0.1 signed by it, and
    /// `web.yml` with `extra` appended (e.g. `basic_auth_users`).
    pub fn new(tls_extra: &str, extra: &str) -> TlsFixture {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("collector test CA");
        let fixture = TlsFixture { dir, ca };
        std::fs::write(fixture.path("ca.pem"), fixture.ca.pem()).unwrap();
        fixture.install_server_cert(&fixture.ca);
        let config = format!(
            "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n{tls_extra}{extra}"
        );
        std::fs::write(fixture.path("web.yml"), config).unwrap();
        fixture
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn web_config(&self) -> String {
        self.path("web.yml").to_str().unwrap().to_string()
    }

    /// Writes a server certificate signed by `ca` over the current one, as
    /// a rotation does (key first, then certificate, each replaced whole).
    pub fn install_server_cert(&self, ca: &TestCa) {
        let (cert, key) = ca.leaf(&["127.0.0.1", "localhost"], false);
        replace(&self.path("server.key"), &key);
        replace(&self.path("server.pem"), &cert);
    }
}

/// Replaces `path` whole (write aside, rename), as secret updates do.
pub fn replace(path: &Path, content: &str) {
    let aside = path.with_extension("new");
    std::fs::write(&aside, content).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

/// A `basic_auth_users` section for one user (bcrypt, cost 4: the format
/// takes any cost, and tests should not spend a second per request).
pub fn basic_auth_users(user: &str, password: &str) -> String {
    let hash = bcrypt::hash(password, 4).unwrap();
    format!("basic_auth_users:\n  {user}: '{hash}'\n")
}
