//! TLS for upstream tests: a CA and server certificates made in the test (rcgen), and a TLS
//! front that terminates TLS on a loopback address and relays the bytes to a simulator, keeping
//! what a test needs to see from the upstream's side: each handshake (SNI, ALPN, resumed or
//! not) and every byte the client sent (request headers included).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A CA, as a file switchyard can be pointed at, able to sign server certificates.
pub struct Ca {
    pub file: PathBuf,
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

/// A server certificate and key, as PEM.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Ca {
    /// A new CA, written to `dir/name.pem`.
    pub fn new(dir: &std::path::Path, name: &str) -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} test CA"));
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let file = dir.join(format!("{name}.pem"));
        std::fs::write(&file, cert.pem()).unwrap();
        Ca { file, cert, key }
    }

    /// A server certificate for `names` (DNS names or IPs), signed by this CA.
    pub fn leaf(&self, names: &[&str]) -> Leaf {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &self.cert, &self.key)
            .unwrap();
        Leaf {
            cert_pem: format!("{}{}", cert.pem(), self.cert.pem()),
            key_pem: key.serialize_pem(),
        }
    }
}

/// One TLS handshake a front accepted.
#[derive(Debug, Clone)]
pub struct Handshake {
    pub sni: Option<String>,
    pub alpn: Option<String>,
    pub resumed: bool,
}

#[derive(Default)]
struct Seen {
    handshakes: Mutex<Vec<Handshake>>,
    failed: AtomicU64,
    bytes: Mutex<Vec<u8>>,
}

/// A TLS front for a simulator; stops when dropped.
pub struct TlsFront {
    pub addr: SocketAddr,
    seen: Arc<Seen>,
    drop_all: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsFront {
    /// Terminate TLS with `leaf` on `bind` and relay to `backend`.
    pub async fn start(bind: SocketAddr, backend: SocketAddr, leaf: &Leaf) -> TlsFront {
        Self::try_start(bind, backend, leaf)
            .await
            .expect("bind tls front")
    }

    /// [`TlsFront::start`], or why `bind` could not be bound.
    pub async fn try_start(
        bind: SocketAddr,
        backend: SocketAddr,
        leaf: &Leaf,
    ) -> std::io::Result<TlsFront> {
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .unwrap();
        let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind(bind).await?;
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let (drop_all, rx) = watch::channel(0u64);
        let s = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, seen, mut rx) = (acceptor.clone(), s.clone(), rx.clone());
                rx.mark_unchanged();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = serve(acceptor, tcp, backend, &seen) => {}
                        _ = rx.changed() => {}
                    }
                });
            }
        });
        Ok(TlsFront {
            addr,
            seen,
            drop_all,
            task,
        })
    }

    /// The handshakes accepted so far.
    pub fn handshakes(&self) -> Vec<Handshake> {
        self.seen.handshakes.lock().unwrap().clone()
    }

    /// Handshakes that failed (the client did not accept the certificate, say).
    pub fn failed_handshakes(&self) -> u64 {
        self.seen.failed.load(Ordering::Relaxed)
    }

    /// Every byte clients sent, as text (lossy).
    pub fn received(&self) -> String {
        String::from_utf8_lossy(&self.seen.bytes.lock().unwrap()).into_owned()
    }

    /// Close every open connection, as a server restart would.
    pub fn drop_connections(&self) {
        self.drop_all.send_modify(|n| *n += 1);
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.drop_connections();
        self.task.abort();
    }
}

async fn serve(
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: TcpStream,
    backend: SocketAddr,
    seen: &Seen,
) {
    let tls = match acceptor.accept(tcp).await {
        Ok(t) => t,
        Err(_) => {
            seen.failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let conn = tls.get_ref().1;
    seen.handshakes.lock().unwrap().push(Handshake {
        sni: conn.server_name().map(str::to_string),
        alpn: conn
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned()),
        resumed: conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
    });
    let Ok(up) = TcpStream::connect(backend).await else {
        return;
    };
    let (mut cr, mut cw) = tokio::io::split(tls);
    let (mut ur, mut uw) = up.into_split();
    let to_backend = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            {
                let mut bytes = seen.bytes.lock().unwrap();
                if bytes.len() < 8 << 20 {
                    bytes.extend_from_slice(&buf[..n]);
                }
            }
            if uw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = uw.shutdown().await;
    };
    let to_client = async {
        let _ = tokio::io::copy(&mut ur, &mut cw).await;
        let _ = cw.shutdown().await;
    };
    tokio::join!(to_backend, to_client);
}
