//! Event builders shared by the journal and hub tests.

use std::time::SystemTime;

use crate::event::{Anomaly, AnomalyKind, Event, Exec, Fork, Identity, Payload, Severity};

/// A small event whose payload carries `n`, to check order and content after a round trip.
pub fn fork(n: u32, time: SystemTime) -> Event {
    Event {
        seq: 0,
        time,
        kernel_ts_ns: u64::from(n),
        identity: Identity {
            agent: Some("agent-a".into()),
            session: Some("s-1".into()),
            ..Identity::default()
        },
        process: None,
        payload: Payload::Fork(Fork { child_pid: n }),
    }
}

pub fn exec(agent: &str, session: &str) -> Event {
    Event {
        seq: 0,
        time: SystemTime::now(),
        kernel_ts_ns: 1,
        identity: Identity {
            agent: Some(agent.into()),
            session: Some(session.into()),
            ..Identity::default()
        },
        process: None,
        payload: Payload::Exec(Exec {
            filename: "/usr/bin/true".into(),
            argv: vec!["true".into()],
            argv_truncated: false,
            blocked: false,
            from_memory: false,
            inode: None,
        }),
    }
}

pub fn anomaly(agent: &str, severity: Severity) -> Event {
    let offending = exec(agent, "s-1");
    Event {
        payload: Payload::Anomaly(Anomaly {
            anomaly: AnomalyKind::UnapprovedTool,
            severity,
            reason: "tool not declared".into(),
            identity_name: None,
            count: 1,
            action: "observed".into(),
            offending: Box::new(offending.clone()),
        }),
        ..offending
    }
}
