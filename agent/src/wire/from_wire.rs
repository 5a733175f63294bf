//! Wire side to event side. Fallible: a client or a damaged journal can
//! send enum values this daemon does not know, malformed addresses or
//! missing fields, and each is named by its proto field path.

use std::net::IpAddr;
use std::time::SystemTime;

use super::{ConvertError, pb};
use crate::event::{
    Accept, Access, Anomaly, AnomalyKind, ConfigChange, Connect, DnsAnswer, DnsQuery, Event, Exec,
    Exit, FileInode, FileLink, FileOpen, Fork, Gap, Identity, IoUring, Loss, Payload, Process,
    Protocol, Restore, Revocation, SensorTampered, SessionStart, Severity, TaskApproved, TaskEnded,
    TaskScope, Workload,
};

fn non_empty(s: String) -> Option<String> {
    if s.is_empty() { None } else { Some(s) }
}

fn from_timestamp(
    field: &'static str,
    ts: Option<prost_types::Timestamp>,
) -> Result<SystemTime, ConvertError> {
    let ts = ts.ok_or(ConvertError::Missing(field))?;
    SystemTime::try_from(ts).map_err(|_| ConvertError::TimeRange { field })
}

fn parse_ip(field: &'static str, s: &str) -> Result<IpAddr, ConvertError> {
    s.parse().map_err(|_| ConvertError::Address {
        field,
        value: s.to_owned(),
    })
}

fn port(field: &'static str, value: u32) -> Result<u16, ConvertError> {
    u16::try_from(value).map_err(|_| ConvertError::Port { field, value })
}

fn enum_value<T: TryFrom<i32>>(field: &'static str, value: i32) -> Result<T, ConvertError> {
    T::try_from(value).map_err(|_| ConvertError::Enum { field, value })
}

impl TryFrom<pb::Event> for Event {
    type Error = ConvertError;

    /// The `node` field is dropped: the event side has no node name.
    fn try_from(e: pb::Event) -> Result<Self, ConvertError> {
        Ok(Self {
            seq: e.sequence,
            time: from_timestamp("time", e.time)?,
            kernel_ts_ns: e.kernel_ts_ns,
            identity: e.identity.map(Into::into).unwrap_or_default(),
            process: e.process.map(Into::into),
            payload: e
                .payload
                .ok_or(ConvertError::Missing("payload"))?
                .try_into()?,
        })
    }
}

impl From<pb::Identity> for Identity {
    fn from(i: pb::Identity) -> Self {
        Self {
            agent: non_empty(i.agent),
            session: non_empty(i.session),
            task: non_empty(i.task),
            cgroup_id: i.cgroup_id,
            cgroup: non_empty(i.cgroup_path),
            workload: i.workload.map(Into::into),
        }
    }
}

impl From<pb::Workload> for Workload {
    fn from(w: pb::Workload) -> Self {
        Self {
            runtime: w.runtime,
            container_id: w.container_id,
            pod_uid: non_empty(w.pod_uid),
            pod_name: non_empty(w.pod_name),
            namespace: non_empty(w.namespace),
            service_account: non_empty(w.service_account),
            spiffe_id: non_empty(w.spiffe_id),
            container_name: non_empty(w.container_name),
            labels: w.labels.into_iter().collect(),
        }
    }
}

impl From<pb::Process> for Process {
    fn from(p: pb::Process) -> Self {
        Self {
            pid: p.pid,
            tid: p.tid,
            ppid: p.ppid,
            uid: p.uid,
            gid: p.gid,
            comm: p.comm,
            exe: non_empty(p.exe),
            argv: p.argv,
            lineage: p.lineage,
        }
    }
}

impl TryFrom<pb::Protocol> for Protocol {
    type Error = ConvertError;

