//! Events in wire form, encoded once and shared by every subscriber.
//!
//! The journal stores each event as an encoded `vigil.v1.Event`. The same
//! bytes go out live to every subscriber and are read back for catch-up, so
//! the daemon never decodes, clones or re-encodes an event per subscriber.
//! What a subscription filter needs (identity, payload kind, severity) is
//! found once by walking the encoding's fields, without decoding the rest.

use std::ops::Range;

use bytes::Bytes;
use prost::Message as _;
use prost::encoding::{WireType, decode_key, decode_varint};

use crate::journal::filter::Fields;
use crate::wire::gap_event;
use crate::wire::pb;

/// Field numbers of `vigil.v1.Event` and its parts that filters look at.
const EVENT_SEQUENCE: u32 = 1;
const EVENT_IDENTITY: u32 = 5;
const IDENTITY_AGENT: u32 = 1;
const IDENTITY_SESSION: u32 = 2;
const ANOMALY_SEVERITY: u32 = 2;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodedError {
    #[error(transparent)]
    Prost(#[from] prost::DecodeError),
    #[error("field {tag} runs past the end of the event")]
    Truncated { tag: u32 },
    #[error("field {tag} uses the deprecated group encoding")]
    Group { tag: u32 },
    #[error("identity.{0} is not UTF-8")]
    Utf8(&'static str),
}

/// One event as it is journaled and sent: its encoded bytes, plus where the
/// fields a filter reads are in them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    sequence: u64,
    bytes: Bytes,
    /// Byte ranges of `identity.agent` and `identity.session`; `None` when
    /// the event has no identity.
    identity: Option<(Span, Span)>,
    /// The payload's kind; `None` when it has none this build knows.
    kind: Option<pb::EventKind>,
    /// An anomaly's raw severity; 0 for other payloads.
    severity: i32,
}

/// A byte range that is `Copy`, unlike `Range`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Span {
    start: usize,
    end: usize,
}

impl Span {
    const fn range(self) -> Range<usize> {
        self.start..self.end
    }
}

/// The payload field number of each event kind: `oneof payload` in
/// `proto/vigil/v1/event.proto`.
fn payload_kind(tag: u32) -> Option<pb::EventKind> {
    use pb::EventKind as K;
    Some(match tag {
        10 => K::Exec,
        11 => K::Fork,
        12 => K::Exit,
        13 => K::Connect,
        14 => K::Accept,
        15 => K::FileOpen,
        16 => K::DnsAnswer,
        17 => K::Anomaly,
        18 => K::Loss,
        19 => K::SessionStart,
        20 => K::Revocation,
        21 => K::Restore,
        22 => K::TaskApproved,
        23 => K::TaskEnded,
        24 => K::ConfigChange,
        25 => K::Gap,
        26 => K::SensorTampered,
        27 => K::IoUring,
        28 => K::DnsQuery,
        29 => K::FileLink,
        30 => K::Socket,
        31 => K::UnixConnect,
        32 => K::SessionEscape,
        33 => K::TamperAttempt,
        _ => return None,
    })
}

/// Walks the fields of one message in `bytes[pos..end]`, keeping offsets
/// into the whole buffer.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    end: usize,
}

impl<'a> Cursor<'a> {
    const fn new(bytes: &'a [u8], span: Span) -> Self {
        Self {
            bytes,
            pos: span.start,
            end: span.end,
        }
    }

