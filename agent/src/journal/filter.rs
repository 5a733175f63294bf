//! The server-side subscription filter.

use std::collections::HashSet;

use crate::wire::kind_of;
use crate::wire::pb;

/// Most entries in each list of a filter (`agents`, `sessions`, `kinds`).
/// Each subscriber keeps its filter for as long as it is connected, so an
/// unbounded list would let one request hold any amount of the daemon's
/// memory; a node runs a handful of agents, and every kind fits too.
pub const MAX_FILTER_ENTRIES: usize = 256;
/// Longest agent or session name in a filter, in bytes. Agent names come
/// from the config and session names from the daemon, both far shorter.
pub const MAX_FILTER_NAME_BYTES: usize = 256;

/// Why a requested filter is invalid (an `InvalidArgument` for the client).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("filter.kinds: {0} is not an event kind")]
    Kind(i32),
    #[error("filter.min_severity: {0} is not a severity")]
    Severity(i32),
    #[error("filter.{field}: {count} entries, at most {MAX_FILTER_ENTRIES} are allowed")]
    TooMany { field: &'static str, count: usize },
    #[error("filter.{field}[{index}]: {len} bytes, at most {MAX_FILTER_NAME_BYTES} are allowed")]
    TooLong {
        field: &'static str,
        index: usize,
        len: usize,
    },
}

/// Checks one list of a filter against the limits, naming the field.
fn bounded(field: &'static str, names: &[String]) -> Result<(), FilterError> {
    if names.len() > MAX_FILTER_ENTRIES {
        return Err(FilterError::TooMany {
            field,
            count: names.len(),
        });
    }
    match names.iter().position(|n| n.len() > MAX_FILTER_NAME_BYTES) {
        Some(index) => Err(FilterError::TooLong {
            field,
            index,
            len: names[index].len(),
        }),
        None => Ok(()),
    }
}

/// Which events a subscriber receives. Empty sets match everything; the
/// conditions combine with AND; `gap` events always pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    // Bytes, not strings: encoded events are matched on their bytes, which
    // were checked to be UTF-8 once, when the event was scanned.
    agents: HashSet<Vec<u8>>,
    sessions: HashSet<Vec<u8>>,
    kinds: HashSet<pb::EventKind>,
    min_severity: Option<pb::Severity>,
    anomalies_only: bool,
}

impl TryFrom<pb::EventFilter> for Filter {
    type Error = FilterError;

    fn try_from(f: pb::EventFilter) -> Result<Self, FilterError> {
        bounded("agents", &f.agents)?;
        bounded("sessions", &f.sessions)?;
        if f.kinds.len() > MAX_FILTER_ENTRIES {
            return Err(FilterError::TooMany {
                field: "kinds",
                count: f.kinds.len(),
            });
        }
        let kinds = f
            .kinds
            .iter()
            .map(|&k| match pb::EventKind::try_from(k) {
                Ok(kind) if kind != pb::EventKind::Unspecified => Ok(kind),
                _ => Err(FilterError::Kind(k)),
            })
            .collect::<Result<_, _>>()?;
        let min_severity = match pb::Severity::try_from(f.min_severity) {
            Ok(pb::Severity::Unspecified) => None,
            Ok(s) => Some(s),
            Err(_) => return Err(FilterError::Severity(f.min_severity)),
        };
        Ok(Self {
            agents: f.agents.into_iter().map(String::into_bytes).collect(),
            sessions: f.sessions.into_iter().map(String::into_bytes).collect(),
            kinds,
            min_severity,
            anomalies_only: f.anomalies_only,
        })
    }
}

impl Filter {
    /// Matches every event.
    #[must_use]
    pub fn all() -> Self {
        Self::default()
    }

    #[must_use]
    pub fn agents(mut self, agents: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.agents = agents.into_iter().map(|a| a.into().into_bytes()).collect();
        self
    }

    #[must_use]
    pub fn sessions(mut self, sessions: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.sessions = sessions
            .into_iter()
            .map(|s| s.into().into_bytes())
            .collect();
        self
    }

    #[must_use]
    pub fn kinds(mut self, kinds: impl IntoIterator<Item = pb::EventKind>) -> Self {
        self.kinds = kinds.into_iter().collect();
        self
    }

    #[must_use]
    pub const fn min_severity(mut self, severity: pb::Severity) -> Self {
        self.min_severity = match severity {
            pb::Severity::Unspecified => None,
            s => Some(s),
        };
        self
    }

    #[must_use]
    pub const fn anomalies_only(mut self, only: bool) -> Self {
        self.anomalies_only = only;
        self
    }

    /// True when the filter lets every event through.
    #[must_use]
    pub fn is_all(&self) -> bool {
        *self == Self::default()
    }

    /// Whether `event` passes.
    #[must_use]
    pub fn matches(&self, event: &pb::Event) -> bool {
        self.matches_fields(&Fields::of(event))
    }

    /// Whether an event with these fields passes; for encoded events, which
    /// are never decoded to be filtered.
    #[must_use]
    pub fn matches_fields(&self, event: &Fields<'_>) -> bool {
        let Some(kind) = event.kind else {
            return self.is_all();
        };
        if kind == pb::EventKind::Gap {
            return true;
        }
        let anomaly = kind == pb::EventKind::Anomaly;
        if self.anomalies_only && !anomaly {
            return false;
        }
        if !self.kinds.is_empty() && !self.kinds.contains(&kind) {
            return false;
        }
        if let Some(min) = self.min_severity {
            // Only anomalies carry a severity; everything else counts as info.
            let severity = if anomaly {
                pb::Severity::try_from(event.severity).unwrap_or(pb::Severity::Info)
            } else {
                pb::Severity::Info
            };
            if severity < min {
                return false;
            }
        }
        if !self.agents.is_empty()
            && !event
                .identity
                .is_some_and(|(agent, _)| self.agents.contains(agent))
        {
            return false;
        }
        if !self.sessions.is_empty()
            && !event
                .identity
                .is_some_and(|(_, session)| self.sessions.contains(session))
        {
            return false;
        }
        true
    }
}

