//! The OCSF objects every class shares (actor, user, process, file) and
//! Vigil's own view under `unmapped.vigil`.

use serde::Serialize;

use crate::event::{AnomalyKind, Event, Identity, Payload, Process, Severity, Workload};

#[derive(Debug, Default, Serialize)]
pub struct Actor<'a> {
    /// The governed agent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessObj<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<User<'a>>,
    /// The agent session (`vigil exec`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<Session<'a>>,
}

#[derive(Debug, Serialize)]
pub struct Session<'a> {
    pub uid: &'a str,
}

#[derive(Debug, Default, Serialize)]
pub struct User<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub type_id: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none", rename = "type")]
    pub type_name: Option<&'static str>,
}

#[derive(Debug, Default, Serialize)]
pub struct ProcessObj<'a> {
    pub pid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cmd_line: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<FileObj<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<User<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_process: Option<Box<ProcessObj<'a>>>,
}

#[derive(Debug, Serialize)]
pub struct FileObj<'a> {
    pub name: &'a str,
    pub path: &'a str,
    /// 1, Regular File, for programs; 0, Unknown, for opens (any kind of file).
    pub type_id: u8,
}

/// Vigil's own view, under `unmapped.vigil`.
#[derive(Debug, Serialize)]
pub struct Unmapped<'a> {
    pub vigil: VigilFields<'a>,
}

#[derive(Debug, Serialize)]
pub struct VigilFields<'a> {
    pub kind: &'static str,
    pub agent: Option<&'a str>,
    pub session: Option<&'a str>,
    pub task: Option<&'a str>,
    pub pod: Option<Pod<'a>>,
    pub spiffe_id: Option<&'a str>,
    pub cgroup_id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload: Option<&'a Workload>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lineage: Option<&'a [u32]>,
    /// The kind's own fields as in the JSON-lines schema; for an anomaly all
    /// but the offending event, which is the finding's evidence.
    pub details: Details<'a>,
}

#[derive(Debug, Serialize)]
pub struct Pod<'a> {
    pub uid: Option<&'a str>,
    pub name: Option<&'a str>,
    pub namespace: Option<&'a str>,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Details<'a> {
    Payload(&'a Payload),
    Anomaly {
        anomaly: AnomalyKind,
        severity: Severity,
        reason: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        identity_name: Option<&'a str>,
        count: u64,
        action: &'a str,
    },
}

pub(super) fn base_name(path: &str) -> &str {
    path.rsplit('/').find(|s| !s.is_empty()).unwrap_or(path)
}

pub(super) fn cmd_line(argv: &[String]) -> Option<String> {
    (!argv.is_empty()).then(|| argv.join(" "))
}

pub(super) fn user(uid: u32) -> User<'static> {
    User {
        uid: Some(uid.to_string()),
        ..User::default()
    }
}

pub(super) fn parent(ppid: u32) -> Option<Box<ProcessObj<'static>>> {
    (ppid != 0).then(|| {
        Box::new(ProcessObj {
            pid: ppid,
            ..ProcessObj::default()
        })
    })
}

pub(super) fn process_obj(p: &Process) -> ProcessObj<'_> {
    ProcessObj {
        pid: p.pid,
        tid: Some(p.tid),
        name: Some(p.comm.as_str()),
        cmd_line: cmd_line(&p.argv),
        file: p.exe.as_deref().map(|exe| FileObj {
            name: base_name(exe),
            path: exe,
            type_id: 1,
        }),
        user: Some(user(p.uid)),
        parent_process: parent(p.ppid),
    }
}

/// The agent identity as the actor: agent, session, the acting process and
/// its user. Events with none of those (node-wide losses, configuration
/// changes) are the Vigil daemon's own, and say so in `app_name`.
pub(super) fn actor(e: &Event) -> Actor<'_> {
    let id = &e.identity;
    let mut actor = Actor {
        app_name: id.agent.as_deref(),
        process: e.process.as_ref().map(process_obj),
        user: e.process.as_ref().map(|p| user(p.uid)),
        session: id.session.as_deref().map(|uid| Session { uid }),
    };
    if actor.app_name.is_none() && actor.process.is_none() && actor.session.is_none() {
        actor.app_name = Some("vigil");
    }
    actor
}

pub(super) fn vigil_fields(e: &Event) -> VigilFields<'_> {
    let id: &Identity = &e.identity;
    let workload = id.workload.as_ref();
    let (agent, session) = match &e.payload {
        Payload::Revocation(r) => (Some(r.agent.as_str()), r.session.as_deref()),
        Payload::Restore(r) => (Some(r.agent.as_str()), r.session.as_deref()),
        _ => (None, None),
    };
    let task = match &e.payload {
        Payload::TaskApproved(t) => Some(t.task.as_str()),
        Payload::TaskEnded(t) => Some(t.task.as_str()),
        _ => None,
    };
    let agent = id.agent.as_deref().or(agent).or(match &e.payload {
        Payload::TaskApproved(t) => Some(t.agent.as_str()),
        Payload::TaskEnded(t) => Some(t.agent.as_str()),
        _ => None,
    });
    VigilFields {
        kind: e.payload.kind(),
        agent,
        session: id.session.as_deref().or(session),
        task: id.task.as_deref().or(task),
        pod: workload
            .filter(|w| w.pod_uid.is_some() || w.pod_name.is_some())
            .map(|w| Pod {
                uid: w.pod_uid.as_deref(),
                name: w.pod_name.as_deref(),
                namespace: w.namespace.as_deref(),
            }),
        spiffe_id: workload.and_then(|w| w.spiffe_id.as_deref()),
        cgroup_id: id.cgroup_id,
        cgroup: id.cgroup.as_deref(),
        workload,
        lineage: e
            .process
            .as_ref()
            .map(|p| p.lineage.as_slice())
            .filter(|l| !l.is_empty()),
        details: match &e.payload {
            Payload::Anomaly(a) => Details::Anomaly {
                anomaly: a.anomaly,
                severity: a.severity,
                reason: &a.reason,
                identity_name: a.identity_name.as_deref(),
                count: a.count,
                action: &a.action,
            },
            p => Details::Payload(p),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::of_kind;

    #[test]
    fn the_agent_identity_is_in_actor_and_unmapped() {
        let r = &of_kind("exit")[0];
        assert_eq!(r["actor"]["app_name"], "coder");
        assert_eq!(r["actor"]["session"]["uid"], "s-1");
        assert_eq!(r["actor"]["user"]["uid"], "1000");
        assert_eq!(r["actor"]["process"]["pid"], 4100);
        let v = &r["unmapped"]["vigil"];
        assert_eq!(v["spiffe_id"], "spiffe://cluster.local/ns/agents/sa/coder");
        assert_eq!(v["pod"]["name"], "coder-0");
        assert_eq!(v["pod"]["namespace"], "agents");
        assert_eq!(v["task"], "T-7");
        assert_eq!(v["cgroup_id"], 4242);
    }
}
