//! Host names in `systems`: which addresses a name stands for.
//!
//! Two sources, both in [`DnsCache`]: the DNS answers an agent's own
//! processes received (per agent, for their TTL), and a node-wide table that
//! [`spawn_resolver`] fills by resolving every configured name periodically.
//! A connect is in scope for a host rule when the destination address was
//! learnt for an allowed name from either source and has not expired.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use crate::config::{canonical_ip, normalize_host};

use super::Scope;

mod labels;
mod packet;
mod queries;

pub use labels::{LabelLimits, Suspicion, entropy, suspicious_label};
pub use packet::{DnsError, DnsQuery, DnsResponse, parse_query, parse_response};
pub use queries::{Flow, PendingQueries, Rejection};

/// Answers with shorter TTLs are kept this long: runtimes and stub resolvers
/// cache on their own (the JVM for 30 s), so a connect may follow well after
/// a 0 s TTL expired.
pub const MIN_TTL: Duration = Duration::from_secs(30);
/// Longer TTLs are cut to this, so a stale mapping cannot live for weeks.
pub const MAX_TTL: Duration = Duration::from_hours(24);
/// Addresses kept per table (one per agent, one node-wide).
pub const MAX_ADDRESSES: usize = 65_536;
/// Time allowed for one resolution in the periodic resolver.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long after its query an answer is accepted. glibc waits 5 s per
/// attempt by default and other stubs less; an answer later than this is
/// one its client has given up on.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Queries awaiting their answer, node-wide. When full, expired ones go
/// first, then the oldest. An entry takes some 200 bytes plus its name (at
/// most 255), so a full table stays under 2 MiB.
pub const MAX_PENDING_QUERIES: usize = 4096;

#[derive(Debug)]
struct Learnt {
    name: Arc<str>,
    expires: Instant,
}

#[derive(Debug, Default)]
struct Table {
    by_ip: HashMap<IpAddr, Vec<Learnt>>,
}

impl Table {
    fn record(&mut self, name: &Arc<str>, ip: IpAddr, expires: Instant, now: Instant) {
        let ip = canonical_ip(ip);
        if !self.by_ip.contains_key(&ip) && self.by_ip.len() >= MAX_ADDRESSES {
            self.purge(now);
            if self.by_ip.len() >= MAX_ADDRESSES {
                // Still full of live entries: drop one rather than grow without bound.
                if let Some(k) = self.by_ip.keys().next().copied() {
                    self.by_ip.remove(&k);
                }
            }
        }
        let names = self.by_ip.entry(ip).or_default();
        match names.iter_mut().find(|l| *l.name == **name) {
            Some(l) => l.expires = l.expires.max(expires),
            None => names.push(Learnt {
                name: Arc::clone(name),
                expires,
            }),
        }
    }

    fn purge(&mut self, now: Instant) {
        self.by_ip.retain(|_, names| {
            names.retain(|l| l.expires > now);
            !names.is_empty()
        });
    }

    fn any(&self, ip: IpAddr, now: Instant, f: &mut impl FnMut(&str) -> bool) -> bool {
        self.by_ip
            .get(&ip)
            .is_some_and(|names| names.iter().any(|l| l.expires > now && f(&l.name)))
    }
}

#[derive(Debug, Default)]
struct Tables {
    agents: HashMap<Box<str>, Table>,
    node: Table,
}

/// Addresses learnt for host names, per agent and node-wide.
#[derive(Debug, Default)]
pub struct DnsCache {
    tables: RwLock<Tables>,
}

fn clamp_ttl(ttl: u32) -> Duration {
    Duration::from_secs(u64::from(ttl)).clamp(MIN_TTL, MAX_TTL)
}

impl DnsCache {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a DNS answer received by a process of `agent`.
    pub fn record(&self, agent: &str, name: &str, addrs: &[IpAddr], ttl: u32, now: Instant) {
        if addrs.is_empty() {
            return;
        }
        let name: Arc<str> = normalize_host(name).into();
        let expires = now + clamp_ttl(ttl);
        let mut t = self.tables.write().unwrap_or_else(PoisonError::into_inner);
        let table = match t.agents.get_mut(agent) {
            Some(table) => table,
            None => t.agents.entry(agent.into()).or_default(),
        };
        for &ip in addrs {
            table.record(&name, ip, expires, now);
        }
    }

    /// Records addresses found by the node's own resolver, valid for `valid_for`.
    pub fn record_resolved(&self, name: &str, addrs: &[IpAddr], valid_for: Duration, now: Instant) {
        let name: Arc<str> = normalize_host(name).into();
        let mut t = self.tables.write().unwrap_or_else(PoisonError::into_inner);
        for &ip in addrs {
            t.node.record(&name, ip, now + valid_for, now);
        }
    }

