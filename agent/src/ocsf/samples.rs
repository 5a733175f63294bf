//! One event of every kind, as the daemon makes them (a session in a pod
//! with a SPIFFE ID): fixtures for the mapping's tests and the validator's.

use std::collections::BTreeMap;

use crate::event::{
    Accept, Access, Anomaly, AnomalyKind, ConfigChange, Connect, DnsAnswer, DnsQuery, Event, Exec,
    Exit, FileLink, FileOpen, Fork, Gap, Identity, Loss, Payload, Process, Protocol, Restore,
    Revocation, SessionStart, Severity, TaskApproved, TaskEnded, TaskScope, Workload,
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
        time: std::time::UNIX_EPOCH + std::time::Duration::new(1_796_212_800, 123_456_789),
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
                from_memory: false,
                inode: None,
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
                from_memory: false,
                inode: None,
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
        event(
            8,
            Some(process()),
            Payload::FileLink(FileLink {
                op: "hardlink".into(),
                syscall: "linkat".into(),
                target: "/srv/secrets/token".into(),
                raw_target: Some("../secrets/token".into()),
                path: "/srv/repo/hl".into(),
                raw_path: Some("hl".into()),
                inode: Some(crate::event::FileInode {
                    dev: 2049,
                    ino: 1_310_999,
                    nlink: 2,
                }),
                error: None,
                path_truncated: false,
                blocked: false,
            }),
        ),
        event(
            8,
            Some(process()),
            Payload::FileLink(FileLink {
                op: "rename".into(),
                syscall: "renameat2".into(),
                target: "/srv/secrets/token".into(),
                raw_target: None,
                path: "/srv/repo/token".into(),
                raw_path: None,
                inode: None,
                error: Some("EXDEV".into()),
                path_truncated: false,
                blocked: true,
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
        event(
            10,
            Some(process()),
            Payload::DnsQuery(DnsQuery {
                server: "10.96.0.10".parse().unwrap(),
                server_port: 53,
                client: "10.0.0.5".parse().unwrap(),
                client_port: 40_000,
                id: 0x1235,
                name: "api.github.com".into(),
                qtype: 28,
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
    v.push(event(
        13,
        Some(process()),
        Payload::Socket(crate::event::Socket {
            class: "packet".into(),
            family: 17,
            family_name: "AF_PACKET".into(),
            sock_type: 3,
            protocol: 768,
            blocked: true,
        }),
    ));
    v.push(event(
        14,
        Some(process()),
        Payload::UnixConnect(crate::event::UnixConnect {
            path: "/run/docker.sock".into(),
            op: "connect".into(),
            sock_type: "stream".into(),
            blocked: true,
        }),
    ));
    v.push(event(
        15,
        Some(process()),
        Payload::SessionEscape(crate::event::SessionEscape {
            moved_pid: 4000,
            self_move: true,
            created_there: false,
            to_cgroup_id: 9001,
            to_cgroup: Some("/outside".into()),
            blocked: true,
        }),
    ));
    v.push(event(
        15,
        Some(process()),
        Payload::TamperAttempt(crate::event::TamperAttempt {
            method: "ptrace".into(),
            detail: "PTRACE_SEIZE".into(),
            target_tid: Some(812),
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
            expires: std::time::UNIX_EPOCH + std::time::Duration::from_hours(498_949),
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
