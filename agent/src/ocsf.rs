//! OCSF output: every event as one record of an Open Cybersecurity Schema
//! Framework class, schema version [`SCHEMA_VERSION`].
//!
//! The mapping (kind → class and activity, where the agent identity goes) is
//! documented in `docs/integrations.md`. Records borrow from the event, so
//! converting one costs little more than serializing it as plain JSON.
//!
//! OCSF 1.5 has no object for an AI agent (its `agent` object is a sensor
//! such as Vigil itself), so the agent identity goes in `actor` (`app_name` =
//! agent, `session.uid` = session, `process`, `user`) and, complete, in
//! `unmapped.vigil`, which always carries `agent`, `session`, `task`, `pod`
//! and `spiffe_id` (null when unknown) so that consumers see one shape.
//! Every record declares the `host` profile, which is what lets the network,
//! DNS, finding and lifecycle classes carry `actor` and `device`.

use std::borrow::Cow;
use std::net::IpAddr;

use serde::Serialize;

use crate::event::{
    Access, Anomaly, AnomalyKind, Event, Identity, Payload, Process, Protocol, Severity, TaskScope,
    Workload,
};

/// The OCSF schema version every record follows (`metadata.version`).
pub const SCHEMA_VERSION: &str = "1.5.0";

/// The profiles every record declares (`metadata.profiles`).
const PROFILES: &[&str] = &["host"];

/// One OCSF record. Fields a class does not define stay `None` and are left
/// out, because the schema allows no attribute outside the class.
#[derive(Debug, Serialize)]
pub struct OcsfEvent<'a> {
    pub activity_id: u8,
    pub activity_name: &'static str,
    pub category_uid: u8,
    pub category_name: &'static str,
    pub class_uid: u16,
    pub class_name: &'static str,
    /// `class_uid * 100 + activity_id`.
    pub type_uid: u32,
    pub severity_id: u8,
    pub severity: &'static str,
    /// Milliseconds since the Unix epoch.
    pub time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_id: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_detail: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    pub metadata: Metadata<'a>,
    pub device: Device<'a>,
    pub actor: Actor<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessObj<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<FileObj<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_endpoint: Option<Endpoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst_endpoint: Option<Endpoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_info: Option<ConnectionInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<DnsQuery<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answers: Option<Vec<DnsAnswer>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rcode_id: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rcode: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finding_info: Option<FindingInfo<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_alert: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evidences: Option<Vec<Evidence<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<User<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub privileges: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app: Option<Product<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_provider: Option<&'static str>,
    pub unmapped: Unmapped<'a>,
}

#[derive(Debug, Serialize)]
pub struct Metadata<'a> {
    pub version: &'static str,
    pub product: Product<'a>,
    pub profiles: &'static [&'static str],
    /// The journal's per-node sequence number.
    pub sequence: u64,
    /// `time` as Vigil wrote it, RFC 3339 with nanoseconds.
    pub original_time: String,
}

/// The OCSF `product` object: Vigil in `metadata`, the agent in `app`.
#[derive(Debug, Serialize)]
pub struct Product<'a> {
    pub name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vendor_name: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<&'static str>,
}

const VIGIL: Product<'static> = Product {
    name: "Vigil",
    uid: None,
    vendor_name: Some("Vigil"),
    version: Some(env!("CARGO_PKG_VERSION")),
};

/// The node that observed the event.
#[derive(Debug, Serialize)]
pub struct Device<'a> {
    pub hostname: &'a str,
    pub name: &'a str,
    /// 0, Unknown: a node can be a server, a laptop or a VM.
    pub type_id: u8,
}

#[derive(Debug, Default, Serialize)]
pub struct Actor<'a> {
    /// The governed agent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessObj<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<User<'a>>,
    /// The agent session (`vigil exec`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<Session<'a>>,
}

#[derive(Debug, Serialize)]
pub struct Session<'a> {
    pub uid: &'a str,
}

#[derive(Debug, Default, Serialize)]
pub struct User<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub type_id: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none", rename = "type")]
    pub type_name: Option<&'static str>,
}

#[derive(Debug, Default, Serialize)]
pub struct ProcessObj<'a> {
    pub pid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cmd_line: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<FileObj<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<User<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_process: Option<Box<ProcessObj<'a>>>,
}

#[derive(Debug, Serialize)]
pub struct FileObj<'a> {
    pub name: &'a str,
    pub path: &'a str,
    /// 1, Regular File, for programs; 0, Unknown, for opens (any kind of file).
    pub type_id: u8,
}

#[derive(Debug, Serialize)]
pub struct Endpoint {
    pub ip: IpAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

#[derive(Debug, Serialize)]
pub struct ConnectionInfo {
    pub direction_id: u8,
    pub direction: &'static str,
    pub protocol_name: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol_num: Option<u8>,
}

#[derive(Debug, Serialize)]
pub struct DnsQuery<'a> {
    pub hostname: &'a str,
}

#[derive(Debug, Serialize)]
pub struct DnsAnswer {
    pub rdata: String,
    #[serde(rename = "type")]
    pub rr_type: &'static str,
    pub ttl: u32,
}

#[derive(Debug, Serialize)]
pub struct FindingInfo<'a> {
    pub uid: String,
    pub title: &'static str,
    pub desc: &'a str,
    pub types: [&'static str; 1],
}

/// What the anomaly's offending event did, as OCSF objects, and the event
/// itself in `data`.
#[derive(Debug, Serialize)]
pub struct Evidence<'a> {
    pub actor: Actor<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessObj<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<FileObj<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_endpoint: Option<Endpoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst_endpoint: Option<Endpoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_info: Option<ConnectionInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<DnsQuery<'a>>,
    pub data: &'a Event,
}

/// Vigil's own view, under `unmapped.vigil`.
#[derive(Debug, Serialize)]
pub struct Unmapped<'a> {
    pub vigil: VigilFields<'a>,
}

