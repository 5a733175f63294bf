//! The readable one-line view of an event that `vigil watch` prints.

use std::fmt::Write as _;
use std::time::SystemTime;

use super::pb::event::Payload as P;
use crate::wire::pb;

/// `HH:MM:SS.mmm` (UTC) of an event time.
fn clock(t: Option<&prost_types::Timestamp>) -> String {
    let Some(t) = t.and_then(|t| SystemTime::try_from(*t).ok()) else {
        return "--:--:--.---".into();
    };
    let s = humantime::format_rfc3339_millis(t).to_string();
    s.get(11..23).unwrap_or(&s).to_owned()
}

fn severity(v: i32) -> String {
    pb::Severity::try_from(v).map_or_else(
        |_| v.to_string(),
        |s| {
            s.as_str_name()
                .trim_start_matches("SEVERITY_")
                .to_ascii_lowercase()
        },
    )
}

fn anomaly_kind(v: i32) -> String {
    pb::AnomalyKind::try_from(v).map_or_else(
        |_| v.to_string(),
        |k| {
            k.as_str_name()
                .trim_start_matches("ANOMALY_KIND_")
                .to_ascii_lowercase()
        },
    )
}

fn protocol(v: i32) -> String {
    pb::Protocol::try_from(v).map_or_else(
        |_| v.to_string(),
        |p| {
            p.as_str_name()
                .trim_start_matches("PROTOCOL_")
                .to_ascii_lowercase()
        },
    )
}

fn access(v: i32) -> String {
    pb::FileAccess::try_from(v).map_or_else(
        |_| v.to_string(),
        |a| {
            a.as_str_name()
                .trim_start_matches("FILE_ACCESS_")
                .to_ascii_lowercase()
        },
    )
}

/// `host:port`, with brackets around IPv6 addresses.
fn endpoint(address: &str, port: u32) -> String {
    if address.contains(':') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    }
}

fn target(agent: &str, session: &str) -> String {
    if session.is_empty() {
        format!("agent {agent}")
    } else {
        format!("session {session} of agent {agent}")
    }
}

/// What happened, in words.
fn what(payload: &P) -> String {
    match payload {
        P::Exec(x) => format!(
            "exec {}{}{}{}",
            x.argv.join(" "),
            if x.argv_truncated { " …" } else { "" },
            if x.from_memory { " FROM MEMORY" } else { "" },
            if x.blocked { " BLOCKED" } else { "" }
        ),
        P::Fork(x) => format!("fork child {}", x.child_pid),
        P::Exit(x) => match (x.code, x.signal) {
            (_, Some(sig)) => format!("exit by signal {sig}"),
            (Some(code), None) => format!("exit code {code}"),
            (None, None) => "exit".into(),
        },
        P::Connect(x) => format!(
            "{} {} {}{}",
            x.op,
            protocol(x.protocol),
            endpoint(&x.address, x.port),
            if x.blocked { " BLOCKED" } else { "" }
        ),
        P::Accept(x) => format!(
            "accept {} from {}",
            endpoint(&x.local_address, x.local_port),
            endpoint(&x.remote_address, x.remote_port)
        ),
        P::FileOpen(x) => {
            let mut s = format!("open {} {}", access(x.access), x.path);
            if !x.error.is_empty() {
                let _ = write!(s, " {}", x.error);
            }
            if x.blocked {
                s.push_str(" BLOCKED");
            }
            if x.repeat_summary {
                let _ = write!(s, " (repeated {} more times)", x.repeats);
            } else if x.repeats > 0 {
                let _ = write!(s, " (+{} repeats)", x.repeats);
            }
            s
        }
        P::DnsAnswer(x) => format!(
            "dns {} = {} (ttl {}s, from {})",
            x.name,
            x.addresses.join(", "),
            x.ttl,
            x.server
        ),
        P::FileLink(x) => {
            let mut s = format!("{} {} -> {} ({})", x.op, x.path, x.target, x.syscall);
            if !x.error.is_empty() {
                let _ = write!(s, " failed: {}", x.error);
            }
            if x.blocked {
                s.push_str(" BLOCKED");
            }
            s
        }
        P::DnsQuery(x) => format!(
            "dns query {} (type {}) to {}:{}",
            x.name, x.qtype, x.server, x.server_port
        ),
        P::Anomaly(x) => {
            let mut s = format!(
                "ANOMALY {} {}: {}",
                severity(x.severity),
                anomaly_kind(x.kind),
                x.reason
            );
            if x.count > 1 {
                let _ = write!(s, " (x{})", x.count);
            }
            if !x.action.is_empty() {
                let _ = write!(s, " [{}]", x.action);
            }
            s
        }
        P::IoUring(x) => {
            let mut s = if x.op == "setup" {
                format!(
                    "io_uring setup fd {} ({} sq, {} cq entries)",
                    x.fd, x.sq_entries, x.cq_entries
                )
            } else {
                format!("io_uring {}", x.op)
            };
            if x.blocked {
                s.push_str(" BLOCKED");
            }
            s
        }
        P::SessionEscape(x) => {
            let mut s = format!(
                "session escape: pid {} {} to {}",
                x.moved_pid,
                if x.self_move {
                    "moved itself"
                } else if x.created_there {
                    "created by this process"
                } else {
                    "moved by this process"
                },
                if x.to_cgroup.is_empty() {
                    format!("cgroup id {}", x.to_cgroup_id)
                } else {
                    x.to_cgroup.clone()
                }
            );
            if x.blocked {
                s.push_str(" KILLED");
            }
            s
        }
        P::TamperAttempt(x) => {
            let mut s = format!("tamper attempt: {}", x.method);
            if !x.detail.is_empty() {
                s = format!("{s} {}", x.detail);
            }
            if x.target_tid != 0 {
                s = format!("{s} of the daemon (thread {})", x.target_tid);
            }
            if x.blocked {
                s.push_str(" KILLED");
            }
            s
        }
        P::UnixConnect(x) => {
            let mut s = format!("unix {} {} ({})", x.op, x.path, x.sock_type);
            if x.blocked {
                s.push_str(" BLOCKED");
            }
            s
        }
        P::Socket(x) => {
            let mut s = format!(
                "socket {} ({}, type {}, protocol {})",
                x.class, x.family_name, x.sock_type, x.protocol
            );
            if x.blocked {
                s.push_str(" BLOCKED");
            }
            s
        }
        P::Loss(x) => format!(
            "LOSS {} records of the {} sensor lost ({} in all)",
            x.lost, x.sensor, x.total
        ),
        P::SensorTampered(x) => format!(
            "TAMPER {} of {} {} ({}): {}",
            x.tamper, x.sensor, x.object, x.path, x.action
        ),
        P::SessionStart(x) => format!("session started in {}", x.cgroup_path),
        P::Revocation(x) => format!(
            "REVOKED {} by {}: {}",
            target(&x.agent, &x.session),
            x.by,
            x.reason
        ),
        P::Restore(x) => format!(
            "RESTORED {} by {}: {}",
            target(&x.agent, &x.session),
            x.by,
            x.reason
        ),
        P::TaskApproved(x) => format!(
            "task {} of agent {} approved by {}: {}",
            x.task, x.agent, x.by, x.purpose
        ),
        P::TaskEnded(x) => format!(
            "task {} of agent {} {} ({})",
            x.task, x.agent, x.reason, x.by
        ),
        P::ConfigChange(x) if x.applied => format!("config version {} applied", x.version),
        P::ConfigChange(x) => format!(
            "config rejected, version {} stays: {}",
            x.version,
            x.errors.join("; ")
        ),
        P::Gap(x) => format!(
            "GAP events {}..={} were pruned before they could be sent",
            x.first_missing, x.last_missing
        ),
    }
}

