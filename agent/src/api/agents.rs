//! What `ListAgents` and `GetAgent` report: each configured agent's declared
//! scope, state, counters and sessions.

use crate::config::OnViolation;
use crate::enforcement::state::{Revocations, Target};
use crate::journal::counters::{AgentCounters, Counters};
use crate::scope::AgentInfo;
use crate::session::SessionManager;
use crate::wire::pb;

impl From<Counters> for pb::AgentCounters {
    fn from(c: Counters) -> Self {
        Self {
            events: c.events,
            anomalies: c.anomalies,
            blocked: c.blocked,
            revocations: c.revocations,
            sessions_started: c.sessions_started,
        }
    }
}

const fn violation_action(v: OnViolation) -> pb::ViolationAction {
    match v {
        OnViolation::Alert => pb::ViolationAction::Observe,
        OnViolation::Revoke => pb::ViolationAction::Revoke,
        OnViolation::Kill => pb::ViolationAction::Kill,
    }
}

/// The declared scope as configured: system entries, tool globs, data
/// class names and identity names, exactly as written in the config.
fn scope(info: &AgentInfo) -> pb::AgentScope {
    let s = &info.scope;
    pb::AgentScope {
        systems: s.systems.iter().map(ToString::to_string).collect(),
        tools: s.tools.iter().map(ToString::to_string).collect(),
        data: s.data.clone(),
        identities: s.identities.clone(),
        socket_families: s
            .socket_families
            .iter()
            .map(|f| f.as_str().to_owned())
            .collect(),
        enforce: false,
        on_violation: violation_action(info.on_violation).into(),
        require_approval: false,
    }
}

/// Where the daemon's view of agents comes from.
pub struct Sources<'a> {
    pub sessions: &'a SessionManager,
    pub revocations: &'a Revocations,
    pub counters: &'a AgentCounters,
}

impl Sources<'_> {
    /// One agent as the API reports it.
    #[must_use]
    pub fn agent(&self, info: &AgentInfo) -> pb::Agent {
        let name = info.name.as_str();
        let revoked = self.revocations.get(&Target::new(name, ""));
        let cgroups = self.sessions.cgroups();
        let sessions = self
            .sessions
            .list(Some(name))
            .iter()
            .map(|s| pb::Session {
                id: s.session.clone(),
                cgroup_path: s.cgroup.clone(),
                started_at: Some(s.started.into()),
                process_count: cgroups.procs(&s.cgroup).map_or(0, |p| p.len() as u32),
                revoked: self.revocations.is_revoked(name, Some(&s.session)),
                task: String::new(),
            })
            .collect();
        pb::Agent {
            name: name.to_owned(),
            state: if revoked.is_some() {
                pb::AgentState::Revoked
            } else {
                pb::AgentState::Active
            }
            .into(),
            scope: Some(scope(info)),
            counters: Some(self.counters.get(name).into()),
            sessions,
            tasks: Vec::new(),
            revoked_reason: revoked.map(|r| r.reason).unwrap_or_default(),
        }
    }
}
