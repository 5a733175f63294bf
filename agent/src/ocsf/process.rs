//! Process Activity (1007): execs, forks, exits, and io_uring, socket
//! creation, unix socket connects and session escapes, which no class of
//! OCSF 1.5 describes.

use std::borrow::Cow;

use crate::event::{
    Event, Exec, Exit, Fork, IoUring, SessionEscape, Socket, TamperAttempt, UnixConnect,
};

use super::objects::{FileObj, ProcessObj, base_name, cmd_line, parent, process_obj, user};
use super::{Activity, Class, OcsfEvent, status};

const PROCESS_ACTIVITY: Class = Class {
    uid: 1007,
    name: "Process Activity",
    category_uid: 1,
    category_name: "System Activity",
};

pub(super) fn exec<'a>(r: &mut OcsfEvent<'a>, e: &'a Event, x: &'a Exec) -> (Class, Activity) {
    let p = e.process.as_ref();
    r.process = Some(ProcessObj {
        pid: p.map_or(0, |p| p.pid),
        tid: p.map(|p| p.tid),
        name: p.map(|p| p.comm.as_str()),
        cmd_line: cmd_line(&x.argv),
        file: Some(FileObj {
            name: base_name(&x.filename),
            path: &x.filename,
            type_id: 1,
        }),
        user: p.map(|p| user(p.uid)),
        parent_process: p.and_then(|p| parent(p.ppid)),
    });
    // The launcher of the new program is the parent; the calling
    // image is gone by the time the record is made.
    r.actor.process = p.map(|p| ProcessObj {
        pid: p.ppid,
        ..ProcessObj::default()
    });
    let (id, name) = status(!x.blocked);
    (r.status_id, r.status) = (Some(id), Some(name));
    if x.blocked {
        r.status_detail = Some(Cow::Borrowed(
            "killed before the new program ran (revoked, or no task approval)",
        ));
    }
    (PROCESS_ACTIVITY, (1, "Launch"))
}

pub(super) fn fork(r: &mut OcsfEvent<'_>, e: &Event, x: &Fork) -> (Class, Activity) {
    r.process = Some(ProcessObj {
        pid: x.child_pid,
        parent_process: e.process.as_ref().map(|p| {
            Box::new(ProcessObj {
                pid: p.pid,
                ..ProcessObj::default()
            })
        }),
        ..ProcessObj::default()
    });
    (PROCESS_ACTIVITY, (1, "Launch"))
}

pub(super) fn exit<'a>(r: &mut OcsfEvent<'a>, e: &'a Event, x: &Exit) -> (Class, Activity) {
    r.process = e
        .process
        .as_ref()
        .map(process_obj)
        .or(Some(ProcessObj::default()));
    r.exit_code = x.code;
    if let Some(sig) = x.signal {
        r.status_detail = Some(Cow::Owned(format!("killed by signal {sig}")));
    }
    (PROCESS_ACTIVITY, (2, "Terminate"))
}

pub(super) fn io_uring<'a>(r: &mut OcsfEvent<'a>, e: &'a Event, x: &IoUring) -> (Class, Activity) {
    // A ring (or a request on one) is an act of the process, and
    // no class of 1.5 describes io_uring: Process Activity, Other.
    r.process = e
        .process
        .as_ref()
        .map(process_obj)
        .or(Some(ProcessObj::default()));
    let (id, name) = status(!x.blocked);
    (r.status_id, r.status) = (Some(id), Some(name));
    r.message = Some(Cow::Owned(format!("io_uring {}", x.op)));
    if x.blocked {
        r.status_detail = Some(Cow::Borrowed(
            "killed in the kernel before its first request (io_uring denied, or revoked)",
        ));
    }
    (PROCESS_ACTIVITY, (99, "Other"))
}

pub(super) fn socket<'a>(r: &mut OcsfEvent<'a>, e: &'a Event, x: &Socket) -> (Class, Activity) {
    // Creating a socket opens no connection (Network Activity needs
    // endpoints it does not have): an act of the process, Other.
    r.process = e
        .process
        .as_ref()
        .map(process_obj)
        .or(Some(ProcessObj::default()));
    let (id, name) = status(!x.blocked);
    (r.status_id, r.status) = (Some(id), Some(name));
    r.message = Some(Cow::Owned(format!(
        "socket {} ({}, type {}, protocol {})",
        x.class, x.family_name, x.sock_type, x.protocol
    )));
    if x.blocked {
        r.status_detail = Some(Cow::Borrowed(if x.refused_with_eperm() {
            "refused in the kernel (EPERM): outside the agent's socket_families"
        } else {
            "killed in the kernel before socket(2) returned: outside the agent's socket_families"
        }));
    }
    (PROCESS_ACTIVITY, (99, "Other"))
}

