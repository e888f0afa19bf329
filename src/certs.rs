//! PEM certificates and keys: loading and checking, shared by the TLS listeners, config
//! validation and upstream TLS.
//!
//! This module is the ground floor: it imports nothing from the crate, so that `config` (which
//! checks the files when a config is built) and `listen` (which serves them) both depend on it
//! and not on each other.

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::{InconsistentKeys, RootCertStore};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why a certificate or key could not be loaded. [`TlsError::is_key`] tells which file is at
/// fault, so config errors can name `tls.cert` or `tls.key`.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file cannot be read or is not PEM.
    #[error("cannot load certificate {}: {source}", path.display())]
    Cert {
        path: PathBuf,
        #[source]
        source: pem::Error,
    },
    /// The certificate file holds no `CERTIFICATE` block.
    #[error("no PEM certificate in {}", path.display())]
    NoCert { path: PathBuf },
    /// A certificate parses as PEM but rustls cannot use it.
    #[error("certificate {} is not usable: {source}", path.display())]
    BadCert {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    /// The key file cannot be read or holds no PEM private key.
    #[error("cannot load private key {}: {source}", path.display())]
    Key {
        path: PathBuf,
        #[source]
        source: pem::Error,
    },
    /// The private key is of a type the crypto provider does not support.
    #[error("private key {} is not usable: {source}", path.display())]
    BadKey {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    /// The private key is not the one of the leaf certificate.
    #[error(
        "private key {} does not belong to certificate {}",
        key.display(),
        cert.display()
    )]
    Mismatch { cert: PathBuf, key: PathBuf },
    /// Pingora refused to build a TLS listener's settings.
    #[error("TLS listener settings: {0}")]
    Settings(#[source] Box<pingora::Error>),
}

impl TlsError {
    /// Is the key file (rather than the certificate file) the one at fault?
    pub fn is_key(&self) -> bool {
        matches!(
            self,
            TlsError::Key { .. } | TlsError::BadKey { .. } | TlsError::Mismatch { .. }
        )
    }
}

/// Read and check a certificate chain (leaf first) and its private key: both parse, the key
/// type is supported, and the key matches the leaf certificate.
pub fn load(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let certs = read_certs(cert)?;
    let der = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Key {
        path: key.to_path_buf(),
        source,
    })?;
    let signing_key = provider()
        .key_provider
        .load_private_key(der)
        .map_err(|source| TlsError::BadKey {
            path: key.to_path_buf(),
            source,
        })?;
    let certified = CertifiedKey::new(certs, signing_key);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {
            Ok(Arc::new(certified))
        }
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError::Mismatch {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        }),
        Err(source) => Err(TlsError::BadCert {
            path: cert.to_path_buf(),
            source,
        }),
    }
}

/// Read the CA certificates in `path` (one or more PEM blocks) into a store of trust anchors,
/// for verifying the certificates a peer presents. Every certificate in the file must be usable.
pub fn load_ca(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for der in read_certs(path)? {
        store.add(der).map_err(|source| TlsError::BadCert {
            path: path.to_path_buf(),
            source,
        })?;
    }
    Ok(store)
}

/// Every `CERTIFICATE` block of a PEM file; at least one.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Cert {
            path: path.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCert {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The process-wide rustls crypto provider (ring, as Pingora installs it).
pub fn provider() -> Arc<CryptoProvider> {
    pingora::tls::install_default_crypto_provider();
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::client::WebPkiServerVerifier;
    use rustls::pki_types::{ServerName, UnixTime};

    /// A self-signed certificate for `name` and its key, as files in `dir`.
    fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let c = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        let (cert, key) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert, c.cert.pem()).unwrap();
        std::fs::write(&key, c.key_pair.serialize_pem()).unwrap();
        (cert, key)
    }

    #[test]
    fn loads_a_matching_pair_and_names_the_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        let (a_cert, a_key) = self_signed(dir.path(), "a.test");
        let (_, b_key) = self_signed(dir.path(), "b.test");
        assert!(load(&a_cert, &a_key).is_ok());

        let e = load(&dir.path().join("nope.crt"), &a_key).unwrap_err();
        assert!(!e.is_key() && e.to_string().contains("nope.crt"), "{e}");

        assert!(matches!(load(&a_key, &a_key), Err(TlsError::NoCert { .. })));
        assert!(load(&a_cert, &a_cert).unwrap_err().is_key());

        let e = load(&a_cert, &b_key).unwrap_err();
        assert!(matches!(e, TlsError::Mismatch { .. }), "{e}");
        assert!(e.is_key());
    }

    /// A CA, and a leaf for `localhost` signed by it; returns the CA's PEM and the leaf's DER.
    fn ca_and_leaf() -> (String, CertificateDer<'static>) {
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca = ca.self_signed(&ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &ca, &ca_key)
            .unwrap();
        (ca.pem(), leaf.der().clone())
    }

    #[test]
    fn load_ca_trusts_what_the_ca_signed_and_names_the_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        let (ca_pem, leaf) = ca_and_leaf();
        let (other_pem, _) = ca_and_leaf();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, &ca_pem).unwrap();
        let store = load_ca(&ca_file).unwrap();
        assert_eq!(store.len(), 1);

        // The store verifies a leaf its CA signed, and not one from another CA.
        let verify = |store: RootCertStore| {
            WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider())
                .build()
                .unwrap()
                .verify_server_cert(
                    &leaf,
                    &[],
                    &ServerName::try_from("localhost").unwrap(),
                    &[],
                    UnixTime::now(),
                )
        };
        assert!(verify(store).is_ok());
        let other_file = dir.path().join("other.pem");
        std::fs::write(&other_file, &other_pem).unwrap();
        assert!(verify(load_ca(&other_file).unwrap()).is_err());

        // Two CAs in one file are both kept.
        let both = dir.path().join("both.pem");
        std::fs::write(&both, format!("{ca_pem}{other_pem}")).unwrap();
        assert_eq!(load_ca(&both).unwrap().len(), 2);

        let e = load_ca(&dir.path().join("missing.pem")).unwrap_err();
        assert!(matches!(e, TlsError::Cert { .. }) && e.to_string().contains("missing.pem"));
        let (_, key) = self_signed(dir.path(), "k.test");
        assert!(matches!(load_ca(&key), Err(TlsError::NoCert { .. })));
        let junk = dir.path().join("junk.pem");
        std::fs::write(
            &junk,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        assert!(matches!(load_ca(&junk), Err(TlsError::BadCert { .. })));
    }
}
