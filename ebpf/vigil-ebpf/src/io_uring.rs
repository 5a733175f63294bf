//! io_uring sensor. io_uring performs opens, connects and sends without
//! the syscalls the other sensors hook: an `IORING_OP_OPENAT` never passes
//! `sys_exit_openat`. So a watched process that sets up a ring is reported
//! (and, for an agent with `io_uring = "deny"`, killed on its way back from
//! `io_uring_setup`, before it can submit anything), and its requests that
//! open a file or reach a system are reported as they are submitted.
//!
//! Both hooks are io_uring's own tracepoints: only processes using
//! io_uring pay for them.

use aya_ebpf::{
    helpers::generated::{bpf_probe_read_kernel_str, bpf_send_signal},
    macros::tracepoint,
    programs::TracePointContext,
};
use vigil_common::{
    IoUringRecord, PATH_LEN, RecordKind, Sensor, io_uring_op, io_uring_opcode, policy, verdict,
};

use crate::{
    abi::SIGKILL,
    enforce::{self, current_policy},
    maps::{EVENTS, config, count_loss, wake_flags},
    task::{fill_header, read_field, read_raw, watched_current},
};

#[tracepoint]
pub fn vigil_io_uring_create(ctx: TracePointContext) -> u32 {
    let _ = try_create(&ctx);
    0
}

fn try_create(ctx: &TracePointContext) -> Option<()> {
    let cfg = config();
    let cgroup_id = watched_current(cfg)?;
    let off = &cfg.offsets;
    let policy = current_policy(cfg, cgroup_id);
    let verdict = match policy.as_ref() {
        Some(p) => enforce::blocked(p).or_else(|| {
            (p.flags & policy::DENY_IO_URING != 0).then_some(verdict::BLOCKED_IO_URING)
        }),
        None => None,
    };
    if verdict.is_some() {
        // SAFETY: helper without memory arguments.
        unsafe { bpf_send_signal(SIGKILL) };
    }
    // SAFETY: fields of the tracepoint record at offsets from its format file.
    let fd: i32 = unsafe { ctx.read_at(off.iou_create_fd as usize & 0xff) }.ok()?;
    // SAFETY: as above.
    let sq: u32 = unsafe { ctx.read_at(off.iou_create_sq as usize & 0xff) }.ok()?;
    // SAFETY: as above.
    let cq: u32 = unsafe { ctx.read_at(off.iou_create_cq as usize & 0xff) }.ok()?;
    // SAFETY: as above.
    let flags: u32 = unsafe { ctx.read_at(off.iou_create_flags as usize & 0xff) }.ok()?;
    let Some(mut entry) = EVENTS.reserve::<IoUringRecord>(0) else {
        count_loss(Sensor::File, cgroup_id);
        return None;
    };
    // SAFETY: the reservation is sizeof(IoUringRecord); every field is written.
    let rec = unsafe { &mut *entry.as_mut_ptr() };
    fill_header(&mut rec.header, RecordKind::IoUring as u16, cgroup_id, cfg);
    rec.header.verdict = verdict.unwrap_or(verdict::ALLOWED);
    rec.op = io_uring_op::SETUP;
    rec.opcode = 0;
    rec.path_len = 0;
    rec.fd = fd;
    rec.sq_entries = sq;
    rec.cq_entries = cq;
    rec.flags = u64::from(flags);
    rec.path[0] = 0;
    // Always prompt: a ring is rare, and what it is used for next is not
    // seen by the syscall sensors.
    entry.submit(wake_flags(cfg, true));
    Some(())
}

#[tracepoint]
pub fn vigil_io_uring_submit(ctx: TracePointContext) -> u32 {
    let _ = try_submit(&ctx);
    0
}

fn try_submit(ctx: &TracePointContext) -> Option<()> {
    let cfg = config();
    let cgroup_id = watched_current(cfg)?;
    let off = &cfg.offsets;
    // SAFETY: fields of the tracepoint record at offsets from its format file.
    let opcode: u8 = unsafe { ctx.read_at(off.iou_submit_opcode as usize & 0xff) }.ok()?;
    let open = opcode == io_uring_opcode::OPENAT || opcode == io_uring_opcode::OPENAT2;
    if !open && opcode != io_uring_opcode::CONNECT && opcode != io_uring_opcode::SOCKET {
        return Some(());
    }
    let policy = current_policy(cfg, cgroup_id);
    let verdict = policy.as_ref().and_then(enforce::blocked);
    if verdict.is_some() {
        // SAFETY: helper without memory arguments.
        unsafe { bpf_send_signal(SIGKILL) };
    }
    // SAFETY: as above.
    let req: *const u8 = unsafe { ctx.read_at(off.iou_submit_req as usize & 0xff) }.ok()?;
    let Some(mut entry) = EVENTS.reserve::<IoUringRecord>(0) else {
        count_loss(Sensor::File, cgroup_id);
        return None;
    };
    // SAFETY: the reservation is sizeof(IoUringRecord); every field is written.
    let rec = unsafe { &mut *entry.as_mut_ptr() };
    fill_header(&mut rec.header, RecordKind::IoUring as u16, cgroup_id, cfg);
    rec.header.verdict = verdict.unwrap_or(verdict::ALLOWED);
    rec.op = io_uring_op::SUBMIT;
    rec.opcode = opcode;
    rec.fd = -1;
    rec.sq_entries = 0;
    rec.cq_entries = 0;
    rec.flags = 0;
    rec.path_len = 0;
    rec.path[0] = 0;
    if open && off.iou_known != 0 {
        // The request was prepared before this tracepoint: its `io_open`
        // holds the `struct filename` the kernel copied from the caller.
        let cmd = req.wrapping_add(off.kiocb_cmd as usize);
        rec.flags = read_raw::<u64>(cmd, off.io_open_flags).unwrap_or(0);
        if let Some(name) = read_field::<*const u8>(cmd, off.io_open_filename)
            .and_then(|f| read_raw::<*const u8>(f, off.filename_name))
        {
            // SAFETY: a kernel string, bounded by PATH_LEN.
            let n = unsafe {
                bpf_probe_read_kernel_str(
                    rec.path.as_mut_ptr().cast(),
                    PATH_LEN as u32,
                    name.cast(),
                )
            };
            if n > 0 {
                rec.path_len = (n - 1) as u16;
            }
        }
    }
    let urgent = verdict.is_some() || enforce::is_prompt(policy.as_ref());
    entry.submit(wake_flags(cfg, urgent));
    Some(())
}
