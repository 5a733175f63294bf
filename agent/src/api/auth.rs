//! Who is calling and what they may do.
//!
//! Every request passes [`AuthLayer`], which identifies the caller from the
//! transport (peer credentials on the local socket, the client certificate
//! over TLS), checks the RPC against the caller's role, and hands the
//! [`Caller`] to the services as a request extension. Roles are read from
//! the running config at each call, so a reloaded `api.roles` applies to
//! connections that are already open.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::{Either, Ready, ready};
use tonic::codegen::http;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo, UdsConnectInfo};
use tonic::{Request, Status};

use super::server::Peer;
use crate::config::{ApiConfig, Role};
use crate::live::LiveConfig;

/// The caller of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// A process on the local socket; `None` when the kernel gave no credentials.
    Local(Option<Peer>),
    /// A client certificate mapped to a role by `api.roles`.
    Certificate {
        /// The certificate's subject, as a distinguished name.
        subject: String,
        role: Role,
        addr: Option<SocketAddr>,
    },
    /// A client of the plain-TCP loopback listener (`api.insecure`).
    Insecure { addr: Option<SocketAddr> },
}

impl Caller {
    /// The local socket is the operator's; plain TCP only reads.
    #[must_use]
    pub const fn role(&self) -> Role {
        match self {
            Self::Local(_) => Role::Operator,
            Self::Certificate { role, .. } => *role,
            Self::Insecure { .. } => Role::Reader,
        }
    }

    /// The caller's identity as recorded in governance events (`by`).
    #[must_use]
    pub fn by(&self) -> String {
        self.to_string()
    }

    /// The caller of a request that passed [`AuthLayer`].
    pub fn of<T>(req: &Request<T>) -> Result<Self, Status> {
        req.extensions()
            .get::<Self>()
            .cloned()
            .ok_or_else(|| Status::unauthenticated("the caller could not be identified"))
    }
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local(Some(peer)) => write!(f, "{peer}"),
            Self::Local(None) => f.write_str("unknown process (local socket)"),
            Self::Certificate { subject, addr, .. } => match addr {
                Some(a) => write!(f, "certificate {subject} ({a})"),
                None => write!(f, "certificate {subject}"),
            },
            Self::Insecure { addr: Some(a) } => write!(f, "{a} (insecure TCP)"),
            Self::Insecure { addr: None } => f.write_str("insecure TCP"),
        }
    }
}

/// What an RPC requires of its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Required {
    Role(Role),
    /// Served on the local socket only.
    Local,
}

/// RPCs a reader may call. Everything else needs an operator, so a new RPC
/// is protected until it is listed here.
const READER_RPCS: &[&str] = &[
    "/vigil.v1.EventService/Subscribe",
    "/vigil.v1.GovernanceService/ListAgents",
    "/vigil.v1.GovernanceService/GetAgent",
    "/vigil.v1.NodeService/Status",
];

const READER_PREFIXES: &[&str] = &[
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

const LOCAL_RPCS: &[&str] = &["/vigil.v1.GovernanceService/StartSession"];

fn required(path: &str) -> Required {
    if LOCAL_RPCS.contains(&path) {
        Required::Local
    } else if READER_RPCS.contains(&path) || READER_PREFIXES.iter().any(|p| path.starts_with(p)) {
        Required::Role(Role::Reader)
    } else {
        Required::Role(Role::Operator)
    }
}

/// The names a client certificate can be mapped by: its subject common
/// names, DNS and URI alternative names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertNames {
    pub subject: String,
    pub names: Vec<String>,
}

/// Reads the names of a DER client certificate.
pub fn cert_names(der: &[u8]) -> Result<CertNames, String> {
    use x509_parser::extensions::GeneralName;

    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("the client certificate cannot be parsed: {e}"))?;
    let mut names: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok())
        .map(str::to_owned)
        .collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(n) | GeneralName::URI(n) => names.push((*n).to_owned()),
                _ => {}
            }
        }
    }
    Ok(CertNames {
        subject: cert.subject().to_string(),
        names,
    })
}