#[derive(Debug, Serialize)]
pub struct VigilFields<'a> {
    pub kind: &'static str,
    pub agent: Option<&'a str>,
    pub session: Option<&'a str>,
    pub task: Option<&'a str>,
    pub pod: Option<Pod<'a>>,
    pub spiffe_id: Option<&'a str>,
    pub cgroup_id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload: Option<&'a Workload>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lineage: Option<&'a [u32]>,
    /// The kind's own fields as in the JSON-lines schema; for an anomaly all
    /// but the offending event, which is the finding's evidence.
    pub details: Details<'a>,
}

#[derive(Debug, Serialize)]
pub struct Pod<'a> {
    pub uid: Option<&'a str>,
    pub name: Option<&'a str>,
    pub namespace: Option<&'a str>,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Details<'a> {
    Payload(&'a Payload),
    Anomaly {
        anomaly: AnomalyKind,
        severity: Severity,
        reason: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        identity_name: Option<&'a str>,
        count: u64,
        action: &'a str,
    },
}

/// The activity of a class: (id, name).
type Activity = (u8, &'static str);

struct Class {
    uid: u16,
    name: &'static str,
    category_uid: u8,
    category_name: &'static str,
}

const PROCESS_ACTIVITY: Class = Class {
    uid: 1007,
    name: "Process Activity",
    category_uid: 1,
    category_name: "System Activity",
};
const FILE_ACTIVITY: Class = Class {
    uid: 1001,
    name: "File System Activity",
    category_uid: 1,
    category_name: "System Activity",
};
const EVENT_LOG_ACTIVITY: Class = Class {
    uid: 1008,
    name: "Event Log Activity",
    category_uid: 1,
    category_name: "System Activity",
};
const DETECTION_FINDING: Class = Class {
    uid: 2004,
    name: "Detection Finding",
    category_uid: 2,
    category_name: "Findings",
};
const USER_ACCESS: Class = Class {
    uid: 3005,
    name: "User Access Management",
    category_uid: 3,
    category_name: "Identity & Access Management",
};
const NETWORK_ACTIVITY: Class = Class {
    uid: 4001,
    name: "Network Activity",
    category_uid: 4,
    category_name: "Network Activity",
};
const DNS_ACTIVITY: Class = Class {
    uid: 4003,
    name: "DNS Activity",
    category_uid: 4,
    category_name: "Network Activity",
};
const DEVICE_CONFIG_STATE_CHANGE: Class = Class {
    uid: 5019,
    name: "Device Config State Change",
    category_uid: 5,
    category_name: "Discovery",
};
const APPLICATION_LIFECYCLE: Class = Class {
    uid: 6002,
    name: "Application Lifecycle",
    category_uid: 6,
    category_name: "Application Activity",
};

const SUCCESS: (u8, &str) = (1, "Success");
const FAILURE: (u8, &str) = (2, "Failure");

/// OCSF `severity_id` and its caption for a Vigil severity.
#[must_use]
pub const fn severity(s: Severity) -> (u8, &'static str) {
    match s {
        Severity::Info => (1, "Informational"),
        Severity::Low => (2, "Low"),
        Severity::Medium => (3, "Medium"),
        Severity::High => (4, "High"),
        Severity::Critical => (5, "Critical"),
    }
}

fn millis(time: std::time::SystemTime) -> i64 {
    time.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn base_name(path: &str) -> &str {
    path.rsplit('/').find(|s| !s.is_empty()).unwrap_or(path)
}

fn cmd_line(argv: &[String]) -> Option<String> {
    (!argv.is_empty()).then(|| argv.join(" "))
}

fn user(uid: u32) -> User<'static> {
    User {
        uid: Some(uid.to_string()),
        ..User::default()
    }
}

fn parent(ppid: u32) -> Option<Box<ProcessObj<'static>>> {
    (ppid != 0).then(|| {
        Box::new(ProcessObj {
            pid: ppid,
            ..ProcessObj::default()
        })
    })
}

fn process_obj(p: &Process) -> ProcessObj<'_> {
    ProcessObj {
        pid: p.pid,
        tid: Some(p.tid),
        name: Some(p.comm.as_str()),
        cmd_line: cmd_line(&p.argv),
        file: p.exe.as_deref().map(|exe| FileObj {
            name: base_name(exe),
            path: exe,
            type_id: 1,
        }),
        user: Some(user(p.uid)),
        parent_process: parent(p.ppid),
    }
}

fn endpoint(ip: IpAddr, port: u16) -> Endpoint {
    Endpoint {
        ip,
        port: Some(port),
    }
}

fn connection(direction: (u8, &'static str), protocol: Protocol) -> ConnectionInfo {
    let (protocol_name, protocol_num) = match protocol {
        Protocol::Tcp => ("tcp", Some(6)),
        Protocol::Udp => ("udp", Some(17)),
        Protocol::Other => ("other", None),
    };
    ConnectionInfo {
        direction_id: direction.0,
        direction: direction.1,
        protocol_name,
        protocol_num,
    }
}

const INBOUND: (u8, &str) = (1, "Inbound");
const OUTBOUND: (u8, &str) = (2, "Outbound");

const fn anomaly_title(kind: AnomalyKind) -> &'static str {
    match kind {
        AnomalyKind::UnapprovedSystem => "Connection to an unapproved system",
        AnomalyKind::UnapprovedTool => "Unapproved tool run",
        AnomalyKind::DataOutsideScope => "Data access outside scope",
        AnomalyKind::IdentityOutsideScope => "Identity used outside scope",
        AnomalyKind::Unattributed => "Activity no agent matches",
        AnomalyKind::UnapprovedTask => "Activity without an approved task",
        AnomalyKind::RevokedActivity => "Activity of a revoked agent",
        AnomalyKind::DnsAnswerRejected => "DNS answer not believed",
        AnomalyKind::IoUringUsed => "io_uring set up by an agent",
    }
}