    /// True when `f` holds for some unexpired name that `ip` was learnt for,
    /// by `agent` or node-wide. Does not allocate.
    pub fn any_name(
        &self,
        agent: &str,
        ip: IpAddr,
        now: Instant,
        mut f: impl FnMut(&str) -> bool,
    ) -> bool {
        let ip = canonical_ip(ip);
        let t = self.tables.read().unwrap_or_else(PoisonError::into_inner);
        t.agents
            .get(agent)
            .is_some_and(|table| table.any(ip, now, &mut f))
            || t.node.any(ip, now, &mut f)
    }

    /// The unexpired names `ip` is known under, for messages.
    #[must_use]
    pub fn names_for(&self, agent: &str, ip: IpAddr, now: Instant) -> Vec<String> {
        let mut names = Vec::new();
        self.any_name(agent, ip, now, |n| {
            if !names.iter().any(|m| m == n) {
                names.push(n.to_owned());
            }
            false
        });
        names
    }

    /// Drops expired entries (call now and then; lookups ignore them anyway).
    pub fn purge(&self, now: Instant) {
        let mut t = self.tables.write().unwrap_or_else(PoisonError::into_inner);
        t.node.purge(now);
        t.agents.retain(|_, table| {
            table.purge(now);
            !table.by_ip.is_empty()
        });
    }

    /// Number of (address, name) pairs held, expired or not.
    #[must_use]
    pub fn len(&self) -> usize {
        let t = self.tables.read().unwrap_or_else(PoisonError::into_inner);
        let count = |table: &Table| table.by_ip.values().map(Vec::len).sum::<usize>();
        count(&t.node) + t.agents.values().map(count).sum::<usize>()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Resolves `names` once and records them node-wide for `valid_for`.
/// Returns how many names resolved.
pub async fn resolve_once(dns: &DnsCache, names: &[String], valid_for: Duration) -> usize {
    let mut set = tokio::task::JoinSet::new();
    for name in names {
        let name = name.clone();
        set.spawn(async move {
            let found = tokio::time::timeout(RESOLVE_TIMEOUT, async {
                tokio::net::lookup_host((name.as_str(), 0))
                    .await
                    .map(|addrs| addrs.map(|a| a.ip()).collect::<Vec<IpAddr>>())
            })
            .await;
            (name, found)
        });
    }
    let mut ok = 0;
    while let Some(joined) = set.join_next().await {
        let Ok((name, found)) = joined else { continue };
        match found {
            Ok(Ok(addrs)) => {
                dns.record_resolved(&name, &addrs, valid_for, Instant::now());
                ok += 1;
            }
            Ok(Err(e)) => tracing::debug!(%name, error = %e, "cannot resolve configured host name"),
            Err(_) => tracing::debug!(%name, "resolving configured host name timed out"),
        }
    }
    ok
}

/// Resolves the host names of the current scope every `dns_refresh_seconds`,
/// reading the scope afresh each round so that a reload is followed. An
/// entry stays valid for two rounds, so one failed round changes nothing.
pub fn spawn_resolver<F>(dns: Arc<DnsCache>, current: F) -> tokio::task::JoinHandle<()>
where
    F: Fn() -> Arc<Scope> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            let scope = current();
            let every = scope.dns_refresh();
            let names = scope.host_names().to_vec();
            drop(scope);
            if !names.is_empty() {
                let ok = resolve_once(&dns, &names, every * 2).await;
                tracing::debug!(
                    resolved = ok,
                    of = names.len(),
                    "refreshed configured host names"
                );
            }
            dns.purge(Instant::now());
            tokio::time::sleep(every).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use std::net::{Ipv4Addr, SocketAddr};

    use super::*;

    /// Builds a response the way servers do: question, then answers whose
    /// owner is a compression pointer to the question name.
    fn response(name: &str, answers: &[(IpAddr, u32)], flags: u16) -> Vec<u8> {
        let mut b = vec![0x12, 0x34];
        b.extend_from_slice(&(0x8000 | flags).to_be_bytes());
        b.extend_from_slice(&1u16.to_be_bytes());
        b.extend_from_slice(&(answers.len() as u16).to_be_bytes());
        b.extend_from_slice(&[0, 0, 0, 0]);
        for label in name.split('.').filter(|l| !l.is_empty()) {
            b.push(label.len() as u8);
            b.extend_from_slice(label.as_bytes());
        }
        b.push(0);
        b.extend_from_slice(&[0, 1, 0, 1]);
        for (ip, ttl) in answers {
            b.extend_from_slice(&[0xC0, 12]);
            let (t, data): (u16, Vec<u8>) = match ip {
                IpAddr::V4(a) => (1, a.octets().to_vec()),
                IpAddr::V6(a) => (28, a.octets().to_vec()),
            };
            b.extend_from_slice(&t.to_be_bytes());
            b.extend_from_slice(&1u16.to_be_bytes());
            b.extend_from_slice(&ttl.to_be_bytes());
            b.extend_from_slice(&(data.len() as u16).to_be_bytes());
            b.extend_from_slice(&data);
        }
        b
    }

    #[test]
    fn parses_a_and_aaaa_with_min_ttl() {
        let v4: IpAddr = "93.184.216.34".parse().unwrap();
        let v6: IpAddr = "2606:2800:220:1::1".parse().unwrap();
        let msg = response("API.Example.com", &[(v4, 300), (v6, 60)], 0);
        let r = parse_response(&msg).unwrap();
        assert_eq!(r.id, 0x1234);
        assert_eq!(r.name, "api.example.com");
        assert_eq!(r.addresses, vec![v4, v6]);
        assert_eq!(r.ttl, 60);
        assert!(!r.incomplete);
    }

    #[test]
    fn skips_cname_and_keeps_question_name() {
        // Hand-built: question www.x, answer CNAME www.x -> y.x, then A for y.x.
        let mut b = vec![0, 1, 0x81, 0x80, 0, 1, 0, 2, 0, 0, 0, 0];
        b.extend_from_slice(b"\x03www\x01x\x00\x00\x01\x00\x01");
        b.extend_from_slice(&[0xC0, 12, 0, 5, 0, 1, 0, 0, 0, 10, 0, 4]);
        b.extend_from_slice(b"\x01y\xC0\x10");
        let cname_target = 12 + 7 + 4 + 12; // offset of "\x01y" in the CNAME data
        b.extend_from_slice(&[
            0xC0,
            cname_target as u8,
            0,
            1,
            0,
            1,
            0,
            0,
            0,
            20,
            0,
            4,
            10,
            0,
            0,
            7,
        ]);
        let r = parse_response(&b).unwrap();
        assert_eq!(r.name, "www.x");
        assert_eq!(r.addresses, vec!["10.0.0.7".parse::<IpAddr>().unwrap()]);
        assert_eq!(r.ttl, 20);
    }

    #[test]
    fn truncated_payload_keeps_complete_answers() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let msg = response("t.example", &[(a, 5), (b, 5)], 0);
        let cut = &msg[..msg.len() - 2];
        let r = parse_response(cut).unwrap();
        assert_eq!(r.addresses, vec![a]);
        assert!(r.incomplete);
        let tc = parse_response(&response("t.example", &[(a, 5)], 0x0200)).unwrap();
        assert!(tc.incomplete);
    }