    fn rest(&self) -> &'a [u8] {
        &self.bytes[self.pos..self.end]
    }

    fn key(&mut self) -> Result<Option<(u32, WireType)>, EncodedError> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let mut rest = self.rest();
        let before = rest.len();
        let key = decode_key(&mut rest)?;
        self.pos += before - rest.len();
        Ok(Some(key))
    }

    fn varint(&mut self) -> Result<u64, EncodedError> {
        let mut rest = self.rest();
        let before = rest.len();
        let value = decode_varint(&mut rest)?;
        self.pos += before - rest.len();
        Ok(value)
    }

    fn advance(&mut self, tag: u32, len: u64) -> Result<Span, EncodedError> {
        let start = self.pos;
        let end = usize::try_from(len)
            .ok()
            .and_then(|len| start.checked_add(len))
            .filter(|&end| end <= self.end)
            .ok_or(EncodedError::Truncated { tag })?;
        self.pos = end;
        Ok(Span { start, end })
    }

    fn delimited(&mut self, tag: u32) -> Result<Span, EncodedError> {
        let len = self.varint()?;
        self.advance(tag, len)
    }

    fn skip(&mut self, tag: u32, wire_type: WireType) -> Result<(), EncodedError> {
        match wire_type {
            WireType::Varint => self.varint().map(drop),
            WireType::SixtyFourBit => self.advance(tag, 8).map(drop),
            WireType::ThirtyTwoBit => self.advance(tag, 4).map(drop),
            WireType::LengthDelimited => self.delimited(tag).map(drop),
            WireType::StartGroup | WireType::EndGroup => Err(EncodedError::Group { tag }),
        }
    }
}

impl Encoded {
    /// Takes an encoded `vigil.v1.Event`, finding the fields filters read.
    /// Fails on bytes that are not a well-formed message; the fields it does
    /// not read are checked only for their framing.
    pub fn new(bytes: Bytes) -> Result<Self, EncodedError> {
        let mut encoded = Self {
            sequence: 0,
            identity: None,
            kind: None,
            severity: 0,
            bytes,
        };
        let bytes = &encoded.bytes[..];
        let mut event = Cursor::new(
            bytes,
            Span {
                start: 0,
                end: bytes.len(),
            },
        );
        // Later occurrences win, as when prost decodes the message.
        while let Some((tag, wire_type)) = event.key()? {
            match (tag, wire_type) {
                (EVENT_SEQUENCE, WireType::Varint) => encoded.sequence = event.varint()?,
                (EVENT_IDENTITY, WireType::LengthDelimited) => {
                    let span = event.delimited(tag)?;
                    encoded.identity = Some(scan_identity(bytes, span)?);
                }
                (tag, WireType::LengthDelimited) => {
                    let span = event.delimited(tag)?;
                    if let Some(kind) = payload_kind(tag) {
                        encoded.kind = Some(kind);
                        encoded.severity = if kind == pb::EventKind::Anomaly {
                            scan_severity(bytes, span)?
                        } else {
                            0
                        };
                    }
                }
                (tag, wire_type) => event.skip(tag, wire_type)?,
            }
        }
        Ok(encoded)
    }

    /// The `gap` event naming a range of pruned events, encoded.
    #[must_use]
    pub fn gap(node: &str, first_missing: u64, last_missing: u64) -> Self {
        let event = gap_event(node, first_missing, last_missing);
        Self {
            sequence: event.sequence,
            bytes: Bytes::from(event.encode_to_vec()),
            identity: None,
            kind: Some(pb::EventKind::Gap),
            severity: 0,
        }
    }

    /// Encodes `event` once, for the journal and every subscriber.
    pub fn encode(event: &pb::Event) -> Result<Self, EncodedError> {
        Self::new(Bytes::from(event.encode_to_vec()))
    }

    #[must_use]
    pub const fn sequence(&self) -> u64 {
        self.sequence
    }

    /// The encoded `vigil.v1.Event`.
    #[must_use]
    pub const fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Decodes the whole event, for callers that need its fields.
    pub fn decode(&self) -> Result<pb::Event, EncodedError> {
        Ok(pb::Event::decode(&self.bytes[..])?)
    }

    /// What a subscription filter reads.
    #[must_use]
    pub fn fields(&self) -> Fields<'_> {
        Fields {
            // Both were checked to be UTF-8 when the event was scanned; every
            // subscriber reads them for every event, so not again here.
            identity: self
                .identity
                .map(|(agent, session)| (&self.bytes[agent.range()], &self.bytes[session.range()])),
            kind: self.kind,
            severity: self.severity,
        }
    }
}

