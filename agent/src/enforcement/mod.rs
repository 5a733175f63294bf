//! Enforcement: what is revoked and what tasks are approved, applied to the
//! kernel maps the eBPF programs consult on every connect, exec and open of
//! a governed process.
//!
//! [`Enforcer`] owns the kernel policy maps ([`kernel`]), the session
//! manager and the registry ([`state`]). Every change is written to the
//! kernel first and to the registry and its state file second, so a call
//! that returns has already taken effect in the kernel, and a restarted
//! daemon finds both the kernel state (pinned) and who and why (state file).
//! Revocation has one entry point, [`Enforcer::revoke`], for the automatic
//! `on_violation` path and the API alike.

pub mod kernel;
pub mod state;
mod systems;
mod tasks;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
    time::SystemTime,
};

use serde::{Deserialize, Serialize};

pub use tasks::{Grant, narrowed_scope};

use kernel::{KernelPolicy, KernelPolicyError, SystemRule};
use state::{Record, Revocations, StateError, Target};

use crate::{
    event::{Event, Identity, Payload, Restore, Revocation},
    identity::cgroup::CgroupError,
    journal::publisher::{PublishError, Publisher},
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
    /// The change was made and undone: without its audit event it must not
    /// stand.
    #[error("the audit event was not journaled, so the change was undone: {0}")]
    Audit(#[source] PublishError),
}

/// Why a target is revoked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cause {
    pub reason: String,
    /// The kernel event that violated the scope (`CLOCK_BOOTTIME`), for the
    /// latency the revocation event reports; `None` for an operator's call.
    pub kernel_ts_ns: Option<u64>,
}

impl Cause {
    /// An operator's (or another caller's) decision, with no kernel event.
    #[must_use]
    pub fn decided(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            kernel_ts_ns: None,
        }
    }
}

/// What a revocation did.
#[derive(Clone, Debug)]
pub struct Revoked {
    /// Kernel cgroups whose policy changed.
    pub cgroups: usize,
    /// `CLOCK_BOOTTIME` right after the kernel maps were updated (the
    /// moment the revocation took effect).
    pub applied_ns: u64,
    /// Processes killed through `cgroup.kill` (the agent's `revoke_kills`).
    pub killed: bool,
    /// The audit event to journal.
    pub event: Event,
}

/// What a restore did.
#[derive(Clone, Debug)]
pub struct Restored {
    /// The revocation that was lifted.
    pub lifted: Record,
    /// The audit event to journal.
    pub event: Event,
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

/// The node's enforcement: revocations, grants, enforced systems.
pub struct Enforcer {
    kernel: KernelPolicy,
    sessions: SessionManager,
    revocations: Revocations,
    grants: Mutex<HashMap<String, Grant>>,
    /// Compiled narrowed scopes of active grants that have one.
    narrowed: Mutex<HashMap<String, (String, Arc<Scope>)>>,
    /// Addresses learnt from DNS for enforced agents, with their expiry.
    learnt: Mutex<HashMap<String, Vec<SystemRule>>>,
    /// Whether revoking an agent also kills its processes (`revoke_kills`),
    /// as of the last [`Enforcer::configure`].
    kills: Mutex<HashMap<String, bool>>,
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

/// The identity of an audit event about `target`.
fn audit_identity(target: &Target) -> Identity {
    Identity {
        agent: Some(target.agent().to_owned()),
        session: target.session().map(str::to_owned),
        ..Identity::default()
    }
}

impl Enforcer {
    /// Takes over the kernel maps and the session manager, and loads the
    /// registry a previous daemon left in `state_dir`.
    #[must_use]
    pub fn load(kernel: KernelPolicy, sessions: SessionManager, state_dir: &Path) -> Self {
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
            kernel,
            sessions,
            revocations,
            grants: Mutex::new(persisted.grants),
            narrowed: Mutex::new(HashMap::new()),
            learnt: Mutex::new(HashMap::new()),
            kills: Mutex::new(HashMap::new()),
            state_file,
        }
    }

    /// The sessions of governed agents.
    #[must_use]
    pub const fn sessions(&self) -> &SessionManager {
        &self.sessions
    }

    /// The kernel policy maps.
    #[must_use]
    pub const fn kernel(&self) -> &KernelPolicy {
        &self.kernel
    }

