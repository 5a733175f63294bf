//! Wall-clock times in the event schema: a `SystemTime` in the daemon, RFC
//! 3339 with nanoseconds wherever it is written out as text.

use std::time::SystemTime;

/// Formats a wall-clock time as RFC 3339 with nanoseconds (the `time` field).
#[must_use]
pub fn format_time(t: SystemTime) -> String {
    humantime::format_rfc3339_nanos(t).to_string()
}

/// Serde for wall-clock times as RFC 3339 with nanoseconds, the JSON form
/// of every time in the event schema.
pub(super) mod rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize as _, Deserializer, Serializer, de::Error as _};

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_nanos(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        humantime::parse_rfc3339(&s)
            .map_err(|e| D::Error::custom(format!("{s:?} is not an RFC 3339 UTC time: {e}")))
    }
}
