//! Per-agent counters of what was journaled, for `ListAgents` and
//! `GetAgent`: kept by the publisher as each batch is committed.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use crate::event::{Event, Payload};

/// Per-agent counters, kept from the events as they are journaled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub events: u64,
    pub anomalies: u64,
    pub blocked: u64,
    pub revocations: u64,
    pub sessions_started: u64,
}

/// Counters of every agent seen since the daemon started.
#[derive(Debug, Default)]
pub struct AgentCounters {
    map: Mutex<HashMap<String, Counters>>,
}

impl AgentCounters {
    /// Counts a journaled batch.
    pub fn count(&self, events: &[Event]) {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        for e in events {
            let agent = match &e.payload {
                Payload::Revocation(r) => Some(r.agent.as_str()),
                _ => e.identity.agent.as_deref(),
            };
            let Some(agent) = agent else { continue };
            let c = map.entry(agent.to_owned()).or_default();
            match &e.payload {
                Payload::Anomaly(a) => {
                    c.anomalies += 1;
                    if a.action == "blocked" {
                        c.blocked += 1;
                    }
                }
                Payload::Revocation(_) => c.revocations += 1,
                Payload::SessionStart(_) => c.sessions_started += 1,
                Payload::Connect(x) => {
                    c.events += 1;
                    if x.blocked {
                        c.blocked += 1;
                    }
                }
                Payload::Restore(_)
                | Payload::TaskApproved(_)
                | Payload::TaskEnded(_)
                | Payload::ConfigChange(_)
                | Payload::Loss(_)
                | Payload::SensorTampered(_)
                | Payload::Gap(_) => {}
                _ => c.events += 1,
            }
        }
    }

    #[must_use]
    pub fn get(&self, agent: &str) -> Counters {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(agent)
            .copied()
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Anomaly, AnomalyKind, Connect, Identity, Protocol, Revocation, Severity};

    fn of(agent: &str, payload: Payload) -> Event {
        Event::daemon(
            Identity {
                agent: Some(agent.into()),
                ..Identity::default()
            },
            payload,
        )
    }

    fn connect(blocked: bool) -> Payload {
        Payload::Connect(Connect {
            protocol: Protocol::Tcp,
            address: "10.0.0.1".parse().unwrap(),
            port: 443,
            op: "connect".into(),
            blocked,
        })
    }

    #[test]
    fn counts_per_agent() {
        let c = AgentCounters::default();
        let anomaly = |action: &str| {
            Payload::Anomaly(Anomaly {
                anomaly: AnomalyKind::UnapprovedSystem,
                severity: Severity::High,
                reason: "r".into(),
                identity_name: None,
                count: 1,
                action: action.into(),
                offending: Box::new(of("a", connect(false))),
            })
        };
        c.count(&[
            of("a", connect(false)),
            of("a", connect(true)),
            of("b", connect(false)),
            of("a", anomaly("observed")),
            of("a", anomaly("blocked")),
            Event::daemon(
                Identity::default(),
                Payload::Revocation(Revocation {
                    agent: "a".into(),
                    session: None,
                    reason: "r".into(),
                    by: "x".into(),
                    latency_ns: None,
                }),
            ),
        ]);
        assert_eq!(
            c.get("a"),
            Counters {
                events: 2,
                anomalies: 2,
                blocked: 2,
                revocations: 1,
                sessions_started: 0
            }
        );
        assert_eq!(c.get("b").events, 1);
        assert_eq!(c.get("nobody"), Counters::default());
    }
}