    fn try_from(p: pb::Protocol) -> Result<Self, ConvertError> {
        match p {
            pb::Protocol::Tcp => Ok(Self::Tcp),
            pb::Protocol::Udp => Ok(Self::Udp),
            pb::Protocol::Other => Ok(Self::Other),
            pb::Protocol::Unspecified => Err(ConvertError::Enum {
                field: "protocol",
                value: p.into(),
            }),
        }
    }
}

impl TryFrom<pb::FileAccess> for Access {
    type Error = ConvertError;

    fn try_from(a: pb::FileAccess) -> Result<Self, ConvertError> {
        match a {
            pb::FileAccess::Read => Ok(Self::Read),
            pb::FileAccess::Write => Ok(Self::Write),
            pb::FileAccess::ReadWrite => Ok(Self::ReadWrite),
            pb::FileAccess::Unspecified => Err(ConvertError::Enum {
                field: "file_open.access",
                value: a.into(),
            }),
        }
    }
}

impl TryFrom<pb::AnomalyKind> for AnomalyKind {
    type Error = ConvertError;

    fn try_from(k: pb::AnomalyKind) -> Result<Self, ConvertError> {
        match k {
            pb::AnomalyKind::UnapprovedSystem => Ok(Self::UnapprovedSystem),
            pb::AnomalyKind::UnapprovedTool => Ok(Self::UnapprovedTool),
            pb::AnomalyKind::DataOutsideScope => Ok(Self::DataOutsideScope),
            pb::AnomalyKind::IdentityOutsideScope => Ok(Self::IdentityOutsideScope),
            pb::AnomalyKind::Unattributed => Ok(Self::Unattributed),
            pb::AnomalyKind::UnapprovedTask => Ok(Self::UnapprovedTask),
            pb::AnomalyKind::RevokedActivity => Ok(Self::RevokedActivity),
            pb::AnomalyKind::DnsAnswerRejected => Ok(Self::DnsAnswerRejected),
            pb::AnomalyKind::IoUringUsed => Ok(Self::IoUringUsed),
            pb::AnomalyKind::DnsExfiltrationSuspected => Ok(Self::DnsExfiltrationSuspected),
            pb::AnomalyKind::LinkToProtected => Ok(Self::LinkToProtected),
            pb::AnomalyKind::UnusualSocket => Ok(Self::UnusualSocket),
            pb::AnomalyKind::SessionEscape => Ok(Self::SessionEscape),
            pb::AnomalyKind::TamperAttempt => Ok(Self::TamperAttempt),
            pb::AnomalyKind::ExecFromMemory => Ok(Self::ExecFromMemory),
            pb::AnomalyKind::Unspecified => Err(ConvertError::Enum {
                field: "anomaly.kind",
                value: k.into(),
            }),
        }
    }
}

impl TryFrom<pb::Severity> for Severity {
    type Error = ConvertError;

    fn try_from(s: pb::Severity) -> Result<Self, ConvertError> {
        match s {
            pb::Severity::Info => Ok(Self::Info),
            pb::Severity::Low => Ok(Self::Low),
            pb::Severity::Medium => Ok(Self::Medium),
            pb::Severity::High => Ok(Self::High),
            pb::Severity::Critical => Ok(Self::Critical),
            pb::Severity::Unspecified => Err(ConvertError::Enum {
                field: "severity",
                value: s.into(),
            }),
        }
    }
}

impl From<pb::TaskScope> for TaskScope {
    fn from(s: pb::TaskScope) -> Self {
        Self {
            systems: s.systems,
            tools: s.tools,
            data: s.data,
        }
    }
}

fn anomaly(x: pb::Anomaly) -> Result<Anomaly, ConvertError> {
    let kind: pb::AnomalyKind = enum_value("anomaly.kind", x.kind)?;
    let severity: pb::Severity = enum_value("anomaly.severity", x.severity)?;
    let offending = x
        .offending
        .ok_or(ConvertError::Missing("anomaly.offending"))?;
    Ok(Anomaly {
        anomaly: kind.try_into()?,
        severity: severity.try_into().map_err(|_| ConvertError::Enum {
            field: "anomaly.severity",
            value: x.severity,
        })?,
        reason: x.reason,
        identity_name: non_empty(x.identity_name),
        count: x.count,
        action: x.action,
        offending: Box::new(
            Event::try_from(*offending).map_err(|e| ConvertError::Offending(Box::new(e)))?,
        ),
    })
}

