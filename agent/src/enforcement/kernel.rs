//! The kernel side of enforcement: the pinned `POLICY` and `SYSTEMS` maps
//! that the eBPF programs consult on every connect, exec and open of a
//! governed process. An update here takes effect on the next syscall: a call
//! that returns after updating a map leaves no window.

use std::{net::IpAddr, sync::Mutex};

use aya::maps::{HashMap, LpmTrie, Map, MapData, MapError, lpm_trie::Key};
use vigil_common::{PORT_RULES, Policy, PortRule, SystemKey, SystemRules, policy};

use crate::sensors::SensorError;

#[derive(Debug, thiserror::Error)]
pub enum KernelPolicyError {
    #[error("updating the kernel policy of cgroup {cgroup_id}: {source}")]
    Policy { cgroup_id: u64, source: MapError },
    #[error("updating the kernel systems of agent key {agent_key}: {source}")]
    Systems { agent_key: u32, source: MapError },
}

/// Handles on the pinned enforcement maps.
pub struct KernelPolicy {
    policy: Mutex<HashMap<MapData, u64, Policy>>,
    systems: Mutex<LpmTrie<MapData, SystemKey, SystemRules>>,
}

/// An agent's standing settings in its policy row.
// One bool per independent flag of the policy row.
#[allow(clippy::struct_excessive_bools)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgentSettings {
    /// Key of its rows in the `SYSTEMS` trie.
    pub agent_key: u32,
    /// Acts only under an active task approval.
    pub require_approval: bool,
    /// Its `systems` are enforced in the kernel.
    pub enforce_systems: bool,
    /// Its records wake the daemon at once (violations are acted on).
    pub prompt: bool,
    /// Setting up an io_uring kills the process.
    pub deny_io_uring: bool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One allowed destination of an enforced agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SystemRule {
    pub network: ipnet::IpNet,
    pub lo: u16,
    pub hi: u16,
    /// `IPPROTO_TCP`, `IPPROTO_UDP` or 0 for any.
    pub protocol: u8,
    /// `CLOCK_BOOTTIME` expiry (from a DNS TTL); 0 for none.
    pub expires_ns: u64,
}

/// IPv4 as v4-mapped IPv6 bytes, with the prefix length in that space.
fn mapped(net: ipnet::IpNet) -> ([u8; 16], u32) {
    match net {
        ipnet::IpNet::V4(n) => (
            n.network().to_ipv6_mapped().octets(),
            96 + u32::from(n.prefix_len()),
        ),
        ipnet::IpNet::V6(n) => (n.network().octets(), u32::from(n.prefix_len())),
    }
}

impl KernelPolicy {
    pub fn new(policy: Map, systems: Map) -> Result<Self, SensorError> {
        Ok(Self {
            policy: Mutex::new(
                HashMap::try_from(policy).map_err(|source| SensorError::Map {
                    map: "POLICY",
                    source,
                })?,
            ),
            systems: Mutex::new(
                LpmTrie::try_from(systems).map_err(|source| SensorError::Map {
                    map: "SYSTEMS",
                    source,
                })?,
            ),
        })
    }

    /// The policy of one cgroup (default when none).
    pub fn get(&self, cgroup_id: u64) -> Policy {
        lock(&self.policy).get(&cgroup_id, 0).unwrap_or_default()
    }

    /// Every cgroup with a policy (adopted from a previous daemon, too).
    pub fn entries(&self) -> Vec<(u64, Policy)> {
        lock(&self.policy).iter().filter_map(Result::ok).collect()
    }

    /// Changes one cgroup's policy; an all-default policy removes the entry.
    pub fn update(
        &self,
        cgroup_id: u64,
        f: impl FnOnce(&mut Policy),
    ) -> Result<Policy, KernelPolicyError> {
        let mut map = lock(&self.policy);
        let existing = map.get(&cgroup_id, 0).ok();
        let mut p = existing.unwrap_or_default();
        f(&mut p);
        let result = if p == Policy::default() {
            if existing.is_some() {
                map.remove(&cgroup_id)
            } else {
                Ok(())
            }
        } else {
            map.insert(cgroup_id, p, 0)
        };
        result.map_err(|source| KernelPolicyError::Policy { cgroup_id, source })?;
        Ok(p)
    }

    pub fn revoke(&self, cgroup_id: u64) -> Result<Policy, KernelPolicyError> {
        self.update(cgroup_id, |p| p.flags |= policy::REVOKED)
    }

