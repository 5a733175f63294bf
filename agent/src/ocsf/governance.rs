//! User Access Management (3005): revocations, restores and task
//! approvals, with the agent as the `user` whose privileges changed and the
//! caller as the `actor`.

use std::borrow::Cow;

use crate::event::{Restore, Revocation, TaskApproved, TaskEnded, TaskScope};

use super::objects::{Actor, User};
use super::{Activity, Class, OcsfEvent};

const USER_ACCESS: Class = Class {
    uid: 3005,
    name: "User Access Management",
    category_uid: 3,
    category_name: "Identity & Access Management",
};

fn task_privileges(task: &str, scope: Option<&TaskScope>) -> Vec<String> {
    let mut out = vec![format!("task:{task}")];
    if let Some(s) = scope {
        out.extend(s.systems.iter().map(|x| format!("system:{x}")));
        out.extend(s.tools.iter().map(|x| format!("tool:{x}")));
        out.extend(s.data.iter().map(|x| format!("data:{x}")));
    }
    out
}

fn scope_privilege(agent: &str, session: Option<&str>) -> Vec<String> {
    vec![match session {
        Some(s) => format!("scope:{agent}/{s}"),
        None => format!("scope:{agent}"),
    }]
}

/// The agent whose privileges changed, as the OCSF `user` of the record.
fn agent_user(agent: &str) -> User<'_> {
    User {
        name: Some(agent),
        type_id: Some(99),
        type_name: Some("AI agent"),
        ..User::default()
    }
}

/// The caller of an administrative action (`by`).
fn caller(by: &str) -> Actor<'_> {
    Actor {
        user: Some(User {
            name: Some(by),
            ..User::default()
        }),
        ..Actor::default()
    }
}

pub(super) fn revocation<'a>(r: &mut OcsfEvent<'a>, x: &'a Revocation) -> (Class, Activity) {
    r.actor = caller(&x.by);
    r.user = Some(agent_user(&x.agent));
    r.privileges = Some(scope_privilege(&x.agent, x.session.as_deref()));
    r.message = Some(Cow::Borrowed(&x.reason));
    (USER_ACCESS, (2, "Revoke Privileges"))
}

pub(super) fn restore<'a>(r: &mut OcsfEvent<'a>, x: &'a Restore) -> (Class, Activity) {
    r.actor = caller(&x.by);
    r.user = Some(agent_user(&x.agent));
    r.privileges = Some(scope_privilege(&x.agent, x.session.as_deref()));
    r.message = Some(Cow::Borrowed(&x.reason));
    (USER_ACCESS, (1, "Assign Privileges"))
}

pub(super) fn task_approved<'a>(r: &mut OcsfEvent<'a>, x: &'a TaskApproved) -> (Class, Activity) {
    r.actor = caller(&x.by);
    r.user = Some(agent_user(&x.agent));
    r.privileges = Some(task_privileges(&x.task, x.scope.as_ref()));
    r.message = Some(Cow::Borrowed(&x.purpose));
    (USER_ACCESS, (1, "Assign Privileges"))
}

pub(super) fn task_ended<'a>(r: &mut OcsfEvent<'a>, x: &'a TaskEnded) -> (Class, Activity) {
    r.actor = caller(&x.by);
    r.user = Some(agent_user(&x.agent));
    r.privileges = Some(task_privileges(&x.task, None));
    r.message = Some(Cow::Borrowed(&x.reason));
    (USER_ACCESS, (2, "Revoke Privileges"))
}

#[cfg(test)]
mod tests {
    use super::super::testing::of_kind;

    #[test]
    fn governance_actions_are_user_access_with_reason_and_caller() {
        let r = &of_kind("revocation")[0];
        assert_eq!(
            (r["class_uid"].clone(), r["activity_id"].clone()),
            (3005.into(), 2.into())
        );
        assert_eq!(r["actor"]["user"]["name"], "on_violation of agent coder");
        assert_eq!(r["user"]["name"], "coder");
        assert_eq!(r["privileges"][0], "scope:coder/s-1");
        assert_eq!(r["message"], "unapproved system");
        let s = &of_kind("restore")[0];
        assert_eq!(s["activity_id"], 1);
        assert_eq!(s["actor"]["user"]["name"], "uid 0 (pid 5000)");
        assert_eq!(s["privileges"][0], "scope:coder");
        let t = &of_kind("task_approved")[0];
        assert_eq!(t["activity_id"], 1);
        assert_eq!(
            t["privileges"],
            serde_json::json!([
                "task:T-7",
                "system:github.com:443",
                "tool:/usr/bin/git",
                "data:repo"
            ])
        );
        assert_eq!(t["actor"]["user"]["name"], "alice@example.com");
        let e = &of_kind("task_ended")[0];
        assert_eq!(e["activity_id"], 2);
        assert_eq!(e["message"], "expired");
    }
}