/// The agent identity as the actor: agent, session, the acting process and
/// its user. Events with none of those (node-wide losses, configuration
/// changes) are the Vigil daemon's own, and say so in `app_name`.
fn actor(e: &Event) -> Actor<'_> {
    let id = &e.identity;
    let mut actor = Actor {
        app_name: id.agent.as_deref(),
        process: e.process.as_ref().map(process_obj),
        user: e.process.as_ref().map(|p| user(p.uid)),
        session: id.session.as_deref().map(|uid| Session { uid }),
    };
    if actor.app_name.is_none() && actor.process.is_none() && actor.session.is_none() {
        actor.app_name = Some("vigil");
    }
    actor
}

fn vigil_fields(e: &Event) -> VigilFields<'_> {
    let id: &Identity = &e.identity;
    let workload = id.workload.as_ref();
    let (agent, session) = match &e.payload {
        Payload::Revocation(r) => (Some(r.agent.as_str()), r.session.as_deref()),
        Payload::Restore(r) => (Some(r.agent.as_str()), r.session.as_deref()),
        _ => (None, None),
    };
    let task = match &e.payload {
        Payload::TaskApproved(t) => Some(t.task.as_str()),
        Payload::TaskEnded(t) => Some(t.task.as_str()),
        _ => None,
    };
    let agent = id.agent.as_deref().or(agent).or(match &e.payload {
        Payload::TaskApproved(t) => Some(t.agent.as_str()),
        Payload::TaskEnded(t) => Some(t.agent.as_str()),
        _ => None,
    });
    VigilFields {
        kind: e.payload.kind(),
        agent,
        session: id.session.as_deref().or(session),
        task: id.task.as_deref().or(task),
        pod: workload
            .filter(|w| w.pod_uid.is_some() || w.pod_name.is_some())
            .map(|w| Pod {
                uid: w.pod_uid.as_deref(),
                name: w.pod_name.as_deref(),
                namespace: w.namespace.as_deref(),
            }),
        spiffe_id: workload.and_then(|w| w.spiffe_id.as_deref()),
        cgroup_id: id.cgroup_id,
        cgroup: id.cgroup.as_deref(),
        workload,
        lineage: e
            .process
            .as_ref()
            .map(|p| p.lineage.as_slice())
            .filter(|l| !l.is_empty()),
        details: match &e.payload {
            Payload::Anomaly(a) => Details::Anomaly {
                anomaly: a.anomaly,
                severity: a.severity,
                reason: &a.reason,
                identity_name: a.identity_name.as_deref(),
                count: a.count,
                action: &a.action,
            },
            p => Details::Payload(p),
        },
    }
}

fn task_privileges(task: &str, scope: Option<&TaskScope>) -> Vec<String> {
    let mut out = vec![format!("task:{task}")];
    if let Some(s) = scope {
        out.extend(s.systems.iter().map(|x| format!("system:{x}")));
        out.extend(s.tools.iter().map(|x| format!("tool:{x}")));
        out.extend(s.data.iter().map(|x| format!("data:{x}")));
    }
    out
}

fn scope_privilege(agent: &str, session: Option<&str>) -> Vec<String> {
    vec![match session {
        Some(s) => format!("scope:{agent}/{s}"),
        None => format!("scope:{agent}"),
    }]
}

/// The agent whose privileges changed, as the OCSF `user` of the record.
fn agent_user(agent: &str) -> User<'_> {
    User {
        name: Some(agent),
        type_id: Some(99),
        type_name: Some("AI agent"),
        ..User::default()
    }
}

/// The caller of an administrative action (`by`).
fn caller(by: &str) -> Actor<'_> {
    Actor {
        user: Some(User {
            name: Some(by),
            ..User::default()
        }),
        ..Actor::default()
    }
}