/// The parts of an event a filter reads, borrowed from a decoded event
/// ([`Fields::of`]) or from an encoded one
/// ([`Encoded::fields`](crate::journal::Encoded::fields)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fields<'a> {
    /// `identity.agent` and `identity.session` (UTF-8), when there is an
    /// identity.
    pub identity: Option<(&'a [u8], &'a [u8])>,
    /// The payload's kind; `None` when there is no payload this build knows.
    pub kind: Option<pb::EventKind>,
    /// An anomaly's raw severity; 0 for other payloads.
    pub severity: i32,
}

impl<'a> Fields<'a> {
    #[must_use]
    pub fn of(event: &'a pb::Event) -> Self {
        let payload = event.payload.as_ref();
        Self {
            identity: event
                .identity
                .as_ref()
                .map(|i| (i.agent.as_bytes(), i.session.as_bytes())),
            kind: payload.map(kind_of),
            severity: match payload {
                Some(pb::event::Payload::Anomaly(a)) => a.severity,
                _ => 0,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::gap_event;

    fn event(agent: &str, session: &str, payload: pb::event::Payload) -> pb::Event {
        pb::Event {
            sequence: 1,
            identity: Some(pb::Identity {
                agent: agent.into(),
                session: session.into(),
                ..pb::Identity::default()
            }),
            payload: Some(payload),
            ..pb::Event::default()
        }
    }

    fn exec() -> pb::event::Payload {
        pb::event::Payload::Exec(pb::Exec::default())
    }

    fn anomaly(severity: pb::Severity) -> pb::event::Payload {
        pb::event::Payload::Anomaly(Box::new(pb::Anomaly {
            kind: pb::AnomalyKind::UnapprovedTool.into(),
            severity: severity.into(),
            ..pb::Anomaly::default()
        }))
    }

    #[test]
    fn empty_filter_matches_everything() {
        let f = Filter::try_from(pb::EventFilter::default()).unwrap();
        assert!(f.is_all());
        assert!(f.matches(&event("", "", exec())));
        assert!(f.matches(&event("a", "s", anomaly(pb::Severity::Low))));
    }

    #[test]
    fn agents_and_sessions_select_by_identity() {
        let f = Filter::all().agents(["a", "b"]);
        assert!(f.matches(&event("a", "", exec())));
        assert!(f.matches(&event("b", "x", exec())));
        assert!(!f.matches(&event("c", "", exec())));
        assert!(!f.matches(&event("", "", exec())));
        let f = f.sessions(["s1"]);
        assert!(f.matches(&event("a", "s1", exec())));
        assert!(!f.matches(&event("a", "s2", exec())));
        assert!(!f.matches(&event("c", "s1", exec())));
    }

    #[test]
    fn kinds_severity_and_anomalies_only() {
        let f = Filter::all().kinds([pb::EventKind::Connect, pb::EventKind::Anomaly]);
        assert!(!f.matches(&event("a", "", exec())));
        assert!(f.matches(&event("a", "", anomaly(pb::Severity::Info))));
        assert!(f.matches(&event(
            "a",
            "",
            pb::event::Payload::Connect(pb::Connect::default())
        )));

        let f = Filter::all().min_severity(pb::Severity::High);
        assert!(!f.matches(&event("a", "", exec())));
        assert!(!f.matches(&event("a", "", anomaly(pb::Severity::Medium))));
        assert!(f.matches(&event("a", "", anomaly(pb::Severity::High))));
        assert!(f.matches(&event("a", "", anomaly(pb::Severity::Critical))));
        assert!(
            Filter::all()
                .min_severity(pb::Severity::Info)
                .matches(&event("a", "", exec()))
        );

        let f = Filter::all().anomalies_only(true);
        assert!(!f.matches(&event("a", "", exec())));
        assert!(f.matches(&event("a", "", anomaly(pb::Severity::Low))));
    }

    #[test]
    fn gaps_always_pass() {
        let f = Filter::all()
            .agents(["nobody"])
            .kinds([pb::EventKind::Exec])
            .min_severity(pb::Severity::Critical)
            .anomalies_only(true);
        assert!(f.matches(&gap_event("n", 1, 2)));
    }

    #[test]
    fn invalid_requests_are_rejected() {
        let bad_kind = pb::EventFilter {
            kinds: vec![pb::EventKind::Exec.into(), 0],
            ..pb::EventFilter::default()
        };
        assert_eq!(
            Filter::try_from(bad_kind).unwrap_err(),
            FilterError::Kind(0)
        );
        let unknown_kind = pb::EventFilter {
            kinds: vec![1000],
            ..pb::EventFilter::default()
        };
        assert_eq!(
            Filter::try_from(unknown_kind).unwrap_err(),
            FilterError::Kind(1000)
        );
        let bad_severity = pb::EventFilter {
            min_severity: 17,
            ..pb::EventFilter::default()
        };
        let err = Filter::try_from(bad_severity).unwrap_err();
        assert_eq!(err, FilterError::Severity(17));
        assert!(err.to_string().contains("filter.min_severity"));
    }
}
