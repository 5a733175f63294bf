//! The DNS queries watched sockets sent, awaiting their answers: an answer
//! is believed only when it matches one, and uses it up.

use std::collections::HashMap;
use std::net::SocketAddr;

use std::time::Duration;

use super::{MAX_PENDING_QUERIES, QUERY_TIMEOUT};

/// One socket's exchange with one server: the query's cgroup, source and
/// destination. An answer belongs to it when it comes from `server` to
/// `client` in the same cgroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Flow {
    pub cgroup_id: u64,
    pub client: SocketAddr,
    pub server: SocketAddr,
}

/// Why a DNS answer was not believed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// Its source is not a resolver the agent's `systems` allow.
    UnknownResolver,
    /// A watched socket of an agent sent it (from port 53): an agent's own
    /// process answered, on an address the resolver does not hold.
    ServedByAgent,
    /// That socket sent that server no query awaiting an answer.
    NoQuery,
    /// That socket has queries to that server, none with the answer's id
    /// and question name.
    Mismatch,
    /// It matches a query sent longer than the timeout before it.
    Late,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct QueryKey {
    flow: Flow,
    id: u16,
    name: Box<str>,
}

#[derive(Clone, Copy, Debug)]
struct Pending {
    /// Boot-clock time of the latest copy sent.
    sent_ns: u64,
    /// Copies sent and not yet answered (a stub resends on timeout).
    unanswered: u32,
}

/// DNS queries seen leaving watched sockets, awaiting their answers. Times
/// are the kernel's boot-clock stamps of the records, so the daemon's own
/// delays do not count against an answer.
#[derive(Debug)]
pub struct PendingQueries {
    timeout_ns: u64,
    capacity: usize,
    queries: HashMap<QueryKey, Pending>,
    /// Pending queries per flow, to tell a mismatch from no query at all.
    pub(super) flows: HashMap<Flow, u32>,
}

impl Default for PendingQueries {
    fn default() -> Self {
        Self::new(QUERY_TIMEOUT, MAX_PENDING_QUERIES)
    }
}

impl PendingQueries {
    #[must_use]
    pub fn new(timeout: Duration, capacity: usize) -> Self {
        Self {
            timeout_ns: timeout.as_nanos().try_into().unwrap_or(u64::MAX),
            capacity: capacity.max(1),
            queries: HashMap::new(),
            flows: HashMap::new(),
        }
    }

    /// Queries held, expired or not.
    #[must_use]
    pub fn len(&self) -> usize {
        self.queries.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.queries.is_empty()
    }

    /// Notes a query for `name` (compared without case) with `id` sent on
    /// `flow` at `sent_ns`.
    pub fn sent(&mut self, flow: Flow, id: u16, name: &str, sent_ns: u64) {
        let key = QueryKey {
            flow,
            id,
            name: name.to_ascii_lowercase().into(),
        };
        if let Some(p) = self.queries.get_mut(&key) {
            p.sent_ns = p.sent_ns.max(sent_ns);
            p.unanswered = p.unanswered.saturating_add(1);
            return;
        }
        if self.queries.len() >= self.capacity {
            self.expire(sent_ns);
        }
        if self.queries.len() >= self.capacity
            && let Some(oldest) = self
                .queries
                .iter()
                .min_by_key(|(_, p)| p.sent_ns)
                .map(|(k, _)| k.clone())
        {
            self.remove(&oldest);
        }
        *self.flows.entry(flow).or_default() += 1;
        self.queries.insert(
            key,
            Pending {
                sent_ns,
                unanswered: 1,
            },
        );
    }

    /// Matches an answer for `name` with `id` that arrived on `flow` (as the
    /// query's: from `flow.server` to `flow.client`) at `received_ns`. A
    /// matched query is used up: each copy sent admits one answer.
    pub fn answer(
        &mut self,
        flow: Flow,
        id: u16,
        name: &str,
        received_ns: u64,
    ) -> Result<(), Rejection> {
        let key = QueryKey {
            flow,
            id,
            name: name.to_ascii_lowercase().into(),
        };
        let Some(p) = self.queries.get_mut(&key) else {
            return Err(if self.flows.contains_key(&flow) {
                Rejection::Mismatch
            } else {
                Rejection::NoQuery
            });
        };
        if received_ns.saturating_sub(p.sent_ns) > self.timeout_ns {
            self.remove(&key);
            return Err(Rejection::Late);
        }
        p.unanswered -= 1;
        if p.unanswered == 0 {
            self.remove(&key);
        }
        Ok(())
    }

    /// Drops queries whose timeout passed by `now_ns`.
    pub fn expire(&mut self, now_ns: u64) {
        let timeout = self.timeout_ns;
        let flows = &mut self.flows;
        self.queries.retain(|k, p| {
            let live = now_ns.saturating_sub(p.sent_ns) <= timeout;
            if !live {
                release(flows, &k.flow);
            }
            live
        });
    }

    fn remove(&mut self, key: &QueryKey) {
        if self.queries.remove(key).is_some() {
            release(&mut self.flows, &key.flow);
        }
    }
}

fn release(flows: &mut HashMap<Flow, u32>, flow: &Flow) {
    if let Some(n) = flows.get_mut(flow) {
        *n -= 1;
        if *n == 0 {
            flows.remove(flow);
        }
    }
}
