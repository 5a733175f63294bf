//! Serving the API on the local Unix socket.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::Arc,
};

use futures_util::TryStreamExt as _;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::server::UdsConnectInfo;

use super::{
    auth::AuthLayer, authority::LocalAuthority, events::Events, governance::Governance, node::Node,
};
use crate::journal::Hub;
use crate::live::LiveConfig;
use crate::wire::pb;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("creating socket directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("another daemon is already serving {0}")]
    InUse(PathBuf),
    #[error("binding {path}: {source}")]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("socket group {0:?} does not exist")]
    NoGroup(String),
    #[error("setting owner/mode of {path}: {source}")]
    Permissions {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Who called, as the kernel tells it for a Unix socket peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    pub pid: Option<u32>,
    pub uid: u32,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.pid {
            Some(pid) => write!(f, "uid {} pid {pid} (local socket)", self.uid),
            None => write!(f, "uid {} (local socket)", self.uid),
        }
    }
}

/// The peer of a request on the local socket, if it came over one.
pub fn local_peer<T>(req: &tonic::Request<T>) -> Option<Peer> {
    let info = req.extensions().get::<UdsConnectInfo>()?;
    let cred = info.peer_cred?;
    Some(Peer {
        pid: cred.pid().and_then(|p| u32::try_from(p).ok()),
        uid: cred.uid(),
    })
}

/// Binds the socket (mode 0660, root and the optional group) and serves the
/// API on it in the background. Clients that send the socket's path as the
/// request authority are served too (see [`super::authority`]).
pub async fn serve_unix(
    services: Services,
    path: PathBuf,
    group: Option<String>,
) -> Result<tokio::task::JoinHandle<()>, ServeError> {
    let listener = bind(&path, group.as_deref()).await?;
    let incoming = UnixListenerStream::new(listener).map_ok(LocalAuthority::new);
    let router = router(services);
    Ok(tokio::spawn(async move {
        if let Err(e) = router.serve_with_incoming(incoming).await {
            tracing::error!("API server on the local socket stopped: {e}");
        }
    }))
}

/// The server stack every transport shares: callers are identified and
/// checked against their role before any service sees the request.
pub type Router = tonic::transport::server::Router<
    tower::layer::util::Stack<AuthLayer, tower::layer::util::Identity>,
>;

/// What the services are built from; cheap to clone, one per transport.
#[derive(Clone)]
pub struct Services {
    /// The config in force, for the callers' roles.
    pub live: Arc<LiveConfig>,
    /// The journal, for `Subscribe`.
    pub hub: Hub,
    pub governance: Governance,
    pub node: Node,
}

/// Every service, ready to serve on any transport.
pub fn router(services: Services) -> Router {
    let (health_reporter, health) = tonic_health::server::health_reporter();
    // Healthy once serving: the sensors are attached before the API starts.
    tokio::spawn(async move {
        health_reporter
            .set_serving::<pb::node_service_server::NodeServiceServer<Node>>()
            .await;
        health_reporter
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
    });
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    // Both versions: grpcurl asks v1, while grpcio-reflection's client (and
    // older tools) only know v1alpha.
    let reflection_v1 = reflection().build_v1().ok();
    let reflection_v1alpha = reflection().build_v1alpha().ok();
    let mut router = tonic::transport::Server::builder()
        .layer(AuthLayer::new(services.live))
        .add_service(health)
        .add_service(Events::new(services.hub))
        .add_service(pb::governance_service_server::GovernanceServiceServer::new(
            services.governance,
        ))
        .add_service(pb::node_service_server::NodeServiceServer::new(
            services.node,
        ));
    if let Some(r) = reflection_v1 {
        router = router.add_service(r);
    }
    if let Some(r) = reflection_v1alpha {
        router = router.add_service(r);
    }
    router
}

async fn bind(path: &Path, group: Option<&str>) -> Result<UnixListener, ServeError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| ServeError::Dir {
            path: dir.to_owned(),
            source,
        })?;
    }
    if path.exists() {
        // A live daemon answers; a stale socket from a crash does not.
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(ServeError::InUse(path.to_owned()));
        }
        let _ = std::fs::remove_file(path);
    }
    let listener = UnixListener::bind(path).map_err(|source| ServeError::Bind {
        path: path.to_owned(),
        source,
    })?;
    let gid = match group {
        Some(g) => Some(
            nix::unistd::Group::from_name(g)
                .ok()
                .flatten()
                .ok_or_else(|| ServeError::NoGroup(g.to_owned()))?
                .gid,
        ),
        None => None,
    };
    let perm_err = |source| ServeError::Permissions {
        path: path.to_owned(),
        source,
    };
    nix::unistd::chown(path, Some(nix::unistd::Uid::from_raw(0)), gid)
        .map_err(|e| perm_err(std::io::Error::from(e)))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(perm_err)?;
    Ok(listener)
}
