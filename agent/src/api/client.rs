//! Connecting to a daemon: the local Unix socket by default, or a remote
//! endpoint over TLS with a client certificate.

use std::path::{Path, PathBuf};
use std::time::Duration;

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

/// How long a client waits for the daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// To establish a remote connection (TCP and the TLS handshake).
    pub connect: Duration,
    /// For a call's answer: a unary call's response, or a stream's start
    /// (`Subscribe` answers as soon as the subscription is registered; the
    /// stream then lasts as long as it is read). A daemon that accepted a
    /// connection and never answers (a TLS 1.3 server that rejects the
    /// client's certificate after the client finished its handshake does
    /// just that) is an error after this long, not a hang.
    pub call: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            call: Duration::from_secs(30),
        }
    }
}

/// A channel to the daemon, with the default [`Timeouts`].
pub async fn connect(target: &Target) -> Result<Channel, ClientError> {
    connect_with(target, Timeouts::default()).await
}

/// A channel to the daemon.
pub async fn connect_with(target: &Target, timeouts: Timeouts) -> Result<Channel, ClientError> {
    match target {
        Target::Unix(path) => connect_unix(path).await,
        Target::Remote { endpoint, tls } => connect_remote(endpoint, tls.as_ref(), timeouts).await,
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|source| ClientError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

async fn connect_remote(
    endpoint: &str,
    tls: Option<&ClientFiles>,
    timeouts: Timeouts,
) -> Result<Channel, ClientError> {
    let mut ep = Endpoint::from_shared(endpoint.to_owned())
        .map_err(|_| ClientError::Endpoint(endpoint.to_owned()))?
        .connect_timeout(timeouts.connect)
        .timeout(timeouts.call);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A listener that accepts connections and never says a word.
    async fn silent_server() -> (String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        (format!("http://{addr}"), task)
    }

    #[tokio::test]
    async fn a_daemon_that_never_answers_is_an_error_not_a_hang() {
        let (endpoint, server) = silent_server().await;
        let target = Target::Remote {
            endpoint,
            tls: None,
        };
        let timeouts = Timeouts {
            connect: Duration::from_millis(500),
            call: Duration::from_millis(500),
        };
        let started = std::time::Instant::now();
        let outcome = tokio::time::timeout(Duration::from_secs(20), async {
            let channel = connect_with(&target, timeouts).await?;
            let status = crate::wire::pb::node_service_client::NodeServiceClient::new(channel)
                .status(crate::wire::pb::StatusRequest {})
                .await;
            Ok::<_, ClientError>(status)
        })
        .await
        .expect("the client hung");
        // Either the connection or the call gives up; neither succeeds.
        assert!(
            !matches!(outcome, Ok(Ok(_))),
            "a silent server answered: {outcome:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        server.abort();
    }
}