/// The ranges of `agent` and `session` in an `Identity` at `span`; an unset
/// string is an empty range.
fn scan_identity(bytes: &[u8], span: Span) -> Result<(Span, Span), EncodedError> {
    let (mut agent, mut session) = (Span::default(), Span::default());
    let mut identity = Cursor::new(bytes, span);
    while let Some((tag, wire_type)) = identity.key()? {
        match (tag, wire_type) {
            (IDENTITY_AGENT, WireType::LengthDelimited) => agent = identity.delimited(tag)?,
            (IDENTITY_SESSION, WireType::LengthDelimited) => session = identity.delimited(tag)?,
            (tag, wire_type) => identity.skip(tag, wire_type)?,
        }
    }
    for (name, s) in [("agent", agent), ("session", session)] {
        std::str::from_utf8(&bytes[s.range()]).map_err(|_| EncodedError::Utf8(name))?;
    }
    Ok((agent, session))
}

/// The raw `severity` of an `Anomaly` at `span`.
fn scan_severity(bytes: &[u8], span: Span) -> Result<i32, EncodedError> {
    let mut severity = 0;
    let mut anomaly = Cursor::new(bytes, span);
    while let Some((tag, wire_type)) = anomaly.key()? {
        match (tag, wire_type) {
            // An `int32` enum travels as a sign-extended varint: truncating
            // is how prost reads it back.
            #[allow(clippy::cast_possible_truncation)]
            (ANOMALY_SEVERITY, WireType::Varint) => severity = anomaly.varint()? as i32,
            (tag, wire_type) => anomaly.skip(tag, wire_type)?,
        }
    }
    Ok(severity)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(agent: &str, session: &str) -> pb::Identity {
        pb::Identity {
            agent: agent.into(),
            session: session.into(),
            task: "task-1".into(),
            cgroup_id: 4242,
            cgroup_path: "/vigil/coder/s1".into(),
            workload: Some(pb::Workload {
                runtime: "containerd".into(),
                ..pb::Workload::default()
            }),
        }
    }

    /// One event of every payload kind, with and without identities, as
    /// the daemon makes them.
    fn samples() -> Vec<pb::Event> {
        use pb::event::Payload as P;
        let payloads = vec![
            P::Exec(pb::Exec {
                argv: vec!["/usr/bin/git".into(), "status".into()],
                ..pb::Exec::default()
            }),
            P::Fork(pb::Fork { child_pid: 77 }),
            P::Exit(pb::Exit::default()),
            P::Connect(pb::Connect::default()),
            P::Accept(pb::Accept::default()),
            P::FileOpen(pb::FileOpen {
                path: "/home/dev/.ssh/id_ed25519".into(),
                ..pb::FileOpen::default()
            }),
            P::DnsAnswer(pb::DnsAnswer::default()),
            P::DnsQuery(pb::DnsQuery::default()),
            P::FileLink(pb::FileLink::default()),
            P::Anomaly(Box::new(pb::Anomaly {
                kind: pb::AnomalyKind::UnapprovedTool.into(),
                severity: pb::Severity::Critical.into(),
                ..pb::Anomaly::default()
            })),
            P::Anomaly(Box::new(pb::Anomaly {
                severity: -3,
                ..pb::Anomaly::default()
            })),
            P::Loss(pb::Loss::default()),
            P::SensorTampered(pb::SensorTampered::default()),
            P::SessionStart(pb::SessionStart::default()),
            P::Revocation(pb::Revocation::default()),
            P::Restore(pb::Restore::default()),
            P::TaskApproved(pb::TaskApproved::default()),
            P::TaskEnded(pb::TaskEnded::default()),
            P::ConfigChange(pb::ConfigChange::default()),
            P::TamperAttempt(pb::TamperAttempt {
                method: "bpf".into(),
                detail: "BPF_OBJ_GET".into(),
                ..pb::TamperAttempt::default()
            }),
        ];
        let mut events: Vec<pb::Event> = payloads
            .into_iter()
            .enumerate()
            .map(|(i, payload)| pb::Event {
                sequence: 1000 + i as u64,
                node: "node-1".into(),
                time: Some(std::time::SystemTime::UNIX_EPOCH.into()),
                kernel_ts_ns: 123_456_789,
                identity: match i % 3 {
                    0 => Some(identity("coder", "s1")),
                    1 => Some(pb::Identity::default()),
                    _ => None,
                },
                process: Some(pb::Process {
                    pid: 4321,
                    comm: "git".into(),
                    ..pb::Process::default()
                }),
                payload: Some(payload),
            })
            .collect();
        events.push(gap_event("node-1", 3, 9));
        events.push(pb::Event::default());
        events
    }

    #[test]
    fn scanning_finds_what_decoding_finds() {
        for event in samples() {
            let encoded = Encoded::encode(&event).unwrap();
            assert_eq!(encoded.sequence(), event.sequence, "{event:?}");
            assert_eq!(encoded.fields(), Fields::of(&event), "{event:?}");
            assert_eq!(encoded.decode().unwrap(), event);
            assert_eq!(encoded.bytes()[..], event.encode_to_vec()[..]);
        }
    }

    #[test]
    fn a_gap_is_what_scanning_its_encoding_finds() {
        let gap = Encoded::gap("node-1", 3, 9);
        assert_eq!(Encoded::new(gap.bytes().clone()).unwrap(), gap);
        assert_eq!(gap.decode().unwrap().sequence, 9);
    }

    #[test]
    fn unknown_fields_and_payloads_are_skipped() {
        let mut event = samples().remove(5);
        event.identity = Some(identity("coder", "s1"));
        let mut bytes = event.encode_to_vec();
        // A payload kind from a newer daemon (field 40), then a fixed64 and
        // a fixed32 field: a filter sees no payload it knows, as prost would.
        prost::encoding::string::encode(40, &"new".to_owned(), &mut bytes);
        prost::encoding::fixed64::encode(41, &7, &mut bytes);
        prost::encoding::fixed32::encode(42, &7, &mut bytes);
        let encoded = Encoded::new(Bytes::from(bytes)).unwrap();
        let decoded = encoded.decode().unwrap();
        assert_eq!(encoded.fields(), Fields::of(&decoded));
        assert_eq!(encoded.fields().kind, Some(pb::EventKind::FileOpen));
        assert_eq!(encoded.fields().identity, Some((&b"coder"[..], &b"s1"[..])));

        // The later payload wins, as in a decoded message.
        let mut bytes = event.encode_to_vec();
        prost::encoding::message::encode(12, &pb::Exit::default(), &mut bytes);
        let encoded = Encoded::new(Bytes::from(bytes)).unwrap();
        assert_eq!(encoded.fields().kind, Some(pb::EventKind::Exit));
        assert_eq!(encoded.fields(), Fields::of(&encoded.decode().unwrap()));
    }

    #[test]
    fn malformed_bytes_are_refused() {
        let good = samples().remove(0).encode_to_vec();
        // Cut inside the last field: its length runs past the end.
        let cut = Bytes::copy_from_slice(&good[..good.len() - 1]);
        assert!(matches!(
            Encoded::new(cut),
            Err(EncodedError::Truncated { .. })
        ));
        // A length that runs past the end of its parent message.
        let mut nested = Vec::new();
        prost::encoding::encode_key(EVENT_IDENTITY, WireType::LengthDelimited, &mut nested);
        prost::encoding::encode_varint(3, &mut nested);
        prost::encoding::encode_key(IDENTITY_AGENT, WireType::LengthDelimited, &mut nested);
        prost::encoding::encode_varint(5, &mut nested);
        nested.extend_from_slice(b"abcde");
        assert!(matches!(
            Encoded::new(Bytes::from(nested)),
            Err(EncodedError::Truncated {
                tag: IDENTITY_AGENT
            })
        ));
        let mut bad_utf8 = Vec::new();
        prost::encoding::encode_key(EVENT_IDENTITY, WireType::LengthDelimited, &mut bad_utf8);
        prost::encoding::encode_varint(3, &mut bad_utf8);
        prost::encoding::encode_key(IDENTITY_SESSION, WireType::LengthDelimited, &mut bad_utf8);
        prost::encoding::encode_varint(1, &mut bad_utf8);
        bad_utf8.push(0xff);
        assert_eq!(
            Encoded::new(Bytes::from(bad_utf8)),
            Err(EncodedError::Utf8("session"))
        );
        assert!(matches!(
            Encoded::new(Bytes::from_static(&[0x80])),
            Err(EncodedError::Prost(_))
        ));
        assert!(matches!(
            Encoded::new(Bytes::from_static(&[0x33])),
            Err(EncodedError::Group { tag: 6 })
        ));
    }
}
