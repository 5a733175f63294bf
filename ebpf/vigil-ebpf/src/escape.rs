//! Session escape: a watched process that moves itself, or another watched
//! process, out of its session cgroup by writing a `cgroup.procs` file. The
//! move is seen only after it happened (raw tracepoint
//! `cgroup_attach_task`, in the writer's context), so where each watched
//! process belongs is noted beforehand, at its fork and exec
//! (`WATCHED_TASKS`). A new process that its parent creates straight in
//! another cgroup (`clone3` with `CLONE_INTO_CGROUP`) moves nothing and is
//! seen at the fork. An escape is reported; the cgroup it reached stays
//! watched until the process exits; for an enforced agent the writer is
//! killed at once (the daemon kills a moved process that is not the writer).

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{
        bpf_get_current_pid_tgid,
        generated::{bpf_get_current_ancestor_cgroup_id, bpf_send_signal},
    },
    macros::{map, raw_tracepoint},
    maps::LruHashMap,
    programs::RawTracePointContext,
};
use vigil_common::{
    ESCAPE_CLONE, ESCAPE_SELF, EscapeRecord, KernelConfig, RecordKind, Sensor, TaskSession,
    WATCHED_TASKS_ENTRIES, policy, verdict, watch,
};

use crate::{
    abi::SIGKILL,
    enforce::POLICY,
    maps::{EVENTS, WATCHED, config, count_loss, wake_flags},
    task::{
        ancestor_id, cgroup_id as cgroup_id_of, fill_header, read_field, read_raw, watched_current,
    },
};

/// Where each watched process belongs (see [`TaskSession`]).
#[map]
pub static WATCHED_TASKS: LruHashMap<u32, TaskSession> =
    LruHashMap::with_max_entries(WATCHED_TASKS_ENTRIES, 0);

/// Notes that process `tgid`, about to run in the current task's cgroup
/// `cgroup_id` (a fork's parent, or the process itself at exec), is watched.
#[inline(always)]
pub fn note(cfg: &KernelConfig, tgid: u32, cgroup_id: u64) {
    let _ = noted(cfg, tgid, cgroup_id, true);
}

/// [`note`], returning the note. With `keep_escaped` (an exec), a process
/// that escaped keeps its note (and with it its session), and `None` is
/// returned; a new process (a fork) replaces whatever an exited one with
/// the same id left.
#[inline(always)]
fn noted(cfg: &KernelConfig, tgid: u32, cgroup_id: u64, keep_escaped: bool) -> Option<TaskSession> {
    let (mut agent_dir, mut session) = (0, 0);
    if cfg.session_parent_level != 0 {
        let level = cfg.session_parent_level as i32;
        // SAFETY: helpers without memory arguments; out of range gives 0.
        unsafe {
            agent_dir = bpf_get_current_ancestor_cgroup_id(level + 1);
            session = bpf_get_current_ancestor_cgroup_id(level + 2);
        }
    }
    // SAFETY: the value is copied out.
    if keep_escaped
        && let Some(old) = unsafe { WATCHED_TASKS.get(tgid) }
        && old.escaped_to != 0
    {
        return None;
    }
    let ts = TaskSession {
        cgroup_id,
        agent_dir: if session == 0 { 0 } else { agent_dir },
        session,
        escaped_to: 0,
    };
    let _ = WATCHED_TASKS.insert(tgid, ts, 0);
    Some(ts)
}

/// A watched parent's new process: noted, and an escape when it was
/// created outside the parent's session.
#[inline(always)]
pub fn on_fork(cfg: &KernelConfig, child: *const u8, tgid: u32, cgroup_id: u64) -> Option<()> {
    let mut ts = noted(cfg, tgid, cgroup_id, false)?;
    let off = &cfg.offsets;
    let cset: *const u8 = read_field(child, off.task_cgroups)?;
    let cgrp: *const u8 = read_field(cset, off.css_set_dfl_cgrp)?;
    let child_cgroup = cgroup_id_of(cfg, cgrp)?;
    if child_cgroup == cgroup_id || stays(cfg, &ts, cgrp, child_cgroup) {
        return Some(());
    }
    escaped(cfg, &mut ts, tgid, child_cgroup, ESCAPE_CLONE)
}

/// Whether `dst` (with id `dst_id`) is within where the noted process
/// belongs: its session's cgroups, or its own cgroup outside sessions.
#[inline(always)]
fn stays(cfg: &KernelConfig, ts: &TaskSession, dst: *const u8, dst_id: u64) -> bool {
    if ts.session != 0 {
        ancestor_id(cfg, dst, cfg.session_parent_level + 2) == Some(ts.session)
    } else {
        dst_id == ts.cgroup_id
    }
}

