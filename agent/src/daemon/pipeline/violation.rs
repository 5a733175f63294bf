//! What the pipeline does with an event it checked: a violation of the
//! agent's scope or a refusal by the kernel becomes an anomaly, and
//! `on_violation` acts on it.

use super::dns::rejection_reason;
use std::time::Instant;

use vigil_common::verdict;

use super::Pipeline;
use crate::config::OnViolation;
use crate::enforcement::{Cause, state::Target};
use crate::event::{AnomalyKind, Event, Payload, Severity};
use crate::live::Loaded;
use crate::scope::dns::Rejection;
use crate::scope::{Verdict, Violation};

impl Pipeline {
    /// Compares an attributed event with its agent's scope; acts on a
    /// violation (`on_violation`) and returns the anomalies to report now.
    pub(super) fn evaluate(&mut self, loaded: &Loaded, event: &Event) -> Vec<Event> {
        let now = Instant::now();
        let scope = &loaded.scope;
        if let Some((path, what)) = self.guarded.written_by(event) {
            return self.tampered(loaded, event, path, what, now);
        }
        let violation = match event.identity.agent.as_deref() {
            Some(agent) => {
                if let Payload::DnsAnswer(d) = &event.payload
                    && let Some(id) = scope.agent_id(agent)
                {
                    match self.vet_answer(scope, id, event, d) {
                        // An answer without addresses widens nothing: it
                        // only uses up its query.
                        Ok(()) | Err(_) if d.addresses.is_empty() => {}
                        Ok(()) => {
                            self.dns.record(agent, &d.name, &d.addresses, d.ttl, now);
                            if let Err(e) =
                                self.enforcer
                                    .learn_dns(scope, agent, &d.name, &d.addresses, d.ttl)
                            {
                                tracing::warn!(
                                    "loading a DNS answer of {agent} into the kernel: {e}"
                                );
                            }
                        }
                        Err(why) => {
                            let (severity, on_violation) = match why {
                                Rejection::Late => (Severity::Medium, OnViolation::Alert),
                                _ => (Severity::High, scope.agent(id).on_violation),
                            };
                            return self.aggregate(
                                event,
                                Violation {
                                    kind: AnomalyKind::DnsAnswerRejected,
                                    severity,
                                    reason: rejection_reason(why, d, agent),
                                    identity: None,
                                },
                                on_violation,
                                now,
                            );
                        }
                    }
                }
                let Some(id) = scope.agent_id(agent) else {
                    // A session of an agent that a reload removed.
                    return self.aggregate(
                        event,
                        Violation {
                            kind: AnomalyKind::Unattributed,
                            severity: Severity::Medium,
                            reason: format!(
                                "agent {agent} is no longer declared in the node config"
                            ),
                            identity: None,
                        },
                        OnViolation::Alert,
                        now,
                    );
                };
                match scope.evaluate(id, event, &self.dns, now) {
                    Verdict::Violation(v) => (v, scope.agent(id).on_violation),
                    Verdict::InScope => {
                        // Inside the agent's scope; an active task approved
                        // for less must also cover it.
                        let Some((task, narrowed)) = self.enforcer.task_scope(agent) else {
                            return Vec::new();
                        };
                        let Some(nid) = narrowed.agent_id(agent) else {
                            return Vec::new();
                        };
                        match narrowed.evaluate(nid, event, &self.dns, now) {
                            Verdict::InScope => return Vec::new(),
                            Verdict::Violation(mut v) => {
                                v.reason =
                                    format!("{} (the scope approved for task {task})", v.reason);
                                (v, scope.agent(id).on_violation)
                            }
                        }
                    }
                }
            }
            None if event.process.is_some() => (
                Violation {
                    kind: AnomalyKind::Unattributed,
                    severity: Severity::Low,
                    reason: format!(
                        "activity in watched cgroup {} matches no agent",
                        event.identity.cgroup.as_deref().unwrap_or("(unknown)")
                    ),
                    identity: None,
                },
                OnViolation::Alert,
            ),
            None => return Vec::new(),
        };
        let (v, on_violation) = violation;
        self.aggregate(event, v, on_violation, now)
    }

