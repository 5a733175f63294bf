//! Connecting to a daemon: the local Unix socket by default.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the vigil daemon at {path}: {source} (is `vigil run` running?)")]
    Unreachable {
        path: PathBuf,
        source: tonic::transport::Error,
    },
    #[error("invalid endpoint {0:?}")]
    Endpoint(String),
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
