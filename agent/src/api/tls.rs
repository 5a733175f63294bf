//! The optional TCP listener: TLS with required client certificates, or
//! plain TCP on a loopback address when the config says `insecure = true`.
//!
//! The handshake is done here rather than by tonic so the acceptor can be
//! replaced while the listener runs: the certificate, key and client CA
//! files are polled, and a changed set is loaded for new connections
//! (rotation by cert-manager or by hand needs no restart). A set that fails
//! to load is logged and the previous one stays in use.

use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig, server::WebPkiClientVerifier};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};

use super::server::router;

/// How often the certificate files are checked for changes.
pub const RELOAD_POLL: Duration = Duration::from_secs(2);
/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshaken connections waiting for the server to take them.
const ACCEPT_QUEUE: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{what} {path}: {message}")]
    Pem {
        what: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client CA {path}: {source}")]
    Verifier {
        path: PathBuf,
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    #[error("binding the API listener on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// The files of the TLS listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

fn certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what,
            path: path.to_owned(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what,
            path: path.to_owned(),
            message: "no PEM certificate found".into(),
        });
    }
    Ok(certs)
}

/// Builds the server's TLS config: the certificate chain and key, client
/// certificates required and verified against the client CA, HTTP/2 only.
pub fn load(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certs("certificate", &files.cert)?;
    let key_pem = read("key", &files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Pem {
        what: "key",
        path: files.key.clone(),
        message: e.to_string(),
    })?;
    let mut roots = RootCertStore::empty();
    for ca in certs("client CA", &files.client_ca)? {
        roots.add(ca).map_err(|e| TlsError::Pem {
            what: "client CA",
            path: files.client_ca.clone(),
            message: e.to_string(),
        })?;
    }
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
            .build()
            .map_err(|source| TlsError::Verifier {
                path: files.client_ca.clone(),
                source,
            })?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// What identifies a version of a file: a rewrite or a replacement changes it.
type Stamp = Option<(u64, u64, SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.dev(), m.ino(), m.modified().ok()?, m.len()))
}

fn stamps(files: &TlsFiles) -> [Stamp; 3] {
    [
        stamp(&files.cert),
        stamp(&files.key),
        stamp(&files.client_ca),
    ]
}

/// Reloads the acceptor whenever one of the files changes.
async fn watch(files: TlsFiles, acceptor: Arc<ArcSwap<TlsAcceptor>>, mut seen: [Stamp; 3]) {
    let mut every = tokio::time::interval(RELOAD_POLL);
    loop {
        every.tick().await;
        let now = stamps(&files);
        if now == seen {
            continue;
        }
        // A rotation writes several files; wait for the set to settle.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let settled = stamps(&files);
        if settled != now {
            continue;
        }
        seen = settled;
        let f = files.clone();
        match tokio::task::spawn_blocking(move || load(&f)).await {
            Ok(Ok(config)) => {
                acceptor.store(Arc::new(TlsAcceptor::from(config)));
                tracing::info!(
                    "API TLS certificates reloaded from {}",
                    files.cert.display()
                );
            }
            Ok(Err(e)) => {
                tracing::error!(
                    "API TLS certificates not reloaded, keeping the previous ones: {e}"
                );
            }
            Err(e) => tracing::error!("API TLS reload task failed: {e}"),
        }
    }
}

async fn handshake(
    acceptor: Arc<TlsAcceptor>,
    tcp: TcpStream,
    addr: SocketAddr,
    ready: mpsc::Sender<Result<tokio_rustls::server::TlsStream<TcpStream>, io::Error>>,
) {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => {
            let _ = ready.send(Ok(tls)).await;
        }
        Ok(Err(e)) => tracing::warn!("API TLS handshake with {addr} refused: {e}"),
        Err(_) => tracing::warn!("API TLS handshake with {addr} timed out"),
    }
}

/// Binds `addr` and serves the API on it: with TLS from `files`, or in
/// plain TCP when `files` is `None` (the config only allows that on a
/// loopback address).
pub async fn serve_tcp(
    services: super::server::Services,
    addr: SocketAddr,
    files: Option<TlsFiles>,
) -> Result<tokio::task::JoinHandle<()>, TlsError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| TlsError::Bind { addr, source })?;
    let local = listener.local_addr().unwrap_or(addr);
    let router = router(services);
    let Some(files) = files else {
        tracing::warn!("API listening on {local} in plain TCP (insecure = true): reader role only");
        return Ok(tokio::spawn(async move {
            if let Err(e) = router
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await
            {
                tracing::error!("API server on {local} stopped: {e}");
            }
        }));
    };
    let seen = stamps(&files);
    let f = files.clone();
    let config = tokio::task::spawn_blocking(move || load(&f))
        .await
        .map_err(|e| TlsError::Bind {
            addr,
            source: io::Error::other(e),
        })??;
    let acceptor = Arc::new(ArcSwap::from_pointee(TlsAcceptor::from(config)));
    let (ready, incoming) = mpsc::channel(ACCEPT_QUEUE);
    tracing::info!("API listening on {local} (TLS, client certificates required)");
    Ok(tokio::spawn(async move {
        // Aborting the server (daemon shutdown) ends these with it.
        let _reload = AbortOnDrop(tokio::spawn(watch(files, Arc::clone(&acceptor), seen)));
        let _accept = AbortOnDrop(tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((tcp, peer)) => {
                        // Each handshake on its own task: a slow client holds no one up.
                        tokio::spawn(handshake(acceptor.load_full(), tcp, peer, ready.clone()));
                    }
                    Err(e) => {
                        tracing::warn!("API listener on {local}: accept: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }));
        if let Err(e) = router
            .serve_with_incoming(ReceiverStream::new(incoming))
            .await
        {
            tracing::error!("API server on {local} stopped: {e}");
        }
    }))
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
