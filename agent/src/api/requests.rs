//! Governance requests as checked values: everything about a request that
//! can be judged from its own fields, before the live scope or the kernel
//! is consulted. Each conversion is a `TryFrom` of the wire message, so a
//! handler, the fuzz target and the unit tests all run the same checks.

use std::time::Duration;

use tonic::Status;

use crate::event::TaskScope;
use crate::session::validate_name;
use crate::wire::pb;

/// The longest task approval. An approval is for one task, not a standing
/// grant; the bound also keeps every expiry representable.
pub const MAX_TTL: Duration = Duration::from_hours(24 * 30);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("{0}: required")]
    Required(&'static str),
    #[error("reason: required, it is recorded in the audit event")]
    NoReason,
    #[error("ttl: required and positive")]
    NoTtl,
    #[error("ttl: {0:?} is longer than the longest approval, 30 days")]
    TtlTooLong(Duration),
    #[error(
        "{what}: {value:?} is not a valid name: use 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' and '-'"
    )]
    Name { what: &'static str, value: String },
}

impl From<RequestError> for Status {
    fn from(e: RequestError) -> Self {
        Self::invalid_argument(e.to_string())
    }
}

fn required(what: &'static str, value: String) -> Result<String, RequestError> {
    if value.is_empty() {
        Err(RequestError::Required(what))
    } else {
        Ok(value)
    }
}

/// A name that becomes a cgroup directory, or the empty string for "none".
fn name_or_empty(what: &'static str, value: String) -> Result<String, RequestError> {
    if value.is_empty() || validate_name(what, &value).is_ok() {
        Ok(value)
    } else {
        Err(RequestError::Name { what, value })
    }
}

/// What a revocation or a restore applies to: an agent, or one session of
/// it, with the reason that goes on record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetRequest {
    pub agent: String,
    /// Empty for the whole agent.
    pub session: String,
    /// Trimmed, never empty.
    pub reason: String,
}

impl TargetRequest {
    fn new(agent: String, session: String, reason: &str) -> Result<Self, RequestError> {
        let agent = required("agent", agent)?;
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(RequestError::NoReason);
        }
        Ok(Self {
            agent,
            session,
            reason: reason.to_owned(),
        })
    }
}

impl TryFrom<pb::RevokeRequest> for TargetRequest {
    type Error = RequestError;

    fn try_from(r: pb::RevokeRequest) -> Result<Self, Self::Error> {
        Self::new(r.agent, r.session, &r.reason)
    }
}

impl TryFrom<pb::RestoreRequest> for TargetRequest {
    type Error = RequestError;

    fn try_from(r: pb::RestoreRequest) -> Result<Self, Self::Error> {
        Self::new(r.agent, r.session, &r.reason)
    }
}

/// A task approval as asked: who, what for, how long, and the narrower
/// scope if one was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskApproval {
    pub agent: String,
    /// Trimmed, never empty.
    pub task: String,
    /// Trimmed, never empty.
    pub purpose: String,
    /// Positive, at most [`MAX_TTL`].
    pub ttl: Duration,
    pub scope: Option<TaskScope>,
}

impl TryFrom<pb::ApproveTaskRequest> for TaskApproval {
    type Error = RequestError;

    fn try_from(r: pb::ApproveTaskRequest) -> Result<Self, Self::Error> {
        let agent = required("agent", r.agent)?;
        let task = r.task.trim();
        if task.is_empty() {
            return Err(RequestError::Required("task"));
        }
        let purpose = r.purpose.trim();
        if purpose.is_empty() {
            return Err(RequestError::Required("purpose"));
        }
        // A negative or malformed duration is no duration.
        let ttl = r
            .ttl
            .and_then(|d| Duration::try_from(d).ok())
            .filter(|d| !d.is_zero())
            .ok_or(RequestError::NoTtl)?;
        if ttl > MAX_TTL {
            return Err(RequestError::TtlTooLong(ttl));
        }
        Ok(Self {
            agent,
            task: task.to_owned(),
            purpose: purpose.to_owned(),
            ttl,
            scope: r.scope.map(|s| TaskScope {
                systems: s.systems,
                tools: s.tools,
                data: s.data,
            }),
        })
    }
}

/// The end of an agent's task; an empty task ends whichever is active.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskEnd {
    pub agent: String,
    /// Trimmed.
    pub task: String,
}

