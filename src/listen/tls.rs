//! TLS certificates of the client-facing listeners, replaceable while the process runs.
//!
//! Pingora loads a listener's certificate once, when the service is built, unless a rustls
//! certificate resolver is installed. Each TLS listener gets a [`CertResolver`] holding its
//! current [`CertifiedKey`] behind an `ArcSwap`: a handshake loads it (one atomic load), and
//! [`TlsCerts::reload`] re-reads every listener's files and swaps the new keys in. Connections
//! already open keep the certificate they were made with.

use crate::certs::{self, TlsError};
use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// One listener's certificate: what every handshake on it is answered with.
#[derive(Debug)]
pub struct CertResolver {
    cert: PathBuf,
    key: PathBuf,
    current: ArcSwap<CertifiedKey>,
}

impl CertResolver {
    /// The certificate and key files this listener's certificate is read from.
    pub fn files(&self) -> (&Path, &Path) {
        (&self.cert, &self.key)
    }

    /// Read the files again (see [`certs::load`]).
    fn load(&self) -> Result<Arc<CertifiedKey>, TlsError> {
        certs::load(&self.cert, &self.key)
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
    /// Load a certificate chain and its key and register a resolver for one listener.
    pub fn add(&self, cert: &Path, key: &Path) -> Result<Arc<CertResolver>, TlsError> {
        let resolver = Arc::new(CertResolver {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: ArcSwap::new(certs::load(cert, key)?),
        });
        self.lock().push(resolver.clone());
        Ok(resolver)
    }

    /// Number of TLS listeners.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// No TLS listener?
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
            .map(|r| r.load())
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
    fn reload_swaps_in_place_and_is_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed(dir.path(), "one.test");
        let certs = TlsCerts::default();
        let resolver = certs.add(&cert, &key).unwrap();
        let before = resolver.current().cert[0].clone();

        // New files at the same paths.
        let (next_cert, next_key) = self_signed(dir.path(), "two.test");
        std::fs::rename(&next_cert, &cert).unwrap();
        std::fs::rename(&next_key, &key).unwrap();
        assert_eq!(certs.reload().unwrap(), 1);
        let after = resolver.current().cert[0].clone();
        assert_ne!(before, after);

        // A broken key leaves the certificate in force.
        std::fs::write(&key, "not a key").unwrap();
        assert!(certs.reload().unwrap_err().is_key());
        assert_eq!(resolver.current().cert[0], after);
    }
}
