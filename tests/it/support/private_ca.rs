//! A private certificate authority made for one test, and a certificate it
//! issues for 127.0.0.1, served by the test SMTP server over STARTTLS: what
//! a company's internal mail relay looks like to the run.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A CA's certificate (PEM, for `--smtp-ca-file`) and a server
/// configuration presenting a certificate that CA issued.
pub struct PrivateCa {
    /// The CA's certificate, PEM.
    pub ca_pem: String,
    /// What the test SMTP server presents after STARTTLS.
    pub server: Arc<rustls::ServerConfig>,
}

impl PrivateCa {
    /// A new CA, and a certificate from it for `names` (host names or IP
    /// addresses).
    pub fn issuing_for(names: &[&str]) -> PrivateCa {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "Acme Internal Test CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut leaf = CertificateParams::new(names).unwrap();
        leaf.distinguished_name
            .push(DnType::CommonName, "mail relay");
        let cert = leaf.signed_by(&key, &ca_cert, &ca_key).unwrap();
        PrivateCa {
            ca_pem: ca_cert.pem(),
            server: server_config(cert.der().clone(), key.serialize_der()),
        }
    }
}

fn server_config(cert: CertificateDer<'static>, key: Vec<u8>) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
        )
        .unwrap();
    Arc::new(config)
}
