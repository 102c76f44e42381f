//! Which certificates the run trusts for the SMTP server, and what to say
//! when it does not trust the one the server presents. Trusted: the roots
//! built into the program (Mozilla's), the system's store (`SSL_CERT_FILE`,
//! `SSL_CERT_DIR`, else `/etc/ssl/certs` and the like), and the CAs in
//! `--smtp-ca-file` (PEM), for a relay whose certificate a company's own CA
//! issued.

use std::path::Path;

use anyhow::{anyhow, bail, Context};
use lettre::transport::smtp::client::{Certificate, TlsParameters};

/// TLS settings for `host`: the built-in roots, the system's, and those in
/// `ca_file`.
pub(super) fn tls_parameters(host: &str, ca_file: Option<&Path>) -> anyhow::Result<TlsParameters> {
    let mut builder = TlsParameters::builder(host.to_owned());
    for root in system_roots() {
        builder = builder.add_root_certificate(root);
    }
    if let Some(path) = ca_file {
        builder = builder.add_root_certificate(ca_file_roots(path)?);
    }
    builder
        .build_rustls()
        .map_err(|e| anyhow!("cannot set up TLS for the SMTP server {host}: {e}"))
}

/// The system's CA certificates that parse; one that does not is left out
/// rather than stop the run.
fn system_roots() -> Vec<Certificate> {
    let found = rustls_native_certs::load_native_certs();
    found
        .certs
        .into_iter()
        .filter(|der| rustls::RootCertStore::empty().add(der.clone()).is_ok())
        .filter_map(|der| Certificate::from_der(der.to_vec()).ok())
        .collect()
}

/// The CA certificates in a PEM file.
fn ca_file_roots(path: &Path) -> anyhow::Result<Certificate> {
    let shown = path.display();
    let pem = std::fs::read(path).with_context(|| {
        format!("cannot read the SMTP CA file {shown} (--smtp-ca-file / LSQ_SMTP_CA_FILE)")
    })?;
    let text = String::from_utf8_lossy(&pem);
    if !text.contains("-----BEGIN CERTIFICATE-----") {
        bail!(
            "the SMTP CA file {shown} holds no PEM certificate (-----BEGIN CERTIFICATE-----): \
             give the certificate of the CA that issued the server's certificate, in PEM"
        );
    }
    Certificate::from_pem(&pem).map_err(|e| {
        anyhow!("the SMTP CA file {shown} holds a certificate that cannot be read: {e}")
    })
}

/// When `error` (or what caused it) is a certificate the run does not
/// trust: what is wrong with it and what to do.
pub(super) fn certificate_problem(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        let tls = cause.downcast_ref::<rustls::Error>().or_else(|| {
            cause
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|e| e.downcast_ref::<rustls::Error>())
        });
        if let Some(rustls::Error::InvalidCertificate(problem)) = tls {
            return Some(explain(&format!("{problem:?}")));
        }
        source = cause.source();
    }
    None
}

/// The advice for a certificate refused for `what` (rustls's name for it).
fn explain(what: &str) -> String {
    let kind = what.split(['(', ' ', '{']).next().unwrap_or(what);
    let advice = if what.contains("CaUsedAsEndEntity") {
        "the server presents a CA certificate (a self-signed one, say) as its own; it needs \
         a server certificate issued by a CA, and --smtp-ca-file (LSQ_SMTP_CA_FILE, \
         smtp_ca_file) naming that CA's certificate"
    } else if kind.starts_with("NotValidForName") {
        "it is not issued for the host name in --smtp-url: use a name the certificate names"
    } else if kind.starts_with("Expired") || kind.starts_with("NotValidYet") {
        "it is outside its validity period: check this machine's clock, or have the \
         server's certificate renewed"
    } else {
        "no CA this machine trusts issued it: if a private (company) CA issued it, give that \
         CA's certificate in PEM with --smtp-ca-file (LSQ_SMTP_CA_FILE, smtp_ca_file in the \
         config file), or add it to the system's store"
    };
    let shown = match what.find(" {") {
        Some(at) => &what[..at],
        None => what,
    };
    format!("certificate error: the server's TLS certificate was refused ({shown}): {advice}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_certificate_error_says_what_failed_and_what_to_do() {
        let unknown = explain("UnknownIssuer");
        assert!(unknown.contains("(UnknownIssuer)") && unknown.contains("--smtp-ca-file"));
        let ca = explain("Other(OtherError(CaUsedAsEndEntity))");
        assert!(
            ca.contains("CaUsedAsEndEntity") && ca.contains("self-signed"),
            "{ca}"
        );
        let name = explain("NotValidForNameContext { expected: x, presented: [] }");
        assert!(name.contains("host name in --smtp-url"), "{name}");
        assert!(!name.contains("presented"), "{name}");
    }

    #[test]
    fn a_ca_file_without_a_certificate_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate").unwrap();
        let err = ca_file_roots(&path).unwrap_err().to_string();
        assert!(err.contains("holds no PEM certificate"), "{err}");
        let err = ca_file_roots(&dir.path().join("missing.pem")).unwrap_err();
        assert!(format!("{err:#}").contains("--smtp-ca-file"), "{err:#}");
    }
}
