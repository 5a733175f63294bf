//! Process sensor: exec (with argv), fork of new processes, exit.
//!
//! Exec is read at `sched_process_exec` alone: the new image is in place
//! (argv sits in its memory between `mm->arg_start` and `mm->arg_end`, as
//! the program will see it) and has not run a single instruction. No
//! `sys_enter` program is needed, so no syscall of the node pays for the
//! enter side of syscall tracing, and only successful execs are emitted.

use aya_ebpf::{
    EbpfContext as _,
    helpers::{
        bpf_get_current_pid_tgid,
        generated::{bpf_probe_read_kernel_str, bpf_probe_read_user, bpf_send_signal},
    },
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use aya_log_ebpf::warn;
use vigil_common::{
    ARGV_LEN, EXEC_ARGV_MISSING, EXEC_ARGV_TRUNCATED, EXEC_FILENAME_TRUNCATED, ExecRecord,
    ExitRecord, ForkRecord, KernelConfig, PATH_LEN, RecordKind, Sensor, exec_from_memory, policy,
};

use crate::{
    abi::SIGKILL,
    enforce::{self, current_policy},
    escape,
    maps::{EVENTS, config, count_loss, wake_flags},
    path, tamper,
    task::{current_task, fill_header, read_field, watched_current},
};

#[tracepoint]
pub fn vigil_sched_exec(ctx: TracePointContext) -> u32 {
    try_sched_exec(&ctx).unwrap_or(0)
}

fn try_sched_exec(ctx: &TracePointContext) -> Option<u32> {
    let cfg = config();
    let cgroup_id = watched_current(cfg)?;
    let policy = current_policy(cfg, cgroup_id);
    let task = path::Task::current();
    let exe = path::exe_path(cfg, task);
    let (exe_dev, exe_ino, exe_nlink) =
        exe.map_or((0, 0, u32::MAX), |exe| path::file_id(cfg, exe.dentry));
    let verdict = policy.as_ref().and_then(|p| {
        enforce::blocked(p).or_else(|| {
            (p.flags & policy::DENY_MEMORY_EXEC != 0 && exec_from_memory(exe_nlink))
                .then_some(vigil_common::verdict::BLOCKED_MEMORY_EXEC)
        })
    });
    if verdict.is_some() {
        // First, so it holds even when the record finds no room: the signal
        // is taken on the way back to user space, before the new image runs
        // a single instruction.
        // SAFETY: helper without memory arguments.
        unsafe { bpf_send_signal(SIGKILL) };
    }
    // The first exec in a session notes the process (forks note theirs).
    escape::note(cfg, (bpf_get_current_pid_tgid() >> 32) as u32, cgroup_id);
    let off = &cfg.offsets;
    // SAFETY: fields of the tracepoint record at offsets from its format file.
    let loc: u32 = unsafe { ctx.read_at(off.exec_filename as usize & 0xff) }.ok()?;
    // SAFETY: as above.
    let old_pid: u32 = unsafe { ctx.read_at(off.exec_old_pid as usize & 0xff) }.ok()?;
    let Some(mut entry) = EVENTS.reserve::<ExecRecord>(0) else {
        count_loss(Sensor::Process, cgroup_id);
        return None;
    };
    let rec = entry.as_mut_ptr();
    // SAFETY: the reservation is sizeof(ExecRecord); every field is written below
    // or zeroed before submit.
    let rec = unsafe { &mut *rec };
    fill_header(&mut rec.header, RecordKind::Exec as u16, cgroup_id, cfg);
    if let Some(v) = verdict {
        rec.header.verdict = v;
    }
    rec.old_pid = old_pid;
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
    read_argv(cfg, rec);
    rec.exe.len = 0;
    rec.exe.flags = 0;
    rec.exe._pad = 0;
    rec.exe_nlink = exe_nlink;
    rec.exe_dev = exe_dev;
    rec.exe_ino = exe_ino;
    if let Some(exe) = exe {
        path::resolve(cfg, task, exe, &mut rec.exe);
    }
    let urgent = verdict.is_some() || enforce::is_prompt(policy.as_ref());
    entry.submit(wake_flags(cfg, urgent));
    Some(0)
}

/// Copies the new image's argument block (NUL-terminated arguments, at
/// most `ARGV_LEN` bytes) into the record.
#[inline(always)]
fn read_argv(cfg: &KernelConfig, rec: &mut ExecRecord) {
    let off = &cfg.offsets;
    let range = read_field::<*const u8>(current_task(), off.task_mm).and_then(|mm| {
        Some((
            read_field::<u64>(mm, off.mm_arg_start)?,
            read_field::<u64>(mm, off.mm_arg_end)?,
        ))
    });
    let Some((start, end)) = range.filter(|(start, end)| start <= end) else {
        rec.argv_len = 0;
        rec.header.flags |= EXEC_ARGV_MISSING;
        return;
    };
    let len = end - start;
    if len > ARGV_LEN as u64 {
        rec.header.flags |= EXEC_ARGV_TRUNCATED;
    }
    let len = len.min(ARGV_LEN as u64) as u32;
    // SAFETY: user memory of the current task through the helper, which
    // faults safely; the destination has ARGV_LEN bytes.
    let r = unsafe { bpf_probe_read_user(rec.argv.as_mut_ptr().cast(), len, start as *const _) };
    if r == 0 {
        rec.argv_len = len as u16;
    } else {
        rec.argv_len = 0;
        rec.header.flags |= EXEC_ARGV_MISSING;
    }
}

/// Raw tracepoint so the child's `task_struct` is at hand: threads are told
/// apart from new processes by comparing the child's pid and tgid.
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn vigil_fork(ctx: RawTracePointContext) -> i32 {
    try_fork(&ctx).unwrap_or(0)
}

fn try_fork(ctx: &RawTracePointContext) -> Option<i32> {
    let cfg = config();
    let child: *const u8 = ctx.arg(1);
    tamper::on_fork(cfg, child);
    let cgroup_id = watched_current(cfg)?;
    let child_pid: u32 = read_field(child, cfg.offsets.task_pid)?;
    let child_tgid: u32 = read_field(child, cfg.offsets.task_tgid)?;
    if child_pid != child_tgid {
        // A new thread: not a process of its own.
        return Some(0);
    }
    let _ = escape::on_fork(cfg, child, child_tgid, cgroup_id);
    let Some(mut entry) = EVENTS.reserve::<ForkRecord>(0) else {
        count_loss(Sensor::Process, cgroup_id);
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
    tamper::on_exit(cfg);
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
    escape::forget(ctx.tgid());
    let task = current_task();
    let exit_code: u32 = read_field(task, off.task_exit_code).unwrap_or(0);
    let Some(mut entry) = EVENTS.reserve::<ExitRecord>(0) else {
        count_loss(Sensor::Process, cgroup_id);
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
