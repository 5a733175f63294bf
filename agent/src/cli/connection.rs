//! Where the clients find the daemon, and the channel they talk over.

use std::path::PathBuf;

use anyhow::bail;
use tonic::transport::Channel;

use crate::api::client::{ClientFiles, Target};
use crate::paths;

/// Where the clients find the daemon.
#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    /// The daemon's local socket.
    #[arg(long, env = "VIGIL_SOCKET", default_value = paths::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// A daemon's TCP listener instead of the local socket:
    /// `https://HOST:PORT` (with --cert, --key and --ca), or `http://` for an
    /// insecure loopback listener.
    #[arg(long, env = "VIGIL_ENDPOINT")]
    pub endpoint: Option<String>,
    /// Client certificate (PEM) for --endpoint.
    #[arg(long, requires = "endpoint")]
    pub cert: Option<PathBuf>,
    /// Client private key (PEM) for --endpoint.
    #[arg(long, requires = "endpoint")]
    pub key: Option<PathBuf>,
    /// CA certificate (PEM) that signed the daemon's certificate.
    #[arg(long, requires = "endpoint")]
    pub ca: Option<PathBuf>,
}

impl Connection {
    /// Where to connect, from the flags.
    pub fn target(&self) -> anyhow::Result<Target> {
        let Some(endpoint) = &self.endpoint else {
            return Ok(Target::Unix(self.socket.clone()));
        };
        let tls = match (&self.cert, &self.key, &self.ca) {
            (Some(cert), Some(key), Some(ca)) => Some(ClientFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: ca.clone(),
            }),
            (None, None, None) => None,
            _ => bail!("--cert, --key and --ca go together"),
        };
        Ok(Target::Remote {
            endpoint: endpoint.clone(),
            tls,
        })
    }

    pub(super) async fn channel(&self) -> anyhow::Result<Channel> {
        Ok(crate::api::client::connect(&self.target()?).await?)
    }
}

/// A client command's own arguments, then the [`Connection`] options (which
/// `--help` lists after the command's own). Not `global = true` options on
/// the top-level command: `run` and `check-config` do not talk to a daemon
/// and must keep refusing `--socket` and `--endpoint`.
#[derive(Debug, Clone, clap::Args)]
pub struct Client<A: clap::Args> {
    #[command(flatten)]
    pub args: A,
    #[command(flatten)]
    pub connection: Connection,
}

/// A failed call, with the daemon's message and the status code's name.
pub(super) fn call_error(what: &str, s: &tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{what}: {} ({:?})", s.message(), s.code())
}