    /// A watched process wrote (or renamed) one of the daemon's own files.
    /// The write is not refused (no hook but LSM could): for an enforced
    /// agent the writer is killed as soon as the daemon reads the event,
    /// else the agent's `on_violation` applies.
    fn tampered(
        &mut self,
        loaded: &Loaded,
        event: &Event,
        path: &str,
        what: &str,
        now: Instant,
    ) -> Vec<Event> {
        let agent = event.identity.agent.as_deref();
        let info = agent
            .and_then(|a| loaded.scope.agent_id(a))
            .map(|id| loaded.scope.agent(id));
        let verb = match &event.payload {
            Payload::FileLink(l) => l.op.as_str(),
            _ => "write",
        };
        let on_violation = match info {
            Some(i) if i.on_violation == OnViolation::Revoke => OnViolation::Revoke,
            Some(i) if i.enforce => OnViolation::Kill,
            Some(i) => i.on_violation,
            None => OnViolation::Alert,
        };
        self.aggregate(
            event,
            Violation {
                kind: AnomalyKind::TamperAttempt,
                severity: Severity::Critical,
                reason: format!(
                    "{verb} of {path}, {what}, by {}",
                    agent.unwrap_or("a process no agent matches")
                ),
                identity: None,
            },
            on_violation,
            now,
        )
    }

    /// An action the kernel refused: reported as an anomaly whose reason
    /// names the standing decision, not the action, so repeated attempts fold
    /// into one report with a count instead of flooding the stream.
    pub(super) fn blocked(&mut self, loaded: &Loaded, event: &Event, verdict: u32) -> Vec<Event> {
        let agent = event.identity.agent.as_deref().unwrap_or("(unknown)");
        let who = match event.identity.session.as_deref() {
            Some(s) => format!("session {s} of agent {agent}"),
            None => format!("agent {agent}"),
        };
        let v = match verdict {
            verdict::BLOCKED_REVOKED => Violation {
                kind: AnomalyKind::RevokedActivity,
                severity: Severity::High,
                reason: format!("activity of revoked {who} blocked in the kernel"),
                identity: None,
            },
            verdict::BLOCKED_IO_URING => Violation {
                kind: AnomalyKind::IoUringUsed,
                severity: Severity::High,
                reason: format!(
                    "io_uring set up by {who}: killed in the kernel before its first request"
                ),
                identity: None,
            },
            verdict::BLOCKED_ESCAPE => {
                let reason = match &event.payload {
                    Payload::SessionEscape(x) => {
                        let outcome = if x.self_move || kill_moved(x.moved_pid) {
                            "killed"
                        } else {
                            "the writer was killed; killing the moved process failed"
                        };
                        crate::scope::escape_reason(x, agent, outcome)
                    }
                    _ => format!("a process of {who} left its session: killed"),
                };
                Violation {
                    kind: AnomalyKind::SessionEscape,
                    severity: Severity::Critical,
                    reason,
                    identity: None,
                }
            }
            verdict::BLOCKED_SOCKET => {
                let what = match &event.payload {
                    Payload::Socket(s) => format!(
                        "{} socket ({}, type {}, protocol {})",
                        s.class, s.family_name, s.sock_type, s.protocol
                    ),
                    _ => "socket".to_owned(),
                };
                Violation {
                    kind: AnomalyKind::UnusualSocket,
                    severity: Severity::High,
                    reason: format!(
                        "{what} of {who} is outside its socket_families (refused in the kernel)"
                    ),
                    identity: None,
                }
            }
            verdict::BLOCKED_TAMPER => Violation {
                kind: AnomalyKind::TamperAttempt,
                severity: Severity::Critical,
                reason: match &event.payload {
                    Payload::TamperAttempt(x) => format!(
                        "{} by {who}: killed in the kernel",
                        crate::scope::tamper_words(x)
                    ),
                    _ => format!("{who} reached for the daemon: killed in the kernel"),
                },
                identity: None,
            },
            verdict::BLOCKED_MEMORY_EXEC => Violation {
                kind: AnomalyKind::ExecFromMemory,
                severity: Severity::Critical,
                reason: format!(
                    "exec of {} by {who}, a program no file system names: killed in the kernel before its first instruction",
                    event
                        .process
                        .as_ref()
                        .and_then(|p| p.exe.as_deref())
                        .unwrap_or("an unnamed file")
                ),
                identity: None,
            },
            verdict::BLOCKED_NO_TASK => Violation {
                kind: AnomalyKind::UnapprovedTask,
                severity: Severity::High,
                reason: format!(
                    "activity of {who} without an active task approval blocked in the kernel"
                ),
                identity: None,
            },
            _ => {
                let what = match &event.payload {
                    Payload::Connect(c) => format!(
                        "connect to {}",
                        std::net::SocketAddr::new(c.address, c.port)
                    ),
                    Payload::UnixConnect(u) => format!("unix {} to {}", u.op, u.path),
                    _ => "activity".to_owned(),
                };
                Violation {
                    kind: AnomalyKind::UnapprovedSystem,
                    severity: Severity::High,
                    reason: format!("{what} is outside systems of {agent} (blocked in the kernel)"),
                    identity: None,
                }
            }
        };
        // A refused out-of-scope connect is still a violation: with
        // on_violation = "revoke" it revokes like any other.
        let revoke = verdict == verdict::BLOCKED_SCOPE
            && loaded
                .scope
                .agent_id(agent)
                .is_some_and(|id| loaded.scope.agent(id).on_violation == OnViolation::Revoke);
        let mut caused = Vec::new();
        let action = if revoke {
            self.revoke_for(event, &v.reason, &mut caused)
        } else if verdict == verdict::BLOCKED_IO_URING
            || verdict == verdict::BLOCKED_ESCAPE
            || verdict == verdict::BLOCKED_TAMPER
            || verdict == verdict::BLOCKED_MEMORY_EXEC
            || matches!(&event.payload, Payload::Socket(s) if !s.refused_with_eperm())
        {
            "killed"
        } else {
            "blocked"
        };
        let anomaly = v.into_anomaly(event.clone(), action);
        let folded = self.aggregator.observe(anomaly, Instant::now());
        caused.extend(folded.into_iter().map(|a| self.anomaly_event(a)));
        caused
    }

