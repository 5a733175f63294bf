//! Connecting to a daemon: the local Unix socket by default, or a remote
//! endpoint over TLS with a client certificate.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the vigil daemon at {path}: {source} (is `vigil run` running?)")]
    Unreachable {
        path: PathBuf,
        source: tonic::transport::Error,
    },
    #[error("cannot reach the vigil daemon at {endpoint}: {source}")]
    Remote {
        endpoint: String,
        source: tonic::transport::Error,
    },
    #[error(
        "invalid endpoint {0:?}: use https://HOST:PORT (or http:// for an insecure loopback listener)"
    )]
    Endpoint(String),
    #[error("reading {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{endpoint} is https: --cert, --key and --ca are required")]
    MissingTls { endpoint: String },
    #[error("TLS setup for {endpoint}: {source}")]
    Tls {
        endpoint: String,
        source: tonic::transport::Error,
    },
}

/// Where the daemon is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The local socket.
    Unix(PathBuf),
    /// `https://host:port` with a client certificate, or `http://` for an
    /// insecure loopback listener.
    Remote {
        endpoint: String,
        tls: Option<ClientFiles>,
    },
}

/// The client's certificate, key and the CA that signed the server's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// A channel to the daemon.
pub async fn connect(target: &Target) -> Result<Channel, ClientError> {
    match target {
        Target::Unix(path) => connect_unix(path).await,
        Target::Remote { endpoint, tls } => connect_remote(endpoint, tls.as_ref()).await,
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|source| ClientError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

async fn connect_remote(endpoint: &str, tls: Option<&ClientFiles>) -> Result<Channel, ClientError> {
    let mut ep = Endpoint::from_shared(endpoint.to_owned())
        .map_err(|_| ClientError::Endpoint(endpoint.to_owned()))?;
    match (ep.uri().scheme_str(), tls) {
        (Some("https"), Some(files)) => {
            let config = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(read("CA", &files.ca)?))
                .identity(Identity::from_pem(
                    read("certificate", &files.cert)?,
                    read("key", &files.key)?,
                ));
            ep = ep.tls_config(config).map_err(|source| ClientError::Tls {
                endpoint: endpoint.to_owned(),
                source,
            })?;
        }
        (Some("https"), None) => {
            return Err(ClientError::MissingTls {
                endpoint: endpoint.to_owned(),
            });
        }
        (Some("http"), _) => {}
        _ => return Err(ClientError::Endpoint(endpoint.to_owned())),
    }
    ep.connect().await.map_err(|source| ClientError::Remote {
        endpoint: endpoint.to_owned(),
        source,
    })
}

/// A channel to the daemon's local socket.
pub async fn connect_unix(path: &Path) -> Result<Channel, ClientError> {
    let socket = path.to_owned();
    // The URI is required by tonic but unused: the connector dials the socket.
    Endpoint::try_from("http://[::1]:50051")
        .map_err(|_| ClientError::Endpoint(path.display().to_string()))?
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .map_err(|source| ClientError::Unreachable {
            path: path.to_owned(),
            source,
        })
}