/// One line: sequence, time, who (agent/session and process), what.
#[must_use]
pub fn line(e: &pb::Event) -> String {
    let mut out = format!("{:>8} {}", e.sequence, clock(e.time.as_ref()));
    let who = e.identity.as_ref().map_or_else(String::new, |i| {
        match (i.agent.as_str(), i.session.as_str()) {
            ("", "") => String::new(),
            (a, "") => a.to_owned(),
            ("", s) => format!("-/{s}"),
            (a, s) => format!("{a}/{s}"),
        }
    });
    if !who.is_empty() {
        let _ = write!(out, " {who}");
    }
    if let Some(p) = &e.process {
        let _ = write!(out, " {}[{}]", p.comm, p.pid);
    }
    match &e.payload {
        Some(p) => {
            let _ = write!(out, " {}", what(p));
        }
        None => out.push_str(" (unknown event kind: upgrade vigil)"),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(payload: P) -> pb::Event {
        pb::Event {
            sequence: 42,
            node: "n".into(),
            time: Some(prost_types::Timestamp {
                seconds: 1_790_000_000,
                nanos: 123_000_000,
            }),
            kernel_ts_ns: 0,
            identity: Some(pb::Identity {
                agent: "coder".into(),
                session: "s-1".into(),
                ..pb::Identity::default()
            }),
            process: Some(pb::Process {
                pid: 7,
                comm: "git".into(),
                ..pb::Process::default()
            }),
            payload: Some(payload),
        }
    }

    #[test]
    fn one_readable_line_per_event() {
        let exec = event(P::Exec(pb::Exec {
            filename: "/usr/bin/git".into(),
            argv: vec!["git".into(), "push".into()],
            ..pb::Exec::default()
        }));
        assert_eq!(
            line(&exec),
            "      42 14:13:20.123 coder/s-1 git[7] exec git push"
        );
        let connect = event(P::Connect(pb::Connect {
            protocol: pb::Protocol::Tcp.into(),
            address: "::1".into(),
            port: 443,
            op: "connect".into(),
            blocked: true,
        }));
        assert!(
            line(&connect).ends_with("connect tcp [::1]:443 BLOCKED"),
            "{}",
            line(&connect)
        );
        let mut gap = event(P::Gap(pb::Gap {
            first_missing: 3,
            last_missing: 9,
        }));
        gap.identity = None;
        gap.process = None;
        assert_eq!(
            line(&gap),
            "      42 14:13:20.123 GAP events 3..=9 were pruned before they could be sent"
        );
        let anomaly = event(P::Anomaly(Box::new(pb::Anomaly {
            kind: pb::AnomalyKind::UnapprovedSystem.into(),
            severity: pb::Severity::High.into(),
            reason: "10.0.0.1:443 is not in scope".into(),
            count: 3,
            action: "observed".into(),
            ..pb::Anomaly::default()
        })));
        assert!(
            line(&anomaly).ends_with(
                "ANOMALY high unapproved_system: 10.0.0.1:443 is not in scope (x3) [observed]"
            ),
            "{}",
            line(&anomaly)
        );
        let mut none = event(P::Fork(pb::Fork { child_pid: 1 }));
        none.payload = None;
        assert!(line(&none).contains("unknown event kind"));
    }
}
