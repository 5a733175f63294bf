//! The scope engine: the config compiled into matchers, and the verdict on
//! each attributed event.
//!
//! - exec: the executable (as executed, as enriched, and after symlinks)
//!   against the agent's `tools`;
//! - connect: the destination against its `systems` (addresses, CIDRs and
//!   host names learnt through DNS);
//! - `file_open`: reads against data classes it was not given, writes
//!   against its write globs;
//! - any of them touching an identity (built-in catalog or `[identity.*]`)
//!   the agent was not given is `identity_outside_scope`, checked first.
//!
//! A [`Scope`] is immutable; a reload compiles a new one. Evaluating an
//! in-scope event does not allocate.

pub mod aggregate;
mod data;
pub mod dns;
mod evaluate;
mod identities;
mod inodes;
pub mod pinned;
pub mod pods;
mod systems;
mod tools;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use globset::{Candidate, GlobSet, GlobSetBuilder};

use crate::config::{
    AgentScope, Config, ConfigError, Diagnostic, FieldPath, IoUringPolicy, OnViolation,
    canonical_ip,
};
use crate::event::{
    Access, Anomaly, AnomalyKind, Connect, DnsQuery, Event, Exec, FileLink, FileOpen, Payload,
    Process, Protocol, Severity,
};
use data::{DataIndex, Grants, ReadCheck, normalize, with_matches};
pub use dns::DnsCache;
pub use evaluate::{escape_reason, tamper_words};
use identities::{IdentityIndex, Touch};
use systems::EndpointSet;
pub use systems::unix_aliases;
use tools::{ExeCache, ToolSet};

/// Distinguishes the agent ids of one compiled scope from another's.
static GENERATION: AtomicU32 = AtomicU32::new(1);

/// An agent of one compiled [`Scope`]. Ids are not stable across reloads:
/// look agents up again (by name) in the new scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AgentId {
    generation: u32,
    index: u32,
}

impl AgentId {
    /// Position of the agent in the config's `[[agent]]` list.
    #[must_use]
    pub const fn index(self) -> usize {
        self.index as usize
    }
}

/// What the rest of the daemon needs to know about an agent.
#[derive(Clone, Debug, PartialEq)]
// Independent switches of the config, not a state machine.
#[allow(clippy::struct_excessive_bools)]
pub struct AgentInfo {
    pub name: String,
    pub owner: Option<String>,
    pub description: Option<String>,
    pub on_violation: OnViolation,
    /// Matched by `vigil exec --agent NAME` sessions.
    pub sessions: bool,
    /// cgroup path globs.
    pub cgroups: Vec<String>,
    /// The declared scope, as written.
    pub scope: AgentScope,
    /// `systems` enforced in the kernel.
    pub enforce: bool,
    /// Acts only under an active task approval.
    pub require_approval: bool,
    /// Revocation kills every process (`cgroup.kill`).
    pub revoke_kills: bool,
    /// What setting up an io_uring means.
    pub io_uring: IoUringPolicy,
}

static STALE: AgentInfo = AgentInfo {
    name: String::new(),
    owner: None,
    description: None,
    enforce: false,
    require_approval: false,
    revoke_kills: false,
    io_uring: IoUringPolicy::Alert,
    on_violation: OnViolation::Alert,
    sessions: false,
    cgroups: Vec::new(),
    scope: AgentScope {
        systems: Vec::new(),
        tools: Vec::new(),
        data: Vec::new(),
        identities: Vec::new(),
        socket_families: Vec::new(),
        exec_from_memory: false,
        tools_by_hash: false,
    },
};

/// A step outside the boundary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub kind: AnomalyKind,
    pub severity: Severity,
    /// The rule broken, in words.
    pub reason: String,
    /// The identity touched, for `identity_outside_scope`.
    pub identity: Option<String>,
}