impl TryFrom<pb::EndTaskRequest> for TaskEnd {
    type Error = RequestError;

    fn try_from(r: pb::EndTaskRequest) -> Result<Self, Self::Error> {
        Ok(Self {
            agent: required("agent", r.agent)?,
            task: r.task.trim().to_owned(),
        })
    }
}

/// A process to place in a new session of an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionStart {
    pub agent: String,
    /// Never 0.
    pub pid: u32,
    /// The session's name when the caller chose one; it becomes a cgroup
    /// directory, so it is a checked name.
    pub session: Option<String>,
}

impl TryFrom<pb::StartSessionRequest> for SessionStart {
    type Error = RequestError;

    fn try_from(r: pb::StartSessionRequest) -> Result<Self, Self::Error> {
        let agent = required("agent", r.agent)?;
        if r.pid == 0 {
            return Err(RequestError::Required("pid"));
        }
        let session = name_or_empty("session", r.session)?;
        Ok(Self {
            agent,
            pid: r.pid,
            session: (!session.is_empty()).then_some(session),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn approve(ttl: Option<prost_types::Duration>) -> pb::ApproveTaskRequest {
        pb::ApproveTaskRequest {
            agent: "coder".into(),
            task: " T-1 ".into(),
            purpose: " fix the build ".into(),
            ttl,
            scope: None,
        }
    }

    fn secs(seconds: i64, nanos: i32) -> prost_types::Duration {
        prost_types::Duration { seconds, nanos }
    }

    #[test]
    fn an_approval_is_trimmed_and_keeps_its_ttl() {
        let a = TaskApproval::try_from(approve(Some(secs(900, 0)))).unwrap();
        assert_eq!(
            (a.task.as_str(), a.purpose.as_str(), a.ttl),
            ("T-1", "fix the build", Duration::from_mins(15))
        );
    }

    #[test]
    fn a_ttl_that_is_missing_negative_zero_or_too_long_is_refused_by_name() {
        for (ttl, words) in [
            (None, "ttl: required and positive"),
            (Some(secs(0, 0)), "ttl: required and positive"),
            (Some(secs(-5, 0)), "ttl: required and positive"),
            (Some(secs(0, -1)), "ttl: required and positive"),
            (
                Some(secs(i64::MAX, 999_999_999)),
                "longer than the longest approval",
            ),
            (
                Some(secs(31 * 24 * 3600, 0)),
                "longer than the longest approval",
            ),
        ] {
            let e = TaskApproval::try_from(approve(ttl)).unwrap_err();
            assert!(e.to_string().contains(words), "{ttl:?}: {e}");
        }
        let longest = i64::try_from(MAX_TTL.as_secs()).unwrap();
        assert!(TaskApproval::try_from(approve(Some(secs(longest, 0)))).is_ok());
    }

    #[test]
    fn required_fields_are_named() {
        let mut r = approve(Some(secs(1, 0)));
        r.task = "  ".into();
        assert_eq!(
            TaskApproval::try_from(r).unwrap_err(),
            RequestError::Required("task")
        );
        let e = TargetRequest::try_from(pb::RevokeRequest {
            agent: "coder".into(),
            session: String::new(),
            reason: " \t".into(),
        })
        .unwrap_err();
        assert_eq!(e, RequestError::NoReason);
        let e = TaskEnd::try_from(pb::EndTaskRequest::default()).unwrap_err();
        assert_eq!(e.to_string(), "agent: required");
    }

    #[test]
    fn a_session_name_that_cannot_be_a_cgroup_directory_is_refused() {
        let start = |session: &str| {
            SessionStart::try_from(pb::StartSessionRequest {
                agent: "coder".into(),
                session: session.into(),
                pid: 7,
            })
        };
        for bad in ["..", "a/b", "s\n1", &"x".repeat(65)] {
            let e = start(bad).unwrap_err();
            assert!(
                matches!(&e, RequestError::Name { what: "session", value } if value == bad),
                "{bad:?}: {e}"
            );
        }
        assert_eq!(start("").unwrap().session, None);
        assert_eq!(start("s-1").unwrap().session.as_deref(), Some("s-1"));
        let e = SessionStart::try_from(pb::StartSessionRequest {
            agent: "coder".into(),
            session: String::new(),
            pid: 0,
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "pid: required");
    }
}