/// Forgets an exiting process; the cgroup it escaped into is watched no more.
#[inline(always)]
pub fn forget(tgid: u32) {
    // SAFETY: the value is copied out.
    let Some(ts) = (unsafe { WATCHED_TASKS.get(tgid) }).copied() else {
        return;
    };
    // SAFETY: as above.
    if ts.escaped_to != 0 && unsafe { WATCHED.get(ts.escaped_to) } == Some(&watch::ESCAPED) {
        let _ = WATCHED.remove(ts.escaped_to);
    }
    let _ = WATCHED_TASKS.remove(tgid);
}

#[raw_tracepoint(tracepoint = "cgroup_attach_task")]
pub fn vigil_cgroup_attach(ctx: RawTracePointContext) -> i32 {
    let _ = try_attach(&ctx);
    0
}

fn try_attach(ctx: &RawTracePointContext) -> Option<()> {
    let cfg = config();
    let off = &cfg.offsets;
    // cgroup_attach_task(dst_cgrp, path, task, threadgroup)
    let dst: *const u8 = ctx.arg(0);
    let task: *const u8 = ctx.arg(2);
    let tgid: u32 = read_field(task, off.task_tgid)?;
    // SAFETY: the value is copied out.
    let mut ts = (unsafe { WATCHED_TASKS.get(tgid) }).copied()?;
    // cgroup v1 hierarchies (of a hybrid node) are not where sessions are.
    let root: *const u8 = read_field(dst, off.cgroup_root)?;
    let hierarchy: i32 = read_raw(root, off.root_hierarchy_id)?;
    if hierarchy != 0 {
        return None;
    }
    let writer = (bpf_get_current_pid_tgid() >> 32) as u32;
    let self_move = writer == tgid;
    // Moved by someone outside every session (the daemon, an operator):
    // not the session's doing.
    // SAFETY: the value is only tested for presence.
    if !self_move
        && watched_current(cfg).is_none()
        && unsafe { WATCHED_TASKS.get(writer) }.is_none()
    {
        return None;
    }
    let dst_id = cgroup_id_of(cfg, dst)?;
    if stays(cfg, &ts, dst, dst_id) || (ts.escaped_to != 0 && dst_id == ts.escaped_to) {
        return None;
    }
    escaped(
        cfg,
        &mut ts,
        tgid,
        dst_id,
        if self_move { ESCAPE_SELF } else { 0 },
    )
}

/// Process `tgid` (noted as `ts`) is now in cgroup `dst_id`, outside where
/// it belongs: kills the writer for an enforced agent, keeps the new cgroup
/// watched, and reports.
#[inline(always)]
fn escaped(
    cfg: &KernelConfig,
    ts: &mut TaskSession,
    tgid: u32,
    dst_id: u64,
    flags: u32,
) -> Option<()> {
    let mut merged = 0;
    for id in [ts.cgroup_id, ts.agent_dir, ts.session] {
        // SAFETY: the value is copied out.
        if id != 0
            && let Some(p) = unsafe { POLICY.get(id) }
        {
            merged |= p.flags;
        }
    }
    let enforced = merged & (policy::ENFORCE_SYSTEMS | policy::REVOKED) != 0;
    if enforced {
        // SAFETY: helper without memory arguments.
        unsafe { bpf_send_signal(SIGKILL) };
    }
    // Its new cgroup is watched while it lives (a configured one stays so).
    let _ = WATCHED.insert(dst_id, watch::ESCAPED, u64::from(BPF_NOEXIST));
    ts.escaped_to = dst_id;
    let _ = WATCHED_TASKS.insert(tgid, *ts, 0);
    let Some(mut entry) = EVENTS.reserve::<EscapeRecord>(0) else {
        count_loss(Sensor::Process, ts.cgroup_id);
        return None;
    };
    // SAFETY: the reservation is sizeof(EscapeRecord); every field is written.
    let rec = unsafe { &mut *entry.as_mut_ptr() };
    fill_header(
        &mut rec.header,
        RecordKind::Escape as u16,
        ts.cgroup_id,
        cfg,
    );
    rec.header.verdict = if enforced {
        verdict::BLOCKED_ESCAPE
    } else {
        verdict::ALLOWED
    };
    rec.moved_tgid = tgid;
    rec.flags = flags;
    rec.dst_cgroup_id = dst_id;
    // Always prompt: rare, and the daemon attributes the new cgroup.
    entry.submit(wake_flags(cfg, true));
    Some(())
}