/// Converts one event. `node` is the observing node (`device`).
#[must_use]
pub fn to_ocsf<'a>(e: &'a Event, node: &'a str) -> OcsfEvent<'a> {
    let mut r = OcsfEvent {
        activity_id: 0,
        activity_name: "Unknown",
        category_uid: 0,
        category_name: "",
        class_uid: 0,
        class_name: "",
        type_uid: 0,
        severity_id: 1,
        severity: "Informational",
        time: millis(e.time),
        status_id: None,
        status: None,
        status_code: None,
        status_detail: None,
        message: None,
        count: None,
        metadata: Metadata {
            version: SCHEMA_VERSION,
            product: VIGIL,
            profiles: PROFILES,
            sequence: e.seq,
            original_time: crate::event::format_time(e.time),
        },
        device: Device {
            hostname: node,
            name: node,
            type_id: 0,
        },
        actor: actor(e),
        process: None,
        exit_code: None,
        file: None,
        src_endpoint: None,
        dst_endpoint: None,
        connection_info: None,
        query: None,
        answers: None,
        rcode_id: None,
        rcode: None,
        finding_info: None,
        is_alert: None,
        evidences: None,
        user: None,
        privileges: None,
        app: None,
        log_name: None,
        log_provider: None,
        unmapped: Unmapped {
            vigil: vigil_fields(e),
        },
    };
    let status = |ok: bool| if ok { SUCCESS } else { FAILURE };
    let (class, activity): (Class, Activity) = match &e.payload {
        Payload::Exec(x) => {
            let p = e.process.as_ref();
            r.process = Some(ProcessObj {
                pid: p.map_or(0, |p| p.pid),
                tid: p.map(|p| p.tid),
                name: p.map(|p| p.comm.as_str()),
                cmd_line: cmd_line(&x.argv),
                file: Some(FileObj {
                    name: base_name(&x.filename),
                    path: &x.filename,
                    type_id: 1,
                }),
                user: p.map(|p| user(p.uid)),
                parent_process: p.and_then(|p| parent(p.ppid)),
            });
            // The launcher of the new program is the parent; the calling
            // image is gone by the time the record is made.
            r.actor.process = p.map(|p| ProcessObj {
                pid: p.ppid,
                ..ProcessObj::default()
            });
            let (id, name) = status(!x.blocked);
            (r.status_id, r.status) = (Some(id), Some(name));
            if x.blocked {
                r.status_detail = Some(Cow::Borrowed(
                    "killed before the new program ran (revoked, or no task approval)",
                ));
            }
            (PROCESS_ACTIVITY, (1, "Launch"))
        }
        Payload::Fork(x) => {
            r.process = Some(ProcessObj {
                pid: x.child_pid,
                parent_process: e.process.as_ref().map(|p| {
                    Box::new(ProcessObj {
                        pid: p.pid,
                        ..ProcessObj::default()
                    })
                }),
                ..ProcessObj::default()
            });
            (PROCESS_ACTIVITY, (1, "Launch"))
        }
        Payload::Exit(x) => {
            r.process = e
                .process
                .as_ref()
                .map(process_obj)
                .or(Some(ProcessObj::default()));
            r.exit_code = x.code;
            if let Some(sig) = x.signal {
                r.status_detail = Some(Cow::Owned(format!("killed by signal {sig}")));
            }
            (PROCESS_ACTIVITY, (2, "Terminate"))
        }
        Payload::FileOpen(x) => {
            r.file = Some(FileObj {
                name: base_name(&x.path),
                path: &x.path,
                type_id: 0,
            });
            let ok = x.error.is_none() && !x.blocked;
            let (id, name) = status(ok);
            (r.status_id, r.status) = (Some(id), Some(name));
            r.status_code = x.error.as_deref();
            if x.blocked {
                r.status_detail = Some(Cow::Borrowed(
                    "killed at the open before it used the file (revoked, or no task approval)",
                ));
            }
            r.count = Some(if x.repeat_summary {
                x.repeats
            } else {
                1 + x.repeats
            });
            let activity = match x.access {
                Access::Read => (2, "Read"),
                Access::Write | Access::ReadWrite => (3, "Update"),
            };
            (FILE_ACTIVITY, activity)
        }
        Payload::Connect(x) => {
            r.dst_endpoint = Some(endpoint(x.address, x.port));
            r.connection_info = Some(connection(OUTBOUND, x.protocol));
            let (id, name) = status(!x.blocked);
            (r.status_id, r.status) = (Some(id), Some(name));
            let activity = if x.blocked {
                r.status_detail = Some(Cow::Borrowed("refused with EPERM in the kernel"));
                (5, "Refuse")
            } else {
                (1, "Open")
            };
            (NETWORK_ACTIVITY, activity)
        }
        Payload::Accept(x) => {
            r.src_endpoint = Some(endpoint(x.remote_address, x.remote_port));
            r.dst_endpoint = Some(endpoint(x.local_address, x.local_port));
            r.connection_info = Some(connection(INBOUND, Protocol::Tcp));
            (NETWORK_ACTIVITY, (1, "Open"))
        }
        Payload::DnsAnswer(x) => {
            r.src_endpoint = Some(Endpoint {
                ip: x.server,
                port: None,
            });
            r.query = Some(DnsQuery { hostname: &x.name });
            r.answers = Some(
                x.addresses
                    .iter()
                    .map(|a| DnsAnswer {
                        rdata: a.to_string(),
                        rr_type: if a.is_ipv4() { "A" } else { "AAAA" },
                        ttl: x.ttl,
                    })
                    .collect(),
            );
            (r.rcode_id, r.rcode) = (Some(0), Some("NoError"));
            (DNS_ACTIVITY, (2, "Response"))
        }
        Payload::Anomaly(a) => return finding(r, e, a, node),
        Payload::IoUring(x) => {
            // A ring (or a request on one) is an act of the process, and
            // no class of 1.5 describes io_uring: Process Activity, Other.
            r.process = e
                .process
                .as_ref()
                .map(process_obj)
                .or(Some(ProcessObj::default()));
            let (id, name) = status(!x.blocked);
            (r.status_id, r.status) = (Some(id), Some(name));
            r.message = Some(Cow::Owned(format!("io_uring {}", x.op)));
            if x.blocked {
                r.status_detail = Some(Cow::Borrowed(
                    "killed in the kernel before its first request (io_uring denied, or revoked)",
                ));
            }
            (PROCESS_ACTIVITY, (99, "Other"))
        }
        Payload::SensorTampered(x) => {
            // Something removed a pin or detached a link of the sensor:
            // the monitoring itself was switched off, if only briefly.
            r.log_provider = Some("vigil");
            r.log_name = Some(&x.sensor);
            r.message = Some(Cow::Owned(format!(
                "{} of {} at {}: {}",
                x.tamper, x.object, x.path, x.action
            )));
            (r.severity_id, r.severity) = severity(Severity::High);
            (EVENT_LOG_ACTIVITY, (10, "Disable"))
        }
        Payload::Loss(x) => {
            r.log_provider = Some("vigil");
            r.log_name = Some(&x.sensor);
            r.count = Some(x.lost);
            r.message = Some(Cow::Owned(format!(
                "{} records of the {} sensor lost in the kernel ring buffer ({} in total)",
                x.lost, x.sensor, x.total
            )));
            // Lost records are a blind spot, which a session can cause on
            // purpose to hide an action.
            (r.severity_id, r.severity) = severity(Severity::Medium);
            (EVENT_LOG_ACTIVITY, (99, "Drop"))
        }
        Payload::Gap(x) => {
            r.log_provider = Some("vigil");
            r.log_name = Some("journal");
            r.count = Some(x.last_missing.saturating_sub(x.first_missing) + 1);
            r.message = Some(Cow::Owned(format!(
                "sequences {}..={} pruned by journal retention",
                x.first_missing, x.last_missing
            )));
            (EVENT_LOG_ACTIVITY, (2, "Delete"))
        }
        Payload::SessionStart(x) => {
            r.app = Some(Product {
                name: e.identity.agent.as_deref().unwrap_or("unattributed"),
                uid: e.identity.session.as_deref(),
                vendor_name: None,
                version: None,
            });
            r.actor.process = Some(ProcessObj {
                pid: x.requested_by_pid,
                ..ProcessObj::default()
            });
            r.message = Some(Cow::Borrowed(&x.cgroup));
            (APPLICATION_LIFECYCLE, (3, "Start"))
        }
        Payload::Revocation(x) => {
            r.actor = caller(&x.by);
            r.user = Some(agent_user(&x.agent));
            r.privileges = Some(scope_privilege(&x.agent, x.session.as_deref()));
            r.message = Some(Cow::Borrowed(&x.reason));
            (USER_ACCESS, (2, "Revoke Privileges"))
        }
        Payload::Restore(x) => {
            r.actor = caller(&x.by);
            r.user = Some(agent_user(&x.agent));
            r.privileges = Some(scope_privilege(&x.agent, x.session.as_deref()));
            r.message = Some(Cow::Borrowed(&x.reason));
            (USER_ACCESS, (1, "Assign Privileges"))
        }
        Payload::TaskApproved(x) => {
            r.actor = caller(&x.by);
            r.user = Some(agent_user(&x.agent));
            r.privileges = Some(task_privileges(&x.task, x.scope.as_ref()));
            r.message = Some(Cow::Borrowed(&x.purpose));
            (USER_ACCESS, (1, "Assign Privileges"))
        }
        Payload::TaskEnded(x) => {
            r.actor = caller(&x.by);
            r.user = Some(agent_user(&x.agent));
            r.privileges = Some(task_privileges(&x.task, None));
            r.message = Some(Cow::Borrowed(&x.reason));
            (USER_ACCESS, (2, "Revoke Privileges"))
        }
        Payload::ConfigChange(x) => {
            let (id, name) = status(x.applied);
            (r.status_id, r.status) = (Some(id), Some(name));
            r.message = Some(Cow::Owned(format!("configuration version {}", x.version)));
            if !x.errors.is_empty() {
                r.status_detail = Some(Cow::Owned(x.errors.join("; ")));
                (r.severity_id, r.severity) = severity(Severity::Low);
            }
            (DEVICE_CONFIG_STATE_CHANGE, (1, "Log"))
        }
    };
    classify(&mut r, &class, activity);
    r
}

