//! The `vigil.v1` wire types ([`pb`]) and their conversions with the
//! daemon's typed events ([`crate::event`]). Both the journal (which stores
//! events in their wire encoding) and the API (which serves them) build on
//! this module; it depends on nothing above the event model.
//!
//! Optional strings map to empty proto strings and back, so `Some("")` does
//! not survive a round trip (it becomes `None`); nothing else is lost.

pub mod pb;

mod from_wire;
mod to_wire;

use std::time::SystemTime;

/// Why a wire value could not be converted; `field` is the proto field path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    #[error("missing required field `{0}`")]
    Missing(&'static str),
    #[error("field `{field}`: unknown or unspecified enum value {value}")]
    Enum { field: &'static str, value: i32 },
    #[error("field `{field}`: {value:?} is not an IP address")]
    Address { field: &'static str, value: String },
    #[error("field `{field}`: the time is out of range")]
    TimeRange { field: &'static str },
    #[error("field `{field}`: {value} is not a port number")]
    Port { field: &'static str, value: u32 },
    #[error("field `{field}`: {value} does not fit in 16 bits")]
    Wide { field: &'static str, value: u32 },
    #[error("in `anomaly.offending`: {0}")]
    Offending(Box<ConvertError>),
}

/// The filter kind of a wire payload.
#[must_use]
pub fn kind_of(payload: &pb::event::Payload) -> pb::EventKind {
    use pb::event::Payload as W;
    match payload {
        W::Exec(_) => pb::EventKind::Exec,
        W::Fork(_) => pb::EventKind::Fork,
        W::Exit(_) => pb::EventKind::Exit,
        W::Connect(_) => pb::EventKind::Connect,
        W::Accept(_) => pb::EventKind::Accept,
        W::FileOpen(_) => pb::EventKind::FileOpen,
        W::DnsAnswer(_) => pb::EventKind::DnsAnswer,
        W::DnsQuery(_) => pb::EventKind::DnsQuery,
        W::FileLink(_) => pb::EventKind::FileLink,
        W::Anomaly(_) => pb::EventKind::Anomaly,
        W::Loss(_) => pb::EventKind::Loss,
        W::SessionStart(_) => pb::EventKind::SessionStart,
        W::Revocation(_) => pb::EventKind::Revocation,
        W::Restore(_) => pb::EventKind::Restore,
        W::TaskApproved(_) => pb::EventKind::TaskApproved,
        W::TaskEnded(_) => pb::EventKind::TaskEnded,
        W::ConfigChange(_) => pb::EventKind::ConfigChange,
        W::Gap(_) => pb::EventKind::Gap,
        W::SensorTampered(_) => pb::EventKind::SensorTampered,
        W::IoUring(_) => pb::EventKind::IoUring,
        W::Socket(_) => pb::EventKind::Socket,
        W::UnixConnect(_) => pb::EventKind::UnixConnect,
        W::SessionEscape(_) => pb::EventKind::SessionEscape,
        W::TamperAttempt(_) => pb::EventKind::TamperAttempt,
    }
}

/// The wire kind matching an event-side `kind` string (`file_open`), for
/// CLI flags that take the JSON names.
#[must_use]
pub fn kind_from_name(name: &str) -> Option<pb::EventKind> {
    pb::EventKind::from_str_name(&format!("EVENT_KIND_{}", name.to_ascii_uppercase()))
        .filter(|k| *k != pb::EventKind::Unspecified)
}

/// The event-side `kind` string of a wire kind (`file_open`).
#[must_use]
pub fn kind_name(kind: pb::EventKind) -> String {
    kind.as_str_name()
        .trim_start_matches("EVENT_KIND_")
        .to_ascii_lowercase()
}

/// A `gap` event as sent to one subscriber: never journaled, its sequence is
/// the last missing one so resuming after it does not ask for the range again.
#[must_use]
pub fn gap_event(node: &str, first_missing: u64, last_missing: u64) -> pb::Event {
    pb::Event {
        sequence: last_missing,
        node: node.to_owned(),
        time: Some(SystemTime::now().into()),
        kernel_ts_ns: 0,
        identity: None,
        process: None,
        payload: Some(pb::event::Payload::Gap(pb::Gap {
            first_missing,
            last_missing,
        })),
    }
}

#[cfg(test)]
mod tests;