impl Violation {
    /// The anomaly record for this violation (count 1, before aggregation).
    #[must_use]
    pub fn into_anomaly(self, offending: Event, action: &str) -> Anomaly {
        Anomaly {
            anomaly: self.kind,
            severity: self.severity,
            reason: self.reason,
            identity_name: self.identity,
            count: 1,
            action: action.to_owned(),
            offending: Box::new(offending),
        }
    }
}

// The large variant is the rare one; boxing it would add an allocation to
// every violation while the in-scope verdict is already just a tag.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    InScope,
    Violation(Violation),
}

impl Verdict {
    #[must_use]
    pub const fn is_in_scope(&self) -> bool {
        matches!(self, Self::InScope)
    }
}

#[derive(Debug)]
struct CompiledAgent {
    info: AgentInfo,
    tools: ToolSet,
    /// The tools' contents, with `tools_by_hash`.
    pinned: Option<pinned::Pinned>,
    systems: EndpointSet<()>,
    data: Grants,
    identities: Grants,
}

/// The compiled config. `Send + Sync`; share it through an `Arc`.
#[derive(Debug)]
pub struct Scope {
    generation: u32,
    agents: Vec<CompiledAgent>,
    by_name: HashMap<String, u32>,
    cgroups: GlobSet,
    cgroup_owner: Vec<u32>,
    pods: pods::PodSelectors,
    identities: IdentityIndex,
    data: DataIndex,
    host_names: Vec<String>,
    dns_refresh: Duration,
    aggregate_window: Duration,
    exe_cache: ExeCache,
    digests: pinned::DigestCache,
    dns_labels: dns::LabelLimits,
    /// Lower-case, without leading or trailing dots.
    dns_search_domains: Vec<String>,
}

fn compile_error(path: FieldPath, message: String) -> ConfigError {
    ConfigError::Invalid(vec![Diagnostic {
        file: "config".into(),
        location: None,
        path,
        message,
    }])
}

fn glob_set<'a>(
    globs: impl IntoIterator<Item = &'a crate::config::PathGlob>,
    path: impl Fn() -> FieldPath,
) -> Result<GlobSet, ConfigError> {
    let mut b = GlobSetBuilder::new();
    for g in globs {
        b.add(g.glob().clone());
    }
    b.build().map_err(|e| compile_error(path(), e.to_string()))
}

