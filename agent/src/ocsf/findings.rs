//! Detection Finding (2004): an anomaly, with the offending event as its
//! evidence.

use std::borrow::Cow;

use serde::Serialize;

use crate::event::{Anomaly, AnomalyKind, Event};

use super::network::{ConnectionInfo, DnsQuery, Endpoint};
use super::objects::{Actor, FileObj, ProcessObj};
use super::{Class, OcsfEvent, classify, severity, to_ocsf};

#[derive(Debug, Serialize)]
pub struct FindingInfo<'a> {
    pub uid: String,
    pub title: &'static str,
    pub desc: &'a str,
    pub types: [&'static str; 1],
}

/// What the anomaly's offending event did, as OCSF objects, and the event
/// itself in `data`.
#[derive(Debug, Serialize)]
pub struct Evidence<'a> {
    pub actor: Actor<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessObj<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<FileObj<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_endpoint: Option<Endpoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst_endpoint: Option<Endpoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_info: Option<ConnectionInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<DnsQuery<'a>>,
    pub data: &'a Event,
}

const DETECTION_FINDING: Class = Class {
    uid: 2004,
    name: "Detection Finding",
    category_uid: 2,
    category_name: "Findings",
};

const fn anomaly_title(kind: AnomalyKind) -> &'static str {
    match kind {
        AnomalyKind::UnapprovedSystem => "Connection to an unapproved system",
        AnomalyKind::UnapprovedTool => "Unapproved tool run",
        AnomalyKind::DataOutsideScope => "Data access outside scope",
        AnomalyKind::IdentityOutsideScope => "Identity used outside scope",
        AnomalyKind::Unattributed => "Activity no agent matches",
        AnomalyKind::UnapprovedTask => "Activity without an approved task",
        AnomalyKind::RevokedActivity => "Activity of a revoked agent",
        AnomalyKind::DnsAnswerRejected => "DNS answer not believed",
        AnomalyKind::IoUringUsed => "io_uring set up by an agent",
        AnomalyKind::DnsExfiltrationSuspected => "Data encoded in a DNS query name",
        AnomalyKind::LinkToProtected => "New name for a protected file",
        AnomalyKind::UnusualSocket => "unusual socket created by an agent",
        AnomalyKind::SessionEscape => "agent process moved out of its session",
        AnomalyKind::TamperAttempt => "agent process reached for its governor",
        AnomalyKind::ExecFromMemory => "program run from memory by an agent",
    }
}

/// An anomaly as a Detection Finding, the offending event as its evidence.
pub(super) fn finding<'a>(
    mut r: OcsfEvent<'a>,
    e: &'a Event,
    a: &'a Anomaly,
    node: &'a str,
) -> OcsfEvent<'a> {
    let offending = to_ocsf(&a.offending, node);
    r.evidences = Some(vec![Evidence {
        actor: offending.actor,
        process: offending.process,
        file: offending.file,
        src_endpoint: offending.src_endpoint,
        dst_endpoint: offending.dst_endpoint,
        connection_info: offending.connection_info,
        query: offending.query,
        data: &a.offending,
    }]);
    r.finding_info = Some(FindingInfo {
        uid: format!("{node}/{}", e.seq),
        title: anomaly_title(a.anomaly),
        desc: &a.reason,
        types: [a.anomaly.as_str()],
    });
    (r.severity_id, r.severity) = severity(a.severity);
    r.is_alert = Some(true);
    r.count = Some(a.count);
    r.message = Some(Cow::Borrowed(&a.reason));
    r.status_detail = Some(Cow::Borrowed(&a.action));
    classify(&mut r, &DETECTION_FINDING, (1, "Create"));
    r
}

#[cfg(test)]
mod tests {
    use super::super::testing::of_kind;

    #[test]
    fn an_anomaly_is_a_detection_finding_with_its_evidence() {
        let f = &of_kind("anomaly")[0];
        assert_eq!(
            (f["class_uid"].clone(), f["activity_id"].clone()),
            (2004.into(), 1.into())
        );
        assert_eq!(f["severity_id"], 4, "high");
        assert_eq!(f["finding_info"]["uid"], "node-1/11");
        assert_eq!(f["finding_info"]["types"][0], "unapproved_system");
        assert_eq!(
            f["finding_info"]["desc"],
            "203.0.113.7:443 is not in the agent's systems"
        );
        let ev = &f["evidences"][0];
        assert_eq!(ev["dst_endpoint"]["ip"], "203.0.113.7");
        assert_eq!(ev["actor"]["app_name"], "coder");
        assert_eq!(ev["data"]["kind"], "connect");
        assert_eq!(ev["data"]["seq"], 4);
        assert_eq!(f["unmapped"]["vigil"]["details"]["action"], "revoked");
        assert!(f["unmapped"]["vigil"]["details"].get("offending").is_none());
    }
}
