//! Socket sensor: a watched process creating a socket of an unusual class
//! (raw, packet, netlink other than `NETLINK_ROUTE`, …; see
//! `vigil_common::socket_class`), which reaches below the connect hooks:
//! forged packets, sniffing, the kernel's own interfaces.
//!
//! cgroup `sock_create` (attached at the cgroup v2 root) can refuse a socket
//! with `EPERM`, but the kernel runs it for `AF_INET` and `AF_INET6` alone
//! (from `inet_create`/`inet6_create`). Every other family is seen at
//! `syscalls/sys_enter_socket`, where a refusal can only kill the caller;
//! the socket is then created and torn down with the process before
//! `socket(2)` returns to it.

use aya_ebpf::{
    bindings::bpf_sock,
    helpers::generated::bpf_send_signal,
    macros::{cgroup_sock, tracepoint},
    programs::{SockContext, TracePointContext},
};
use vigil_common::{RecordKind, Sensor, SocketRecord, policy, socket_class, socket_hook, verdict};

use crate::{
    abi::SIGKILL,
    enforce::{self, current_policy},
    maps::{EVENTS, config, count_loss, wake_flags},
    task::{fill_header, watched_current},
};

/// Return value of a cgroup `sock` program that lets the socket be created.
const ALLOW: i32 = 1;
/// Return value that fails `socket(2)` with EPERM.
const DENY: i32 = 0;

#[cgroup_sock(sock_create)]
pub fn vigil_sock_create(ctx: SockContext) -> i32 {
    if try_sock_create(&ctx) == Some(false) {
        DENY
    } else {
        ALLOW
    }
}

/// `Some(false)` when the socket is refused.
fn try_sock_create(ctx: &SockContext) -> Option<bool> {
    // SAFETY: the context is the kernel's bpf_sock of the new socket.
    let sk: &bpf_sock = unsafe { &*ctx.sock };
    let family = sk.family as u16;
    let sock_type = sk.type_;
    let protocol = sk.protocol;
    judge(family, sock_type, protocol, socket_hook::SOCK_CREATE)
}

#[tracepoint]
pub fn vigil_socket_enter(ctx: TracePointContext) -> u32 {
    let _ = try_socket_enter(&ctx);
    0
}

fn try_socket_enter(ctx: &TracePointContext) -> Option<()> {
    let off = &config().offsets;
    // SAFETY: fields of the tracepoint record at offsets from its format file.
    let family: u64 = unsafe { ctx.read_at(off.sock_family as usize & 0xff) }.ok()?;
    let family = family as u16;
    // sock_create sees (and can refuse) these.
    if family == socket_class::AF_INET || family == socket_class::AF_INET6 {
        return None;
    }
    // SAFETY: as above.
    let sock_type: u64 = unsafe { ctx.read_at(off.sock_type as usize & 0xff) }.ok()?;
    // SAFETY: as above.
    let protocol: u64 = unsafe { ctx.read_at(off.sock_protocol as usize & 0xff) }.ok()?;
    if judge(
        family,
        sock_type as u32,
        protocol as u32,
        socket_hook::SYSCALL,
    ) == Some(false)
    {
        // SAFETY: helper without memory arguments.
        unsafe { bpf_send_signal(SIGKILL) };
    }
    Some(())
}

/// Classifies the socket and, for a watched task creating an unusual one,
/// reports it and decides: `Some(false)` when the agent may not have it.
#[inline(always)]
fn judge(family: u16, sock_type: u32, protocol: u32, hook: u8) -> Option<bool> {
    let class = socket_class::classify(family, sock_type, protocol);
    if class == socket_class::ORDINARY {
        return None;
    }
    let cfg = config();
    let cgroup_id = watched_current(cfg)?;
    let policy = current_policy(cfg, cgroup_id);
    let verdict = match policy.as_ref() {
        Some(p) => enforce::blocked(p).or_else(|| {
            (!policy::allows_socket(p.flags, class)).then_some(verdict::BLOCKED_SOCKET)
        }),
        None => None,
    };
    if let Some(mut entry) = EVENTS.reserve::<SocketRecord>(0) {
        // SAFETY: the reservation is sizeof(SocketRecord); every field is written.
        let rec = unsafe { &mut *entry.as_mut_ptr() };
        fill_header(&mut rec.header, RecordKind::Socket as u16, cgroup_id, cfg);
        rec.header.verdict = verdict.unwrap_or(verdict::ALLOWED);
        rec.family = family;
        rec.sock_type = (sock_type & socket_class::TYPE_MASK) as u16;
        rec.protocol = protocol as u16;
        rec.class = class;
        rec.hook = hook;
        // Always prompt: unusual sockets are rare, and a refusal is acted on.
        entry.submit(wake_flags(cfg, true));
    } else {
        count_loss(Sensor::Network, cgroup_id);
    }
    Some(verdict.is_none())
}