    pub fn restore(&self, cgroup_id: u64) -> Result<Policy, KernelPolicyError> {
        self.update(cgroup_id, |p| p.flags &= !policy::REVOKED)
    }

    /// Sets what the agent owning `cgroup_id` needs: approvals, enforced
    /// systems, prompt reporting.
    pub fn configure(
        &self,
        cgroup_id: u64,
        agent: AgentSettings,
    ) -> Result<Policy, KernelPolicyError> {
        self.update(cgroup_id, |p| {
            p.agent_key = if agent.enforce_systems {
                agent.agent_key
            } else {
                0
            };
            p.flags &= !(policy::REQUIRE_APPROVAL
                | policy::ENFORCE_SYSTEMS
                | policy::PROMPT
                | policy::DENY_IO_URING);
            if agent.deny_io_uring {
                p.flags |= policy::DENY_IO_URING;
            }
            if agent.require_approval {
                p.flags |= policy::REQUIRE_APPROVAL;
            }
            if agent.enforce_systems {
                p.flags |= policy::ENFORCE_SYSTEMS;
            }
            if agent.prompt {
                p.flags |= policy::PROMPT;
            }
            if !agent.require_approval {
                p.grant_expires_ns = 0;
            }
        })
    }

    /// Opens (or, with 0, closes) the task-approval window of a cgroup.
    pub fn grant(&self, cgroup_id: u64, expires_ns: u64) -> Result<Policy, KernelPolicyError> {
        self.update(cgroup_id, |p| p.grant_expires_ns = expires_ns)
    }

    /// Replaces every row of an agent in the `SYSTEMS` trie. A more specific
    /// prefix shadows a broader one in an LPM lookup, so each row carries the
    /// rules of every broader prefix that covers it too.
    pub fn set_systems(
        &self,
        agent_key: u32,
        rules: &[SystemRule],
    ) -> Result<usize, KernelPolicyError> {
        let err = |source| KernelPolicyError::Systems { agent_key, source };
        let mut trie = lock(&self.systems);
        let agent_be = agent_key.to_be_bytes();
        let old: Vec<Key<SystemKey>> = trie
            .keys()
            .filter_map(Result::ok)
            .filter(|k| {
                let data = k.data();
                data.agent_be == agent_be
            })
            .collect();
        for k in &old {
            trie.remove(k).map_err(err)?;
        }
        let mut nets: Vec<ipnet::IpNet> = rules.iter().map(|r| r.network.trunc()).collect();
        nets.sort();
        nets.dedup();
        for net in &nets {
            let mut value = SystemRules::default();
            for r in rules.iter().filter(|r| r.network.contains(net)) {
                if (value.count as usize) < PORT_RULES {
                    value.rules[value.count as usize] = PortRule {
                        lo: r.lo,
                        hi: r.hi,
                        protocol: r.protocol,
                        _pad: [0; 3],
                        expires_ns: r.expires_ns,
                    };
                    value.count += 1;
                } else {
                    tracing::warn!(
                        "agent key {agent_key}: more than {PORT_RULES} port rules cover {net}; \
                         extra ones are not enforced in the kernel (still checked by the daemon)"
                    );
                }
            }
            let (addr, prefix) = mapped(*net);
            let key = Key::new(32 + prefix, SystemKey { agent_be, addr });
            trie.insert(&key, value, 0).map_err(err)?;
        }
        Ok(nets.len())
    }

    /// Whether the kernel would let `agent_key` reach `addr:port` (for tests
    /// and diagnostics; the programs do the same lookup and the same
    /// [`SystemRules::allows`]).
    pub fn system_allowed(
        &self,
        agent_key: u32,
        addr: IpAddr,
        port: u16,
        protocol: u8,
        now_ns: u64,
    ) -> bool {
        let addr = match addr {
            IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            IpAddr::V6(a) => a.octets(),
        };
        let key = Key::new(
            32 + 128,
            SystemKey {
                agent_be: agent_key.to_be_bytes(),
                addr,
            },
        );
        lock(&self.systems)
            .get(&key, 0)
            .is_ok_and(|rules| rules.allows(port, protocol, now_ns))
    }
}

/// A stable key for an agent's rows in the `SYSTEMS` trie (FNV-1a of its
/// name; never 0, which means "no agent").
#[must_use]
pub fn agent_key(name: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h.max(1)
}
