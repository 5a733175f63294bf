//! What is revoked, by whom, why and since when.
//!
//! The registry is the single source of truth the API answers from and the
//! enforcement code will mirror into the kernel. It lives in memory: the
//! journal keeps the audit trail of every change.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

/// What a revocation applies to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// Every process of the agent.
    Agent(String),
    /// One session of the agent.
    Session { agent: String, session: String },
}

impl Target {
    /// The agent's whole access, or one session's when `session` is non-empty.
    #[must_use]
    pub fn new(agent: &str, session: &str) -> Self {
        if session.is_empty() {
            Self::Agent(agent.to_owned())
        } else {
            Self::Session {
                agent: agent.to_owned(),
                session: session.to_owned(),
            }
        }
    }

    #[must_use]
    pub fn agent(&self) -> &str {
        match self {
            Self::Agent(a) | Self::Session { agent: a, .. } => a,
        }
    }

    #[must_use]
    pub fn session(&self) -> Option<&str> {
        match self {
            Self::Agent(_) => None,
            Self::Session { session, .. } => Some(session),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Agent(a) => write!(f, "agent {a:?}"),
            Self::Session { agent, session } => write!(f, "session {session:?} of agent {agent:?}"),
        }
    }
}

/// One standing revocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub reason: String,
    /// Who revoked (the API caller, or the rule that acted).
    pub by: String,
    pub since: SystemTime,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("{target} is already revoked (by {by}: {reason:?})")]
    AlreadyRevoked {
        target: Target,
        by: String,
        reason: String,
    },
    #[error("{0} is not revoked")]
    NotRevoked(Target),
}

/// The standing revocations of this node.
#[derive(Debug, Default)]
pub struct Revocations {
    map: Mutex<BTreeMap<Target, Record>>,
}

impl Revocations {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Target, Record>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a revocation; refuses one that already stands.
    pub fn revoke(&self, target: Target, record: Record) -> Result<(), StateError> {
        let mut map = self.lock();
        if let Some(old) = map.get(&target) {
            return Err(StateError::AlreadyRevoked {
                target,
                by: old.by.clone(),
                reason: old.reason.clone(),
            });
        }
        map.insert(target, record);
        Ok(())
    }

    /// Lifts a revocation and returns what it was. Restoring an agent does
    /// not lift revocations of its single sessions: each was a decision of
    /// its own.
    pub fn restore(&self, target: &Target) -> Result<Record, StateError> {
        self.lock()
            .remove(target)
            .ok_or_else(|| StateError::NotRevoked(target.clone()))
    }

    /// The revocation standing for exactly this target.
    #[must_use]
    pub fn get(&self, target: &Target) -> Option<Record> {
        self.lock().get(target).cloned()
    }

    /// Whether a process of `agent` in `session` has lost its access, by a
    /// revocation of the agent or of the session.
    #[must_use]
    pub fn is_revoked(&self, agent: &str, session: Option<&str>) -> bool {
        let map = self.lock();
        map.contains_key(&Target::Agent(agent.to_owned()))
            || session.is_some_and(|s| map.contains_key(&Target::new(agent, s)))
    }

    /// Every standing revocation, agents before their sessions.
    #[must_use]
    pub fn list(&self) -> Vec<(Target, Record)> {
        self.lock()
            .iter()
            .map(|(t, r)| (t.clone(), r.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(by: &str) -> Record {
        Record {
            reason: "exfiltration".into(),
            by: by.into(),
            since: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn revoke_and_restore_agents_and_sessions() {
        let r = Revocations::default();
        let agent = Target::new("coder", "");
        let session = Target::new("coder", "s-1");
        assert_eq!(agent, Target::Agent("coder".into()));
        assert_eq!(session.session(), Some("s-1"));
        assert!(!r.is_revoked("coder", Some("s-1")));

        r.revoke(session.clone(), record("alice")).unwrap();
        assert!(r.is_revoked("coder", Some("s-1")));
        assert!(!r.is_revoked("coder", Some("s-2")));
        assert!(!r.is_revoked("coder", None));

        r.revoke(agent.clone(), record("bob")).unwrap();
        assert!(r.is_revoked("coder", Some("s-2")));
        let err = r.revoke(agent.clone(), record("carol")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "agent \"coder\" is already revoked (by bob: \"exfiltration\")"
        );
        assert_eq!(r.list().len(), 2);

        // Restoring the agent leaves the session's own revocation standing.
        assert_eq!(r.restore(&agent).unwrap().by, "bob");
        assert!(r.is_revoked("coder", Some("s-1")));
        assert!(!r.is_revoked("coder", Some("s-2")));
        assert_eq!(
            r.restore(&agent).unwrap_err().to_string(),
            "agent \"coder\" is not revoked"
        );
        r.restore(&session).unwrap();
        assert!(r.list().is_empty());
    }
}
