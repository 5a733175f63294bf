//! OCSF output: every event as one record of an Open Cybersecurity Schema
//! Framework class, schema version [`SCHEMA_VERSION`].
//!
//! The mapping (kind → class and activity, where the agent identity goes) is
//! documented in `docs/integrations.md`. Records borrow from the event, so
//! converting one costs little more than serializing it as plain JSON.
//!
//! OCSF 1.5 has no object for an AI agent (its `agent` object is a sensor
//! such as Vigil itself), so the agent identity goes in `actor` (`app_name` =
//! agent, `session.uid` = session, `process`, `user`) and, complete, in
//! `unmapped.vigil`, which always carries `agent`, `session`, `task`, `pod`
//! and `spiffe_id` (null when unknown) so that consumers see one shape.
//! Every record declares the `host` profile, which is what lets the network,
//! DNS, finding and lifecycle classes carry `actor` and `device`.

mod daemon;
mod file;
mod findings;
mod governance;
mod network;
mod objects;
mod process;
pub mod samples;

use std::borrow::Cow;

use serde::Serialize;

use self::objects::{actor, vigil_fields};
use crate::event::{Event, Payload, Severity};

pub use findings::{Evidence, FindingInfo};
pub use network::{ConnectionInfo, DnsAnswer, DnsQuery, Endpoint};
pub use objects::{Actor, Details, FileObj, Pod, ProcessObj, Session, Unmapped, User, VigilFields};

/// The OCSF schema version every record follows (`metadata.version`).
pub const SCHEMA_VERSION: &str = "1.5.0";

/// The profiles every record declares (`metadata.profiles`).
const PROFILES: &[&str] = &["host"];

/// One OCSF record. Fields a class does not define stay `None` and are left
/// out, because the schema allows no attribute outside the class.
#[derive(Debug, Serialize)]
pub struct OcsfEvent<'a> {
    pub activity_id: u8,
    pub activity_name: &'static str,
    pub category_uid: u8,
    pub category_name: &'static str,
    pub class_uid: u16,
    pub class_name: &'static str,
    /// `class_uid * 100 + activity_id`.
    pub type_uid: u32,
    pub severity_id: u8,
    pub severity: &'static str,
    /// Milliseconds since the Unix epoch.
    pub time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_id: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_detail: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    pub metadata: Metadata<'a>,
    pub device: Device<'a>,
    pub actor: Actor<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessObj<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<FileObj<'a>>,
    /// The new name of a renamed file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_result: Option<FileObj<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_endpoint: Option<Endpoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst_endpoint: Option<Endpoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_info: Option<ConnectionInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<DnsQuery<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answers: Option<Vec<DnsAnswer>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rcode_id: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rcode: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finding_info: Option<FindingInfo<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_alert: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evidences: Option<Vec<Evidence<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<User<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub privileges: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app: Option<Product<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_provider: Option<&'static str>,
    pub unmapped: Unmapped<'a>,
}

#[derive(Debug, Serialize)]
pub struct Metadata<'a> {
    pub version: &'static str,
    pub product: Product<'a>,
    pub profiles: &'static [&'static str],
    /// The journal's per-node sequence number.
    pub sequence: u64,
    /// `time` as Vigil wrote it, RFC 3339 with nanoseconds.
    pub original_time: String,
}

/// The OCSF `product` object: Vigil in `metadata`, the agent in `app`.
#[derive(Debug, Serialize)]
pub struct Product<'a> {
    pub name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vendor_name: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<&'static str>,
}

const VIGIL: Product<'static> = Product {
    name: "Vigil",
    uid: None,
    vendor_name: Some("Vigil"),
    version: Some(env!("CARGO_PKG_VERSION")),
};

/// The node that observed the event.
#[derive(Debug, Serialize)]
pub struct Device<'a> {
    pub hostname: &'a str,
    pub name: &'a str,
    /// 0, Unknown: a node can be a server, a laptop or a VM.
    pub type_id: u8,
}

