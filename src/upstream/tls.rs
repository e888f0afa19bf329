//! TLS to a cluster's peers, on rustls: one client configuration per cluster (its trust anchors,
//! its client certificate, ALPN `http/1.1`), built once and shared by every connection to every
//! peer of the cluster, so TLS sessions are resumed across connections (rustls keeps tickets
//! and session ids for 256 server names per client).
//!
//! Why not Pingora's connector with per-peer options (`HttpPeer::new(addr, true, sni)` with
//! `ca`, `client_cert_key`, `verify_cert`): its rustls connector builds a new `ClientConfig` for
//! every connection that has a per-peer CA or client certificate, and with it an empty session
//! cache, so no session would ever be resumed; and a peer with an empty SNI silently skips
//! verification. Here the TCP connection is still Pingora's (its L4 stream type), and the
//! handshake is Pingora's rustls client over our configuration.

use crate::certs;
use crate::config::UpstreamTls;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// The TLS client of one cluster.
pub struct TlsClient {
    pub(super) connector: pingora::tls::TlsConnector,
    sni: Option<String>,
    /// Told apart from every other client, so a peer's idle connections made by another one
    /// (before a reload changed the TLS settings) are not reused.
    pub(super) id: u64,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("sni", &self.sni)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Ids of TLS clients; 0 is cleartext.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl TlsClient {
    /// The client for `cfg`: TLS 1.2 and 1.3, the configured CA (else the system's roots),
    /// the client certificate if one is configured, ALPN `http/1.1`.
    pub fn new(cfg: &UpstreamTls) -> Result<Self, rustls::Error> {
        let provider = certs::provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
        let builder = if cfg.verify {
            builder.with_root_certificates(cfg.ca.clone().unwrap_or_else(system_roots))
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
        };
        let mut config = match &cfg.client_cert {
            Some(pair) => builder.with_client_cert_resolver(Arc::new(OneCert(pair.clone()))),
            None => builder.with_no_client_auth(),
        };
        // The try writes HTTP/1.1 itself.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsClient {
            connector: pingora::tls::TlsConnector::from(Arc::new(config)),
            sni: cfg.sni.clone(),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// The server name a peer is sent and verified by: the configured `sni`, else the peer's
    /// DNS name, else its IP (rustls then sends no SNI and checks the certificate names the IP).
    pub fn server_name(&self, host: Option<&str>, ip: std::net::IpAddr) -> String {
        match (&self.sni, host) {
            (Some(s), _) => s.clone(),
            (None, Some(h)) => h.to_string(),
            (None, None) => ip.to_string(),
        }
    }

    /// Is `name` one rustls can send and verify?
    pub fn valid_name(name: &str) -> bool {
        ServerName::try_from(name).is_ok()
    }
}

/// The TLS client of each cluster, kept across snapshots while its settings (and files) are
/// unchanged: a reload then keeps its resumable sessions and the peers' idle connections.
#[derive(Debug, Default)]
pub struct TlsClients {
    /// By cluster name: the digest of the settings a client was built from, and the client.
    clients: Mutex<HashMap<String, (String, Arc<TlsClient>)>>,
}

impl TlsClients {
    /// `cluster`'s client for `cfg`: the one in use if `cfg` is unchanged, else a new one.
    pub fn get(&self, cluster: &str, cfg: &UpstreamTls) -> Result<Arc<TlsClient>, rustls::Error> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((digest, c)) = clients.get(cluster) {
            if *digest == cfg.digest {
                return Ok(c.clone());
            }
        }
        let client = Arc::new(TlsClient::new(cfg)?);
        if !cfg.verify {
            log::warn!("cluster {cluster}: tls.verify is off, any upstream certificate is taken");
        }
        clients.insert(cluster.to_string(), (cfg.digest.clone(), client.clone()));
        Ok(client)
    }

    /// Forget the clients of clusters not in `keep` (or no longer over TLS).
    pub fn retain(&self, keep: &HashSet<&str>) {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        clients.retain(|k, _| keep.contains(k.as_str()));
    }
}

/// The system's trust anchors (`SSL_CERT_FILE` / `SSL_CERT_DIR` if set), read once.
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut store = RootCertStore::empty();
            match pingora::tls::load_native_certs() {
                Ok(found) => {
                    let (added, bad) = store.add_parsable_certificates(found);
                    if bad > 0 {
                        log::debug!("{bad} system CA certificates are not usable");
                    }
                    if added == 0 {
                        log::warn!(
                            "no system CA certificates found: TLS to upstreams without a ca_file \
                             will fail to verify"
                        );
                    }
                }
                Err(e) => log::warn!(
                    "cannot read the system CA certificates ({e}): TLS to upstreams without a \
                     ca_file will fail to verify"
                ),
            }
            Arc::new(store)
        })
        .clone()
}

/// `verify: false`: any certificate is taken (the handshake's signatures are still checked).
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The one client certificate of a cluster, offered whatever the server hints.
#[derive(Debug)]
struct OneCert(Arc<CertifiedKey>);

impl ResolvesClientCert for OneCert {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