impl TryFrom<pb::event::Payload> for Payload {
    type Error = ConvertError;

    fn try_from(p: pb::event::Payload) -> Result<Self, ConvertError> {
        use pb::event::Payload as W;
        Ok(match p {
            W::Exec(x) => Self::Exec(Exec {
                filename: x.filename,
                argv: x.argv,
                argv_truncated: x.argv_truncated,
                blocked: x.blocked,
                from_memory: x.from_memory,
                inode: x.inode.map(|i| FileInode {
                    dev: i.dev,
                    ino: i.ino,
                    nlink: i.nlink,
                }),
            }),
            W::Fork(x) => Self::Fork(Fork {
                child_pid: x.child_pid,
            }),
            W::Exit(x) => Self::Exit(Exit {
                code: x.code,
                signal: x.signal,
            }),
            W::Connect(x) => {
                let protocol: pb::Protocol = enum_value("connect.protocol", x.protocol)?;
                Self::Connect(Connect {
                    protocol: protocol.try_into().map_err(|_| ConvertError::Enum {
                        field: "connect.protocol",
                        value: x.protocol,
                    })?,
                    address: parse_ip("connect.address", &x.address)?,
                    port: port("connect.port", x.port)?,
                    op: x.op,
                    blocked: x.blocked,
                })
            }
            W::Accept(x) => Self::Accept(Accept {
                local_address: parse_ip("accept.local_address", &x.local_address)?,
                local_port: port("accept.local_port", x.local_port)?,
                remote_address: parse_ip("accept.remote_address", &x.remote_address)?,
                remote_port: port("accept.remote_port", x.remote_port)?,
            }),
            W::FileOpen(x) => {
                let access: pb::FileAccess = enum_value("file_open.access", x.access)?;
                Self::FileOpen(FileOpen {
                    path: x.path,
                    raw_path: non_empty(x.raw_path),
                    flags: x.flags,
                    access: access.try_into()?,
                    syscall: x.syscall,
                    fd: x.fd,
                    error: non_empty(x.error),
                    path_truncated: x.path_truncated,
                    blocked: x.blocked,
                    repeats: x.repeats,
                    repeat_summary: x.repeat_summary,
                    inode: x.inode.map(|i| FileInode {
                        dev: i.dev,
                        ino: i.ino,
                        nlink: i.nlink,
                    }),
                })
            }
            W::DnsAnswer(x) => Self::DnsAnswer(DnsAnswer {
                server: parse_ip("dns_answer.server", &x.server)?,
                server_port: port("dns_answer.server_port", x.server_port)?,
                // Answers journaled before the field existed have none.
                client: if x.client.is_empty() {
                    IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
                } else {
                    parse_ip("dns_answer.client", &x.client)?
                },
                client_port: port("dns_answer.client_port", x.client_port)?,
                id: u16::try_from(x.id).map_err(|_| ConvertError::Wide {
                    field: "dns_answer.id",
                    value: x.id,
                })?,
                name: x.name,
                addresses: x
                    .addresses
                    .iter()
                    .map(|a| parse_ip("dns_answer.addresses", a))
                    .collect::<Result<_, _>>()?,
                ttl: x.ttl,
            }),
            W::FileLink(x) => Self::FileLink(FileLink {
                op: x.op,
                syscall: x.syscall,
                target: x.target,
                raw_target: non_empty(x.raw_target),
                path: x.path,
                raw_path: non_empty(x.raw_path),
                inode: x.inode.map(|i| FileInode {
                    dev: i.dev,
                    ino: i.ino,
                    nlink: i.nlink,
                }),
                error: non_empty(x.error),
                path_truncated: x.path_truncated,
                blocked: x.blocked,
            }),
            W::DnsQuery(x) => Self::DnsQuery(DnsQuery {
                server: parse_ip("dns_query.server", &x.server)?,
                server_port: port("dns_query.server_port", x.server_port)?,
                client: parse_ip("dns_query.client", &x.client)?,
                client_port: port("dns_query.client_port", x.client_port)?,
                id: u16::try_from(x.id).map_err(|_| ConvertError::Wide {
                    field: "dns_query.id",
                    value: x.id,
                })?,
                name: x.name,
                qtype: u16::try_from(x.qtype).map_err(|_| ConvertError::Wide {
                    field: "dns_query.qtype",
                    value: x.qtype,
                })?,
            }),
            W::Anomaly(x) => Self::Anomaly(anomaly(*x)?),
            W::Loss(x) => Self::Loss(Loss {
                sensor: x.sensor,
                lost: x.lost,
                total: x.total,
            }),
            W::SensorTampered(x) => Self::SensorTampered(SensorTampered {
                sensor: x.sensor,
                object: x.object,
                tamper: x.tamper,
                path: x.path,
                action: x.action,
                repaired: x.repaired,
            }),
            W::SessionStart(x) => Self::SessionStart(SessionStart {
                cgroup: x.cgroup_path,
                requested_by_pid: x.requested_by_pid,
            }),
            W::Revocation(x) => Self::Revocation(Revocation {
                agent: x.agent,
                session: non_empty(x.session),
                reason: x.reason,
                by: x.by,
                latency_ns: (x.latency_ns != 0).then_some(x.latency_ns),
            }),
            W::Restore(x) => Self::Restore(Restore {
                agent: x.agent,
                session: non_empty(x.session),
                reason: x.reason,
                by: x.by,
            }),
            W::TaskApproved(x) => Self::TaskApproved(TaskApproved {
                expires: from_timestamp("task_approved.expires_at", x.expires_at)?,
                agent: x.agent,
                task: x.task,
                purpose: x.purpose,
                scope: x.scope.map(Into::into),
                by: x.by,
            }),
            W::TaskEnded(x) => Self::TaskEnded(TaskEnded {
                agent: x.agent,
                task: x.task,
                reason: x.reason,
                by: x.by,
            }),
            W::ConfigChange(x) => Self::ConfigChange(ConfigChange {
                version: x.version,
                applied: x.applied,
                errors: x.errors,
            }),
            W::Gap(x) => Self::Gap(Gap {
                first_missing: x.first_missing,
                last_missing: x.last_missing,
            }),
            W::IoUring(x) => Self::IoUring(IoUring {
                op: x.op,
                fd: (x.fd >= 0).then_some(x.fd),
                sq_entries: x.sq_entries,
                cq_entries: x.cq_entries,
                flags: x.flags,
                blocked: x.blocked,
            }),
            W::TamperAttempt(x) => Self::TamperAttempt(crate::event::TamperAttempt {
                method: x.method,
                detail: x.detail,
                target_tid: (x.target_tid != 0).then_some(x.target_tid),
                blocked: x.blocked,
            }),
            W::SessionEscape(x) => Self::SessionEscape(crate::event::SessionEscape {
                moved_pid: x.moved_pid,
                self_move: x.self_move,
                created_there: x.created_there,
                to_cgroup_id: x.to_cgroup_id,
                to_cgroup: (!x.to_cgroup.is_empty()).then_some(x.to_cgroup),
                blocked: x.blocked,
            }),
            W::UnixConnect(x) => Self::UnixConnect(crate::event::UnixConnect {
                path: x.path,
                op: x.op,
                sock_type: x.sock_type,
                blocked: x.blocked,
            }),
            W::Socket(x) => Self::Socket(crate::event::Socket {
                class: x.class,
                family: x.family,
                family_name: x.family_name,
                sock_type: x.sock_type,
                protocol: x.protocol,
                blocked: x.blocked,
            }),
        })
    }
}
