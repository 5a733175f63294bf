//! Task approvals: an agent that requires them acts only while a task is
//! approved, within the scope the approval names, until its time runs out
//! (in the kernel, on the kernel's own clock).

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::{EnforceError, Enforcer, boot_now_ns, lock};
use crate::scope::Scope;

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

impl Enforcer {
    /// The active grant of an agent, if it has not expired.
    #[must_use]
    pub fn grant(&self, agent: &str) -> Option<Grant> {
        let g = lock(&self.grants).get(agent).cloned()?;
        (g.expires_boot_ns > boot_now_ns()).then_some(g)
    }

    /// The task id events of `agent` belong to now. Asked for every
    /// attributed event, so it copies the id, not the whole grant.
    #[must_use]
    pub fn active_task(&self, agent: &str) -> Option<String> {
        let now = boot_now_ns();
        lock(&self.grants)
            .get(agent)
            .filter(|g| g.expires_boot_ns > now)
            .map(|g| g.task.clone())
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
        let (cg, _) = self.sessions.agent_dir(agent)?;
        self.kernel.grant(cg, grant.expires_boot_ns)?;
        lock(&self.grants).insert(agent.to_owned(), grant.clone());
        self.persist();
        Ok(grant)
    }

    /// Ends a task before its expiry.
    pub fn end_task(&self, agent: &str, task: &str) -> Result<Grant, EnforceError> {
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
        let (cg, _) = self.sessions.agent_dir(agent)?;
        self.kernel.grant(cg, 0)?;
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
