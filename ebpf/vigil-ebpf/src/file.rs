//! File sensor: `open`, `openat` and `openat2`, reported at syscall exit with
//! their result. The path pointer is kept from entry and the string read at
//! exit: at entry its page may not be faulted in yet (EFAULT).

use aya_ebpf::{
    EbpfContext as _,
    helpers::{
        bpf_probe_read_user,
        generated::{bpf_probe_read_user_str, bpf_send_signal},
    },
    macros::tracepoint,
    programs::TracePointContext,
};
use vigil_common::{
    OPEN_PATH_TRUNCATED, OpenRecord, PATH_LEN, RecordKind, Sensor, open_syscall, verdict,
};

use crate::{
    abi::SIGKILL,
    enforce::{self, current_policy},
    maps::{EVENTS, OPEN_ARGS, OpenArgs, config, count_loss, wake_flags},
    path,
    task::{fill_header, watched_current},
};

/// `AT_FDCWD`: plain `open` resolves relative to the working directory.
const AT_FDCWD: i32 = -100;

#[tracepoint]
pub fn vigil_open_enter(ctx: TracePointContext) -> u32 {
    // open(filename, flags, mode)
    try_enter(&ctx, open_syscall::OPEN).unwrap_or(0)
}

#[tracepoint]
pub fn vigil_openat_enter(ctx: TracePointContext) -> u32 {
    // openat(dfd, filename, flags, mode)
    try_enter(&ctx, open_syscall::OPENAT).unwrap_or(0)
}

#[tracepoint]
pub fn vigil_openat2_enter(ctx: TracePointContext) -> u32 {
    // openat2(dfd, filename, how, size)
    try_enter(&ctx, open_syscall::OPENAT2).unwrap_or(0)
}

fn arg(ctx: &TracePointContext, base: usize, n: usize) -> Option<u64> {
    // SAFETY: syscall arguments of the tracepoint record.
    unsafe { ctx.read_at::<u64>(base + n * 8) }.ok()
}

fn try_enter(ctx: &TracePointContext, syscall: u8) -> Option<u32> {
    let cfg = config();
    let cgroup_id = watched_current(&cfg)?;
    let policy = current_policy(&cfg, cgroup_id);
    let verdict = policy
        .and_then(|p| enforce::blocked(&p))
        .unwrap_or(verdict::ALLOWED);
    let urgent = verdict != verdict::ALLOWED || enforce::is_prompt(policy.as_ref());
    if verdict != verdict::ALLOWED {
        // The process dies before it can use the file. The open itself still
        // completes (an O_TRUNC open truncates): only an LSM hook could
        // refuse it, and LSM programs do not load on every node.
        // SAFETY: helper without memory arguments.
        unsafe { bpf_send_signal(SIGKILL) };
    }
    let base = cfg.offsets.sys_enter_args as usize & 0xff;
    let args = match syscall {
        open_syscall::OPEN => OpenArgs {
            path: arg(ctx, base, 0)?,
            flags: arg(ctx, base, 1)? as u32,
            mode: arg(ctx, base, 2)? as u32,
            dfd: AT_FDCWD,
            syscall,
            verdict: verdict as u8,
            urgent: u8::from(urgent),
            _pad: 0,
        },
        open_syscall::OPENAT => OpenArgs {
            path: arg(ctx, base, 1)?,
            flags: arg(ctx, base, 2)? as u32,
            mode: arg(ctx, base, 3)? as u32,
            dfd: arg(ctx, base, 0)? as i32,
            syscall,
            verdict: verdict as u8,
            urgent: u8::from(urgent),
            _pad: 0,
        },
        _ => {
            // struct open_how { u64 flags; u64 mode; u64 resolve; }
            let how = arg(ctx, base, 2)? as *const u64;
            // SAFETY: user memory read through the helper, which faults safely.
            let flags = unsafe { bpf_probe_read_user(how) }.unwrap_or(0);
            // SAFETY: as above.
            let mode = unsafe { bpf_probe_read_user(how.wrapping_add(1)) }.unwrap_or(0);
            OpenArgs {
                path: arg(ctx, base, 1)?,
                flags: flags as u32,
                mode: mode as u32,
                dfd: arg(ctx, base, 0)? as i32,
                syscall,
                verdict: verdict as u8,
                urgent: u8::from(urgent),
                _pad: 0,
            }
        }
    };
    let tid = ctx.pid();
    OPEN_ARGS.insert(tid, args, 0).ok()?;
    Some(0)
}

#[tracepoint]
pub fn vigil_open_exit(ctx: TracePointContext) -> u32 {
    try_exit(&ctx).unwrap_or(0)
}

fn try_exit(ctx: &TracePointContext) -> Option<u32> {
    let cfg = config();
    let cgroup_id = watched_current(&cfg)?;
    let tid = ctx.pid();
    // SAFETY: map value read by key, copied out before removal.
    let args = *unsafe { OPEN_ARGS.get(tid) }?;
    let _ = OPEN_ARGS.remove(tid);
    // SAFETY: the return value field of the tracepoint record.
    let ret: i64 = unsafe { ctx.read_at(cfg.offsets.sys_exit_ret as usize & 0xff) }.ok()?;
    let Some(mut entry) = EVENTS.reserve::<OpenRecord>(0) else {
        count_loss(Sensor::File);
        return None;
    };
    // SAFETY: the reservation is sizeof(OpenRecord); all fields are written.
    let rec = unsafe { &mut *entry.as_mut_ptr() };
    fill_header(&mut rec.header, RecordKind::Open as u16, cgroup_id, &cfg);
    rec.header.verdict = u32::from(args.verdict);
    rec.ret = ret;
    rec.flags = args.flags;
    rec.mode = args.mode;
    rec.dfd = args.dfd;
    rec.syscall = args.syscall;
    rec._pad = 0;
    // SAFETY: user string read through the helper, bounded by PATH_LEN.
    let n = unsafe {
        bpf_probe_read_user_str(
            rec.path.as_mut_ptr().cast(),
            PATH_LEN as u32,
            args.path as *const _,
        )
    };
    if n > 0 {
        rec.path_len = (n - 1) as u16;
        if n as usize == PATH_LEN {
            rec.header.flags |= OPEN_PATH_TRUNCATED;
        }
    } else {
        rec.path_len = 0;
        rec.path[0] = 0;
    }
    // A relative path means nothing once the opener has moved or exited:
    // resolve its base directory now.
    rec.base.len = 0;
    rec.base.flags = 0;
    if n > 0 && rec.path[0] != b'/' {
        let base = if args.dfd == AT_FDCWD {
            path::cwd(&cfg)
        } else {
            path::fd_path(&cfg, args.dfd)
        };
        if let Some(base) = base {
            path::resolve(&cfg, base, &mut rec.base);
        }
    }
    entry.submit(wake_flags(&cfg, args.urgent != 0));
    Some(0)
}
