//! Network rules: prefix tables for addresses and CIDRs, hash tables for
//! host names, each entry carrying a port range and an optional protocol.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;

use ipnet::IpNet;

use crate::config::{HostPattern, PortRange, SystemEntry, Target, canonical_ip};
use crate::event::Protocol;

/// Mixes integer keys with a folded 128-bit multiply: masked prefixes have
/// many zero low bits, which a plain multiply would leave zero and so
/// collide in the table.
#[derive(Default)]
pub struct IntHasher(u64);

const MIX: u64 = 0x9E37_79B9_7F4A_7C15;

impl IntHasher {
    fn mix(&mut self, v: u64) {
        let full = u128::from(self.0 ^ v) * u128::from(MIX);
        self.0 = (full as u64) ^ ((full >> 64) as u64);
    }
}

impl Hasher for IntHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut buf = [0u8; 8];
            buf[..chunk.len()].copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(buf));
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.mix(u64::from(n));
    }
    fn write_u128(&mut self, n: u128) {
        self.mix(n as u64);
        self.mix((n >> 64) as u64);
    }
}

type IntMap<K, V> = HashMap<K, V, BuildHasherDefault<IntHasher>>;

/// A port range and protocol filter with a payload.
#[derive(Clone, Copy, Debug)]
pub struct PortRule<T> {
    pub ports: PortRange,
    pub protocol: Option<Protocol>,
    pub value: T,
}

impl<T> PortRule<T> {
    #[inline]
    fn matches(&self, port: u16, protocol: Protocol) -> bool {
        self.ports.contains(port) && self.protocol.is_none_or(|p| p == protocol)
    }
}

/// All rules of one prefix length: the masked network is the key.
#[derive(Debug)]
struct Level<K, T> {
    prefix_len: u8,
    mask: K,
    rules: IntMap<K, Vec<PortRule<T>>>,
}

const fn mask_v4(len: u8) -> u32 {
    if len == 0 { 0 } else { u32::MAX << (32 - len) }
}

const fn mask_v6(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - len)
    }
}

/// Rules keyed by IP prefix. A lookup costs one hash probe per distinct
/// prefix length in use, whatever the number of rules.
#[derive(Debug)]
pub struct NetTable<T> {
    v4: Vec<Level<u32, T>>,
    v6: Vec<Level<u128, T>>,
}

impl<T> Default for NetTable<T> {
    fn default() -> Self {
        Self {
            v4: Vec::new(),
            v6: Vec::new(),
        }
    }
}

fn level_mut<K: Copy, T>(levels: &mut Vec<Level<K, T>>, len: u8, mask: K) -> &mut Level<K, T> {
    let pos = match levels.binary_search_by(|l| len.cmp(&l.prefix_len)) {
        Ok(pos) => pos,
        Err(pos) => {
            levels.insert(
                pos,
                Level {
                    prefix_len: len,
                    mask,
                    rules: IntMap::default(),
                },
            );
            pos
        }
    };
    &mut levels[pos]
}

impl<T: Copy> NetTable<T> {
    pub fn insert(&mut self, net: IpNet, rule: PortRule<T>) {
        match net {
            IpNet::V4(n) => {
                let len = n.prefix_len();
                let mask = mask_v4(len);
                let key = u32::from(n.network()) & mask;
                level_mut(&mut self.v4, len, mask)
                    .rules
                    .entry(key)
                    .or_default()
                    .push(rule);
            }
            IpNet::V6(n) => {
                let len = n.prefix_len();
                let mask = mask_v6(len);
                let key = u128::from(n.network()) & mask;
                level_mut(&mut self.v6, len, mask)
                    .rules
                    .entry(key)
                    .or_default()
                    .push(rule);
            }
        }
    }

    /// The first rule value covering `ip:port/protocol` for which `accept`
    /// holds, most specific prefix first.
    #[inline]
    pub fn find(
        &self,
        ip: IpAddr,
        port: u16,
        protocol: Protocol,
        mut accept: impl FnMut(T) -> bool,
    ) -> Option<T> {
        match canonical_ip(ip) {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                self.v4.iter().find_map(|l| {
                    l.rules.get(&(a & l.mask)).and_then(|rules| {
                        rules
                            .iter()
                            .find(|r| r.matches(port, protocol) && accept(r.value))
                            .map(|r| r.value)
                    })
                })
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                self.v6.iter().find_map(|l| {
                    l.rules.get(&(a & l.mask)).and_then(|rules| {
                        rules
                            .iter()
                            .find(|r| r.matches(port, protocol) && accept(r.value))
                            .map(|r| r.value)
                    })
                })
            }
        }
    }
}

