//! Process sensor: exec (with argv), fork of new processes, exit.
//!
//! argv is read at `sys_enter_execve[at]` (the old image's memory is gone by
//! the time the exec succeeds) and joined with the file name the kernel
//! reports at `sched_process_exec`, so only successful execs are emitted.

use aya_ebpf::{
    EbpfContext as _,
    helpers::{
        bpf_probe_read_kernel_buf, bpf_probe_read_user,
        generated::{bpf_probe_read_kernel_str, bpf_probe_read_user_str, bpf_send_signal},
    },
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use aya_log_ebpf::warn;
use vigil_common::{
    ARGV_LEN, EXEC_ARGV_MISSING, EXEC_ARGV_TRUNCATED, EXEC_FILENAME_TRUNCATED, ExecRecord,
    ExitRecord, ForkRecord, MAX_ARGS, PATH_LEN, RecordKind, Sensor,
};

use crate::{
    abi::SIGKILL,
    enforce::{self, current_policy},
    maps::{ARG_MAX_READ, ARGV_SCRATCH, EVENTS, EXEC_ARGS, config, count_loss, wake_flags},
    task::{current_task, fill_header, read_field, watched_current},
};

#[tracepoint]
pub fn vigil_execve(ctx: TracePointContext) -> u32 {
    // execve(filename, argv, envp)
    try_exec_enter(&ctx, 1).unwrap_or(0)
}

#[tracepoint]
pub fn vigil_execveat(ctx: TracePointContext) -> u32 {
    // execveat(dfd, filename, argv, envp, flags)
    try_exec_enter(&ctx, 2).unwrap_or(0)
}

fn try_exec_enter(ctx: &TracePointContext, argv_arg: usize) -> Option<u32> {
    let cfg = config();
    let cgroup_id = watched_current(cfg)?;
    let verdict = current_policy(cfg, cgroup_id).and_then(|p| enforce::blocked(&p));
    let off = cfg.offsets.sys_enter_args as usize & 0xff;
    // SAFETY: reads a syscall argument from the tracepoint record.
    let argv: u64 = unsafe { ctx.read_at(off + argv_arg * 8) }.ok()?;
    let buf = ARGV_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: per-CPU scratch, not shared with another program run.
    let buf = unsafe { &mut *buf };
    buf.len = 0;
    buf.argc = 0;
    buf.flags = 0;
    let argv = argv as *const u64;
    let mut used: usize = 0;
    for i in 0..MAX_ARGS {
        // SAFETY: user memory read through the helper, which faults safely.
        let Ok(arg) = (unsafe { bpf_probe_read_user(argv.wrapping_add(i)) }) else {
            break;
        };
        if arg == 0 {
            break;
        }
        if used >= ARGV_LEN {
            buf.flags |= u32::from(EXEC_ARGV_TRUNCATED);
            break;
        }
        // The mask gives the verifier a constant bound; `used < ARGV_LEN` already holds.
        let dst = buf.data.as_mut_ptr().wrapping_add(used & (ARGV_LEN - 1));
        // SAFETY: dst has ARG_MAX_READ bytes of room: data is ARGV_LEN + ARG_MAX_READ long.
        let n =
            unsafe { bpf_probe_read_user_str(dst.cast(), ARG_MAX_READ as u32, arg as *const _) };
        if n <= 0 {
            break;
        }
        if n as usize == ARG_MAX_READ {
            buf.flags |= u32::from(EXEC_ARGV_TRUNCATED);
        }
        used += n as usize;
        buf.argc += 1;
    }
    if buf.argc as usize == MAX_ARGS {
        // SAFETY: as above.
        if let Ok(next) = unsafe { bpf_probe_read_user(argv.wrapping_add(MAX_ARGS)) }
            && next != 0
        {
            buf.flags |= u32::from(EXEC_ARGV_TRUNCATED);
        }
    }
    if used > ARGV_LEN {
        used = ARGV_LEN;
        buf.flags |= u32::from(EXEC_ARGV_TRUNCATED);
    }
    buf.len = used as u32;
    if let Some(verdict) = verdict {
        // Killed before the new image runs any code: report the attempt now,
        // since sched_process_exec will not (see try_sched_exec).
        // SAFETY: helper without memory arguments.
        unsafe { bpf_send_signal(SIGKILL) };
        let file_arg = argv_arg - 1;
        // SAFETY: reads a syscall argument from the tracepoint record.
        let filename: u64 = unsafe { ctx.read_at(off + file_arg * 8) }.ok()?;
        report_blocked_exec(cfg, cgroup_id, verdict, filename, buf);
        return Some(0);
    }
    let tid = ctx.pid();
    EXEC_ARGS.insert(tid, &*buf, 0).ok()?;
    Some(0)
}

fn report_blocked_exec(
    cfg: &vigil_common::KernelConfig,
    cgroup_id: u64,
    verdict: u32,
    filename: u64,
    args: &crate::maps::ArgvBuf,
) {
    let Some(mut entry) = EVENTS.reserve::<ExecRecord>(0) else {
        count_loss(Sensor::Process);
        return;
    };
    // SAFETY: the reservation is sizeof(ExecRecord); every field is written.
    let rec = unsafe { &mut *entry.as_mut_ptr() };
    fill_header(&mut rec.header, RecordKind::Exec as u16, cgroup_id, cfg);
    rec.header.verdict = verdict;
    rec.old_pid = rec.header.pid;
    rec._pad = [0; 6];
    // SAFETY: user string read through the helper, bounded by PATH_LEN.
    let n = unsafe {
        bpf_probe_read_user_str(
            rec.filename.as_mut_ptr().cast(),
            PATH_LEN as u32,
            filename as *const _,
        )
    };
    rec.filename_len = if n > 0 { (n - 1) as u16 } else { 0 };
    copy_argv(rec, Some(args));
    entry.submit(wake_flags(cfg, true));
}

/// Copies captured arguments into an exec record (or marks them missing).
#[inline(always)]
fn copy_argv(rec: &mut ExecRecord, args: Option<&crate::maps::ArgvBuf>) {
    // SAFETY: copy between two kernel buffers of at least ARGV_LEN bytes.
    let copied = args.filter(|a| {
        unsafe { bpf_probe_read_kernel_buf(a.data.as_ptr(), &mut rec.argv[..ARGV_LEN]) }.is_ok()
    });
    if let Some(a) = copied {
        rec.argv_len = (a.len as usize).min(ARGV_LEN) as u16;
        rec.argc = a.argc as u16;
        rec.header.flags |= (a.flags & 0xffff) as u16;
    } else {
        rec.argv_len = 0;
        rec.argc = 0;
        rec.header.flags |= EXEC_ARGV_MISSING;
    }
}

#[tracepoint]
pub fn vigil_sched_exec(ctx: TracePointContext) -> u32 {
    try_sched_exec(&ctx).unwrap_or(0)
}

fn try_sched_exec(ctx: &TracePointContext) -> Option<u32> {
    let cfg = config();
    let cgroup_id = watched_current(cfg)?;
    let policy = current_policy(cfg, cgroup_id);
    if policy.and_then(|p| enforce::blocked(&p)).is_some() {
        // Killed at exec entry and already reported; it dies before user code.
        return Some(0);
    }
    let off = &cfg.offsets;
    // SAFETY: fields of the tracepoint record at offsets from its format file.
    let loc: u32 = unsafe { ctx.read_at(off.exec_filename as usize & 0xff) }.ok()?;
    // SAFETY: as above.
    let old_pid: u32 = unsafe { ctx.read_at(off.exec_old_pid as usize & 0xff) }.ok()?;
    let Some(mut entry) = EVENTS.reserve::<ExecRecord>(0) else {
        count_loss(Sensor::Process);
        return None;
    };
    let rec = entry.as_mut_ptr();
    // SAFETY: the reservation is sizeof(ExecRecord); every field is written below
    // or zeroed before submit.
    let rec = unsafe { &mut *rec };
    fill_header(&mut rec.header, RecordKind::Exec as u16, cgroup_id, cfg);
    rec.old_pid = old_pid;
    rec._pad = [0; 6];
    let name = (ctx.as_ptr() as *const u8).wrapping_add((loc & 0xfff) as usize);
    // SAFETY: kernel string inside the tracepoint record; the helper bounds it.
    let n = unsafe {
        bpf_probe_read_kernel_str(
            rec.filename.as_mut_ptr().cast(),
            PATH_LEN as u32,
            name.cast(),
        )
    };
    if n > 0 {
        rec.filename_len = (n - 1) as u16;
        if n as usize == PATH_LEN && (loc >> 16) as usize > PATH_LEN {
            rec.header.flags |= EXEC_FILENAME_TRUNCATED;
        }
    } else {
        rec.filename_len = 0;
        rec.filename[0] = 0;
        warn!(ctx, "exec file name unreadable: {}", n);
    }
    // SAFETY: map value read by key.
    let args = unsafe { EXEC_ARGS.get(old_pid) };
    copy_argv(rec, args);
    if args.is_some() {
        let _ = EXEC_ARGS.remove(old_pid);
    }
    entry.submit(wake_flags(cfg, enforce::is_prompt(policy.as_ref())));
    Some(0)
}

/// Raw tracepoint so the child's `task_struct` is at hand: threads are told
/// apart from new processes by comparing the child's pid and tgid.
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn vigil_fork(ctx: RawTracePointContext) -> i32 {
    try_fork(&ctx).unwrap_or(0)
}

fn try_fork(ctx: &RawTracePointContext) -> Option<i32> {
    let cfg = config();
    let cgroup_id = watched_current(cfg)?;
    let child: *const u8 = ctx.arg(1);
    let child_pid: u32 = read_field(child, cfg.offsets.task_pid)?;
    let child_tgid: u32 = read_field(child, cfg.offsets.task_tgid)?;
    if child_pid != child_tgid {
        // A new thread: not a process of its own.
        return Some(0);
    }
    let Some(mut entry) = EVENTS.reserve::<ForkRecord>(0) else {
        count_loss(Sensor::Process);
        return None;
    };
    // SAFETY: the reservation is sizeof(ForkRecord); all fields are written.
    let rec = unsafe { &mut *entry.as_mut_ptr() };
    fill_header(&mut rec.header, RecordKind::Fork as u16, cgroup_id, cfg);
    rec.child_pid = child_pid;
    rec.child_tgid = child_tgid;
    entry.submit(wake_flags(cfg, enforce::prompt(cfg, cgroup_id)));
    Some(0)
}

#[tracepoint]
pub fn vigil_exit(ctx: TracePointContext) -> u32 {
    try_exit(&ctx).unwrap_or(0)
}

fn try_exit(ctx: &TracePointContext) -> Option<u32> {
    let cfg = config();
    let cgroup_id = watched_current(cfg)?;
    let off = &cfg.offsets;
    let last_thread = if off.exit_group_dead != 0 {
        // SAFETY: field of the tracepoint record at its format-file offset.
        unsafe { ctx.read_at::<u8>(off.exit_group_dead as usize & 0xff) }.ok()? != 0
    } else {
        ctx.pid() == ctx.tgid()
    };
    if !last_thread {
        return Some(0);
    }
    let task = current_task();
    let exit_code: u32 = read_field(task, off.task_exit_code).unwrap_or(0);
    let Some(mut entry) = EVENTS.reserve::<ExitRecord>(0) else {
        count_loss(Sensor::Process);
        return None;
    };
    // SAFETY: the reservation is sizeof(ExitRecord); all fields are written.
    let rec = unsafe { &mut *entry.as_mut_ptr() };
    fill_header(&mut rec.header, RecordKind::Exit as u16, cgroup_id, cfg);
    rec.exit_code = exit_code;
    rec._pad = 0;
    entry.submit(wake_flags(cfg, enforce::prompt(cfg, cgroup_id)));
    Some(0)
}
