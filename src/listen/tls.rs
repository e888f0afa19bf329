//! TLS certificates of the client-facing listeners, replaceable while the process runs.
//!
//! Pingora loads a listener's certificate once, when the service is built, unless a rustls
//! certificate resolver is installed. Each TLS listener gets a [`CertResolver`] holding its
//! current [`CertifiedKey`] behind an `ArcSwap`: a handshake loads it (one atomic load), and
//! [`TlsCerts::reload`] re-reads every listener's files and swaps the new keys in. Connections
//! already open keep the certificate they were made with.

use crate::config::TlsFiles;
use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::InconsistentKeys;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Why a certificate or key could not be loaded. [`TlsError::is_key`] tells which file is at
/// fault, so config errors can name `tls.cert` or `tls.key`.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot load certificate {}: {source}", path.display())]
    Cert {
        path: PathBuf,
        #[source]
        source: pem::Error,
    },
    #[error("no PEM certificate in {}", path.display())]
    NoCert { path: PathBuf },
    #[error("certificate {} is not usable: {source}", path.display())]
    BadCert {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("cannot load private key {}: {source}", path.display())]
    Key {
        path: PathBuf,
        #[source]
        source: pem::Error,
    },
    #[error("private key {} is not usable: {source}", path.display())]
    BadKey {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error(
        "private key {} does not belong to certificate {}",
        key.display(),
        cert.display()
    )]
    Mismatch { cert: PathBuf, key: PathBuf },
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

/// Read and check a certificate chain and its private key: both parse, the key type is
/// supported, and the key matches the leaf certificate.
pub fn load(files: &TlsFiles) -> Result<Arc<CertifiedKey>, TlsError> {
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Cert {
            path: files.cert.clone(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCert {
            path: files.cert.clone(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|source| TlsError::Key {
        path: files.key.clone(),
        source,
    })?;
    let signing_key = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|source| TlsError::BadKey {
            path: files.key.clone(),
            source,
        })?;
    let certified = CertifiedKey::new(certs, signing_key);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {
            Ok(Arc::new(certified))
        }
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError::Mismatch {
            cert: files.cert.clone(),
            key: files.key.clone(),
        }),
        Err(source) => Err(TlsError::BadCert {
            path: files.cert.clone(),
            source,
        }),
    }
}

/// The process-wide rustls crypto provider (ring, as Pingora installs it).
fn provider() -> Arc<CryptoProvider> {
    pingora::tls::install_default_crypto_provider();
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

/// One listener's certificate: what every handshake on it is answered with.
#[derive(Debug)]
pub struct CertResolver {
    files: TlsFiles,
    current: ArcSwap<CertifiedKey>,
}

impl CertResolver {
    /// The files this listener's certificate is read from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The certificate in force.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The certificates of every TLS listener of the process.
#[derive(Debug, Default)]
pub struct TlsCerts {
    /// Registered once per TLS listener at start; only `reload` reads the list afterwards.
    resolvers: Mutex<Vec<Arc<CertResolver>>>,
}

impl TlsCerts {
    /// Load `files` and register a resolver for one listener.
    pub fn add(&self, files: &TlsFiles) -> Result<Arc<CertResolver>, TlsError> {
        let resolver = Arc::new(CertResolver {
            files: files.clone(),
            current: ArcSwap::new(load(files)?),
        });
        self.lock().push(resolver.clone());
        Ok(resolver)
    }

    /// Number of TLS listeners.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Re-read every listener's certificate and key from the paths it was started with and
    /// serve them to new handshakes. All or nothing: if any pair fails to load, nothing changes
    /// and the error says which file. Returns how many listeners were updated (0 without TLS).
    ///
    /// Blocking file reads (a few KiB per listener): call it from a blocking-friendly context
    /// such as the config reload. Listener addresses and certificate paths are fixed at start;
    /// changing a path in the config takes a restart or a graceful upgrade.
    pub fn reload(&self) -> Result<usize, TlsError> {
        let resolvers = self.lock().clone();
        let fresh = resolvers
            .iter()
            .map(|r| load(&r.files))
            .collect::<Result<Vec<_>, _>>()?;
        for (r, key) in resolvers.iter().zip(fresh) {
            r.current.store(key);
        }
        if !resolvers.is_empty() {
            log::info!("reloaded {} TLS certificate(s)", resolvers.len());
        }
        Ok(resolvers.len())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<CertResolver>>> {
        self.resolvers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(dir: &std::path::Path, name: &str) -> TlsFiles {
        let c = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        let files = TlsFiles {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        };
        std::fs::write(&files.cert, c.cert.pem()).unwrap();
        std::fs::write(&files.key, c.key_pair.serialize_pem()).unwrap();
        files
    }

    #[test]
    fn loads_a_matching_pair_and_names_the_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        let a = self_signed(dir.path(), "a.test");
        let b = self_signed(dir.path(), "b.test");
        assert!(load(&a).is_ok());

        let missing = TlsFiles {
            cert: dir.path().join("nope.crt"),
            key: a.key.clone(),
        };
        let e = load(&missing).unwrap_err();
        assert!(!e.is_key() && e.to_string().contains("nope.crt"), "{e}");

        let key_as_cert = TlsFiles {
            cert: a.key.clone(),
            key: a.key.clone(),
        };
        assert!(matches!(load(&key_as_cert), Err(TlsError::NoCert { .. })));

        let cert_as_key = TlsFiles {
            cert: a.cert.clone(),
            key: a.cert.clone(),
        };
        assert!(load(&cert_as_key).unwrap_err().is_key());

        let crossed = TlsFiles {
            cert: a.cert.clone(),
            key: b.key.clone(),
        };
        let e = load(&crossed).unwrap_err();
        assert!(matches!(e, TlsError::Mismatch { .. }), "{e}");
        assert!(e.is_key());
    }

    #[test]
    fn reload_swaps_in_place_and_is_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let files = self_signed(dir.path(), "one.test");
        let certs = TlsCerts::default();
        let resolver = certs.add(&files).unwrap();
        let before = resolver.current().cert[0].clone();

        // New files at the same paths.
        let next = self_signed(dir.path(), "two.test");
        std::fs::rename(&next.cert, &files.cert).unwrap();
        std::fs::rename(&next.key, &files.key).unwrap();
        assert_eq!(certs.reload().unwrap(), 1);
        let after = resolver.current().cert[0].clone();
        assert_ne!(before, after);

        // A broken key leaves the certificate in force.
        std::fs::write(&files.key, "not a key").unwrap();
        assert!(certs.reload().unwrap_err().is_key());
        assert_eq!(resolver.current().cert[0], after);
    }
}