/// Rules keyed by host name (exact), plus `*.suffix` patterns.
#[derive(Debug)]
pub struct HostTable<T> {
    exact: HashMap<Box<str>, Vec<PortRule<T>>>,
    subdomains: Vec<(Box<str>, PortRule<T>)>,
}

impl<T> Default for HostTable<T> {
    fn default() -> Self {
        Self {
            exact: HashMap::new(),
            subdomains: Vec::new(),
        }
    }
}

impl<T: Copy> HostTable<T> {
    pub fn insert(&mut self, host: &HostPattern, rule: PortRule<T>) {
        match host {
            HostPattern::Exact(n) => self.exact.entry(n.as_str().into()).or_default().push(rule),
            HostPattern::Subdomains(s) => self.subdomains.push((s.as_str().into(), rule)),
        }
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.subdomains.is_empty()
    }

    /// Exact names, for the periodic resolver (subdomain patterns cannot be resolved).
    pub fn exact_names(&self) -> impl Iterator<Item = &str> {
        self.exact.keys().map(AsRef::as_ref)
    }

    /// The first rule value covering `name` (lower-case, no trailing dot),
    /// `port` and `protocol` for which `accept` holds.
    #[inline]
    pub fn find(
        &self,
        name: &str,
        port: u16,
        protocol: Protocol,
        mut accept: impl FnMut(T) -> bool,
    ) -> Option<T> {
        if let Some(rules) = self.exact.get(name)
            && let Some(r) = rules
                .iter()
                .find(|r| r.matches(port, protocol) && accept(r.value))
        {
            return Some(r.value);
        }
        self.subdomains
            .iter()
            .find(|(suffix, r)| {
                name.len() > suffix.len()
                    && name.ends_with(&**suffix)
                    && r.matches(port, protocol)
                    && accept(r.value)
            })
            .map(|(_, r)| r.value)
    }
}

impl<T: Copy> HostTable<T> {
    /// The first rule value covering `name` on any port and protocol for
    /// which `accept` holds: what a DNS query for the name may ask.
    pub fn find_name(&self, name: &str, mut accept: impl FnMut(T) -> bool) -> Option<T> {
        if let Some(r) = self
            .exact
            .get(name)
            .and_then(|rules| rules.iter().find(|r| accept(r.value)))
        {
            return Some(r.value);
        }
        self.subdomains
            .iter()
            .find(|(suffix, r)| {
                name.len() > suffix.len() && name.ends_with(&**suffix) && accept(r.value)
            })
            .map(|(_, r)| r.value)
    }
}

/// Addresses and names, with a payload per entry (an identity id, or `()`).
#[derive(Debug)]
pub struct EndpointSet<T> {
    pub nets: NetTable<T>,
    pub hosts: HostTable<T>,
    /// Unix socket addresses, as events show them (see [`unix_aliases`]).
    pub unix: HashMap<String, T>,
}

impl<T> Default for EndpointSet<T> {
    fn default() -> Self {
        Self {
            nets: NetTable::default(),
            hosts: HostTable::default(),
            unix: HashMap::new(),
        }
    }
}

/// The addresses a `unix://` entry stands for, as a caller may pass them:
/// the path as written and, when its directory resolves elsewhere (a
/// symlink such as `/var/run` → `/run`), the resolved path too. The kernel
/// compares the address exactly, so any other spelling is outside the
/// entry (refused, where enforced): an allowlist that fails closed. An
/// abstract address (`@NAME`) has one spelling.
#[must_use]
pub fn unix_aliases(address: &str) -> Vec<String> {
    let mut out = vec![address.to_owned()];
    let path = std::path::Path::new(address);
    if let (Some(dir), Some(name)) = (path.parent(), path.file_name())
        && address.starts_with('/')
        && let Ok(real) = std::fs::canonicalize(dir)
    {
        let resolved = real.join(name).to_string_lossy().into_owned();
        if resolved != address {
            out.push(resolved);
        }
    }
    out
}