/// Identifies the caller of a request from what the transport recorded.
fn identify<B>(api: &ApiConfig, req: &http::Request<B>) -> Result<Caller, Status> {
    let ext = req.extensions();
    if let Some(uds) = ext.get::<UdsConnectInfo>() {
        return Ok(Caller::Local(uds.peer_cred.map(|c| Peer {
            pid: c.pid().and_then(|p| u32::try_from(p).ok()),
            uid: c.uid(),
        })));
    }
    if let Some(tls) = ext.get::<TlsConnectInfo<TcpConnectInfo>>() {
        let addr = tls.get_ref().remote_addr();
        let certs = tls.peer_certs();
        let Some(leaf) = certs.as_deref().and_then(|c| c.first()) else {
            return Err(Status::unauthenticated("no client certificate"));
        };
        let names = cert_names(leaf).map_err(Status::unauthenticated)?;
        let Some(role) = api.role_of(names.names.iter().map(String::as_str)) else {
            return Err(Status::permission_denied(format!(
                "client certificate {} (names: {}) has no role: map one of its names in api.roles of the node config",
                names.subject,
                names.names.join(", ")
            )));
        };
        return Ok(Caller::Certificate {
            subject: names.subject,
            role,
            addr,
        });
    }
    if let Some(tcp) = ext.get::<TcpConnectInfo>() {
        return Ok(Caller::Insecure {
            addr: tcp.remote_addr(),
        });
    }
    Err(Status::unauthenticated(
        "the caller could not be identified",
    ))
}

/// Checks that `caller` may call the RPC at `path`.
fn authorize(caller: &Caller, path: &str) -> Result<(), Status> {
    match required(path) {
        Required::Local if !matches!(caller, Caller::Local(_)) => Err(Status::permission_denied(
            format!("{path} is served on the local socket only"),
        )),
        Required::Role(need) if caller.role() < need => Err(Status::permission_denied(format!(
            "{caller} has the {} role; {path} needs {need}",
            caller.role()
        ))),
        _ => Ok(()),
    }
}

/// The tower layer that authenticates and authorizes every request.
#[derive(Clone)]
pub struct AuthLayer {
    live: Arc<LiveConfig>,
}

impl AuthLayer {
    /// Callers are checked against `api.roles` of the config in force.
    #[must_use]
    pub const fn new(live: Arc<LiveConfig>) -> Self {
        Self { live }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            live: Arc::clone(&self.live),
        }
    }
}

/// [`AuthLayer`]'s service.
#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    live: Arc<LiveConfig>,
}

