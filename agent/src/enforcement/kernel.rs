//! The kernel side of enforcement: the pinned `POLICY` and `SYSTEMS` maps
//! that the eBPF programs consult on every connect, exec and open of a
//! governed process. An update here takes effect on the next syscall: a call
//! that returns after updating a map leaves no window.

use std::{
    collections::{BTreeMap, HashSet},
    net::IpAddr,
    sync::Mutex,
};

use aya::maps::{HashMap, LpmTrie, Map, MapData, MapError, lpm_trie::Key};
use vigil_common::{PORT_RULES, Policy, PortRule, SystemKey, SystemRules, UnixKey, policy};

#[derive(Debug, thiserror::Error)]
pub enum KernelPolicyError {
    #[error("updating the kernel policy of cgroup {cgroup_id}: {source}")]
    Policy { cgroup_id: u64, source: MapError },
    #[error("updating the kernel systems of agent key {agent_key}: {source}")]
    Systems { agent_key: u32, source: MapError },
    #[error("updating the unix systems of agent key {agent_key}: {source}")]
    Unix { agent_key: u32, source: MapError },
    #[error("map {map}: {source}")]
    Map { map: &'static str, source: MapError },
}

/// Handles on the pinned enforcement maps.
pub struct KernelPolicy {
    policy: Mutex<PolicyRows>,
    systems: Mutex<SystemRows>,
    unix: Mutex<UnixRows>,
}

/// The `UNIX_SYSTEMS` rows, or the same keys in memory.
enum UnixRows {
    Kernel(HashMap<MapData, UnixKey, u32>),
    #[cfg_attr(not(test), allow(dead_code))]
    Memory(HashSet<UnixKey>),
}

impl UnixRows {
    fn keys_of(&self, agent_key: u32) -> Vec<UnixKey> {
        match self {
            Self::Kernel(m) => m
                .keys()
                .filter_map(Result::ok)
                .filter(|k| k.agent_key == agent_key)
                .collect(),
            Self::Memory(m) => m
                .iter()
                .filter(|k| k.agent_key == agent_key)
                .copied()
                .collect(),
        }
    }

    fn remove(&mut self, key: &UnixKey) -> Result<(), MapError> {
        match self {
            Self::Kernel(m) => m.remove(key),
            Self::Memory(m) => {
                m.remove(key);
                Ok(())
            }
        }
    }

    fn insert(&mut self, key: UnixKey) -> Result<(), MapError> {
        match self {
            Self::Kernel(m) => m.insert(key, 1, 0),
            Self::Memory(m) => {
                m.insert(key);
                Ok(())
            }
        }
    }

    fn contains(&self, key: &UnixKey) -> bool {
        match self {
            Self::Kernel(m) => m.get(key, 0).is_ok(),
            Self::Memory(m) => m.contains(key),
        }
    }
}

/// The key of a unix socket address as events show it (a path, or `@NAME`
/// for an abstract one, each `@` a NUL).
#[must_use]
pub fn unix_key(agent_key: u32, address: &str) -> UnixKey {
    let mut key = UnixKey {
        agent_key,
        ..UnixKey::default()
    };
    let bytes = address.as_bytes();
    let n = bytes.len().min(vigil_common::UNIX_PATH_MAX);
    key.path[..n].copy_from_slice(&bytes[..n]);
    if bytes.first() == Some(&b'@') {
        for b in &mut key.path[..n] {
            if *b == b'@' {
                *b = 0;
            }
        }
    }
    key.normalize(n);
    key
}

/// The `POLICY` rows: the kernel's map, or (for tests of the layers above,
/// which run without BPF) the same rows in memory.
enum PolicyRows {
    Kernel(HashMap<MapData, u64, Policy>),
    #[cfg_attr(not(test), allow(dead_code))]
    Memory(BTreeMap<u64, Policy>),
}

impl PolicyRows {
    fn get(&self, cgroup_id: u64) -> Option<Policy> {
        match self {
            Self::Kernel(m) => m.get(&cgroup_id, 0).ok(),
            Self::Memory(m) => m.get(&cgroup_id).copied(),
        }
    }