impl Scope {
    /// Compiles a checked config. Fails only on what [`Config`] loading
    /// cannot see (the config was built by hand, or an undefined reference).
    pub fn compile(config: &Config) -> Result<Self, ConfigError> {
        let identities = IdentityIndex::compile(config)
            .map_err(|m| compile_error(FieldPath::default().key("identity"), m))?;
        let data = DataIndex::compile(config)
            .map_err(|e| compile_error(FieldPath::default().key("data"), e.to_string()))?;
        let generation = GENERATION.fetch_add(1, Ordering::Relaxed);
        let mut agents = Vec::with_capacity(config.agents.len());
        let mut by_name = HashMap::new();
        let mut cgroups = GlobSetBuilder::new();
        let mut cgroup_owner = Vec::new();
        let mut host_names: Vec<String> = identities.host_names().map(str::to_owned).collect();
        for (i, a) in config.agents.iter().enumerate() {
            let at = || FieldPath::default().key("agent").index(i);
            let index =
                u32::try_from(i).map_err(|_| compile_error(at(), "too many agents".into()))?;
            if by_name.insert(a.name.as_str().to_owned(), index).is_some() {
                return Err(compile_error(
                    at().key("name"),
                    format!("duplicate agent name \"{}\"", a.name),
                ));
            }
            let matcher = a.matcher.clone().unwrap_or_default();
            for g in &matcher.cgroups {
                cgroups.add(g.glob().clone());
                cgroup_owner.push(index);
            }
            let mut data_grants = Grants::default();
            for (k, class) in a.scope.data.iter().enumerate() {
                let id = data.class_id(class).ok_or_else(|| {
                    compile_error(
                        at().key("scope").key("data").index(k),
                        format!("undefined data class \"{class}\""),
                    )
                })?;
                data_grants.insert(id);
            }
            let mut id_grants = Grants::default();
            for (k, name) in a.scope.identities.iter().enumerate() {
                let id = identities.id(name).ok_or_else(|| {
                    compile_error(
                        at().key("scope").key("identities").index(k),
                        format!("undefined identity \"{name}\""),
                    )
                })?;
                id_grants.insert(id);
            }
            let systems = EndpointSet::from_entries(&a.scope.systems, ());
            host_names.extend(systems.hosts.exact_names().map(str::to_owned));
            let tools = glob_set(&a.scope.tools, || at().key("scope").key("tools"))?;
            let tool_sources: Vec<String> = a
                .scope
                .tools
                .iter()
                .map(|g| g.as_str().to_owned())
                .collect();
            let pinned = if a.scope.tools_by_hash {
                let p = pinned::Pinned::take(&tools, &tool_sources).map_err(|e| {
                    compile_error(at().key("scope").key("tools_by_hash"), e.to_string())
                })?;
                tracing::debug!(
                    "agent {}: {} tool files pinned ({} bytes) in {:?}",
                    a.name.as_str(),
                    p.files,
                    p.bytes,
                    p.took
                );
                Some(p)
            } else {
                None
            };
            agents.push(CompiledAgent {
                info: AgentInfo {
                    name: a.name.as_str().to_owned(),
                    owner: a.owner.clone(),
                    description: a.description.clone(),
                    on_violation: a.on_violation,
                    sessions: matcher.sessions,
                    cgroups: matcher
                        .cgroups
                        .iter()
                        .map(|g| g.as_str().to_owned())
                        .collect(),
                    scope: a.scope.clone(),
                    enforce: a.enforce || a.on_violation == OnViolation::Revoke,
                    require_approval: a.require_approval,
                    revoke_kills: a.revoke_kills,
                    // Unset: denied where systems are enforced (a ring's
                    // requests would step around the hooks that enforce them).
                    io_uring: a.io_uring.unwrap_or(
                        if a.enforce || a.on_violation == OnViolation::Revoke {
                            IoUringPolicy::Deny
                        } else {
                            IoUringPolicy::Alert
                        },
                    ),
                },
                tools: ToolSet::new(tools, tool_sources),
                pinned,
                systems,
                data: data_grants,
                identities: id_grants,
            });
        }
        host_names.sort();
        host_names.dedup();
        Ok(Self {
            generation,
            agents,
            by_name,
            cgroups: cgroups
                .build()
                .map_err(|e| compile_error(FieldPath::default().key("agent"), e.to_string()))?,
            cgroup_owner,
            pods: pods::PodSelectors::compile(config),
            identities,
            data,
            host_names,
            dns_refresh: Duration::from_secs(config.scope.dns_refresh_seconds.max(1)),
            aggregate_window: Duration::from_secs(config.scope.aggregate_window_seconds),
            exe_cache: ExeCache::default(),
            digests: pinned::DigestCache::default(),
            dns_labels: dns::LabelLimits {
                long_label: config.scope.dns_long_label,
                entropy_label: config.scope.dns_entropy_label,
                entropy_bits: config.scope.dns_entropy_bits,
            },
            dns_search_domains: config
                .scope
                .dns_search_domains
                .iter()
                .map(|d| d.trim_matches('.').to_ascii_lowercase())
                .collect(),
        })
    }

    fn id(&self, index: u32) -> AgentId {
        AgentId {
            generation: self.generation,
            index,
        }
    }

    fn get(&self, id: AgentId) -> Option<&CompiledAgent> {
        if id.generation != self.generation {
            return None;
        }
        self.agents.get(id.index())
    }

    #[must_use]
    pub fn agent_id(&self, name: &str) -> Option<AgentId> {
        self.by_name.get(name).map(|&i| self.id(i))
    }

    /// The unix socket addresses in the agent's `systems`, each spelling
    /// the kernel is to allow (see [`systems::unix_aliases`]).
    pub fn unix_systems(&self, id: AgentId) -> impl Iterator<Item = &str> {
        self.get(id)
            .into_iter()
            .flat_map(|a| a.systems.unix.keys().map(String::as_str))
    }