impl<S, B> tower::Service<http::Request<B>> for Auth<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<Ready<Result<S::Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let checked = {
            let loaded = self.live.current();
            identify(&loaded.config.api, &req)
                .and_then(|caller| authorize(&caller, req.uri().path()).map(|()| caller))
        };
        match checked {
            Ok(caller) => {
                req.extensions_mut().insert(caller);
                Either::Right(self.inner.call(req))
            }
            Err(status) => {
                tracing::info!(
                    "API call {} refused: {}",
                    req.uri().path(),
                    status.message()
                );
                Either::Left(ready(Ok(status.into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(role: Role) -> Caller {
        Caller::Certificate {
            subject: "CN=siem".into(),
            role,
            addr: None,
        }
    }

    #[test]
    fn roles_gate_rpcs() {
        let reader = cert(Role::Reader);
        let operator = cert(Role::Operator);
        let local = Caller::Local(Some(Peer {
            pid: Some(7),
            uid: 0,
        }));
        let insecure = Caller::Insecure { addr: None };
        for ok in [
            "/vigil.v1.EventService/Subscribe",
            "/vigil.v1.GovernanceService/GetAgent",
            "/vigil.v1.NodeService/Status",
            "/grpc.health.v1.Health/Check",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        ] {
            for c in [&reader, &operator, &local, &insecure] {
                authorize(c, ok).unwrap();
            }
        }
        for op in [
            "/vigil.v1.GovernanceService/Revoke",
            "/vigil.v1.GovernanceService/Restore",
            "/vigil.v1.GovernanceService/ApproveTask",
            "/vigil.v1.GovernanceService/EndTask",
            "/vigil.v1.SomeFutureService/Anything",
        ] {
            let e = authorize(&reader, op).unwrap_err();
            assert_eq!(e.code(), tonic::Code::PermissionDenied);
            assert!(e.message().contains("has the reader role"), "{e:?}");
            assert_eq!(
                authorize(&insecure, op).unwrap_err().code(),
                tonic::Code::PermissionDenied
            );
            authorize(&operator, op).unwrap();
            authorize(&local, op).unwrap();
        }
        let start = "/vigil.v1.GovernanceService/StartSession";
        authorize(&local, start).unwrap();
        let e = authorize(&operator, start).unwrap_err();
        assert!(e.message().contains("local socket only"), "{e:?}");
    }

    #[test]
    fn callers_are_named_for_the_audit_trail() {
        let local = Caller::Local(Some(Peer {
            pid: Some(42),
            uid: 1000,
        }));
        assert_eq!(local.by(), "uid 1000 pid 42 (local socket)");
        let c = Caller::Certificate {
            subject: "CN=alice, O=Example".into(),
            role: Role::Operator,
            addr: Some("10.0.0.1:5000".parse().unwrap()),
        };
        assert_eq!(c.by(), "certificate CN=alice, O=Example (10.0.0.1:5000)");
    }

    #[test]
    fn certificate_names_are_its_common_name_and_dns_and_uri_sans() {
        let mut params =
            rcgen::CertificateParams::new(vec!["siem.example.com".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "siem-reader");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Example");
        params.subject_alt_names.push(rcgen::SanType::URI(
            "spiffe://example.org/ns/sec/sa/siem".try_into().unwrap(),
        ));
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress("10.0.0.1".parse().unwrap()));
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let names = cert_names(cert.der()).unwrap();
        assert_eq!(
            names.names,
            [
                "siem-reader",
                "siem.example.com",
                "spiffe://example.org/ns/sec/sa/siem"
            ]
        );
        assert!(
            names.subject.contains("CN=siem-reader"),
            "{}",
            names.subject
        );
        assert!(names.subject.contains("O=Example"), "{}", names.subject);
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        let e = cert_names(b"not a certificate").unwrap_err();
        assert!(e.contains("cannot be parsed"), "{e}");
    }

    /// The layer in front of a service that answers every request it is
    /// handed with 200 and the caller it was given.
    async fn through_layer(
        live: &Arc<LiveConfig>,
        path: &str,
        transport: impl FnOnce(&mut http::Extensions),
    ) -> (http::StatusCode, Option<String>, Option<Caller>) {
        use tower::{Layer as _, ServiceExt as _};
        let inner = tower::service_fn(|req: http::Request<()>| async move {
            let caller = req.extensions().get::<Caller>().cloned();
            let mut resp = http::Response::new(tonic::body::Body::empty());
            resp.extensions_mut().insert(caller);
            Ok::<_, std::convert::Infallible>(resp)
        });
        let svc = AuthLayer::new(Arc::clone(live)).layer(inner);
        let mut req = http::Request::builder().uri(path).body(()).unwrap();
        transport(req.extensions_mut());
        let resp = svc.oneshot(req).await.unwrap();
        let status = Status::from_header_map(resp.headers());
        let caller = resp.extensions().get::<Option<Caller>>().cloned().flatten();
        (
            resp.status(),
            status.map(|s| format!("{:?}: {}", s.code(), s.message())),
            caller,
        )
    }

    #[tokio::test]
    async fn the_layer_identifies_callers_and_refuses_before_the_service() {
        let dir = tempfile::tempdir().unwrap();
        let live = crate::testing::live(dir.path(), crate::testing::AGENTS);
        let revoke = "/vigil.v1.GovernanceService/Revoke";
        let tcp = |e: &mut http::Extensions| {
            e.insert(TcpConnectInfo {
                local_addr: None,
                remote_addr: Some("127.0.0.1:5000".parse().unwrap()),
            });
        };
        // A plain-TCP client reads, and never reaches an operator RPC.
        let (_, refused, caller) = through_layer(&live, "/vigil.v1.NodeService/Status", tcp).await;
        assert_eq!(refused, None);
        assert!(
            matches!(caller, Some(Caller::Insecure { .. })),
            "{caller:?}"
        );
        let (_, refused, caller) = through_layer(&live, revoke, tcp).await;
        let refused = refused.unwrap();
        assert!(refused.starts_with("PermissionDenied: "), "{refused}");
        assert!(refused.contains("needs operator"), "{refused}");
        assert_eq!(caller, None, "the service must not have been called");
        // The local socket is the operator's.
        let local = |e: &mut http::Extensions| {
            e.insert(UdsConnectInfo {
                peer_addr: None,
                peer_cred: None,
            });
        };
        let (_, refused, caller) = through_layer(&live, revoke, local).await;
        assert_eq!(refused, None);
        assert_eq!(caller, Some(Caller::Local(None)));
        // No transport information: nobody is served.
        let (_, refused, caller) =
            through_layer(&live, "/vigil.v1.NodeService/Status", |_| {}).await;
        assert!(refused.unwrap().starts_with("Unauthenticated: "));
        assert_eq!(caller, None);
        // Starting a session needs the local socket, whatever the role.
        let (_, refused, _) =
            through_layer(&live, "/vigil.v1.GovernanceService/StartSession", tcp).await;
        assert!(refused.unwrap().starts_with("PermissionDenied: "));
    }
}
