//! Event side to wire side. Infallible: every event the daemon makes has a
//! wire form. Conversions borrow the event, so journaling one costs the
//! copies of its strings and no clone of the whole event first.

use super::pb;
use crate::event::{
    Access, AnomalyKind, Event, Identity, Payload, Process, Protocol, Severity, TaskScope, Workload,
};

fn opt(s: Option<&String>) -> String {
    s.cloned().unwrap_or_default()
}

impl From<&Event> for pb::Event {
    /// The `node` field is left empty: the journal stamps its node name.
    fn from(e: &Event) -> Self {
        Self {
            sequence: e.seq,
            node: String::new(),
            time: Some(e.time.into()),
            kernel_ts_ns: e.kernel_ts_ns,
            identity: Some((&e.identity).into()),
            process: e.process.as_ref().map(Into::into),
            payload: Some((&e.payload).into()),
        }
    }
}

impl From<&Identity> for pb::Identity {
    fn from(i: &Identity) -> Self {
        Self {
            agent: opt(i.agent.as_ref()),
            session: opt(i.session.as_ref()),
            task: opt(i.task.as_ref()),
            cgroup_id: i.cgroup_id,
            cgroup_path: opt(i.cgroup.as_ref()),
            workload: i.workload.as_ref().map(Into::into),
        }
    }
}

