//! DNS as the pipeline sees it: the queries watched sockets send, and
//! which answers may be believed.

use std::net::SocketAddr;

use vigil_common::DnsRecord;

use super::Pipeline;
use crate::event::Event;
use crate::live::Loaded;
use crate::scope::dns::{DnsQuery, Flow, QUERY_TIMEOUT, Rejection, parse_query, parse_response};
use crate::scope::{AgentId, Scope};
use crate::sensors::decode;

impl Pipeline {
    /// Notes a DNS datagram a watched socket sent: a query, for the answer
    /// to come, or an answer a process of an agent served. Returns the
    /// query, which is an event of its own (its name is judged too).
    pub(super) fn on_sent(&mut self, loaded: &Loaded, r: &DnsRecord) -> Option<DnsQuery> {
        let payload = &r.payload[..usize::from(r.len).min(r.payload.len())];
        let src = SocketAddr::new(decode::ip(r.family, &r.src_addr), r.src_port);
        let dst = SocketAddr::new(decode::ip(r.family, &r.dst_addr), r.dst_port);
        let ts = r.header.ts_ns;
        if r.dst_port == 53
            && let Ok(q) = parse_query(payload)
        {
            let flow = Flow {
                cgroup_id: r.header.cgroup_id,
                client: src,
                server: dst,
            };
            self.queries.sent(flow, q.id, &q.name, ts);
            return Some(q);
        } else if r.src_port == 53
            && let Ok(a) = parse_response(payload)
            && self.attribution(loaded, r.header.cgroup_id).agent.is_some()
        {
            // The receiving socket's cgroup is not known here.
            let flow = Flow {
                cgroup_id: 0,
                client: dst,
                server: src,
            };
            self.served.sent(flow, a.id, &a.name, ts);
        }
        None
    }

    /// Whether a DNS answer of `agent` may be believed: it comes from a
    /// resolver the agent's `systems` allow, no agent's process sent it, and
    /// it answers a query its socket sent there (same id and name, within
    /// [`QUERY_TIMEOUT`]), which it uses up.
    pub(super) fn vet_answer(
        &mut self,
        scope: &Scope,
        agent: AgentId,
        event: &Event,
        d: &crate::event::DnsAnswer,
    ) -> Result<(), Rejection> {
        if !scope.allows_resolver(agent, d.server, d.server_port) {
            return Err(Rejection::UnknownResolver);
        }
        let (client, server) = (
            SocketAddr::new(d.client, d.client_port),
            SocketAddr::new(d.server, d.server_port),
        );
        let served = Flow {
            cgroup_id: 0,
            client,
            server,
        };
        if self
            .served
            .answer(served, d.id, &d.name, event.kernel_ts_ns)
            .is_ok()
        {
            return Err(Rejection::ServedByAgent);
        }
        let flow = Flow {
            cgroup_id: event.identity.cgroup_id,
            client,
            server,
        };
        self.queries.answer(flow, d.id, &d.name, event.kernel_ts_ns)
    }
}

/// The words of a [`Rejection`] of a DNS answer `d` received by `agent`.
/// The receiving socket and the message id are in the offending event, so
/// that a stream of forged answers folds into one report.
pub(super) fn rejection_reason(why: Rejection, d: &crate::event::DnsAnswer, agent: &str) -> String {
    let server = SocketAddr::new(d.server, d.server_port);
    let what = format!("dns answer for {} from {server}", d.name);
    match why {
        Rejection::UnknownResolver => {
            format!("{what} ignored: {server} is not a resolver in systems of {agent}")
        }
        Rejection::ServedByAgent => {
            format!("{what} ignored: a process of an agent sent it, not the resolver")
        }
        Rejection::NoQuery => {
            format!("{what} ignored: the receiving socket of {agent} sent {server} no query")
        }
        Rejection::Mismatch => format!(
            "{what} ignored: its id and name match no query the receiving socket of {agent} sent {server}"
        ),
        Rejection::Late => format!(
            "{what} ignored: it came more than {} s after its query",
            QUERY_TIMEOUT.as_secs()
        ),
    }
}
