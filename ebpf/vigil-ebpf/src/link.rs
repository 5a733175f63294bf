//! Link sensor: new names for files (`link`, `linkat`, `symlink`,
//! `symlinkat`, `rename`, `renameat`, `renameat2`), reported at syscall exit
//! with their result, so that a watched process that gives a credential a
//! name in its workspace (and then reads that name) is seen making it.
//!
//! One program on the exit tracepoints of those syscalls, as for opens:
//! no other syscall runs it, and there is no entry program (a program on
//! any `sys_enter_*` tracepoint makes every syscall of every process pay
//! the enter hook). The arguments come from the caller's saved registers;
//! the path strings are still in its memory at exit.
//!
//! The caller of a revoked (or unapproved) session is killed here, as for
//! opens: the link or rename itself has happened (only an LSM hook could
//! refuse it), but the process dies before it can use the new name.

use aya_ebpf::{
    helpers::generated::{bpf_probe_read_user_str, bpf_send_signal, bpf_task_pt_regs},
    macros::{map, tracepoint},
    maps::PerCpuArray,
    programs::TracePointContext,
};
use core::mem::size_of;
use vigil_common::{
    LINK_PATH_TRUNCATED, LinkRecord, PATH_LEN, RecordKind, Sensor, link_syscall, verdict,
};

use crate::{
    abi::SIGKILL,
    enforce::{self, current_policy},
    maps::{EVENTS, config, count_loss, wake_flags},
    path,
    task::{fill_header, watched_current},
};

/// Bytes of a [`LinkRecord`] before the text of its resolved base.
const LINK_FIXED: usize = core::mem::offset_of!(LinkRecord, base) + 8;

/// `AT_FDCWD`: the plain calls resolve relative to the working directory.
const AT_FDCWD: i32 = -100;

/// The record is built here (too large for the BPF stack), then copied out.
#[map]
static LINK_SCRATCH: PerCpuArray<LinkRecord> = PerCpuArray::with_max_entries(1, 0);

#[tracepoint]
pub fn vigil_link_exit(ctx: TracePointContext) -> i32 {
    let _ = try_link(&ctx);
    0
}

/// Which of the link syscalls `nr` is, if any.
#[inline(always)]
fn link_kind(nrs: &[u32; 8], nr: u64) -> Option<u8> {
    let mut i = 0;
    while i < link_syscall::COUNT {
        if nr == u64::from(nrs[i]) {
            return Some(i as u8);
        }
        i += 1;
    }
    None
}

/// The register at byte `slot` of the saved `pt_regs` (see `file::reg`).
#[inline(always)]
fn reg(regs: *const u64, slot: u32) -> u64 {
    // SAFETY: the verifier checks the access against `struct pt_regs`.
    unsafe { core::ptr::read(regs.wrapping_add(slot as usize / 8)) }
}

/// Reads a user string into `buf`; its length without the NUL (0 when
/// unreadable), and whether it filled the buffer.
#[inline(always)]
fn read_str(buf: &mut [u8; PATH_LEN], at: u64) -> (u16, bool) {
    // SAFETY: user string read through the helper, bounded by PATH_LEN.
    let n = unsafe {
        bpf_probe_read_user_str(buf.as_mut_ptr().cast(), PATH_LEN as u32, at as *const _)
    };
    if n > 0 {
        buf[(n as usize - 1) & (PATH_LEN - 1)] = 0;
        ((n - 1) as u16, n as usize == PATH_LEN)
    } else {
        buf[0] = 0;
        (0, false)
    }
}

fn try_link(ctx: &TracePointContext) -> Option<()> {
    let cfg = config();
    let cgroup_id = watched_current(cfg)?;
    let off = &cfg.offsets;
    // SAFETY: fields of the tracepoint record, offsets from its format file.
    let nr: i32 = unsafe { ctx.read_at(off.sys_exit_nr as usize & 0xff) }.ok()?;
    let syscall = link_kind(&cfg.link_nrs, nr as u64)?;
    // SAFETY: as above.
    let ret: i64 = unsafe { ctx.read_at(off.sys_exit_ret as usize & 0xff) }.ok()?;
    // SAFETY: helpers on the current task, which is alive while it runs.
    let task = path::Task::current();
    // SAFETY: as above.
    let regs = unsafe { bpf_task_pt_regs(task.as_ptr() as *mut _) } as *const u64;
    let slots = off.regs_args;
    let arg = |i: usize| reg(regs, slots[i]);
    let (old_dfd, old, new_dfd, new) = match syscall {
        link_syscall::LINK | link_syscall::SYMLINK | link_syscall::RENAME => {
            (AT_FDCWD, arg(0), AT_FDCWD, arg(1))
        }
        link_syscall::SYMLINKAT => (AT_FDCWD, arg(0), arg(1) as i32, arg(2)),
        _ => (arg(0) as i32, arg(1), arg(2) as i32, arg(3)),
    };
    let verdict = match current_policy(cfg, cgroup_id).and_then(|p| enforce::blocked(&p)) {
        Some(blocked) => {
            // SAFETY: helper without memory arguments.
            unsafe { bpf_send_signal(SIGKILL) };
            blocked
        }
        None => verdict::ALLOWED,
    };
    let rec = LINK_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's scratch slot; every field is written below.
    let rec = unsafe { &mut *rec };
    fill_header(&mut rec.header, RecordKind::Link as u16, cgroup_id, cfg);
    rec.header.verdict = verdict;
    let (old_len, old_cut) = read_str(&mut rec.old, old);
    let (new_len, new_cut) = read_str(&mut rec.new, new);
    if old_cut || new_cut {
        rec.header.flags |= LINK_PATH_TRUNCATED;
    }
    rec.ret = ret;
    rec.old_dfd = old_dfd;
    rec.new_dfd = new_dfd;
    rec.syscall = syscall;
    rec._pad = 0;
    rec.old_len = old_len;
    rec.new_len = new_len;
    rec._pad2 = 0;
    rec.base.len = 0;
    rec.base.flags = 0;
    // The directory the relative name is relative to, as it is now: by the
    // time the daemon reads `/proc`, the caller may have moved, closed the
    // descriptor or died (killed for this very call).
    let (dfd, relative) = if link_syscall::is_symlink(syscall) {
        (new_dfd, rec.new[0] != b'/')
    } else {
        (old_dfd, rec.old[0] != b'/')
    };
    if relative {
        let base = if dfd == AT_FDCWD {
            path::cwd(cfg, task)
        } else {
            path::fd_path(cfg, task, dfd)
        };
        if let Some(b) = base {
            path::resolve(cfg, task, b, &mut rec.base);
        }
    }
    let urgent = verdict != verdict::ALLOWED || enforce::prompt(cfg, cgroup_id);
    let used = LINK_FIXED + (usize::from(rec.base.len) & 1023);
    let size = if used < size_of::<LinkRecord>() {
        used
    } else {
        size_of::<LinkRecord>()
    };
    // SAFETY: `size` bytes of the scratch record, all written above.
    let bytes = unsafe { core::slice::from_raw_parts(core::ptr::from_ref(rec).cast::<u8>(), size) };
    if EVENTS
        .output::<[u8]>(bytes, wake_flags(cfg, urgent))
        .is_err()
    {
        count_loss(Sensor::File, cgroup_id);
    }
    Some(())
}