    fn entries(&self) -> Vec<(u64, Policy)> {
        match self {
            Self::Kernel(m) => m.iter().filter_map(Result::ok).collect(),
            Self::Memory(m) => m.iter().map(|(k, v)| (*k, *v)).collect(),
        }
    }

    fn insert(&mut self, cgroup_id: u64, p: Policy) -> Result<(), MapError> {
        match self {
            Self::Kernel(m) => m.insert(cgroup_id, p, 0),
            Self::Memory(m) => {
                m.insert(cgroup_id, p);
                Ok(())
            }
        }
    }

    fn remove(&mut self, cgroup_id: u64) -> Result<(), MapError> {
        match self {
            Self::Kernel(m) => m.remove(&cgroup_id),
            Self::Memory(m) => {
                m.remove(&cgroup_id);
                Ok(())
            }
        }
    }
}

/// The `SYSTEMS` trie, or its rows in memory keyed by (agent, address,
/// prefix length in bits of the whole key) with a longest-prefix lookup.
enum SystemRows {
    Kernel(LpmTrie<MapData, SystemKey, SystemRules>),
    #[cfg_attr(not(test), allow(dead_code))]
    Memory(BTreeMap<([u8; 4], [u8; 16], u32), SystemRules>),
}

impl SystemRows {
    fn keys_of(&self, agent_be: [u8; 4]) -> Vec<Key<SystemKey>> {
        match self {
            Self::Kernel(t) => t
                .keys()
                .filter_map(Result::ok)
                .filter(|k| k.data().agent_be == agent_be)
                .collect(),
            Self::Memory(m) => m
                .keys()
                .filter(|(a, _, _)| *a == agent_be)
                .map(|(a, addr, prefix)| {
                    Key::new(
                        *prefix,
                        SystemKey {
                            agent_be: *a,
                            addr: *addr,
                        },
                    )
                })
                .collect(),
        }
    }

    fn remove(&mut self, key: &Key<SystemKey>) -> Result<(), MapError> {
        match self {
            Self::Kernel(t) => t.remove(key),
            Self::Memory(m) => {
                let d = key.data();
                m.remove(&(d.agent_be, d.addr, key.prefix_len()));
                Ok(())
            }
        }
    }

    fn insert(&mut self, key: &Key<SystemKey>, value: SystemRules) -> Result<(), MapError> {
        match self {
            Self::Kernel(t) => t.insert(key, value, 0),
            Self::Memory(m) => {
                let d = key.data();
                m.insert((d.agent_be, d.addr, key.prefix_len()), value);
                Ok(())
            }
        }
    }