    #[test]
    fn rejects_queries_loops_and_short_input() {
        assert_eq!(parse_response(&[0; 5]), Err(DnsError::TooShort(5)));
        let mut q = response("a.b", &[], 0);
        q[2] &= 0x7F;
        assert_eq!(parse_response(&q), Err(DnsError::NotResponse));
        // Question name that is a pointer to itself.
        let mut looped = vec![0, 1, 0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        looped.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1]);
        assert_eq!(parse_response(&looped), Err(DnsError::BadPointer(12)));
        let mut no_q = response("a.b", &[], 0);
        no_q[5] = 0;
        assert_eq!(parse_response(&no_q), Err(DnsError::NoQuestion));
    }

    #[test]
    fn odd_label_bytes_are_escaped() {
        let mut b = vec![0, 1, 0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        b.extend_from_slice(b"\x03a.b\x01C\x00\x00\x01\x00\x01");
        assert_eq!(parse_response(&b).unwrap().name, "a\\046b.c");
    }

    #[test]
    fn top_bit_ttl_is_zero() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let r = parse_response(&response("x.y", &[(a, 0x8000_0001)], 0)).unwrap();
        assert_eq!(r.ttl, 0);
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_response(&bytes);
        }

        #[test]
        fn random_bytes_after_a_valid_header_never_panic(
            tail in proptest::collection::vec(any::<u8>(), 0..600),
            counts in any::<[u8; 8]>(),
        ) {
            let mut b = vec![0, 1, 0x81, 0x80];
            b.extend_from_slice(&counts);
            b.extend_from_slice(&tail);
            if let Ok(r) = parse_response(&b) {
                prop_assert!(r.name.len() <= 255 * 4);
            }
        }

        #[test]
        fn generated_responses_round_trip_and_any_cut_is_safe(
            labels in proptest::collection::vec("[a-z0-9-]{1,20}", 1..5),
            addrs in proptest::collection::vec(any::<u32>(), 0..20),
            ttls in proptest::collection::vec(0u32..100_000, 20),
            cut in any::<prop::sample::Index>(),
        ) {
            let name = labels.join(".");
            let answers: Vec<(IpAddr, u32)> = addrs
                .iter()
                .zip(&ttls)
                .map(|(a, t)| (IpAddr::V4(Ipv4Addr::from(*a)), *t))
                .collect();
            let msg = response(&name, &answers, 0);
            let r = parse_response(&msg).unwrap();
            prop_assert_eq!(&r.name, &name);
            prop_assert_eq!(r.addresses.len(), answers.len());
            prop_assert_eq!(r.ttl, answers.iter().map(|a| a.1).min().unwrap_or(0));
            let at = cut.index(msg.len() + 1);
            if let Ok(partial) = parse_response(&msg[..at]) {
                prop_assert!(partial.addresses.len() <= answers.len());
                prop_assert_eq!(&partial.addresses[..], &r.addresses[..partial.addresses.len()]);
            }
        }
    }

    fn query(name: &str, id: u16) -> Vec<u8> {
        let mut q = response(name, &[], 0x0100);
        q[0..2].copy_from_slice(&id.to_be_bytes());
        q[2] &= 0x7F;
        q
    }

    #[test]
    fn parses_queries_and_refuses_responses() {
        assert_eq!(
            parse_query(&query("Api.Example.COM", 0xbeef)),
            Ok(DnsQuery {
                id: 0xbeef,
                name: "api.example.com".into(),
                qtype: 1,
            })
        );
        let r = response("a.b", &[], 0);
        assert_eq!(parse_query(&r), Err(DnsError::NotQuery));
        assert_eq!(parse_query(&[0; 11]), Err(DnsError::TooShort(11)));
        let mut no_q = query("a.b", 1);
        no_q[5] = 0;
        assert_eq!(parse_query(&no_q), Err(DnsError::NoQuestion));
    }

    /// A query's name and its answer's name are read alike, whatever the case.
    #[test]
    fn query_and_answer_names_agree() {
        let q = parse_query(&query("WwW.Example.Org", 7)).unwrap();
        let a = parse_response(&response(
            "www.EXAMPLE.org",
            &[("10.0.0.1".parse().unwrap(), 5)],
            0,
        ))
        .unwrap();
        assert_eq!(q.name, a.name);
    }

    fn flow(cgroup_id: u64, client: &str, server: &str) -> Flow {
        Flow {
            cgroup_id,
            client: client.parse().unwrap(),
            server: server.parse().unwrap(),
        }
    }

    const S: u64 = 1_000_000_000;

    #[test]
    fn an_answer_must_match_a_query_of_its_socket() {
        let mut p = PendingQueries::new(Duration::from_secs(10), 100);
        let f = flow(7, "127.0.0.1:40000", "127.0.0.53:53");
        p.sent(f, 0x1234, "api.example.com", 100 * S);
        // Another socket, server, cgroup, id or name: not its answer.
        for other in [
            flow(7, "127.0.0.1:40001", "127.0.0.53:53"),
            flow(7, "127.0.0.2:40000", "127.0.0.53:53"),
            flow(7, "127.0.0.1:40000", "127.0.0.2:53"),
            flow(7, "127.0.0.1:40000", "127.0.0.53:5353"),
            flow(8, "127.0.0.1:40000", "127.0.0.53:53"),
        ] {
            assert_eq!(
                p.answer(other, 0x1234, "api.example.com", 101 * S),
                Err(Rejection::NoQuery),
                "{other:?}"
            );
        }
        assert_eq!(
            p.answer(f, 0x1235, "api.example.com", 101 * S),
            Err(Rejection::Mismatch)
        );
        assert_eq!(
            p.answer(f, 0x1234, "evil.example.com", 101 * S),
            Err(Rejection::Mismatch)
        );
        assert_eq!(p.answer(f, 0x1234, "API.example.COM", 101 * S), Ok(()));
        // Used up: a second answer to the same query is not believed.
        assert_eq!(
            p.answer(f, 0x1234, "api.example.com", 101 * S),
            Err(Rejection::NoQuery)
        );
        assert!(p.is_empty());
    }

    #[test]
    fn each_copy_of_a_query_admits_one_answer() {
        let mut p = PendingQueries::new(Duration::from_secs(10), 100);
        let f = flow(1, "[::1]:5000", "[::1]:53");
        p.sent(f, 9, "x.y", S);
        p.sent(f, 9, "x.y", 6 * S);
        assert_eq!(p.len(), 1);
        assert_eq!(p.answer(f, 9, "x.y", 7 * S), Ok(()));
        assert_eq!(p.answer(f, 9, "x.y", 7 * S), Ok(()));
        assert_eq!(p.answer(f, 9, "x.y", 7 * S), Err(Rejection::NoQuery));
    }

    #[test]
    fn a_late_answer_is_refused_and_ends_its_query() {
        let mut p = PendingQueries::new(Duration::from_secs(10), 100);
        let f = flow(1, "127.0.0.1:5000", "127.0.0.53:53");
        p.sent(f, 1, "a.b", S);
        p.sent(f, 2, "a.b", S);
        assert_eq!(p.answer(f, 1, "a.b", 11 * S), Ok(()), "at the timeout");
        assert_eq!(p.answer(f, 2, "a.b", 11 * S + 1), Err(Rejection::Late));
        assert_eq!(p.answer(f, 2, "a.b", 11 * S + 1), Err(Rejection::NoQuery));
        p.sent(f, 3, "a.b", 20 * S);
        p.expire(31 * S);
        assert!(p.is_empty());
        assert_eq!(p.answer(f, 3, "a.b", 31 * S), Err(Rejection::NoQuery));
    }

    #[test]
    fn pending_queries_are_bounded() {
        let mut p = PendingQueries::new(Duration::from_secs(10), 3);
        let f = |port: u16| Flow {
            cgroup_id: 1,
            client: SocketAddr::from(([127, 0, 0, 1], port)),
            server: "127.0.0.53:53".parse().unwrap(),
        };
        for i in 0..3u16 {
            p.sent(f(i), i, "n.example", u64::from(i) * S);
        }
        // Full of live queries: the oldest goes.
        p.sent(f(3), 3, "n.example", 3 * S);
        assert_eq!(p.len(), 3);
        assert_eq!(
            p.answer(f(0), 0, "n.example", 4 * S),
            Err(Rejection::NoQuery)
        );
        // Expired ones go before any live one.
        p.sent(f(4), 4, "n.example", 12 * S);
        assert_eq!(p.len(), 3);
        assert_eq!(p.answer(f(3), 3, "n.example", 12 * S), Ok(()));
        assert_eq!(p.answer(f(4), 4, "n.example", 12 * S), Ok(()));
        for i in 0..100u16 {
            p.sent(f(100 + i), i, "flood.example", 20 * S);
        }
        assert_eq!(p.len(), 3);
        assert!(p.flows.len() <= 3);
    }

    #[test]
    fn cache_is_per_agent_and_expires() {
        let dns = DnsCache::new();
        let now = Instant::now();
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        dns.record("a", "API.example.com.", &[ip], 120, now);
        let has =
            |agent: &str, at: Instant| dns.any_name(agent, ip, at, |n| n == "api.example.com");
        assert!(has("a", now));
        assert!(!has("b", now), "another agent's answers do not count");
        assert!(has("a", now + Duration::from_secs(119)));
        assert!(!has("a", now + Duration::from_mins(2)));
        // Short TTLs are raised to MIN_TTL.
        dns.record("a", "short.example", &[ip], 0, now);
        assert!(dns.any_name(
            "a",
            ip,
            now + MIN_TTL.saturating_sub(Duration::from_secs(1)),
            |n| n == "short.example"
        ));
        assert_eq!(
            dns.names_for("a", ip, now),
            vec!["api.example.com", "short.example"]
        );
        dns.purge(now + MAX_TTL);
        assert!(dns.is_empty());
    }

    #[test]
    fn mapped_addresses_and_node_table() {
        let dns = DnsCache::new();
        let now = Instant::now();
        dns.record_resolved(
            "db.internal",
            &["10.1.1.1".parse().unwrap()],
            Duration::from_secs(10),
            now,
        );
        let mapped: IpAddr = "::ffff:10.1.1.1".parse().unwrap();
        assert!(dns.any_name("any-agent", mapped, now, |n| n == "db.internal"));
        assert!(!dns.any_name("any-agent", mapped, now + Duration::from_secs(10), |_| true));
    }

    #[tokio::test]
    async fn resolver_resolves_localhost() {
        let dns = DnsCache::new();
        let ok = resolve_once(&dns, &["localhost".to_owned()], Duration::from_mins(1)).await;
        assert_eq!(ok, 1);
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let lo6: IpAddr = "::1".parse().unwrap();
        let now = Instant::now();
        assert!(
            dns.any_name("x", lo, now, |n| n == "localhost")
                || dns.any_name("x", lo6, now, |n| n == "localhost")
        );
    }
}
