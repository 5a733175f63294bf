//! Conversions between the daemon's events ([`crate::event`]) and the
//! `vigil.v1` wire types ([`pb`]).
//!
//! Optional strings map to empty proto strings and back, so `Some("")` does
//! not survive a round trip (it becomes `None`); nothing else is lost. The wire
//! side is converted with `TryFrom` because a client or a damaged journal can
//! send enum values we do not know, malformed addresses or missing fields;
//! the event side only fails on a `time` string that is not RFC 3339, which
//! only a bug can produce.

use std::net::IpAddr;
use std::time::SystemTime;

use crate::api::pb;
use crate::event::{
    Accept, Access, Anomaly, AnomalyKind, ConfigChange, Connect, DnsAnswer, Event, Exec, Exit,
    FileInode, FileOpen, Fork, Gap, Identity, IoUring, Loss, Payload, Process, Protocol, Restore,
    Revocation, SensorTampered, SessionStart, Severity, TaskApproved, TaskEnded, TaskScope,
    Workload,
};

/// Why a value could not be converted; `field` is the proto field path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    #[error("missing required field `{0}`")]
    Missing(&'static str),
    #[error("field `{field}`: unknown or unspecified enum value {value}")]
    Enum { field: &'static str, value: i32 },
    #[error("field `{field}`: {value:?} is not an IP address")]
    Address { field: &'static str, value: String },
    #[error("field `{field}`: {value:?} is not an RFC 3339 UTC time")]
    Time { field: &'static str, value: String },
    #[error("field `{field}`: the time is out of range")]
    TimeRange { field: &'static str },
    #[error("field `{field}`: {value} is not a port number")]
    Port { field: &'static str, value: u32 },
    #[error("field `{field}`: {value} does not fit in 16 bits")]
    Wide { field: &'static str, value: u32 },
    #[error("in `anomaly.offending`: {0}")]
    Offending(Box<ConvertError>),
}

fn opt(s: Option<String>) -> String {
    s.unwrap_or_default()
}

fn non_empty(s: String) -> Option<String> {
    if s.is_empty() { None } else { Some(s) }
}

fn to_timestamp(field: &'static str, time: &str) -> Result<prost_types::Timestamp, ConvertError> {
    humantime::parse_rfc3339(time)
        .map(prost_types::Timestamp::from)
        .map_err(|_| ConvertError::Time {
            field,
            value: time.to_owned(),
        })
}

fn from_timestamp(
    field: &'static str,
    ts: Option<prost_types::Timestamp>,
) -> Result<String, ConvertError> {
    let ts = ts.ok_or(ConvertError::Missing(field))?;
    let t = SystemTime::try_from(ts).map_err(|_| ConvertError::TimeRange { field })?;
    Ok(crate::event::format_time(t))
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

// ---- event side to wire side --------------------------------------------

impl TryFrom<Event> for pb::Event {
    type Error = ConvertError;

    /// The `node` field is left empty: the journal stamps its node name.
    fn try_from(e: Event) -> Result<Self, ConvertError> {
        Ok(Self {
            sequence: e.seq,
            node: String::new(),
            time: Some(to_timestamp("time", &e.time)?),
            kernel_ts_ns: e.kernel_ts_ns,
            identity: Some(e.identity.into()),
            process: e.process.map(Into::into),
            payload: Some(e.payload.try_into()?),
        })
    }
}

impl From<Identity> for pb::Identity {
    fn from(i: Identity) -> Self {
        Self {
            agent: opt(i.agent),
            session: opt(i.session),
            task: opt(i.task),
            cgroup_id: i.cgroup_id,
            cgroup_path: opt(i.cgroup),
            workload: i.workload.map(Into::into),
        }
    }
}

impl From<Workload> for pb::Workload {
    fn from(w: Workload) -> Self {
        Self {
            runtime: w.runtime,
            container_id: w.container_id,
            pod_uid: opt(w.pod_uid),
            pod_name: opt(w.pod_name),
            namespace: opt(w.namespace),
            service_account: opt(w.service_account),
            spiffe_id: opt(w.spiffe_id),
            container_name: opt(w.container_name),
            labels: w.labels.into_iter().collect(),
        }
    }
}

impl From<Process> for pb::Process {
    fn from(p: Process) -> Self {
        Self {
            pid: p.pid,
            tid: p.tid,
            ppid: p.ppid,
            uid: p.uid,
            gid: p.gid,
            comm: p.comm,
            exe: opt(p.exe),
            argv: p.argv,
            lineage: p.lineage,
        }
    }
}

impl From<Protocol> for pb::Protocol {
    fn from(p: Protocol) -> Self {
        match p {
            Protocol::Tcp => Self::Tcp,
            Protocol::Udp => Self::Udp,
            Protocol::Other => Self::Other,
        }
    }
}

impl From<Access> for pb::FileAccess {
    fn from(a: Access) -> Self {
        match a {
            Access::Read => Self::Read,
            Access::Write => Self::Write,
            Access::ReadWrite => Self::ReadWrite,
        }
    }
}

impl From<AnomalyKind> for pb::AnomalyKind {
    fn from(k: AnomalyKind) -> Self {
        match k {
            AnomalyKind::UnapprovedSystem => Self::UnapprovedSystem,
            AnomalyKind::UnapprovedTool => Self::UnapprovedTool,
            AnomalyKind::DataOutsideScope => Self::DataOutsideScope,
            AnomalyKind::IdentityOutsideScope => Self::IdentityOutsideScope,
            AnomalyKind::Unattributed => Self::Unattributed,
            AnomalyKind::UnapprovedTask => Self::UnapprovedTask,
            AnomalyKind::RevokedActivity => Self::RevokedActivity,
            AnomalyKind::DnsAnswerRejected => Self::DnsAnswerRejected,
            AnomalyKind::IoUringUsed => Self::IoUringUsed,
        }
    }
}

impl From<Severity> for pb::Severity {
    fn from(s: Severity) -> Self {
        match s {
            Severity::Info => Self::Info,
            Severity::Low => Self::Low,
            Severity::Medium => Self::Medium,
            Severity::High => Self::High,
            Severity::Critical => Self::Critical,
        }
    }
}

impl From<TaskScope> for pb::TaskScope {
    fn from(s: TaskScope) -> Self {
        Self {
            systems: s.systems,
            tools: s.tools,
            data: s.data,
        }
    }
}

impl TryFrom<Payload> for pb::event::Payload {
    type Error = ConvertError;

    fn try_from(p: Payload) -> Result<Self, ConvertError> {
        use pb::event::Payload as W;
        Ok(match p {
            Payload::Exec(x) => W::Exec(pb::Exec {
                filename: x.filename,
                argv: x.argv,
                argv_truncated: x.argv_truncated,
                blocked: x.blocked,
            }),
            Payload::Fork(x) => W::Fork(pb::Fork {
                child_pid: x.child_pid,
            }),
            Payload::Exit(x) => W::Exit(pb::Exit {
                code: x.code,
                signal: x.signal,
            }),
            Payload::Connect(x) => W::Connect(pb::Connect {
                protocol: pb::Protocol::from(x.protocol).into(),
                address: x.address.to_string(),
                port: x.port.into(),
                op: x.op,
                blocked: x.blocked,
            }),
            Payload::Accept(x) => W::Accept(pb::Accept {
                local_address: x.local_address.to_string(),
                local_port: x.local_port.into(),
                remote_address: x.remote_address.to_string(),
                remote_port: x.remote_port.into(),
            }),
            Payload::FileOpen(x) => W::FileOpen(pb::FileOpen {
                path: x.path,
                raw_path: opt(x.raw_path),
                flags: x.flags,
                access: pb::FileAccess::from(x.access).into(),
                syscall: x.syscall,
                fd: x.fd,
                error: opt(x.error),
                path_truncated: x.path_truncated,
                blocked: x.blocked,
                repeats: x.repeats,
                repeat_summary: x.repeat_summary,
                inode: x.inode.map(|i| pb::FileInode {
                    dev: i.dev,
                    ino: i.ino,
                    nlink: i.nlink,
                }),
            }),
            Payload::DnsAnswer(x) => W::DnsAnswer(pb::DnsAnswer {
                server: x.server.to_string(),
                name: x.name,
                addresses: x.addresses.iter().map(ToString::to_string).collect(),
                ttl: x.ttl,
                server_port: x.server_port.into(),
                client: x.client.to_string(),
                client_port: x.client_port.into(),
                id: x.id.into(),
            }),
            Payload::Anomaly(x) => W::Anomaly(Box::new(pb::Anomaly {
                kind: pb::AnomalyKind::from(x.anomaly).into(),
                severity: pb::Severity::from(x.severity).into(),
                reason: x.reason,
                identity_name: opt(x.identity_name),
                count: x.count,
                action: x.action,
                offending: Some(Box::new(
                    pb::Event::try_from(*x.offending)
                        .map_err(|e| ConvertError::Offending(Box::new(e)))?,
                )),
            })),
            Payload::Loss(x) => W::Loss(pb::Loss {
                sensor: x.sensor,
                lost: x.lost,
                total: x.total,
            }),
            Payload::SensorTampered(x) => W::SensorTampered(pb::SensorTampered {
                sensor: x.sensor,
                object: x.object,
                tamper: x.tamper,
                path: x.path,
                action: x.action,
                repaired: x.repaired,
            }),
            Payload::SessionStart(x) => W::SessionStart(pb::SessionStart {
                cgroup_path: x.cgroup,
                requested_by_pid: x.requested_by_pid,
            }),
            Payload::Revocation(x) => W::Revocation(pb::Revocation {
                agent: x.agent,
                session: opt(x.session),
                reason: x.reason,
                by: x.by,
                latency_ns: x.latency_ns.unwrap_or(0),
            }),
            Payload::Restore(x) => W::Restore(pb::Restore {
                agent: x.agent,
                session: opt(x.session),
                reason: x.reason,
                by: x.by,
            }),
            Payload::TaskApproved(x) => W::TaskApproved(pb::TaskApproved {
                expires_at: Some(to_timestamp("task_approved.expires_at", &x.expires)?),
                agent: x.agent,
                task: x.task,
                purpose: x.purpose,
                scope: x.scope.map(Into::into),
                by: x.by,
            }),
            Payload::TaskEnded(x) => W::TaskEnded(pb::TaskEnded {
                agent: x.agent,
                task: x.task,
                reason: x.reason,
                by: x.by,
            }),
            Payload::ConfigChange(x) => W::ConfigChange(pb::ConfigChange {
                version: x.version,
                applied: x.applied,
                errors: x.errors,
            }),
            Payload::Gap(x) => W::Gap(pb::Gap {
                first_missing: x.first_missing,
                last_missing: x.last_missing,
            }),
            Payload::IoUring(x) => W::IoUring(pb::IoUring {
                op: x.op,
                fd: x.fd.unwrap_or(-1),
                sq_entries: x.sq_entries,
                cq_entries: x.cq_entries,
                flags: x.flags,
                blocked: x.blocked,
            }),
        })
    }
}

// ---- wire side to event side --------------------------------------------

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
        })
    }
}

// ---- kinds and severities, for filters ------------------------------------

/// The filter kind of a wire payload.
#[must_use]
pub fn kind_of(payload: &pb::event::Payload) -> pb::EventKind {
    use pb::event::Payload as W;
    match payload {
        W::Exec(_) => pb::EventKind::Exec,
        W::Fork(_) => pb::EventKind::Fork,
        W::Exit(_) => pb::EventKind::Exit,
        W::Connect(_) => pb::EventKind::Connect,
        W::Accept(_) => pb::EventKind::Accept,
        W::FileOpen(_) => pb::EventKind::FileOpen,
        W::DnsAnswer(_) => pb::EventKind::DnsAnswer,
        W::Anomaly(_) => pb::EventKind::Anomaly,
        W::Loss(_) => pb::EventKind::Loss,
        W::SessionStart(_) => pb::EventKind::SessionStart,
        W::Revocation(_) => pb::EventKind::Revocation,
        W::Restore(_) => pb::EventKind::Restore,
        W::TaskApproved(_) => pb::EventKind::TaskApproved,
        W::TaskEnded(_) => pb::EventKind::TaskEnded,
        W::ConfigChange(_) => pb::EventKind::ConfigChange,
        W::Gap(_) => pb::EventKind::Gap,
        W::SensorTampered(_) => pb::EventKind::SensorTampered,
        W::IoUring(_) => pb::EventKind::IoUring,
    }
}

/// The wire kind matching an event-side `kind` string (`file_open`), for
/// CLI flags that take the JSON names.
#[must_use]
pub fn kind_from_name(name: &str) -> Option<pb::EventKind> {
    pb::EventKind::from_str_name(&format!("EVENT_KIND_{}", name.to_ascii_uppercase()))
        .filter(|k| *k != pb::EventKind::Unspecified)
}

/// The event-side `kind` string of a wire kind (`file_open`).
#[must_use]
pub fn kind_name(kind: pb::EventKind) -> String {
    kind.as_str_name()
        .trim_start_matches("EVENT_KIND_")
        .to_ascii_lowercase()
}

/// A `gap` event as sent to one subscriber: never journaled, its sequence is
/// the last missing one so resuming after it does not ask for the range again.
#[must_use]
pub fn gap_event(node: &str, first_missing: u64, last_missing: u64) -> pb::Event {
    pb::Event {
        sequence: last_missing,
        node: node.to_owned(),
        time: Some(SystemTime::now().into()),
        kernel_ts_ns: 0,
        identity: None,
        process: None,
        payload: Some(pb::event::Payload::Gap(pb::Gap {
            first_missing,
            last_missing,
        })),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use prost::Message as _;

    use super::*;
    use crate::event::format_time;

    fn base(payload: Payload) -> Event {
        Event {
            seq: 41,
            time: format_time(SystemTime::UNIX_EPOCH + std::time::Duration::new(1_790_000_000, 7)),
            kernel_ts_ns: 123_456,
            identity: Identity {
                agent: Some("code-assistant".into()),
                session: Some("s-1".into()),
                task: Some("t-9".into()),
                cgroup_id: 777,
                cgroup: Some("/vigil.slice/code-assistant/s-1".into()),
                workload: Some(Workload {
                    runtime: "containerd".into(),
                    container_id: "ab".repeat(32),
                    pod_uid: Some("0e9c1e2a-1111-2222-3333-444455556666".into()),
                    pod_name: Some("coder-0".into()),
                    namespace: Some("agents".into()),
                    service_account: Some("coder".into()),
                    spiffe_id: Some("spiffe://example.org/ns/agents/sa/coder".into()),
                    container_name: Some("main".into()),
                    labels: BTreeMap::from([("app".into(), "code-assistant".into())]),
                }),
            },
            process: Some(Process {
                pid: 10,
                tid: 11,
                ppid: 1,
                uid: 1000,
                gid: 1000,
                comm: "git".into(),
                exe: Some("/usr/bin/git".into()),
                argv: vec!["git".into(), "push".into()],
                lineage: vec![10, 5, 1],
            }),
            payload,
        }
    }

    fn every_payload() -> Vec<Payload> {
        let offending = base(Payload::FileOpen(FileOpen {
            path: "/home/u/.aws/credentials".into(),
            raw_path: Some("../.aws/credentials".into()),
            flags: 0,
            access: Access::Read,
            syscall: "openat".into(),
            fd: Some(3),
            error: None,
            path_truncated: false,
            blocked: false,
            repeats: 0,
            repeat_summary: false,
            inode: Some(FileInode {
                dev: 2049,
                ino: 131_075,
                nlink: 1,
            }),
        }));
        vec![
            Payload::Exec(Exec {
                filename: "/usr/bin/git".into(),
                argv: vec!["git".into(), "status".into()],
                argv_truncated: true,
                blocked: false,
            }),
            Payload::Fork(Fork { child_pid: 12 }),
            Payload::Exit(Exit {
                code: None,
                signal: Some(9),
            }),
            Payload::Exit(Exit {
                code: Some(0),
                signal: None,
            }),
            Payload::Connect(Connect {
                protocol: Protocol::Udp,
                address: "2001:db8::1".parse().unwrap(),
                port: 53,
                op: "sendmsg".into(),
                blocked: true,
            }),
            Payload::Accept(Accept {
                local_address: "10.0.0.1".parse().unwrap(),
                local_port: 8080,
                remote_address: "10.0.0.2".parse().unwrap(),
                remote_port: 40000,
            }),
            Payload::FileOpen(FileOpen {
                path: "/etc/passwd".into(),
                raw_path: None,
                flags: 0o1101,
                access: Access::ReadWrite,
                syscall: "openat2".into(),
                fd: None,
                error: Some("EACCES".into()),
                path_truncated: true,
                blocked: false,
                repeats: 0,
                repeat_summary: false,
                inode: None,
            }),
            Payload::DnsAnswer(DnsAnswer {
                server: "127.0.0.53".parse().unwrap(),
                server_port: 53,
                client: "127.0.0.1".parse().unwrap(),
                client_port: 41_000,
                id: 0x1234,
                name: "api.github.com".into(),
                addresses: vec!["140.82.112.6".parse().unwrap(), "::1".parse().unwrap()],
                ttl: 60,
            }),
            Payload::Anomaly(Anomaly {
                anomaly: AnomalyKind::DataOutsideScope,
                severity: Severity::High,
                reason: "path not in data".into(),
                identity_name: Some("aws".into()),
                count: 3,
                action: "revoked".into(),
                offending: Box::new(offending),
            }),
            Payload::Loss(Loss {
                sensor: "file".into(),
                lost: 5,
                total: 50,
            }),
            Payload::SensorTampered(SensorTampered {
                sensor: "network".into(),
                object: "vigil_connect4".into(),
                tamper: "link_detached".into(),
                path: "/sys/fs/bpf/vigil/links/1-2/vigil_connect4-3".into(),
                action: "re-attached as link 9".into(),
                repaired: true,
            }),
            Payload::SessionStart(SessionStart {
                cgroup: "/vigil.slice/a/s".into(),
                requested_by_pid: 99,
            }),
            Payload::Revocation(Revocation {
                agent: "a".into(),
                session: Some("s".into()),
                reason: "stole creds".into(),
                by: "on_violation: anomaly 40".into(),
                latency_ns: Some(81_000),
            }),
            Payload::Revocation(Revocation {
                agent: "a".into(),
                session: None,
                reason: "operator".into(),
                by: "uid=0 pid=4".into(),
                latency_ns: None,
            }),
            Payload::Restore(Restore {
                agent: "a".into(),
                session: None,
                reason: "fixed".into(),
                by: "uid=0".into(),
            }),
            Payload::TaskApproved(TaskApproved {
                agent: "a".into(),
                task: "t".into(),
                purpose: "release".into(),
                expires: format_time(
                    SystemTime::UNIX_EPOCH + std::time::Duration::new(1_790_000_060, 0),
                ),
                scope: Some(TaskScope {
                    systems: vec!["github.com:443".into()],
                    tools: vec![],
                    data: vec!["/src/**".into()],
                }),
                by: "cert:CN=ops".into(),
            }),
            Payload::TaskEnded(TaskEnded {
                agent: "a".into(),
                task: "t".into(),
                reason: "expired".into(),
                by: "kernel clock".into(),
            }),
            Payload::ConfigChange(ConfigChange {
                version: "7".into(),
                applied: false,
                errors: vec!["agent x: bad glob".into()],
            }),
            Payload::Gap(Gap {
                first_missing: 3,
                last_missing: 9,
            }),
        ]
    }

    #[test]
    fn every_payload_round_trips_through_the_wire_encoding() {
        for payload in every_payload() {
            let event = base(payload);
            let wire = pb::Event::try_from(event.clone()).unwrap();
            let bytes = wire.encode_to_vec();
            let decoded = pb::Event::decode(bytes.as_slice()).unwrap();
            assert_eq!(decoded, wire);
            let back = Event::try_from(decoded).unwrap();
            assert_eq!(back, event, "kind {}", event.payload.kind());
        }
    }

    #[test]
    fn kinds_agree_between_sides() {
        for payload in every_payload() {
            let name = payload.kind();
            let wire = pb::event::Payload::try_from(payload).unwrap();
            assert_eq!(kind_name(kind_of(&wire)), name);
            assert_eq!(kind_from_name(name), Some(kind_of(&wire)));
        }
        assert_eq!(kind_from_name("unspecified"), None);
        assert_eq!(kind_from_name("nope"), None);
    }

    #[test]
    fn minimal_event_keeps_absent_parts_absent() {
        let mut e = base(Payload::Fork(Fork { child_pid: 2 }));
        e.identity = Identity::default();
        e.process = None;
        let back = Event::try_from(pb::Event::try_from(e.clone()).unwrap()).unwrap();
        assert_eq!(back, e);
    }

    fn wire(payload: Payload) -> pb::Event {
        pb::Event::try_from(base(payload)).unwrap()
    }

    #[test]
    fn invalid_wire_values_name_the_field() {
        let mut w = wire(Payload::Fork(Fork { child_pid: 1 }));
        w.payload = None;
        assert_eq!(
            Event::try_from(w).unwrap_err(),
            ConvertError::Missing("payload")
        );

        let mut w = wire(Payload::Fork(Fork { child_pid: 1 }));
        w.time = None;
        assert_eq!(
            Event::try_from(w).unwrap_err(),
            ConvertError::Missing("time")
        );

        let err = Event::try_from(connect_wire(|c| c.address = "not-an-ip".into())).unwrap_err();
        assert_eq!(
            err,
            ConvertError::Address {
                field: "connect.address",
                value: "not-an-ip".into()
            }
        );
        assert!(err.to_string().contains("connect.address"));
        assert_eq!(
            Event::try_from(connect_wire(|c| c.port = 70_000)).unwrap_err(),
            ConvertError::Port {
                field: "connect.port",
                value: 70_000
            }
        );
        for bad in [0, 99] {
            assert_eq!(
                Event::try_from(connect_wire(|c| c.protocol = bad)).unwrap_err(),
                ConvertError::Enum {
                    field: "connect.protocol",
                    value: bad
                }
            );
        }
    }

    fn connect_wire(change: impl FnOnce(&mut pb::Connect)) -> pb::Event {
        let mut w = wire(every_payload().remove(4));
        let Some(pb::event::Payload::Connect(c)) = w.payload.as_mut() else {
            panic!("connect payload expected")
        };
        change(c);
        w
    }

    fn anomaly_wire(change: impl FnOnce(&mut pb::Anomaly)) -> pb::Event {
        let mut w = wire(every_payload().remove(8));
        let Some(pb::event::Payload::Anomaly(a)) = w.payload.as_mut() else {
            panic!("anomaly payload expected")
        };
        change(a);
        w
    }

    #[test]
    fn invalid_offending_event_is_reported_inside_the_anomaly() {
        let err = Event::try_from(anomaly_wire(|a| {
            a.offending.as_mut().unwrap().time = None;
        }))
        .unwrap_err();
        assert_eq!(
            err,
            ConvertError::Offending(Box::new(ConvertError::Missing("time")))
        );
        assert!(err.to_string().contains("anomaly.offending"));
        assert_eq!(
            Event::try_from(anomaly_wire(|a| a.offending = None)).unwrap_err(),
            ConvertError::Missing("anomaly.offending")
        );
        assert_eq!(
            Event::try_from(anomaly_wire(|a| a.severity = 0)).unwrap_err(),
            ConvertError::Enum {
                field: "anomaly.severity",
                value: 0
            }
        );
        assert_eq!(
            Event::try_from(anomaly_wire(|a| a.kind = 42)).unwrap_err(),
            ConvertError::Enum {
                field: "anomaly.kind",
                value: 42
            }
        );
    }

    #[test]
    fn event_side_time_must_be_rfc3339() {
        let mut e = base(Payload::Fork(Fork { child_pid: 1 }));
        e.time = "yesterday".into();
        assert_eq!(
            pb::Event::try_from(e).unwrap_err(),
            ConvertError::Time {
                field: "time",
                value: "yesterday".into()
            }
        );
    }

    #[test]
    fn gap_event_carries_the_range_and_last_missing_sequence() {
        let g = gap_event("node-a", 5, 9);
        assert_eq!(g.sequence, 9);
        assert_eq!(g.node, "node-a");
        let back = Event::try_from(g).unwrap();
        assert_eq!(
            back.payload,
            Payload::Gap(Gap {
                first_missing: 5,
                last_missing: 9
            })
        );
    }
}