impl<T: Copy> EndpointSet<T> {
    pub fn insert(&mut self, entry: &SystemEntry, value: T) {
        let rule = PortRule {
            ports: entry.ports,
            protocol: entry.protocol,
            value,
        };
        match &entry.target {
            Target::Net(net) => self.nets.insert(*net, rule),
            Target::Host(h) => self.hosts.insert(h, rule),
            Target::Unix(address) => {
                for a in unix_aliases(address) {
                    self.unix.insert(a, value);
                }
            }
        }
    }

    pub fn from_entries<'a>(entries: impl IntoIterator<Item = &'a SystemEntry>, value: T) -> Self {
        let mut set = Self::default();
        for e in entries {
            set.insert(e, value);
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use proptest::prelude::*;

    use super::*;

    fn set(entries: &[&str]) -> EndpointSet<usize> {
        let mut s = EndpointSet::default();
        for (i, e) in entries.iter().enumerate() {
            s.insert(&e.parse().unwrap(), i);
        }
        s
    }

    fn hit(s: &EndpointSet<usize>, ip: &str, port: u16, proto: Protocol) -> Option<usize> {
        s.nets.find(ip.parse().unwrap(), port, proto, |_| true)
    }

    #[test]
    fn cidr_edges_v4() {
        let s = set(&["10.0.0.0/8:443"]);
        assert_eq!(hit(&s, "10.0.0.0", 443, Protocol::Tcp), Some(0));
        assert_eq!(hit(&s, "10.255.255.255", 443, Protocol::Tcp), Some(0));
        assert_eq!(hit(&s, "9.255.255.255", 443, Protocol::Tcp), None);
        assert_eq!(hit(&s, "11.0.0.0", 443, Protocol::Tcp), None);
        assert_eq!(hit(&s, "10.1.2.3", 444, Protocol::Tcp), None);
        let all = set(&["0.0.0.0/0"]);
        assert_eq!(hit(&all, "255.255.255.255", 1, Protocol::Udp), Some(0));
        assert_eq!(
            hit(&all, "::1", 1, Protocol::Udp),
            None,
            "v4 /0 must not cover IPv6"
        );
        let host = set(&["192.168.1.7/32:22"]);
        assert_eq!(hit(&host, "192.168.1.7", 22, Protocol::Tcp), Some(0));
        assert_eq!(hit(&host, "192.168.1.6", 22, Protocol::Tcp), None);
        assert_eq!(hit(&host, "192.168.1.8", 22, Protocol::Tcp), None);
    }

    #[test]
    fn cidr_edges_v6_and_mapped() {
        let s = set(&["[2001:db8::/32]:443", "::1", "fe80::/10"]);
        assert_eq!(
            hit(&s, "2001:db8:ffff:ffff::1", 443, Protocol::Tcp),
            Some(0)
        );
        assert_eq!(hit(&s, "2001:db9::", 443, Protocol::Tcp), None);
        assert_eq!(hit(&s, "::1", 9, Protocol::Tcp), Some(1));
        assert_eq!(hit(&s, "::2", 9, Protocol::Tcp), None);
        assert_eq!(hit(&s, "febf:ffff::1", 1, Protocol::Tcp), Some(2));
        assert_eq!(hit(&s, "fec0::", 1, Protocol::Tcp), None);
        // A dual-stack socket connecting to an IPv4 peer reports ::ffff:a.b.c.d.
        let v4 = set(&["127.0.0.1:8080"]);
        assert_eq!(hit(&v4, "::ffff:127.0.0.1", 8080, Protocol::Tcp), Some(0));
        // And a rule written in mapped form covers the plain IPv4 address.
        let mapped = set(&["[::ffff:10.0.0.0/104]:80"]);
        assert_eq!(hit(&mapped, "10.9.9.9", 80, Protocol::Tcp), Some(0));
        assert_eq!(hit(&mapped, "11.0.0.1", 80, Protocol::Tcp), None);
    }

    #[test]
    fn port_ranges_and_protocols() {
        let s = set(&["10.0.0.1:1000-2000", "udp://10.0.0.2:53", "tcp://10.0.0.3"]);
        assert_eq!(hit(&s, "10.0.0.1", 999, Protocol::Tcp), None);
        assert_eq!(hit(&s, "10.0.0.1", 1000, Protocol::Tcp), Some(0));
        assert_eq!(hit(&s, "10.0.0.1", 2000, Protocol::Udp), Some(0));
        assert_eq!(hit(&s, "10.0.0.1", 2001, Protocol::Tcp), None);
        assert_eq!(hit(&s, "10.0.0.2", 53, Protocol::Udp), Some(1));
        assert_eq!(hit(&s, "10.0.0.2", 53, Protocol::Tcp), None);
        assert_eq!(hit(&s, "10.0.0.3", 65535, Protocol::Tcp), Some(2));
        assert_eq!(hit(&s, "10.0.0.3", 1, Protocol::Udp), None);
    }

    #[test]
    fn most_specific_prefix_first_and_accept_filter() {
        let s = set(&["10.0.0.0/8", "10.1.0.0/16", "10.1.2.3"]);
        assert_eq!(hit(&s, "10.1.2.3", 1, Protocol::Tcp), Some(2));
        assert_eq!(hit(&s, "10.1.9.9", 1, Protocol::Tcp), Some(1));
        let skip_two = s
            .nets
            .find("10.1.2.3".parse().unwrap(), 1, Protocol::Tcp, |v| v != 2);
        assert_eq!(skip_two, Some(1));
    }

    #[test]
    fn host_names_exact_and_subdomains() {
        let s = set(&[
            "api.example.com:443",
            "*.corp.example:*",
            "udp://dns.example:53",
        ]);
        let h = |n: &str, p, pr| s.hosts.find(n, p, pr, |_| true);
        assert_eq!(h("api.example.com", 443, Protocol::Tcp), Some(0));
        assert_eq!(h("api.example.com", 80, Protocol::Tcp), None);
        assert_eq!(h("example.com", 443, Protocol::Tcp), None);
        assert_eq!(h("git.corp.example", 22, Protocol::Tcp), Some(1));
        assert_eq!(h("a.b.corp.example", 22, Protocol::Tcp), Some(1));
        assert_eq!(
            h("corp.example", 22, Protocol::Tcp),
            None,
            "apex is not a subdomain"
        );
        assert_eq!(h("evilcorp.example", 22, Protocol::Tcp), None);
        assert_eq!(h("dns.example", 53, Protocol::Udp), Some(2));
        assert_eq!(h("dns.example", 53, Protocol::Tcp), None);
    }

    proptest! {
        #[test]
        fn v4_prefix_table_agrees_with_ipnet(
            addr in any::<u32>(), len in 0u8..=32, probe in any::<u32>(), port in any::<u16>(),
        ) {
            let net = ipnet::Ipv4Net::new(Ipv4Addr::from(addr), len).unwrap().trunc();
            let mut t = NetTable::default();
            t.insert(IpNet::V4(net), PortRule { ports: PortRange::ANY, protocol: None, value: () });
            let probe = Ipv4Addr::from(probe);
            prop_assert_eq!(
                t.find(IpAddr::V4(probe), port, Protocol::Tcp, |()| true).is_some(),
                net.contains(&probe)
            );
            // The network's own first and last addresses are inside.
            prop_assert!(t.find(IpAddr::V4(net.network()), port, Protocol::Udp, |()| true).is_some());
            prop_assert!(t.find(IpAddr::V4(net.broadcast()), port, Protocol::Udp, |()| true).is_some());
        }

        #[test]
        fn v6_prefix_table_agrees_with_ipnet(
            addr in any::<u128>(), len in 0u8..=128, probe in any::<u128>(),
        ) {
            let net = ipnet::Ipv6Net::new(Ipv6Addr::from(addr), len).unwrap().trunc();
            // Mapped prefixes are folded into IPv4; covered by their own test.
            prop_assume!(len < 96 || net.network().to_ipv4_mapped().is_none());
            let mut t = NetTable::default();
            t.insert(IpNet::V6(net), PortRule { ports: PortRange::ANY, protocol: None, value: () });
            let probe = Ipv6Addr::from(probe);
            prop_assume!(probe.to_ipv4_mapped().is_none());
            prop_assert_eq!(
                t.find(IpAddr::V6(probe), 1, Protocol::Tcp, |()| true).is_some(),
                net.contains(&probe)
            );
        }

        #[test]
        fn port_range_contains_exactly(lo in 1u16..=u16::MAX, span in 0u16..2000, port in any::<u16>()) {
            let hi = lo.saturating_add(span);
            let r: PortRange = format!("{lo}-{hi}").parse().unwrap();
            prop_assert_eq!(r.contains(port), (lo..=hi).contains(&port));
        }
    }
}
