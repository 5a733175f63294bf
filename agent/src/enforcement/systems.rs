//! Each agent's standing kernel settings, and its `systems` in the kernel's
//! `SYSTEMS` trie: static addresses and networks at load, host names as
//! their DNS answers arrive.

use super::kernel::{AgentSettings, SystemRule, agent_key};
use super::{EnforceError, Enforcer, boot_now_ns, lock};
use crate::config::{OnViolation, SystemEntry, Target as CfgTarget};
use crate::event::Protocol as CfgProtocol;
use crate::scope::Scope;

/// Unix sockets every watched process may use, not reported: what glibc's
/// name service (nscd, systemd-resolved and systemd's user database) and
/// the system log connect to on a process's behalf. The daemon's own
/// socket is not among them: an agent reaching it is an `unapproved_system`.
pub const PLUMBING_UNIX_SOCKETS: &[&str] = &[
    "/run/nscd/socket",
    "/var/run/nscd/socket",
    "/run/systemd/resolve/io.systemd.Resolve",
    "/run/systemd/userdb/io.systemd.Multiplexer",
    "/run/systemd/userdb/io.systemd.DynamicUser",
    "/dev/log",
    "/run/systemd/journal/dev-log",
    "/run/systemd/journal/socket",
    "/run/systemd/journal/stdout",
];

impl Enforcer {
    /// Loads every agent's approval and `systems` settings into the kernel
    /// (at start and after each config reload).
    pub fn configure(&self, scope: &Scope) -> Result<(), EnforceError> {
        let plumbing: Vec<String> = PLUMBING_UNIX_SOCKETS
            .iter()
            .flat_map(|p| crate::scope::unix_aliases(p))
            .collect();
        self.kernel
            .set_unix(0, plumbing.iter().map(String::as_str))?;
        *lock(&self.kills) = scope
            .agents()
            .map(|a| (a.name.clone(), a.revoke_kills))
            .collect();
        for a in scope.agents() {
            // Violations acted on in the daemon must reach it at once.
            let prompt = matches!(a.on_violation, OnViolation::Kill | OnViolation::Revoke);
            let deny_io_uring = a.io_uring == crate::config::IoUringPolicy::Deny;
            // Where systems are enforced, an unusual socket would step
            // around the hooks that enforce them.
            let deny_sockets = a.enforce;
            if !(a.require_approval || a.enforce || prompt || deny_io_uring) {
                // Clear settings a previous config may have left.
                if let Ok((id, _)) = self.sessions.existing_agent_dir(&a.name) {
                    self.kernel.configure(id, AgentSettings::default())?;
                }
                continue;
            }
            let (id, _) = self.sessions.agent_dir(&a.name)?;
            self.kernel.configure(
                id,
                AgentSettings {
                    agent_key: agent_key(&a.name),
                    require_approval: a.require_approval,
                    enforce_systems: a.enforce,
                    prompt,
                    deny_io_uring,
                    deny_sockets,
                    // Where systems are enforced, a program with no name
                    // would step around `tools` and every path rule.
                    deny_memory_exec: a.enforce && !a.scope.exec_from_memory,
                    socket_classes: a
                        .scope
                        .socket_families
                        .iter()
                        .fold(0, |m, f| m | 1 << f.class()),
                },
            )?;
            if a.require_approval {
                let deadline = self.grant(&a.name).map_or(0, |g| g.expires_boot_ns);
                self.kernel.grant(id, deadline)?;
            }
            if a.enforce {
                self.load_systems(scope, &a.name)?;
            }
            let unix = scope
                .agent_id(&a.name)
                .filter(|_| a.enforce)
                .map(|id| scope.unix_systems(id).collect::<Vec<_>>())
                .unwrap_or_default();
            self.kernel.set_unix(agent_key(&a.name), unix)?;
        }
        Ok(())
    }

    /// Static rules of an enforced agent plus the addresses its DNS answers
    /// taught, into the `SYSTEMS` trie.
    fn load_systems(&self, scope: &Scope, agent: &str) -> Result<(), EnforceError> {
        let id = scope
            .agent_id(agent)
            .ok_or_else(|| EnforceError::UnknownAgent(agent.to_owned()))?;
        let mut rules = static_rules(&scope.agent(id).scope.systems);
        let now = boot_now_ns();
        if let Some(learnt) = lock(&self.learnt).get_mut(agent) {
            learnt.retain(|r| r.expires_ns > now);
            rules.extend(learnt.iter().copied());
        }
        self.kernel.set_systems(agent_key(agent), &rules)?;
        Ok(())
    }

    /// An enforced agent received a DNS answer: addresses of allowed host
    /// names become allowed in the kernel until their TTL runs out.
    pub fn learn_dns(
        &self,
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
        self.load_systems(scope, agent)?;
        Ok(true)
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
            CfgTarget::Host(_) | CfgTarget::Unix(_) => None,
        })
        .collect()
}