impl From<&Workload> for pb::Workload {
    fn from(w: &Workload) -> Self {
        Self {
            runtime: w.runtime.clone(),
            container_id: w.container_id.clone(),
            pod_uid: opt(w.pod_uid.as_ref()),
            pod_name: opt(w.pod_name.as_ref()),
            namespace: opt(w.namespace.as_ref()),
            service_account: opt(w.service_account.as_ref()),
            spiffe_id: opt(w.spiffe_id.as_ref()),
            container_name: opt(w.container_name.as_ref()),
            labels: w
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }
}

impl From<&Process> for pb::Process {
    fn from(p: &Process) -> Self {
        Self {
            pid: p.pid,
            tid: p.tid,
            ppid: p.ppid,
            uid: p.uid,
            gid: p.gid,
            comm: p.comm.clone(),
            exe: opt(p.exe.as_ref()),
            argv: p.argv.clone(),
            lineage: p.lineage.clone(),
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
            AnomalyKind::DnsExfiltrationSuspected => Self::DnsExfiltrationSuspected,
            AnomalyKind::LinkToProtected => Self::LinkToProtected,
            AnomalyKind::UnusualSocket => Self::UnusualSocket,
            AnomalyKind::SessionEscape => Self::SessionEscape,
            AnomalyKind::TamperAttempt => Self::TamperAttempt,
            AnomalyKind::ExecFromMemory => Self::ExecFromMemory,
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

impl From<&TaskScope> for pb::TaskScope {
    fn from(s: &TaskScope) -> Self {
        Self {
            systems: s.systems.clone(),
            tools: s.tools.clone(),
            data: s.data.clone(),
        }
    }
}

impl From<&Payload> for pb::event::Payload {
    fn from(p: &Payload) -> Self {
        use pb::event::Payload as W;
        match p {
            Payload::Exec(x) => W::Exec(pb::Exec {
                filename: x.filename.clone(),
                argv: x.argv.clone(),
                argv_truncated: x.argv_truncated,
                blocked: x.blocked,
                from_memory: x.from_memory,
                inode: x.inode.map(|i| pb::FileInode {
                    dev: i.dev,
                    ino: i.ino,
                    nlink: i.nlink,
                }),
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
                op: x.op.clone(),
                blocked: x.blocked,
            }),
            Payload::Accept(x) => W::Accept(pb::Accept {
                local_address: x.local_address.to_string(),
                local_port: x.local_port.into(),
                remote_address: x.remote_address.to_string(),
                remote_port: x.remote_port.into(),
            }),
            Payload::FileOpen(x) => W::FileOpen(pb::FileOpen {
                path: x.path.clone(),
                raw_path: opt(x.raw_path.as_ref()),
                flags: x.flags,
                access: pb::FileAccess::from(x.access).into(),
                syscall: x.syscall.clone(),
                fd: x.fd,
                error: opt(x.error.as_ref()),
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
                name: x.name.clone(),
                addresses: x.addresses.iter().map(ToString::to_string).collect(),
                ttl: x.ttl,
                server_port: x.server_port.into(),
                client: x.client.to_string(),
                client_port: x.client_port.into(),
                id: x.id.into(),
            }),
            Payload::FileLink(x) => W::FileLink(pb::FileLink {
                op: x.op.clone(),
                syscall: x.syscall.clone(),
                target: x.target.clone(),
                raw_target: opt(x.raw_target.as_ref()),
                path: x.path.clone(),
                raw_path: opt(x.raw_path.as_ref()),
                inode: x.inode.map(|i| pb::FileInode {
                    dev: i.dev,
                    ino: i.ino,
                    nlink: i.nlink,
                }),
                error: opt(x.error.as_ref()),
                path_truncated: x.path_truncated,
                blocked: x.blocked,
            }),
            Payload::DnsQuery(x) => W::DnsQuery(pb::DnsQuery {
                server: x.server.to_string(),
                server_port: x.server_port.into(),
                client: x.client.to_string(),
                client_port: x.client_port.into(),
                id: x.id.into(),
                name: x.name.clone(),
                qtype: x.qtype.into(),
            }),
            Payload::Anomaly(x) => W::Anomaly(Box::new(pb::Anomaly {
                kind: pb::AnomalyKind::from(x.anomaly).into(),
                severity: pb::Severity::from(x.severity).into(),
                reason: x.reason.clone(),
                identity_name: opt(x.identity_name.as_ref()),
                count: x.count,
                action: x.action.clone(),
                offending: Some(Box::new(pb::Event::from(&*x.offending))),
            })),
            Payload::Loss(x) => W::Loss(pb::Loss {
                sensor: x.sensor.clone(),
                lost: x.lost,
                total: x.total,
            }),
            Payload::SensorTampered(x) => W::SensorTampered(pb::SensorTampered {
                sensor: x.sensor.clone(),
                object: x.object.clone(),
                tamper: x.tamper.clone(),
                path: x.path.clone(),
                action: x.action.clone(),
                repaired: x.repaired,
            }),
            Payload::SessionStart(x) => W::SessionStart(pb::SessionStart {
                cgroup_path: x.cgroup.clone(),
                requested_by_pid: x.requested_by_pid,
            }),
            Payload::Revocation(x) => W::Revocation(pb::Revocation {
                agent: x.agent.clone(),
                session: opt(x.session.as_ref()),
                reason: x.reason.clone(),
                by: x.by.clone(),
                latency_ns: x.latency_ns.unwrap_or(0),
            }),
            Payload::Restore(x) => W::Restore(pb::Restore {
                agent: x.agent.clone(),
                session: opt(x.session.as_ref()),
                reason: x.reason.clone(),
                by: x.by.clone(),
            }),
            Payload::TaskApproved(x) => W::TaskApproved(pb::TaskApproved {
                expires_at: Some(x.expires.into()),
                agent: x.agent.clone(),
                task: x.task.clone(),
                purpose: x.purpose.clone(),
                scope: x.scope.as_ref().map(Into::into),
                by: x.by.clone(),
            }),
            Payload::TaskEnded(x) => W::TaskEnded(pb::TaskEnded {
                agent: x.agent.clone(),
                task: x.task.clone(),
                reason: x.reason.clone(),
                by: x.by.clone(),
            }),
            Payload::ConfigChange(x) => W::ConfigChange(pb::ConfigChange {
                version: x.version.clone(),
                applied: x.applied,
                errors: x.errors.clone(),
            }),
            Payload::Gap(x) => W::Gap(pb::Gap {
                first_missing: x.first_missing,
                last_missing: x.last_missing,
            }),
            Payload::IoUring(x) => W::IoUring(pb::IoUring {
                op: x.op.clone(),
                fd: x.fd.unwrap_or(-1),
                sq_entries: x.sq_entries,
                cq_entries: x.cq_entries,
                flags: x.flags,
                blocked: x.blocked,
            }),
            Payload::TamperAttempt(x) => W::TamperAttempt(pb::TamperAttempt {
                method: x.method.clone(),
                detail: x.detail.clone(),
                target_tid: x.target_tid.unwrap_or(0),
                blocked: x.blocked,
            }),
            Payload::SessionEscape(x) => W::SessionEscape(pb::SessionEscape {
                moved_pid: x.moved_pid,
                self_move: x.self_move,
                created_there: x.created_there,
                to_cgroup_id: x.to_cgroup_id,
                to_cgroup: x.to_cgroup.clone().unwrap_or_default(),
                blocked: x.blocked,
            }),
            Payload::UnixConnect(x) => W::UnixConnect(pb::UnixConnect {
                path: x.path.clone(),
                op: x.op.clone(),
                sock_type: x.sock_type.clone(),
                blocked: x.blocked,
            }),
            Payload::Socket(x) => W::Socket(pb::Socket {
                class: x.class.clone(),
                family: x.family,
                family_name: x.family_name.clone(),
                sock_type: x.sock_type,
                protocol: x.protocol,
                blocked: x.blocked,
            }),
        }
    }
}