pub(super) fn unix_connect<'a>(
    r: &mut OcsfEvent<'a>,
    e: &'a Event,
    x: &UnixConnect,
) -> (Class, Activity) {
    // A unix socket has no network endpoint (Network Activity's endpoints
    // are addresses and ports): an act of the process, Other.
    r.process = e
        .process
        .as_ref()
        .map(process_obj)
        .or(Some(ProcessObj::default()));
    let (id, name) = status(!x.blocked);
    (r.status_id, r.status) = (Some(id), Some(name));
    r.message = Some(Cow::Owned(format!("unix {} {}", x.op, x.path)));
    if x.blocked {
        r.status_detail = Some(Cow::Borrowed(
            "refused in the kernel (EPERM): outside the agent's systems, or revoked",
        ));
    }
    (PROCESS_ACTIVITY, (99, "Other"))
}

pub(super) fn session_escape<'a>(
    r: &mut OcsfEvent<'a>,
    e: &'a Event,
    x: &SessionEscape,
) -> (Class, Activity) {
    // Moving a process between cgroups is an act on a process (the writer
    // is `process`), which no activity of 1.5 names: Other.
    r.process = e
        .process
        .as_ref()
        .map(process_obj)
        .or(Some(ProcessObj::default()));
    let (id, name) = status(!x.blocked);
    (r.status_id, r.status) = (Some(id), Some(name));
    r.message = Some(Cow::Owned(format!(
        "pid {} moved out of its session to {}",
        x.moved_pid,
        x.to_cgroup
            .clone()
            .unwrap_or_else(|| format!("cgroup id {}", x.to_cgroup_id))
    )));
    if x.blocked {
        r.status_detail = Some(Cow::Borrowed("killed: the agent is enforced"));
    }
    (PROCESS_ACTIVITY, (99, "Other"))
}

pub(super) fn tamper_attempt<'a>(
    r: &mut OcsfEvent<'a>,
    e: &'a Event,
    x: &TamperAttempt,
) -> (Class, Activity) {
    r.process = e
        .process
        .as_ref()
        .map(process_obj)
        .or(Some(ProcessObj::default()));
    let (id, name) = status(!x.blocked);
    (r.status_id, r.status) = (Some(id), Some(name));
    let target = x
        .target_tid
        .map_or_else(String::new, |t| format!(" of the daemon (thread {t})"));
    r.message = Some(Cow::Owned(format!("{} {}{target}", x.method, x.detail)));
    if x.blocked {
        r.status_detail = Some(Cow::Borrowed("killed: the agent is enforced or revoked"));
    }
    // Writing into another process is OCSF's Inject; reading it, or a
    // descriptor of it, is Open; signals and bpf() have no activity of
    // their own.
    let activity = match x.method.as_str() {
        "ptrace" | "process_vm_writev" => (4, "Inject"),
        "process_vm_readv" | "pidfd_open" => (3, "Open"),
        _ => (99, "Other"),
    };
    (PROCESS_ACTIVITY, activity)
}

#[cfg(test)]
mod tests {
    use super::super::testing::of_kind;

    #[test]
    fn process_kinds_are_process_activity() {
        let exec = of_kind("exec");
        assert_eq!(
            (exec[0]["class_uid"].clone(), exec[0]["activity_id"].clone()),
            (1007.into(), 1.into())
        );
        assert_eq!(exec[0]["process"]["file"]["path"], "/usr/bin/git");
        assert_eq!(exec[0]["process"]["cmd_line"], "git push");
        assert_eq!(exec[0]["actor"]["process"]["pid"], 4000);
        assert_eq!(exec[0]["status_id"], 1);
        assert_eq!(exec[1]["status_id"], 2, "a blocked exec failed");
        let fork = &of_kind("fork")[0];
        assert_eq!(fork["type_uid"], 100_701);
        assert_eq!(fork["process"]["pid"], 4101);
        assert_eq!(fork["process"]["parent_process"]["pid"], 4100);
        let exit = of_kind("exit");
        assert_eq!(exit[0]["type_uid"], 100_702);
        assert_eq!(exit[0]["exit_code"], 0);
        assert_eq!(exit[1]["status_detail"], "killed by signal 9");
    }
}