fn classify(r: &mut OcsfEvent<'_>, class: &Class, (id, name): Activity) {
    r.class_uid = class.uid;
    r.class_name = class.name;
    r.category_uid = class.category_uid;
    r.category_name = class.category_name;
    r.activity_id = id;
    r.activity_name = name;
    r.type_uid = u32::from(class.uid) * 100 + u32::from(id);
}

/// An anomaly as a Detection Finding, the offending event as its evidence.
fn finding<'a>(mut r: OcsfEvent<'a>, e: &'a Event, a: &'a Anomaly, node: &'a str) -> OcsfEvent<'a> {
    let offending = to_ocsf(&a.offending, node);
    r.evidences = Some(vec![Evidence {
        actor: offending.actor,
        process: offending.process,
        file: offending.file,
        src_endpoint: offending.src_endpoint,
        dst_endpoint: offending.dst_endpoint,
        connection_info: offending.connection_info,
        query: offending.query,
        data: &a.offending,
    }]);
    r.finding_info = Some(FindingInfo {
        uid: format!("{node}/{}", e.seq),
        title: anomaly_title(a.anomaly),
        desc: &a.reason,
        types: [a.anomaly.as_str()],
    });
    (r.severity_id, r.severity) = severity(a.severity);
    r.is_alert = Some(true);
    r.count = Some(a.count);
    r.message = Some(Cow::Borrowed(&a.reason));
    r.status_detail = Some(Cow::Borrowed(&a.action));
    classify(&mut r, &DETECTION_FINDING, (1, "Create"));
    r
}

/// One event of every kind, as the daemon makes them (a session in a pod
/// with a SPIFFE ID): fixtures for the mapping's tests and the validator's.
pub mod samples {
    use std::collections::BTreeMap;

    use crate::event::{
        Accept, Access, Anomaly, AnomalyKind, ConfigChange, Connect, DnsAnswer, Event, Exec, Exit,
        FileOpen, Fork, Gap, Identity, Loss, Payload, Process, Protocol, Restore, Revocation,
        SessionStart, Severity, TaskApproved, TaskEnded, TaskScope, Workload,
    };

    /// The identity of the samples' agent session.
    #[must_use]
    pub fn identity() -> Identity {
        Identity {
            agent: Some("coder".into()),
            session: Some("s-1".into()),
            task: Some("T-7".into()),
            cgroup_id: 4242,
            cgroup: Some("/kubepods.slice/kubepods-pod1.slice/cri-containerd-ab.scope".into()),
            workload: Some(Workload {
                runtime: "containerd".into(),
                container_id: "ab".repeat(32),
                pod_uid: Some("5f1e1c1e-0000-4000-8000-000000000001".into()),
                pod_name: Some("coder-0".into()),
                namespace: Some("agents".into()),
                service_account: Some("coder".into()),
                spiffe_id: Some("spiffe://cluster.local/ns/agents/sa/coder".into()),
                container_name: Some("agent".into()),
                labels: BTreeMap::from([("app".into(), "coder".into())]),
            }),
        }
    }