    /// The rules of the longest prefix covering a full-length `key`.
    fn lookup(&self, key: &Key<SystemKey>) -> Option<SystemRules> {
        match self {
            Self::Kernel(t) => t.get(key, 0).ok(),
            Self::Memory(m) => {
                let want = key.data();
                m.iter()
                    .filter(|((agent, addr, prefix), _)| {
                        *agent == want.agent_be
                            && prefix_covers(addr, prefix.saturating_sub(32), &want.addr)
                    })
                    .max_by_key(|((_, _, prefix), _)| *prefix)
                    .map(|(_, v)| *v)
            }
        }
    }
}

/// Whether `net/bits` (an address in the v6 space) covers `addr`.
fn prefix_covers(net: &[u8; 16], bits: u32, addr: &[u8; 16]) -> bool {
    u8::try_from(bits)
        .ok()
        .and_then(|bits| ipnet::Ipv6Net::new(std::net::Ipv6Addr::from(*net), bits).ok())
        .is_some_and(|n| n.contains(&std::net::Ipv6Addr::from(*addr)))
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
    /// Sockets of unusual classes are refused, except those in
    /// `socket_classes`.
    pub deny_sockets: bool,
    /// Programs that no file system names are killed before they run.
    pub deny_memory_exec: bool,
    /// The [`vigil_common::socket_class`] values its scope allows, as bits
    /// (`1 << class`).
    pub socket_classes: u8,
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
    /// Takes the `POLICY`, `SYSTEMS` and `UNIX_SYSTEMS` maps the sensors loaded.
    pub fn new(policy: Map, systems: Map, unix: Map) -> Result<Self, KernelPolicyError> {
        Ok(Self {
            policy: Mutex::new(PolicyRows::Kernel(HashMap::try_from(policy).map_err(
                |source| KernelPolicyError::Map {
                    map: "POLICY",
                    source,
                },
            )?)),
            systems: Mutex::new(SystemRows::Kernel(LpmTrie::try_from(systems).map_err(
                |source| KernelPolicyError::Map {
                    map: "SYSTEMS",
                    source,
                },
            )?)),
            unix: Mutex::new(UnixRows::Kernel(HashMap::try_from(unix).map_err(
                |source| KernelPolicyError::Map {
                    map: "UNIX_SYSTEMS",
                    source,
                },
            )?)),
        })
    }

    /// The same policy held in memory, for unit tests of the layers above
    /// (the API, the pipeline), which run without root or BPF.
    #[cfg(test)]
    pub(crate) fn in_memory() -> Self {
        Self {
            policy: Mutex::new(PolicyRows::Memory(BTreeMap::new())),
            systems: Mutex::new(SystemRows::Memory(BTreeMap::new())),
            unix: Mutex::new(UnixRows::Memory(HashSet::new())),
        }
    }

    /// The policy of one cgroup (default when none).
    pub fn get(&self, cgroup_id: u64) -> Policy {
        lock(&self.policy).get(cgroup_id).unwrap_or_default()
    }

    /// Every cgroup with a policy (adopted from a previous daemon, too).
    pub fn entries(&self) -> Vec<(u64, Policy)> {
        lock(&self.policy).entries()
    }

    /// Changes one cgroup's policy; an all-default policy removes the entry.
    pub fn update(
        &self,
        cgroup_id: u64,
        f: impl FnOnce(&mut Policy),
    ) -> Result<Policy, KernelPolicyError> {
        let mut map = lock(&self.policy);
        let existing = map.get(cgroup_id);
        let mut p = existing.unwrap_or_default();
        f(&mut p);
        let result = if p == Policy::default() {
            if existing.is_some() {
                map.remove(cgroup_id)
            } else {
                Ok(())
            }
        } else {
            map.insert(cgroup_id, p)
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
                | policy::DENY_IO_URING
                | policy::DENY_SOCKETS
                | policy::DENY_MEMORY_EXEC
                | (u32::from(u8::MAX) << policy::SOCKET_ALLOW_SHIFT));
            if agent.deny_io_uring {
                p.flags |= policy::DENY_IO_URING;
            }
            if agent.deny_memory_exec {
                p.flags |= policy::DENY_MEMORY_EXEC;
            }
            if agent.deny_sockets {
                p.flags |= policy::DENY_SOCKETS
                    | (u32::from(agent.socket_classes) << policy::SOCKET_ALLOW_SHIFT);
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

    /// Replaces the unix socket addresses of an agent (key 0: those every
    /// agent may use, unreported) in `UNIX_SYSTEMS`.
    pub fn set_unix<'a>(
        &self,
        agent_key: u32,
        addresses: impl IntoIterator<Item = &'a str>,
    ) -> Result<usize, KernelPolicyError> {
        let err = |source| KernelPolicyError::Unix { agent_key, source };
        let mut rows = lock(&self.unix);
        let wanted: HashSet<UnixKey> = addresses
            .into_iter()
            .map(|a| unix_key(agent_key, a))
            .collect();
        for k in rows.keys_of(agent_key) {
            if !wanted.contains(&k) {
                rows.remove(&k).map_err(err)?;
            }
        }
        for k in &wanted {
            rows.insert(*k).map_err(err)?;
        }
        Ok(wanted.len())
    }

    /// Whether `UNIX_SYSTEMS` lets the agent reach `address` (for tests and
    /// the status of an agent).
    #[must_use]
    pub fn unix_allowed(&self, agent_key: u32, address: &str) -> bool {
        lock(&self.unix).contains(&unix_key(agent_key, address))
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
        for k in &trie.keys_of(agent_be) {
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
            trie.insert(&key, value).map_err(err)?;
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
            .lookup(&key)
            .is_some_and(|rules| rules.allows(port, protocol, now_ns))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(net: &str, lo: u16, hi: u16, protocol: u8) -> SystemRule {
        SystemRule {
            network: net.parse().unwrap(),
            lo,
            hi,
            protocol,
            expires_ns: 0,
        }
    }

    #[test]
    fn unix_keys_are_the_kernel_form_of_the_event_form() {
        // What the program builds from the caller's sun_path bytes.
        let kernel = |bytes: &[u8]| {
            let mut k = UnixKey {
                agent_key: 9,
                ..UnixKey::default()
            };
            k.path[..bytes.len()].copy_from_slice(bytes);
            k.normalize(bytes.len());
            k
        };
        assert_eq!(
            unix_key(9, "/run/docker.sock"),
            kernel(b"/run/docker.sock\0")
        );
        assert_eq!(unix_key(9, "@vigil"), kernel(b"\0vigil"));
        assert_eq!(unix_key(9, "@a@b"), kernel(b"\0a\0b"));
        // And the event shows each as it is written in systems.
        for address in ["/run/docker.sock", "@vigil", "@a@b"] {
            let k = unix_key(9, address);
            let shown = crate::sensors::decode::unix_path(&k.path[..k.len as usize]);
            assert_eq!(shown, address);
        }
    }

    #[test]
    fn unix_addresses_of_an_agent_are_replaced_and_kept_apart() {
        let k = KernelPolicy::in_memory();
        k.set_unix(0, ["/dev/log"]).unwrap();
        k.set_unix(7, ["/run/a.sock", "@b"]).unwrap();
        assert!(k.unix_allowed(7, "/run/a.sock"));
        assert!(k.unix_allowed(7, "@b"));
        assert!(!k.unix_allowed(7, "/dev/log"), "agent 0's rows are its own");
        assert!(!k.unix_allowed(8, "/run/a.sock"));
        k.set_unix(7, ["/run/c.sock"]).unwrap();
        assert!(!k.unix_allowed(7, "/run/a.sock"));
        assert!(k.unix_allowed(7, "/run/c.sock"));
        assert!(k.unix_allowed(0, "/dev/log"));
        k.set_unix(7, []).unwrap();
        assert!(!k.unix_allowed(7, "/run/c.sock"));
    }

    #[test]
    fn a_narrow_prefix_keeps_the_rules_of_the_broad_one_that_covers_it() {
        let k = KernelPolicy::in_memory();
        let tcp = libc::IPPROTO_TCP as u8;
        k.set_systems(
            7,
            &[
                rule("10.0.0.0/8", 443, 443, tcp),
                rule("10.1.2.3/32", 22, 22, 0),
            ],
        )
        .unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // The /32 row shadows the /8 in a longest-prefix lookup, so it must
        // carry the /8's rule as well.
        assert!(k.system_allowed(7, ip("10.1.2.3"), 443, tcp, 0));
        assert!(k.system_allowed(7, ip("10.1.2.3"), 22, libc::IPPROTO_UDP as u8, 0));
        assert!(k.system_allowed(7, ip("10.9.9.9"), 443, tcp, 0));
        assert!(!k.system_allowed(7, ip("10.9.9.9"), 22, tcp, 0));
        assert!(!k.system_allowed(7, ip("11.0.0.1"), 443, tcp, 0));
        assert!(
            !k.system_allowed(8, ip("10.9.9.9"), 443, tcp, 0),
            "another agent"
        );
        // Replacing the agent's rows drops the old ones.
        k.set_systems(7, &[rule("192.168.0.0/16", 1, 1024, 0)])
            .unwrap();
        assert!(!k.system_allowed(7, ip("10.9.9.9"), 443, tcp, 0));
        assert!(k.system_allowed(7, ip("192.168.1.1"), 80, tcp, 0));
    }

    #[test]
    fn an_all_default_policy_leaves_no_row() {
        let k = KernelPolicy::in_memory();
        k.revoke(5).unwrap();
        assert_eq!(k.entries().len(), 1);
        assert!(k.get(5).flags & policy::REVOKED != 0);
        k.restore(5).unwrap();
        assert!(k.entries().is_empty());
    }
}
