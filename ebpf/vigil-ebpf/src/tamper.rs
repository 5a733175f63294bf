//! Self-protection: a watched process that reaches for the daemon (a
//! signal to it, `ptrace`, reading or writing its memory, a pidfd of it) or
//! calls `bpf()` at all, through which the pinned maps that hold
//! revocations and scopes could be rewritten. Each is reported; for an
//! enforced (or revoked) agent the caller is killed. None of these hooks can
//! refuse the call (only LSM hooks could): the kill is taken on the way back
//! to user space, so the call that triggered it is the caller's last.
//!
//! The daemon's threads are kept in `DAEMON_TASKS` because the syscalls
//! name a thread id; the daemon seeds the map at load, and the fork and exit
//! programs add and remove its later threads.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, generated::bpf_send_signal},
    macros::{map, raw_tracepoint, tracepoint},
    maps::HashMap,
    programs::{RawTracePointContext, TracePointContext},
};
use vigil_common::{
    DAEMON_TASKS_ENTRIES, KernelConfig, RecordKind, Sensor, TamperRecord, policy, tamper, verdict,
};

use crate::{
    abi::SIGKILL,
    enforce::{self, current_policy},
    maps::{EVENTS, config, count_loss, wake_flags},
    task::{fill_header, read_field, watched_current},
};

/// Thread ids of the daemon (value unused).
#[map]
pub static DAEMON_TASKS: HashMap<u32, u8> = HashMap::with_max_entries(DAEMON_TASKS_ENTRIES, 0);

/// Whether thread (or process) id `tid` is the daemon's.
#[inline(always)]
fn is_daemon(cfg: &KernelConfig, tid: u32) -> bool {
    // SAFETY: the value is only tested for presence.
    tid != 0 && (tid == cfg.daemon_tgid || unsafe { DAEMON_TASKS.get(tid) }.is_some())
}

/// A new thread of the daemon (called for every fork on the node: one
/// comparison unless the daemon is the parent).
#[inline(always)]
pub fn on_fork(cfg: &KernelConfig, child: *const u8) {
    if (bpf_get_current_pid_tgid() >> 32) as u32 != cfg.daemon_tgid {
        return;
    }
    if let Some(pid) = read_field::<u32>(child, cfg.offsets.task_pid) {
        let _ = DAEMON_TASKS.insert(pid, 1, 0);
    }
}

/// A thread of the daemon ends (called for every exit on the node).
#[inline(always)]
pub fn on_exit(cfg: &KernelConfig) {
    let pid_tgid = bpf_get_current_pid_tgid();
    if (pid_tgid >> 32) as u32 == cfg.daemon_tgid {
        let _ = DAEMON_TASKS.remove(pid_tgid as u32);
    }
}

/// Reports the attempt of the current (watched) task and kills it when its
/// agent is enforced.
#[inline(always)]
fn attempt(cfg: &KernelConfig, cgroup_id: u64, method: u16, arg: u32, target_tid: u32) {
    let policy = current_policy(cfg, cgroup_id);
    let enforced = policy
        .as_ref()
        .is_some_and(|p| p.flags & policy::ENFORCE_SYSTEMS != 0 || enforce::blocked(p).is_some());
    if enforced {
        // First, so it holds even when the record finds no room.
        // SAFETY: helper without memory arguments.
        unsafe { bpf_send_signal(SIGKILL) };
    }
    let Some(mut entry) = EVENTS.reserve::<TamperRecord>(0) else {
        count_loss(Sensor::Process, cgroup_id);
        return;
    };
    // SAFETY: the reservation is sizeof(TamperRecord); every field is written.
    let rec = unsafe { &mut *entry.as_mut_ptr() };
    fill_header(&mut rec.header, RecordKind::Tamper as u16, cgroup_id, cfg);
    rec.header.verdict = if enforced {
        verdict::BLOCKED_TAMPER
    } else {
        verdict::ALLOWED
    };
    rec.method = method;
    rec._pad = 0;
    rec.arg = arg;
    rec.target_tid = target_tid;
    rec._pad2 = 0;
    // Always prompt: rare, and aimed at the daemon itself.
    entry.submit(wake_flags(cfg, true));
}