/// The activity of a class: (id, name).
type Activity = (u8, &'static str);

struct Class {
    uid: u16,
    name: &'static str,
    category_uid: u8,
    category_name: &'static str,
}

const SUCCESS: (u8, &str) = (1, "Success");
const FAILURE: (u8, &str) = (2, "Failure");

/// A class's `status_id` and caption for an action that did or did not succeed.
const fn status(ok: bool) -> (u8, &'static str) {
    if ok { SUCCESS } else { FAILURE }
}

/// OCSF `severity_id` and its caption for a Vigil severity.
#[must_use]
pub const fn severity(s: Severity) -> (u8, &'static str) {
    match s {
        Severity::Info => (1, "Informational"),
        Severity::Low => (2, "Low"),
        Severity::Medium => (3, "Medium"),
        Severity::High => (4, "High"),
        Severity::Critical => (5, "Critical"),
    }
}

fn millis(time: std::time::SystemTime) -> i64 {
    time.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Converts one event. `node` is the observing node (`device`).
#[must_use]
pub fn to_ocsf<'a>(e: &'a Event, node: &'a str) -> OcsfEvent<'a> {
    let mut r = OcsfEvent {
        activity_id: 0,
        activity_name: "Unknown",
        category_uid: 0,
        category_name: "",
        class_uid: 0,
        class_name: "",
        type_uid: 0,
        severity_id: 1,
        severity: "Informational",
        time: millis(e.time),
        status_id: None,
        status: None,
        status_code: None,
        status_detail: None,
        message: None,
        count: None,
        metadata: Metadata {
            version: SCHEMA_VERSION,
            product: VIGIL,
            profiles: PROFILES,
            sequence: e.seq,
            original_time: crate::event::format_time(e.time),
        },
        device: Device {
            hostname: node,
            name: node,
            type_id: 0,
        },
        actor: actor(e),
        process: None,
        exit_code: None,
        file: None,
        file_result: None,
        src_endpoint: None,
        dst_endpoint: None,
        connection_info: None,
        query: None,
        answers: None,
        rcode_id: None,
        rcode: None,
        finding_info: None,
        is_alert: None,
        evidences: None,
        user: None,
        privileges: None,
        app: None,
        log_name: None,
        log_provider: None,
        unmapped: Unmapped {
            vigil: vigil_fields(e),
        },
    };
    let (class, activity): (Class, Activity) = match &e.payload {
        Payload::Exec(x) => process::exec(&mut r, e, x),
        Payload::Fork(x) => process::fork(&mut r, e, x),
        Payload::Exit(x) => process::exit(&mut r, e, x),
        Payload::FileOpen(x) => file::open(&mut r, x),
        Payload::FileLink(x) => file::link(&mut r, x),
        Payload::Connect(x) => network::connect(&mut r, x),
        Payload::Accept(x) => network::accept(&mut r, x),
        Payload::DnsAnswer(x) => network::dns_answer(&mut r, x),
        Payload::DnsQuery(x) => network::dns_query(&mut r, x),
        Payload::Anomaly(a) => return findings::finding(r, e, a, node),
        Payload::IoUring(x) => process::io_uring(&mut r, e, x),
        Payload::Socket(x) => process::socket(&mut r, e, x),
        Payload::UnixConnect(x) => process::unix_connect(&mut r, e, x),
        Payload::SessionEscape(x) => process::session_escape(&mut r, e, x),
        Payload::TamperAttempt(x) => process::tamper_attempt(&mut r, e, x),
        Payload::SensorTampered(x) => daemon::sensor_tampered(&mut r, x),
        Payload::Loss(x) => daemon::loss(&mut r, x),
        Payload::Gap(x) => daemon::gap(&mut r, x),
        Payload::SessionStart(x) => daemon::session_start(&mut r, e, x),
        Payload::Revocation(x) => governance::revocation(&mut r, x),
        Payload::Restore(x) => governance::restore(&mut r, x),
        Payload::TaskApproved(x) => governance::task_approved(&mut r, x),
        Payload::TaskEnded(x) => governance::task_ended(&mut r, x),
        Payload::ConfigChange(x) => daemon::config_change(&mut r, x),
    };
    classify(&mut r, &class, activity);
    r
}

fn classify(r: &mut OcsfEvent<'_>, class: &Class, (id, name): Activity) {
    r.class_uid = class.uid;
    r.class_name = class.name;
    r.category_uid = class.category_uid;
    r.category_name = class.category_name;
    r.activity_id = id;
    r.activity_name = name;
    r.type_uid = u32::from(class.uid) * 100 + u32::from(id);
}

#[cfg(test)]
mod testing {
    use serde_json::Value;

    use super::{samples, to_ocsf};
    use crate::event::Event;

    pub(super) fn ocsf(e: &Event) -> Value {
        serde_json::to_value(to_ocsf(e, "node-1")).unwrap()
    }

    pub(super) fn of_kind(kind: &str) -> Vec<Value> {
        samples::all()
            .iter()
            .filter(|e| e.payload.kind() == kind)
            .map(ocsf)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::ocsf;
    use super::*;
    use crate::event::Severity;

    #[test]
    fn every_record_has_the_required_base_attributes() {
        for e in samples::all() {
            let r = ocsf(&e);
            let kind = e.payload.kind();
            for key in [
                "activity_id",
                "category_uid",
                "class_uid",
                "type_uid",
                "severity_id",
                "time",
                "actor",
                "device",
            ] {
                assert!(!r[key].is_null(), "{kind}: no {key}: {r}");
            }
            assert_eq!(
                r["type_uid"].as_u64().unwrap(),
                r["class_uid"].as_u64().unwrap() * 100 + r["activity_id"].as_u64().unwrap(),
                "{kind}"
            );
            assert_eq!(r["time"], 1_796_212_800_123_i64, "{kind}");
            assert_eq!(r["metadata"]["version"], "1.5.0");
            assert_eq!(r["metadata"]["product"]["name"], "Vigil");
            assert_eq!(r["metadata"]["sequence"], e.seq);
            assert_eq!(r["device"]["hostname"], "node-1");
            let v = &r["unmapped"]["vigil"];
            assert_eq!(v["kind"], kind);
            for key in ["agent", "session", "task", "pod", "spiffe_id"] {
                assert!(v.get(key).is_some(), "{kind}: unmapped.vigil.{key} missing");
            }
        }
    }

    #[test]
    fn the_samples_cover_every_kind() {
        let kinds: std::collections::BTreeSet<_> =
            samples::all().iter().map(|e| e.payload.kind()).collect();
        assert_eq!(kinds.len(), 24, "{kinds:?}");
    }

    #[test]
    fn severities_map_in_order() {
        let ids: Vec<u8> = [
            Severity::Info,
            Severity::Low,
            Severity::Medium,
            Severity::High,
            Severity::Critical,
        ]
        .into_iter()
        .map(|s| severity(s).0)
        .collect();
        assert_eq!(ids, [1, 2, 3, 4, 5]);
    }
}