    /// The agent's description. An id of another (older) scope yields a
    /// placeholder with an empty name; [`Scope::try_agent`] tells.
    #[must_use]
    pub fn agent(&self, id: AgentId) -> &AgentInfo {
        self.try_agent(id).unwrap_or(&STALE)
    }

    /// The agent's description; `None` for an id of another (older) scope.
    #[must_use]
    pub fn try_agent(&self, id: AgentId) -> Option<&AgentInfo> {
        self.get(id).map(|a| &a.info)
    }

    /// Every agent, in config order.
    pub fn agents(&self) -> impl ExactSizeIterator<Item = &AgentInfo> {
        self.agents.iter().map(|a| &a.info)
    }

    /// What pinning an agent's tools by content found and cost
    /// (`tools_by_hash`), by agent name.
    #[must_use]
    pub fn pinned_tools(&self, agent: &str) -> Option<&pinned::Pinned> {
        let i = *self.by_name.get(agent)?;
        self.agents.get(i as usize)?.pinned.as_ref()
    }

    /// Every agent id, in config order.
    pub fn agent_ids(&self) -> impl ExactSizeIterator<Item = AgentId> + '_ {
        (0..self.agents.len() as u32).map(|i| self.id(i))
    }

    /// The agent whose `match.cgroups` covers this cgroup v2 path (relative
    /// to the mount, `/kubepods.slice/...`); the first in config order wins.
    #[must_use]
    pub fn match_cgroup(&self, path: &str) -> Option<AgentId> {
        let cand = Candidate::from_bytes(path.as_bytes());
        if !self.cgroups.is_match_candidate(&cand) {
            return None;
        }
        with_matches(&self.cgroups, &cand, |hits| {
            hits.iter().map(|&g| self.cgroup_owner[g]).min()
        })
        .map(|i| self.id(i))
    }

    /// The agent of a container: by `match.cgroups` on its cgroup path or,
    /// once its pod metadata is known, by `match.kubernetes`; the first in
    /// config order wins.
    #[must_use]
    pub fn match_container(
        &self,
        path: &str,
        workload: &crate::event::Workload,
    ) -> Option<AgentId> {
        let by_path = self.match_cgroup(path).map(AgentId::index);
        let by_pod = self.pods.first_match(workload);
        by_path
            .into_iter()
            .chain(by_pod)
            .min()
            .map(|i| self.id(i as u32))
    }

    /// The agents' `match.kubernetes` selectors.
    #[must_use]
    pub const fn pod_selectors(&self) -> &pods::PodSelectors {
        &self.pods
    }

    /// Configured host names (systems and identity endpoints), for the resolver.
    #[must_use]
    pub fn host_names(&self) -> &[String] {
        &self.host_names
    }

    #[must_use]
    pub fn dns_refresh(&self) -> Duration {
        self.dns_refresh
    }

    /// Looks the identity files up again when it is time (they are known by
    /// inode too, and credentials are rotated).
    pub fn refresh_identity_files(&self, now: Instant) {
        self.identities.refresh_files(now);
    }

    #[must_use]
    pub fn aggregate_window(&self) -> Duration {
        self.aggregate_window
    }

    /// Names of all identities: the built-in catalog, then `[identity.*]`.
    #[must_use]
    pub fn identity_names(&self) -> &[String] {
        &self.identities.names
    }

    /// True when the agent's `systems` allow `ip:port` over UDP by address
    /// or prefix, so that it may take DNS answers from there. Host-name
    /// rules do not count: their addresses come from the answers being
    /// vetted.
    #[must_use]
    pub fn allows_resolver(&self, agent: AgentId, ip: IpAddr, port: u16) -> bool {
        self.get(agent).is_some_and(|a| {
            a.systems
                .nets
                .find(canonical_ip(ip), port, Protocol::Udp, |()| true)
                .is_some()
        })
    }
}

#[cfg(test)]
mod tests;