/// `signal_generate(sig, info, task, group, result)`: every signal sent on
/// the node, with the task it is for; only those from a watched task to the
/// daemon are reported.
#[raw_tracepoint(tracepoint = "signal_generate")]
pub fn vigil_signal(ctx: RawTracePointContext) -> i32 {
    let _ = try_signal(&ctx);
    0
}

fn try_signal(ctx: &RawTracePointContext) -> Option<()> {
    let cfg = config();
    let task: *const u8 = ctx.arg(2);
    let tgid: u32 = read_field(task, cfg.offsets.task_tgid)?;
    if tgid != cfg.daemon_tgid {
        return None;
    }
    let cgroup_id = watched_current(cfg)?;
    let sig: u64 = ctx.arg(0);
    let tid: u32 = read_field(task, cfg.offsets.task_pid).unwrap_or(tgid);
    attempt(cfg, cgroup_id, tamper::SIGNAL, sig as u32, tid);
    Some(())
}

/// Reads a `long`/`int` syscall argument at its format-file offset
/// (0: the tracepoint does not exist here, and the program is not attached).
#[inline(always)]
fn arg(ctx: &TracePointContext, offset: u16) -> Option<u64> {
    if offset == 0 {
        return None;
    }
    // SAFETY: a field of the tracepoint record at its format-file offset.
    unsafe { ctx.read_at::<u64>(offset as usize & 0xff) }.ok()
}

/// A syscall that names a target thread: reported when the target is the daemon.
#[inline(always)]
fn toward_daemon(ctx: &TracePointContext, method: u16, pid_at: u16, arg_at: u16) -> Option<()> {
    let cfg = config();
    // Truncated to the kernel's `pid_t`, as the syscall reads it.
    let target = arg(ctx, pid_at)? as u32;
    if !is_daemon(cfg, target) {
        return None;
    }
    let cgroup_id = watched_current(cfg)?;
    let a = if arg_at == 0 {
        0
    } else {
        arg(ctx, arg_at)? as u32
    };
    attempt(cfg, cgroup_id, method, a, target);
    Some(())
}

#[tracepoint]
pub fn vigil_ptrace_enter(ctx: TracePointContext) -> u32 {
    let off = &config().offsets;
    let _ = toward_daemon(&ctx, tamper::PTRACE, off.ptrace_pid, off.ptrace_request);
    0
}

#[tracepoint]
pub fn vigil_vm_readv_enter(ctx: TracePointContext) -> u32 {
    let _ = toward_daemon(&ctx, tamper::VM_READ, config().offsets.process_vm_pid, 0);
    0
}

#[tracepoint]
pub fn vigil_vm_writev_enter(ctx: TracePointContext) -> u32 {
    let _ = toward_daemon(&ctx, tamper::VM_WRITE, config().offsets.process_vm_pid, 0);
    0
}

#[tracepoint]
pub fn vigil_pidfd_open_enter(ctx: TracePointContext) -> u32 {
    let _ = toward_daemon(&ctx, tamper::PIDFD_OPEN, config().offsets.pidfd_open_pid, 0);
    0
}

/// Every `bpf()` call of a watched task.
#[tracepoint]
pub fn vigil_bpf_enter(ctx: TracePointContext) -> u32 {
    let _ = try_bpf(&ctx);
    0
}

fn try_bpf(ctx: &TracePointContext) -> Option<()> {
    let cfg = config();
    let cgroup_id = watched_current(cfg)?;
    let cmd = arg(ctx, cfg.offsets.bpf_cmd)? as u32;
    attempt(cfg, cgroup_id, tamper::BPF, cmd, 0);
    Some(())
}