    /// The standing revocations.
    #[must_use]
    pub const fn revocations(&self) -> &Revocations {
        &self.revocations
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
    fn target_cgroups(&self, target: &Target) -> Result<Vec<(u64, String)>, EnforceError> {
        if let Some(s) = target.session() {
            let info = self
                .sessions
                .get(s)
                .filter(|i| i.agent == target.agent())
                .ok_or_else(|| EnforceError::UnknownSession {
                    agent: target.agent().to_owned(),
                    session: s.to_owned(),
                })?;
            Ok(vec![(info.cgroup_id, info.cgroup.clone())])
        } else {
            let (id, path) = self.sessions.agent_dir(target.agent())?;
            Ok(vec![(id, path)])
        }
    }

    /// Revokes `target` in the kernel first, then records it; with the
    /// agent's `revoke_kills`, every process of the target is killed
    /// through `cgroup.kill` as well. The returned event is the audit
    /// record, which the caller journals.
    pub fn revoke(
        &self,
        target: Target,
        cause: Cause,
        by: String,
    ) -> Result<Revoked, EnforceError> {
        if let Some(old) = self.revocations.get(&target) {
            return Err(StateError::AlreadyRevoked {
                target,
                by: old.by,
                reason: old.reason,
            }
            .into());
        }
        let cgroups = self.target_cgroups(&target)?;
        for (id, _) in &cgroups {
            self.kernel.revoke(*id)?;
        }
        let applied_ns = boot_now_ns();
        let kill = lock(&self.kills)
            .get(target.agent())
            .copied()
            .unwrap_or(false);
        let mut killed = false;
        if kill {
            for (_, path) in &cgroups {
                match self.sessions.cgroups().kill(path) {
                    Ok(()) => killed = true,
                    Err(e) => tracing::warn!("cgroup.kill of {path}: {e}"),
                }
            }
        }
        let event = Event::daemon(
            audit_identity(&target),
            Payload::Revocation(Revocation {
                agent: target.agent().to_owned(),
                session: target.session().map(str::to_owned),
                reason: cause.reason.clone(),
                by: by.clone(),
                latency_ns: cause.kernel_ts_ns.map(|ts| applied_ns.saturating_sub(ts)),
            }),
        );
        self.revocations.revoke(
            target,
            Record {
                reason: cause.reason,
                by,
                since: SystemTime::now(),
            },
        )?;
        self.persist();
        Ok(Revoked {
            cgroups: cgroups.len(),
            applied_ns,
            killed,
            event,
        })
    }

    /// Lifts a revocation (kernel first). The returned event is the audit
    /// record, which the caller journals.
    pub fn restore(
        &self,
        target: &Target,
        reason: &str,
        by: String,
    ) -> Result<Restored, EnforceError> {
        if self.revocations.get(target).is_none() {
            return Err(StateError::NotRevoked(target.clone()).into());
        }
        for (id, _) in self.target_cgroups(target)? {
            self.kernel.restore(id)?;
        }
        let lifted = self.revocations.restore(target)?;
        self.persist();
        let event = Event::daemon(
            audit_identity(target),
            Payload::Restore(Restore {
                agent: target.agent().to_owned(),
                session: target.session().map(str::to_owned),
                reason: reason.to_owned(),
                by,
            }),
        );
        Ok(Restored { lifted, event })
    }

    /// [`Enforcer::revoke`], then journals its audit event and returns its
    /// sequence. A revocation whose audit event cannot be journaled is
    /// lifted again: what stands is always on record.
    pub async fn revoke_audited(
        &self,
        target: Target,
        cause: Cause,
        by: String,
        audit: &Publisher,
    ) -> Result<(Revoked, u64), EnforceError> {
        let revoked = self.revoke(target.clone(), cause, by)?;
        match audit.publish(vec![revoked.event.clone()]).await {
            Ok(published) => {
                let seq = published.first().map_or(0, |e| e.seq);
                Ok((revoked, seq))
            }
            Err(e) => {
                if let Err(undo) = self.undo_revoke(&target) {
                    tracing::error!("undoing the revocation of {target}: {undo}");
                }
                Err(EnforceError::Audit(e))
            }
        }
    }

    /// [`Enforcer::restore`], then journals its audit event and returns its
    /// sequence. A restore whose audit event cannot be journaled is revoked
    /// again, as it was.
    pub async fn restore_audited(
        &self,
        target: &Target,
        reason: &str,
        by: String,
        audit: &Publisher,
    ) -> Result<(Restored, u64), EnforceError> {
        let restored = self.restore(target, reason, by)?;
        match audit.publish(vec![restored.event.clone()]).await {
            Ok(published) => {
                let seq = published.first().map_or(0, |e| e.seq);
                Ok((restored, seq))
            }
            Err(e) => {
                if let Err(undo) = self.undo_restore(target, restored.lifted.clone()) {
                    tracing::error!("re-revoking {target}: {undo}");
                }
                Err(EnforceError::Audit(e))
            }
        }
    }

    /// Takes back a revocation that was never on record (no kill to undo:
    /// a kill cannot be, and happens only with `revoke_kills`).
    fn undo_revoke(&self, target: &Target) -> Result<(), EnforceError> {
        for (id, _) in self.target_cgroups(target)? {
            self.kernel.restore(id)?;
        }
        self.revocations.restore(target)?;
        self.persist();
        Ok(())
    }

    /// Puts back a revocation whose lifting was never on record.
    fn undo_restore(&self, target: &Target, record: Record) -> Result<(), EnforceError> {
        for (id, _) in self.target_cgroups(target)? {
            self.kernel.revoke(id)?;
        }
        self.revocations.revoke(target.clone(), record)?;
        self.persist();
        Ok(())
    }

    /// Re-applies the registry to the kernel (after a restart the pinned
    /// maps normally hold it already; this covers a cleaned bpffs).
    pub fn reapply(&self) {
        for (t, _) in self.revocations.list() {
            match self.target_cgroups(&t) {
                Ok(ids) => {
                    for (id, _) in ids {
                        if let Err(e) = self.kernel.revoke(id) {
                            tracing::warn!("re-applying revocation of {t}: {e}");
                        }
                    }
                }
                Err(e) => tracing::warn!("revocation of {t} no longer applies: {e}"),
            }
        }
    }
}

/// The enforcer's figures for the Prometheus endpoint.
pub struct Figures(pub Arc<Enforcer>);

impl std::fmt::Debug for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("enforcement::Figures")
            .finish_non_exhaustive()
    }
}

impl prometheus_client::collector::Collector for Figures {
    fn encode(&self, mut enc: prometheus_client::encoding::DescriptorEncoder) -> std::fmt::Result {
        crate::metrics::gauge(
            &mut enc,
            "revocations_active",
            "Agents and sessions revoked now",
            self.0.revocations.list().len() as u64,
        )
    }
}
