use std::collections::BTreeMap;

use prost::Message as _;

use super::*;
use crate::event::*;
use std::time::SystemTime;

fn base(payload: Payload) -> Event {
    Event {
        seq: 41,
        time: SystemTime::UNIX_EPOCH + std::time::Duration::new(1_790_000_000, 7),
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
            from_memory: true,
            inode: Some(FileInode {
                dev: 2049,
                ino: 77,
                nlink: 1,
            }),
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
            expires: SystemTime::UNIX_EPOCH + std::time::Duration::new(1_790_000_060, 0),
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
        Payload::DnsQuery(DnsQuery {
            server: "127.0.0.53".parse().unwrap(),
            server_port: 53,
            client: "::1".parse().unwrap(),
            client_port: 41_001,
            id: 0x4321,
            name: "orugkidbobusa23f.evil.example".into(),
            qtype: 16,
        }),
        Payload::FileLink(FileLink {
            op: "hardlink".into(),
            syscall: "linkat".into(),
            target: "/home/u/secrets/token".into(),
            raw_target: Some("secrets/token".into()),
            path: "/home/u/ws/hl".into(),
            raw_path: Some("ws/hl".into()),
            inode: Some(FileInode {
                dev: 2049,
                ino: 77,
                nlink: 2,
            }),
            error: None,
            path_truncated: false,
            blocked: false,
        }),
    ]
}

#[test]
fn every_payload_round_trips_through_the_wire_encoding() {
    for payload in every_payload() {
        let event = base(payload);
        let wire = pb::Event::from(&event);
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
        let wire = pb::event::Payload::from(&payload);
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
    let back = Event::try_from(pb::Event::from(&e)).unwrap();
    assert_eq!(back, e);
}

fn wire(payload: Payload) -> pb::Event {
    pb::Event::from(&base(payload))
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
fn json_time_must_be_rfc3339() {
    // The one way a malformed time can reach an event: its JSON form.
    let mut v = serde_json::to_value(base(Payload::Fork(Fork { child_pid: 1 }))).unwrap();
    v["time"] = "yesterday".into();
    let err = serde_json::from_value::<Event>(v).unwrap_err().to_string();
    assert!(
        err.contains("\"yesterday\" is not an RFC 3339 UTC time"),
        "{err}"
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