    fn process() -> Process {
        Process {
            pid: 4100,
            tid: 4100,
            ppid: 4000,
            uid: 1000,
            gid: 1000,
            comm: "git".into(),
            exe: Some("/usr/bin/git".into()),
            argv: vec!["git".into(), "push".into()],
            lineage: vec![4100, 4000],
        }
    }

    fn event(seq: u64, process: Option<Process>, payload: Payload) -> Event {
        Event {
            seq,
            time: humantime::parse_rfc3339("2026-12-02T12:00:00.123456789Z").unwrap(),
            kernel_ts_ns: if process.is_some() {
                1_224_270_635_142
            } else {
                0
            },
            identity: identity(),
            process,
            payload,
        }
    }

    /// A connect to an address outside the agent's scope.
    #[must_use]
    pub fn connect(blocked: bool) -> Event {
        event(
            4,
            Some(process()),
            Payload::Connect(Connect {
                protocol: Protocol::Tcp,
                address: "203.0.113.7".parse().unwrap(),
                port: 443,
                op: "connect".into(),
                blocked,
            }),
        )
    }

    /// Every kind once, and the variants that change the mapping (blocked,
    /// failed, write access, signal, node-wide loss, rejected config).
    #[must_use]
    pub fn all() -> Vec<Event> {
        let mut v = vec![
            event(
                1,
                Some(process()),
                Payload::Exec(Exec {
                    filename: "/usr/bin/git".into(),
                    argv: vec!["git".into(), "push".into()],
                    argv_truncated: false,
                    blocked: false,
                }),
            ),
            event(
                2,
                Some(process()),
                Payload::Exec(Exec {
                    filename: "/usr/bin/curl".into(),
                    argv: vec!["curl".into()],
                    argv_truncated: false,
                    blocked: true,
                }),
            ),
            event(3, Some(process()), Payload::Fork(Fork { child_pid: 4101 })),
            event(
                5,
                Some(process()),
                Payload::Exit(Exit {
                    code: Some(0),
                    signal: None,
                }),
            ),
            event(
                6,
                Some(process()),
                Payload::Exit(Exit {
                    code: None,
                    signal: Some(9),
                }),
            ),
            event(
                7,
                Some(process()),
                Payload::FileOpen(FileOpen {
                    path: "/srv/repo/.git/config".into(),
                    raw_path: Some(".git/config".into()),
                    flags: 0,
                    access: Access::Read,
                    syscall: "openat".into(),
                    fd: Some(3),
                    error: None,
                    path_truncated: false,
                    blocked: false,
                    repeats: 2,
                    repeat_summary: false,
                    inode: Some(crate::event::FileInode {
                        dev: 2049,
                        ino: 1_310_722,
                        nlink: 1,
                    }),
                }),
            ),
            event(
                8,
                Some(process()),
                Payload::FileOpen(FileOpen {
                    path: "/etc/shadow".into(),
                    raw_path: None,
                    flags: 0o1101,
                    access: Access::Write,
                    syscall: "openat".into(),
                    fd: None,
                    error: Some("EACCES".into()),
                    path_truncated: false,
                    blocked: true,
                    repeats: 0,
                    repeat_summary: false,
                    inode: None,
                }),
            ),
            connect(false),
            connect(true),
            event(
                9,
                Some(Process {
                    pid: 0,
                    tid: 0,
                    ppid: 0,
                    comm: String::new(),
                    exe: None,
                    argv: Vec::new(),
                    lineage: Vec::new(),
                    ..process()
                }),
                Payload::Accept(Accept {
                    local_address: "10.0.0.5".parse().unwrap(),
                    local_port: 8080,
                    remote_address: "10.0.0.9".parse().unwrap(),
                    remote_port: 51_000,
                }),
            ),
            event(
                10,
                Some(process()),
                Payload::DnsAnswer(DnsAnswer {
                    server: "10.96.0.10".parse().unwrap(),
                    server_port: 53,
                    client: "10.0.0.5".parse().unwrap(),
                    client_port: 40_000,
                    id: 0x1234,
                    name: "api.github.com".into(),
                    addresses: vec![
                        "140.82.112.6".parse().unwrap(),
                        "2001:db8::6".parse().unwrap(),
                    ],
                    ttl: 60,
                }),
            ),
        ];
        v.push(event(
            12,
            Some(process()),
            Payload::IoUring(crate::event::IoUring {
                op: "setup".into(),
                fd: Some(5),
                sq_entries: 8,
                cq_entries: 16,
                flags: 0,
                blocked: true,
            }),
        ));
        let offending = connect(false);
        v.push(event(
            11,
            offending.process.clone(),
            Payload::Anomaly(Anomaly {
                anomaly: AnomalyKind::UnapprovedSystem,
                severity: Severity::High,
                reason: "203.0.113.7:443 is not in the agent's systems".into(),
                identity_name: None,
                count: 1,
                action: "revoked".into(),
                offending: Box::new(offending),
            }),
        ));
        let daemon_made = [
            Payload::Loss(Loss {
                sensor: "file".into(),
                lost: 12,
                total: 40,
            }),
            Payload::SessionStart(SessionStart {
                cgroup: "/vigil/coder/s-1".into(),
                requested_by_pid: 3999,
            }),
            Payload::Revocation(Revocation {
                agent: "coder".into(),
                session: Some("s-1".into()),
                reason: "unapproved system".into(),
                by: "on_violation of agent coder".into(),
                latency_ns: Some(180_000),
            }),
            Payload::Restore(Restore {
                agent: "coder".into(),
                session: None,
                reason: "reviewed".into(),
                by: "uid 0 (pid 5000)".into(),
            }),
            Payload::TaskApproved(TaskApproved {
                agent: "coder".into(),
                task: "T-7".into(),
                purpose: "fix the build".into(),
                expires: humantime::parse_rfc3339("2026-12-02T13:00:00Z").unwrap(),
                scope: Some(TaskScope {
                    systems: vec!["github.com:443".into()],
                    tools: vec!["/usr/bin/git".into()],
                    data: vec!["repo".into()],
                }),
                by: "alice@example.com".into(),
            }),
            Payload::TaskEnded(TaskEnded {
                agent: "coder".into(),
                task: "T-7".into(),
                reason: "expired".into(),
                by: "vigil".into(),
            }),
            Payload::ConfigChange(ConfigChange {
                version: "sha256:1f2e".into(),
                applied: true,
                errors: Vec::new(),
            }),
            Payload::ConfigChange(ConfigChange {
                version: "sha256:1f2e".into(),
                applied: false,
                errors: vec!["agent.coder.scope.systems[0]: bad host".into()],
            }),
            Payload::Gap(Gap {
                first_missing: 3,
                last_missing: 9,
            }),
            Payload::SensorTampered(crate::event::SensorTampered {
                sensor: "network".into(),
                object: "vigil_connect4".into(),
                tamper: "link_detached".into(),
                path: "/sys/fs/bpf/vigil/links/1/vigil_connect4".into(),
                action: "re-attached as link 91".into(),
                repaired: true,
            }),
        ];
        for (i, p) in daemon_made.into_iter().enumerate() {
            v.push(event(20 + i as u64, None, p));
        }
        // The node's own loss count belongs to no session.
        v.push(Event {
            identity: Identity::default(),
            ..event(
                30,
                None,
                Payload::Loss(Loss {
                    sensor: "network".into(),
                    lost: 1,
                    total: 1,
                }),
            )
        });
        v
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn ocsf(e: &Event) -> Value {
        serde_json::to_value(to_ocsf(e, "node-1")).unwrap()
    }

    fn of_kind(kind: &str) -> Vec<Value> {
        samples::all()
            .iter()
            .filter(|e| e.payload.kind() == kind)
            .map(ocsf)
            .collect()
    }

    #[test]
    fn every_record_has_the_required_base_attributes() {
        for e in samples::all() {
            let r = ocsf(&e);
            let kind = e.payload.kind();
            for key in [
                "activity_id",
                "category_uid",
                "class_uid",
                "type_uid",
                "severity_id",
                "time",
                "actor",
                "device",
            ] {
                assert!(!r[key].is_null(), "{kind}: no {key}: {r}");
            }
            assert_eq!(
                r["type_uid"].as_u64().unwrap(),
                r["class_uid"].as_u64().unwrap() * 100 + r["activity_id"].as_u64().unwrap(),
                "{kind}"
            );
            assert_eq!(r["time"], 1_796_212_800_123_i64, "{kind}");
            assert_eq!(r["metadata"]["version"], "1.5.0");
            assert_eq!(r["metadata"]["product"]["name"], "Vigil");
            assert_eq!(r["metadata"]["sequence"], e.seq);
            assert_eq!(r["device"]["hostname"], "node-1");
            let v = &r["unmapped"]["vigil"];
            assert_eq!(v["kind"], kind);
            for key in ["agent", "session", "task", "pod", "spiffe_id"] {
                assert!(v.get(key).is_some(), "{kind}: unmapped.vigil.{key} missing");
            }
        }
    }

    #[test]
    fn the_agent_identity_is_in_actor_and_unmapped() {
        let r = &of_kind("exit")[0];
        assert_eq!(r["actor"]["app_name"], "coder");
        assert_eq!(r["actor"]["session"]["uid"], "s-1");
        assert_eq!(r["actor"]["user"]["uid"], "1000");
        assert_eq!(r["actor"]["process"]["pid"], 4100);
        let v = &r["unmapped"]["vigil"];
        assert_eq!(v["spiffe_id"], "spiffe://cluster.local/ns/agents/sa/coder");
        assert_eq!(v["pod"]["name"], "coder-0");
        assert_eq!(v["pod"]["namespace"], "agents");
        assert_eq!(v["task"], "T-7");
        assert_eq!(v["cgroup_id"], 4242);
    }

    #[test]
    fn process_kinds_are_process_activity() {
        let exec = of_kind("exec");
        assert_eq!(
            (exec[0]["class_uid"].clone(), exec[0]["activity_id"].clone()),
            (1007.into(), 1.into())
        );
        assert_eq!(exec[0]["process"]["file"]["path"], "/usr/bin/git");
        assert_eq!(exec[0]["process"]["cmd_line"], "git push");
        assert_eq!(exec[0]["actor"]["process"]["pid"], 4000);
        assert_eq!(exec[0]["status_id"], 1);
        assert_eq!(exec[1]["status_id"], 2, "a blocked exec failed");
        let fork = &of_kind("fork")[0];
        assert_eq!(fork["type_uid"], 100_701);
        assert_eq!(fork["process"]["pid"], 4101);
        assert_eq!(fork["process"]["parent_process"]["pid"], 4100);
        let exit = of_kind("exit");
        assert_eq!(exit[0]["type_uid"], 100_702);
        assert_eq!(exit[0]["exit_code"], 0);
        assert_eq!(exit[1]["status_detail"], "killed by signal 9");
    }

    #[test]
    fn file_opens_read_or_update_per_access() {
        let f = of_kind("file_open");
        assert_eq!(f[0]["class_uid"], 1001);
        assert_eq!(f[0]["activity_id"], 2, "read");
        assert_eq!(f[0]["file"]["path"], "/srv/repo/.git/config");
        assert_eq!(f[0]["file"]["name"], "config");
        assert_eq!(f[0]["count"], 3, "the open and its two repeats");
        assert_eq!(f[1]["activity_id"], 3, "write");
        assert_eq!(f[1]["status_id"], 2);
        assert_eq!(f[1]["status_code"], "EACCES");
    }

    #[test]
    fn network_kinds_open_or_refuse() {
        let c = of_kind("connect");
        assert_eq!(
            (c[0]["class_uid"].clone(), c[0]["activity_id"].clone()),
            (4001.into(), 1.into())
        );
        assert_eq!(c[0]["dst_endpoint"]["ip"], "203.0.113.7");
        assert_eq!(c[0]["dst_endpoint"]["port"], 443);
        assert_eq!(c[0]["connection_info"]["direction_id"], 2);
        assert_eq!(c[0]["connection_info"]["protocol_num"], 6);
        assert_eq!(c[1]["activity_id"], 5, "blocked: Refuse");
        assert_eq!(c[1]["type_uid"], 400_105);
        let a = &of_kind("accept")[0];
        assert_eq!(a["activity_id"], 1);
        assert_eq!(a["src_endpoint"]["ip"], "10.0.0.9");
        assert_eq!(a["dst_endpoint"]["port"], 8080);
        assert_eq!(a["connection_info"]["direction_id"], 1);
        let d = &of_kind("dns_answer")[0];
        assert_eq!(
            (d["class_uid"].clone(), d["activity_id"].clone()),
            (4003.into(), 2.into())
        );
        assert_eq!(d["query"]["hostname"], "api.github.com");
        assert_eq!(d["answers"][0]["rdata"], "140.82.112.6");
        assert_eq!(d["answers"][1]["type"], "AAAA");
        assert_eq!(d["answers"][1]["ttl"], 60);
    }

    #[test]
    fn an_anomaly_is_a_detection_finding_with_its_evidence() {
        let f = &of_kind("anomaly")[0];
        assert_eq!(
            (f["class_uid"].clone(), f["activity_id"].clone()),
            (2004.into(), 1.into())
        );
        assert_eq!(f["severity_id"], 4, "high");
        assert_eq!(f["finding_info"]["uid"], "node-1/11");
        assert_eq!(f["finding_info"]["types"][0], "unapproved_system");
        assert_eq!(
            f["finding_info"]["desc"],
            "203.0.113.7:443 is not in the agent's systems"
        );
        let ev = &f["evidences"][0];
        assert_eq!(ev["dst_endpoint"]["ip"], "203.0.113.7");
        assert_eq!(ev["actor"]["app_name"], "coder");
        assert_eq!(ev["data"]["kind"], "connect");
        assert_eq!(ev["data"]["seq"], 4);
        assert_eq!(f["unmapped"]["vigil"]["details"]["action"], "revoked");
        assert!(f["unmapped"]["vigil"]["details"].get("offending").is_none());
    }

    #[test]
    fn governance_actions_are_user_access_with_reason_and_caller() {
        let r = &of_kind("revocation")[0];
        assert_eq!(
            (r["class_uid"].clone(), r["activity_id"].clone()),
            (3005.into(), 2.into())
        );
        assert_eq!(r["actor"]["user"]["name"], "on_violation of agent coder");
        assert_eq!(r["user"]["name"], "coder");
        assert_eq!(r["privileges"][0], "scope:coder/s-1");
        assert_eq!(r["message"], "unapproved system");
        let s = &of_kind("restore")[0];
        assert_eq!(s["activity_id"], 1);
        assert_eq!(s["actor"]["user"]["name"], "uid 0 (pid 5000)");
        assert_eq!(s["privileges"][0], "scope:coder");
        let t = &of_kind("task_approved")[0];
        assert_eq!(t["activity_id"], 1);
        assert_eq!(
            t["privileges"],
            serde_json::json!([
                "task:T-7",
                "system:github.com:443",
                "tool:/usr/bin/git",
                "data:repo"
            ])
        );
        assert_eq!(t["actor"]["user"]["name"], "alice@example.com");
        let e = &of_kind("task_ended")[0];
        assert_eq!(e["activity_id"], 2);
        assert_eq!(e["message"], "expired");
    }

    #[test]
    fn daemon_records_have_fitting_classes() {
        let s = &of_kind("session_start")[0];
        assert_eq!(
            (s["class_uid"].clone(), s["activity_id"].clone()),
            (6002.into(), 3.into())
        );
        assert_eq!(s["app"]["name"], "coder");
        assert_eq!(s["app"]["uid"], "s-1");
        let l = of_kind("loss");
        assert_eq!(
            (l[0]["class_uid"].clone(), l[0]["activity_id"].clone()),
            (1008.into(), 99.into())
        );
        assert_eq!(l[0]["count"], 12);
        assert_eq!(l[0]["log_name"], "file");
        assert_eq!(l[0]["severity_id"], 3);
        assert_eq!(
            l[1]["actor"]["app_name"], "vigil",
            "the node's loss is the daemon's own"
        );
        let c = of_kind("config_change");
        assert_eq!(
            (c[0]["class_uid"].clone(), c[0]["activity_id"].clone()),
            (5019.into(), 1.into())
        );
        assert_eq!(c[0]["status_id"], 1);
        assert_eq!(c[1]["status_id"], 2);
        assert_eq!(
            c[1]["status_detail"],
            "agent.coder.scope.systems[0]: bad host"
        );
        let g = &of_kind("gap")[0];
        assert_eq!(
            (g["class_uid"].clone(), g["activity_id"].clone()),
            (1008.into(), 2.into())
        );
        assert_eq!(g["count"], 7);
    }

    #[test]
    fn the_samples_cover_every_kind() {
        let kinds: std::collections::BTreeSet<_> =
            samples::all().iter().map(|e| e.payload.kind()).collect();
        assert_eq!(kinds.len(), 18, "{kinds:?}");
    }

    #[test]
    fn severities_map_in_order() {
        let ids: Vec<u8> = [
            Severity::Info,
            Severity::Low,
            Severity::Medium,
            Severity::High,
            Severity::Critical,
        ]
        .into_iter()
        .map(|s| severity(s).0)
        .collect();
        assert_eq!(ids, [1, 2, 3, 4, 5]);
    }
}