    /// `on_violation = "revoke"`: revokes the session (or the agent, outside
    /// sessions) in the kernel at once; the revocation event, with the
    /// latency from the offending kernel event to the map update, goes to
    /// `caused`.
    pub(super) fn revoke_for(
        &self,
        event: &Event,
        reason: &str,
        caused: &mut Vec<Event>,
    ) -> &'static str {
        let Some(agent) = event.identity.agent.as_deref() else {
            return "observed";
        };
        let target = Target::new(agent, event.identity.session.as_deref().unwrap_or(""));
        if self.enforcer.revocations().get(&target).is_some() {
            return "revoked";
        }
        let cause = Cause {
            reason: reason.to_owned(),
            kernel_ts_ns: Some(event.kernel_ts_ns),
        };
        match self.enforcer.revoke(
            target.clone(),
            cause,
            format!("on_violation of agent {agent}"),
        ) {
            Ok(done) => {
                let latency = done.applied_ns.saturating_sub(event.kernel_ts_ns);
                tracing::warn!(
                    "revoked {target} ({reason}); {latency} ns after the kernel event, read after {} ns",
                    self.read_ns.saturating_sub(event.kernel_ts_ns)
                );
                caused.push(done.event);
                "revoked"
            }
            Err(e) => {
                tracing::error!("revoking {target} after {reason}: {e}");
                "revoke_failed"
            }
        }
    }

    /// Acts on a violation and folds it into the aggregator.
    pub(super) fn aggregate(
        &mut self,
        event: &Event,
        v: Violation,
        on_violation: OnViolation,
        now: Instant,
    ) -> Vec<Event> {
        let mut caused = Vec::new();
        let action = match on_violation {
            OnViolation::Alert => "observed",
            OnViolation::Revoke => self.revoke_for(event, &v.reason, &mut caused),
            OnViolation::Kill => match event.process.as_ref().map(|p| p.pid) {
                Some(pid) if pid > 1 => {
                    match nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    ) {
                        Ok(()) => "killed",
                        Err(e) => {
                            tracing::warn!("killing pid {pid} after {}: {e}", v.reason);
                            "kill_failed"
                        }
                    }
                }
                _ => "observed",
            },
        };
        let anomaly = v.into_anomaly(event.clone(), action);
        let folded = self.aggregator.observe(anomaly, now);
        caused.extend(folded.into_iter().map(|a| self.anomaly_event(a)));
        caused
    }
}

/// Kills a process another one moved out of its session (the kernel killed
/// the writer; it can signal only the task it runs in).
fn kill_moved(pid: u32) -> bool {
    if pid <= 1 {
        return false;
    }
    match nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    ) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!("killing pid {pid}, moved out of its session: {e}");
            false
        }
    }
}
