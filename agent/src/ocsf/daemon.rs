//! The daemon's own records: Event Log Activity (1008) for sensor
//! tampering, ring-buffer losses and journal gaps, Application Lifecycle
//! (6002) for a session's start, Device Config State Change (5019) for a
//! configuration change.

use std::borrow::Cow;

use crate::event::{ConfigChange, Event, Gap, Loss, SensorTampered, SessionStart, Severity};

use super::objects::ProcessObj;
use super::{Activity, Class, OcsfEvent, Product, severity, status};

const EVENT_LOG_ACTIVITY: Class = Class {
    uid: 1008,
    name: "Event Log Activity",
    category_uid: 1,
    category_name: "System Activity",
};
const DEVICE_CONFIG_STATE_CHANGE: Class = Class {
    uid: 5019,
    name: "Device Config State Change",
    category_uid: 5,
    category_name: "Discovery",
};
const APPLICATION_LIFECYCLE: Class = Class {
    uid: 6002,
    name: "Application Lifecycle",
    category_uid: 6,
    category_name: "Application Activity",
};

pub(super) fn sensor_tampered<'a>(
    r: &mut OcsfEvent<'a>,
    x: &'a SensorTampered,
) -> (Class, Activity) {
    // Something removed a pin or detached a link of the sensor:
    // the monitoring itself was switched off, if only briefly.
    r.log_provider = Some("vigil");
    r.log_name = Some(&x.sensor);
    r.message = Some(Cow::Owned(format!(
        "{} of {} at {}: {}",
        x.tamper, x.object, x.path, x.action
    )));
    (r.severity_id, r.severity) = severity(Severity::High);
    (EVENT_LOG_ACTIVITY, (10, "Disable"))
}

pub(super) fn loss<'a>(r: &mut OcsfEvent<'a>, x: &'a Loss) -> (Class, Activity) {
    r.log_provider = Some("vigil");
    r.log_name = Some(&x.sensor);
    r.count = Some(x.lost);
    r.message = Some(Cow::Owned(format!(
        "{} records of the {} sensor lost in the kernel ring buffer ({} in total)",
        x.lost, x.sensor, x.total
    )));
    // Lost records are a blind spot, which a session can cause on
    // purpose to hide an action.
    (r.severity_id, r.severity) = severity(Severity::Medium);
    (EVENT_LOG_ACTIVITY, (99, "Drop"))
}

pub(super) fn gap(r: &mut OcsfEvent<'_>, x: &Gap) -> (Class, Activity) {
    r.log_provider = Some("vigil");
    r.log_name = Some("journal");
    r.count = Some(x.last_missing.saturating_sub(x.first_missing) + 1);
    r.message = Some(Cow::Owned(format!(
        "sequences {}..={} pruned by journal retention",
        x.first_missing, x.last_missing
    )));
    (EVENT_LOG_ACTIVITY, (2, "Delete"))
}

pub(super) fn session_start<'a>(
    r: &mut OcsfEvent<'a>,
    e: &'a Event,
    x: &'a SessionStart,
) -> (Class, Activity) {
    r.app = Some(Product {
        name: e.identity.agent.as_deref().unwrap_or("unattributed"),
        uid: e.identity.session.as_deref(),
        vendor_name: None,
        version: None,
    });
    r.actor.process = Some(ProcessObj {
        pid: x.requested_by_pid,
        ..ProcessObj::default()
    });
    r.message = Some(Cow::Borrowed(&x.cgroup));
    (APPLICATION_LIFECYCLE, (3, "Start"))
}

pub(super) fn config_change(r: &mut OcsfEvent<'_>, x: &ConfigChange) -> (Class, Activity) {
    let (id, name) = status(x.applied);
    (r.status_id, r.status) = (Some(id), Some(name));
    r.message = Some(Cow::Owned(format!("configuration version {}", x.version)));
    if !x.errors.is_empty() {
        r.status_detail = Some(Cow::Owned(x.errors.join("; ")));
        (r.severity_id, r.severity) = severity(Severity::Low);
    }
    (DEVICE_CONFIG_STATE_CHANGE, (1, "Log"))
}

#[cfg(test)]
mod tests {
    use super::super::testing::of_kind;

    #[test]
    fn daemon_records_have_fitting_classes() {
        let s = &of_kind("session_start")[0];
        assert_eq!(
            (s["class_uid"].clone(), s["activity_id"].clone()),
            (6002.into(), 3.into())
        );
        assert_eq!(s["app"]["name"], "coder");
        assert_eq!(s["app"]["uid"], "s-1");
        let l = of_kind("loss");
        assert_eq!(
            (l[0]["class_uid"].clone(), l[0]["activity_id"].clone()),
            (1008.into(), 99.into())
        );
        assert_eq!(l[0]["count"], 12);
        assert_eq!(l[0]["log_name"], "file");
        assert_eq!(l[0]["severity_id"], 3);
        assert_eq!(
            l[1]["actor"]["app_name"], "vigil",
            "the node's loss is the daemon's own"
        );
        let c = of_kind("config_change");
        assert_eq!(
            (c[0]["class_uid"].clone(), c[0]["activity_id"].clone()),
            (5019.into(), 1.into())
        );
        assert_eq!(c[0]["status_id"], 1);
        assert_eq!(c[1]["status_id"], 2);
        assert_eq!(
            c[1]["status_detail"],
            "agent.coder.scope.systems[0]: bad host"
        );
        let g = &of_kind("gap")[0];
        assert_eq!(
            (g["class_uid"].clone(), g["activity_id"].clone()),
            (1008.into(), 2.into())
        );
        assert_eq!(g["count"], 7);
    }
}
