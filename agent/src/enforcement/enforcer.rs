//! Revocation and task approvals, applied to the kernel maps.
//!
//! Every change is written to the pinned maps first and to the daemon's
//! registry and state file second, so a call that returns has already taken
//! effect in the kernel, and a restarted daemon finds both the kernel state
//! (pinned) and who/why (state file).

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Mutex, PoisonError},
    time::{Duration, SystemTime},
};

use serde::{Deserialize, Serialize};

use super::{
    kernel::{AgentSettings, KernelPolicy, KernelPolicyError, SystemRule, agent_key},
    state::{Record, Revocations, StateError, Target},
};
use crate::{
    config::{OnViolation, SystemEntry, Target as CfgTarget},
    event::Protocol as CfgProtocol,
    identity::cgroup::CgroupError,
    scope::Scope,
    sensors::decode::clock_ns,
    session::SessionManager,
};

#[derive(Debug, thiserror::Error)]
pub enum EnforceError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Kernel(#[from] KernelPolicyError),
    #[error("unknown agent {0:?}")]
    UnknownAgent(String),
    #[error("unknown session {session:?} of agent {agent:?}")]
    UnknownSession { agent: String, session: String },
    #[error("agent {0:?} has no active task approval")]
    NoTask(String),
    #[error("agent {agent:?} has task {active:?} active, not {asked:?}")]
    OtherTask {
        agent: String,
        active: String,
        asked: String,
    },
    #[error("agent {0:?} does not require task approvals (set require_approval = true)")]
    NoApprovalNeeded(String),
    #[error("cgroup: {0}")]
    Cgroup(#[from] CgroupError),
    #[error("agent directory cgroup: {0}")]
    Session(#[from] crate::session::SessionError),
    #[error("task scope: {0}")]
    TaskScope(String),
}

/// The agent's scope narrowed to what one task was approved for: the
/// agent's config with `systems`, `tools` and `data` replaced where the
/// approval names them, compiled by the same engine.
pub fn narrowed_scope(
    config: &crate::config::Config,
    agent: &str,
    grant: &Grant,
) -> Result<Option<std::sync::Arc<Scope>>, EnforceError> {
    if grant.systems.is_empty() && grant.tools.is_empty() && grant.data.is_empty() {
        return Ok(None);
    }
    let mut cfg = config.clone();
    let a = cfg
        .agents
        .iter_mut()
        .find(|a| a.name.as_str() == agent)
        .ok_or_else(|| EnforceError::UnknownAgent(agent.to_owned()))?;
    if !grant.systems.is_empty() {
        a.scope.systems = grant
            .systems
            .iter()
            .map(|s| {
                s.parse()
                    .map_err(|e| EnforceError::TaskScope(format!("systems: {e}")))
            })
            .collect::<Result<_, _>>()?;
    }
    if !grant.tools.is_empty() {
        a.scope.tools = grant
            .tools
            .iter()
            .map(|s| {
                s.parse()
                    .map_err(|e| EnforceError::TaskScope(format!("tools: {e}")))
            })
            .collect::<Result<_, _>>()?;
    }
    if !grant.data.is_empty() {
        if let Some(d) = grant.data.iter().find(|d| !a.scope.data.contains(d)) {
            return Err(EnforceError::TaskScope(format!(
                "data class {d:?} is not in the scope of agent {agent:?}"
            )));
        }
        a.scope.data.clone_from(&grant.data);
    }
    Scope::compile(&cfg)
        .map(|s| Some(std::sync::Arc::new(s)))
        .map_err(|e| EnforceError::TaskScope(e.to_string()))
}

/// An active task approval.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub task: String,
    pub purpose: String,
    pub by: String,
    pub expires: SystemTime,
    /// `CLOCK_BOOTTIME` deadline the kernel compares with.
    pub expires_boot_ns: u64,
    /// Narrower scope for this task, if any (systems, tools, data).
    #[serde(default)]
    pub systems: Vec<String>,
    #[serde(default)]
    pub tools: Vec<String>,
    #[serde(default)]
    pub data: Vec<String>,
}

/// What a revocation did.
#[derive(Clone, Copy, Debug)]
pub struct Revoked {
    /// Kernel cgroups whose policy changed.
    pub cgroups: usize,
    /// `CLOCK_BOOTTIME` right after the kernel maps were updated (the
    /// moment the revocation took effect).
    pub applied_ns: u64,
    /// Processes killed through `cgroup.kill` (when `revoke_kills`).
    pub killed: bool,
}

#[derive(Default, Serialize, Deserialize)]
struct Persisted {
    revocations: Vec<PersistedRevocation>,
    grants: HashMap<String, Grant>,
}

#[derive(Serialize, Deserialize)]
struct PersistedRevocation {
    agent: String,
    #[serde(default)]
    session: Option<String>,
    reason: String,
    by: String,
    since: SystemTime,
}

/// The daemon's enforcement front: revocations, grants, enforced systems.
pub struct Enforcer {
    pub revocations: Revocations,
    grants: Mutex<HashMap<String, Grant>>,
    /// Compiled narrowed scopes of active grants that have one.
    narrowed: Mutex<HashMap<String, (String, std::sync::Arc<Scope>)>>,
    /// Addresses learnt from DNS for enforced agents, with their expiry.
    learnt: Mutex<HashMap<String, Vec<SystemRule>>>,
    state_file: PathBuf,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Boot-clock nanoseconds now (what the programs compare deadlines with).
#[must_use]
pub fn boot_now_ns() -> u64 {
    clock_ns(libc::CLOCK_BOOTTIME)
}

impl Enforcer {
    /// Loads the registry a previous daemon left in `state_dir`.
    #[must_use]
    pub fn load(state_dir: &std::path::Path) -> Self {
        let state_file = state_dir.join("enforcement.json");
        let persisted: Persisted = std::fs::read(&state_file)
            .ok()
            .and_then(|b| match serde_json::from_slice(&b) {
                Ok(p) => Some(p),
                Err(e) => {
                    tracing::warn!("ignoring unreadable {}: {e}", state_file.display());
                    None
                }
            })
            .unwrap_or_default();
        let revocations = Revocations::default();
        for r in persisted.revocations {
            let _ = revocations.revoke(
                Target::new(&r.agent, r.session.as_deref().unwrap_or("")),
                Record {
                    reason: r.reason,
                    by: r.by,
                    since: r.since,
                },
            );
        }
        Self {
            revocations,
            grants: Mutex::new(persisted.grants),
            narrowed: Mutex::new(HashMap::new()),
            learnt: Mutex::new(HashMap::new()),
            state_file,
        }
    }

    fn persist(&self) {
        let p = Persisted {
            revocations: self
                .revocations
                .list()
                .into_iter()
                .map(|(t, r)| PersistedRevocation {
                    agent: t.agent().to_owned(),
                    session: t.session().map(str::to_owned),
                    reason: r.reason,
                    by: r.by,
                    since: r.since,
                })
                .collect(),
            grants: lock(&self.grants).clone(),
        };
        let write = || -> std::io::Result<()> {
            if let Some(dir) = self.state_file.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = self.state_file.with_extension("json.tmp");
            std::fs::write(&tmp, serde_json::to_vec_pretty(&p)?)?;
            std::fs::rename(&tmp, &self.state_file)
        };
        if let Err(e) = write() {
            tracing::warn!("saving {}: {e}", self.state_file.display());
        }
    }

    /// The kernel cgroups a target covers: a session's cgroup, or the
    /// agent's session directory (every present and future session).
    fn target_cgroups(
        target: &Target,
        sessions: &SessionManager,
    ) -> Result<Vec<(u64, String)>, EnforceError> {
        if let Some(s) = target.session() {
            let info = sessions
                .get(s)
                .filter(|i| i.agent == target.agent())
                .ok_or_else(|| EnforceError::UnknownSession {
                    agent: target.agent().to_owned(),
                    session: s.to_owned(),
                })?;
            Ok(vec![(info.cgroup_id, info.cgroup.clone())])
        } else {
            let (id, path) = sessions.agent_dir(target.agent())?;
            Ok(vec![(id, path)])
        }
    }

    /// Revokes in the kernel first, then records it. With `kill`, every
    /// process of the target is killed through `cgroup.kill` as well.
    pub fn revoke(
        &self,
        kernel: &KernelPolicy,
        sessions: &SessionManager,
        target: Target,
        record: Record,
        kill: bool,
    ) -> Result<Revoked, EnforceError> {
        if let Some(old) = self.revocations.get(&target) {
            return Err(StateError::AlreadyRevoked {
                target,
                by: old.by,
                reason: old.reason,
            }
            .into());
        }
        let cgroups = Self::target_cgroups(&target, sessions)?;
        for (id, _) in &cgroups {
            kernel.revoke(*id)?;
        }
        let applied_ns = boot_now_ns();
        let mut killed = false;
        if kill {
            for (_, path) in &cgroups {
                match sessions.cgroups().kill(path) {
                    Ok(()) => killed = true,
                    Err(e) => tracing::warn!("cgroup.kill of {path}: {e}"),
                }
            }
        }
        self.revocations.revoke(target, record)?;
        self.persist();
        Ok(Revoked {
            cgroups: cgroups.len(),
            applied_ns,
            killed,
        })
    }

    /// Lifts a revocation (kernel first).
    pub fn restore(
        &self,
        kernel: &KernelPolicy,
        sessions: &SessionManager,
        target: &Target,
    ) -> Result<Record, EnforceError> {
        if self.revocations.get(target).is_none() {
            return Err(StateError::NotRevoked(target.clone()).into());
        }
        for (id, _) in Self::target_cgroups(target, sessions)? {
            kernel.restore(id)?;
        }
        let record = self.revocations.restore(target)?;
        self.persist();
        Ok(record)
    }

    /// Re-applies the registry to the kernel (after a restart the pinned
    /// maps normally hold it already; this covers a cleaned bpffs).
    pub fn reapply(&self, kernel: &KernelPolicy, sessions: &SessionManager) {
        for (t, _) in self.revocations.list() {
            match Self::target_cgroups(&t, sessions) {
                Ok(ids) => {
                    for (id, _) in ids {
                        if let Err(e) = kernel.revoke(id) {
                            tracing::warn!("re-applying revocation of {t}: {e}");
                        }
                    }
                }
                Err(e) => tracing::warn!("revocation of {t} no longer applies: {e}"),
            }
        }
    }

    /// Loads every agent's approval and `systems` settings into the kernel
    /// (at start and after each config reload).
    pub fn configure(
        &self,
        kernel: &KernelPolicy,
        sessions: &SessionManager,
        scope: &Scope,
    ) -> Result<(), EnforceError> {
        for a in scope.agents() {
            // Violations acted on in the daemon must reach it at once.
            let prompt = matches!(a.on_violation, OnViolation::Kill | OnViolation::Revoke);
            let deny_io_uring = a.io_uring == crate::config::IoUringPolicy::Deny;
            if !(a.require_approval || a.enforce || prompt || deny_io_uring) {
                // Clear settings a previous config may have left.
                if let Ok((id, _)) = sessions.existing_agent_dir(&a.name) {
                    kernel.configure(id, AgentSettings::default())?;
                }
                continue;
            }
            let (id, _) = sessions.agent_dir(&a.name)?;
            kernel.configure(
                id,
                AgentSettings {
                    agent_key: agent_key(&a.name),
                    require_approval: a.require_approval,
                    enforce_systems: a.enforce,
                    prompt,
                    deny_io_uring,
                },
            )?;
            if a.require_approval {
                let deadline = self.grant(&a.name).map_or(0, |g| g.expires_boot_ns);
                kernel.grant(id, deadline)?;
            }
            if a.enforce {
                self.load_systems(kernel, scope, &a.name)?;
            }
        }
        Ok(())
    }

    /// Static rules of an enforced agent plus the addresses its DNS answers
    /// taught, into the `SYSTEMS` trie.
    fn load_systems(
        &self,
        kernel: &KernelPolicy,
        scope: &Scope,
        agent: &str,
    ) -> Result<(), EnforceError> {
        let id = scope
            .agent_id(agent)
            .ok_or_else(|| EnforceError::UnknownAgent(agent.to_owned()))?;
        let mut rules = static_rules(&scope.agent(id).scope.systems);
        let now = boot_now_ns();
        if let Some(learnt) = lock(&self.learnt).get_mut(agent) {
            learnt.retain(|r| r.expires_ns > now);
            rules.extend(learnt.iter().copied());
        }
        kernel.set_systems(agent_key(agent), &rules)?;
        Ok(())
    }

    /// An enforced agent received a DNS answer: addresses of allowed host
    /// names become allowed in the kernel until their TTL runs out.
    pub fn learn_dns(
        &self,
        kernel: &KernelPolicy,
        scope: &Scope,
        agent: &str,
        name: &str,
        addrs: &[std::net::IpAddr],
        ttl: u32,
    ) -> Result<bool, EnforceError> {
        let Some(id) = scope.agent_id(agent) else {
            return Ok(false);
        };
        let info = scope.agent(id);
        if !info.enforce {
            return Ok(false);
        }
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let expires_ns = boot_now_ns() + u64::from(ttl.max(1)) * 1_000_000_000;
        let mut new = Vec::new();
        for entry in &info.scope.systems {
            let CfgTarget::Host(h) = &entry.target else {
                continue;
            };
            if !h.matches(&name) {
                continue;
            }
            for addr in addrs {
                new.push(SystemRule {
                    network: ipnet::IpNet::from(*addr),
                    lo: entry.ports.lo,
                    hi: entry.ports.hi,
                    protocol: protocol_number(entry.protocol),
                    expires_ns,
                });
            }
        }
        if new.is_empty() {
            return Ok(false);
        }
        lock(&self.learnt)
            .entry(agent.to_owned())
            .or_default()
            .extend(new);
        self.load_systems(kernel, scope, agent)?;
        Ok(true)
    }

    /// The active grant of an agent, if it has not expired.
    #[must_use]
    pub fn grant(&self, agent: &str) -> Option<Grant> {
        let g = lock(&self.grants).get(agent).cloned()?;
        (g.expires_boot_ns > boot_now_ns()).then_some(g)
    }

    /// The task id events of `agent` belong to now.
    #[must_use]
    pub fn active_task(&self, agent: &str) -> Option<String> {
        self.grant(agent).map(|g| g.task)
    }

    /// The active task's narrowed scope of an agent, when the approval named one.
    #[must_use]
    pub fn task_scope(&self, agent: &str) -> Option<(String, std::sync::Arc<Scope>)> {
        let active = self.grant(agent)?;
        lock(&self.narrowed)
            .get(agent)
            .filter(|(task, _)| *task == active.task)
            .cloned()
    }

    /// Approves a task: the agent may act until `ttl` passes (in the kernel,
    /// on its own clock, even with the daemon down). An approval with a
    /// narrower scope is checked against it by the daemon as well.
    #[allow(clippy::too_many_arguments)]
    pub fn approve(
        &self,
        kernel: &KernelPolicy,
        sessions: &SessionManager,
        config: &crate::config::Config,
        scope: &Scope,
        agent: &str,
        mut grant: Grant,
        ttl: Duration,
    ) -> Result<Grant, EnforceError> {
        let id = scope
            .agent_id(agent)
            .ok_or_else(|| EnforceError::UnknownAgent(agent.to_owned()))?;
        if !scope.agent(id).require_approval {
            return Err(EnforceError::NoApprovalNeeded(agent.to_owned()));
        }
        match narrowed_scope(config, agent, &grant)? {
            Some(s) => {
                lock(&self.narrowed).insert(agent.to_owned(), (grant.task.clone(), s));
            }
            None => {
                lock(&self.narrowed).remove(agent);
            }
        }
        let ttl_ns = u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX);
        grant.expires_boot_ns = boot_now_ns().saturating_add(ttl_ns);
        grant.expires = SystemTime::now() + ttl;
        let (cg, _) = sessions.agent_dir(agent)?;
        kernel.grant(cg, grant.expires_boot_ns)?;
        lock(&self.grants).insert(agent.to_owned(), grant.clone());
        self.persist();
        Ok(grant)
    }

    /// Ends a task before its expiry.
    pub fn end_task(
        &self,
        kernel: &KernelPolicy,
        sessions: &SessionManager,
        agent: &str,
        task: &str,
    ) -> Result<Grant, EnforceError> {
        let active = self
            .grant(agent)
            .ok_or_else(|| EnforceError::NoTask(agent.to_owned()))?;
        if !task.is_empty() && active.task != task {
            return Err(EnforceError::OtherTask {
                agent: agent.to_owned(),
                active: active.task,
                asked: task.to_owned(),
            });
        }
        let (cg, _) = sessions.agent_dir(agent)?;
        kernel.grant(cg, 0)?;
        lock(&self.grants).remove(agent);
        self.persist();
        Ok(active)
    }

    /// Grants whose time ran out since the last call (removed from the registry).
    pub fn expired(&self) -> Vec<(String, Grant)> {
        let now = boot_now_ns();
        let mut grants = lock(&self.grants);
        let done: Vec<String> = grants
            .iter()
            .filter(|(_, g)| g.expires_boot_ns <= now)
            .map(|(a, _)| a.clone())
            .collect();
        let out: Vec<(String, Grant)> = done
            .into_iter()
            .filter_map(|a| grants.remove(&a).map(|g| (a, g)))
            .collect();
        drop(grants);
        if !out.is_empty() {
            self.persist();
        }
        out
    }
}

fn protocol_number(p: Option<CfgProtocol>) -> u8 {
    match p {
        Some(CfgProtocol::Tcp) => libc::IPPROTO_TCP as u8,
        Some(CfgProtocol::Udp) => libc::IPPROTO_UDP as u8,
        Some(CfgProtocol::Other) | None => 0,
    }
}

/// The address/CIDR entries of `systems` as kernel rules (host names are
/// added as their answers arrive).
fn static_rules(systems: &[SystemEntry]) -> Vec<SystemRule> {
    systems
        .iter()
        .filter_map(|e| match &e.target {
            CfgTarget::Net(net) => Some(SystemRule {
                network: *net,
                lo: e.ports.lo,
                hi: e.ports.hi,
                protocol: protocol_number(e.protocol),
                expires_ns: 0,
            }),
            CfgTarget::Host(_) => None,
        })
        .collect()
}
