//! Network sensor: outbound connects and unconnected datagram sends (cgroup
//! `connect4/6`, `sendmsg4/6`, attached once at the cgroup v2 root, running in
//! the caller's context), and accepted TCP connections (`sock_ops`
//! passive-established, attributed to the cgroup owning the socket: the task
//! running there is whoever the softirq interrupted).

use aya_ebpf::{
    bindings::{BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB, bpf_sock_addr, bpf_sock_ops},
    helpers::bpf_probe_read_kernel,
    macros::{cgroup_sock_addr, sock_ops},
    programs::{SockAddrContext, SockOpsContext},
};
use vigil_common::{AcceptRecord, ConnectRecord, RecordKind, Sensor, sock_op, verdict};

use crate::{
    abi::{AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP, SOCK_DGRAM, SOCK_STREAM},
    enforce::{self, current_policy},
    maps::{EVENTS, config, count_loss, wake_flags},
    task::{fill_header, fill_header_no_task, read_field, watched_cgroup, watched_current},
};

/// Return value of a cgroup `sock_addr` program that lets the call proceed
/// (the uapi names no constant for it).
const ALLOW: i32 = 1;
/// Return value that fails the call with EPERM.
const DENY: i32 = 0;

#[cgroup_sock_addr(connect4)]
pub fn vigil_connect4(ctx: SockAddrContext) -> i32 {
    try_sock_addr(&ctx, AF_INET, sock_op::CONNECT)
}

#[cgroup_sock_addr(connect6)]
pub fn vigil_connect6(ctx: SockAddrContext) -> i32 {
    try_sock_addr(&ctx, AF_INET6, sock_op::CONNECT)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn vigil_sendmsg4(ctx: SockAddrContext) -> i32 {
    try_sock_addr(&ctx, AF_INET, sock_op::SENDMSG)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn vigil_sendmsg6(ctx: SockAddrContext) -> i32 {
    try_sock_addr(&ctx, AF_INET6, sock_op::SENDMSG)
}

/// Reports the attempt and decides it: `ALLOW`, or `DENY` (the syscall
/// fails with EPERM before any packet leaves).
fn try_sock_addr(ctx: &SockAddrContext, family: u16, op: u8) -> i32 {
    let cfg = config();
    let Some(cgroup_id) = watched_current(cfg) else {
        return ALLOW;
    };
    // SAFETY: the context is the kernel's bpf_sock_addr for this call.
    let sa: &bpf_sock_addr = unsafe { &*ctx.sock_addr };
    let mut addr = [0u8; 16];
    if family == AF_INET {
        addr[..4].copy_from_slice(&sa.user_ip4.to_ne_bytes());
    } else {
        for i in 0..4 {
            // One 4-byte load per word: the verifier rejects wider ctx loads.
            // SAFETY: in-bounds field of the context.
            let w = unsafe { core::ptr::read_volatile(&raw const sa.user_ip6[i]) };
            addr[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
    }
    // user_port holds the port in network byte order in its low 16 bits.
    let port = u16::from_be(sa.user_port as u16);
    let sock_type = sa.type_ as u8;
    let protocol = match sa.protocol as u8 {
        0 if u32::from(sock_type) == SOCK_STREAM => IPPROTO_TCP,
        0 if u32::from(sock_type) == SOCK_DGRAM => IPPROTO_UDP,
        p => p,
    };
    let policy = current_policy(cfg, cgroup_id);
    let prompt = enforce::is_prompt(policy.as_ref());
    let verdict = policy.map_or(verdict::ALLOWED, |p| {
        enforce::blocked(&p).unwrap_or_else(|| {
            let mapped = if family == AF_INET {
                let mut m = [0u8; 16];
                m[10] = 0xff;
                m[11] = 0xff;
                m[12..].copy_from_slice(&addr[..4]);
                m
            } else {
                addr
            };
            if enforce::system_allowed(&p, &mapped, port, protocol) {
                verdict::ALLOWED
            } else {
                verdict::BLOCKED_SCOPE
            }
        })
    });
    if let Some(mut entry) = EVENTS.reserve::<ConnectRecord>(0) {
        // SAFETY: the reservation is sizeof(ConnectRecord); all fields are written.
        let rec = unsafe { &mut *entry.as_mut_ptr() };
        fill_header(&mut rec.header, RecordKind::Connect as u16, cgroup_id, cfg);
        rec.header.verdict = verdict;
        rec.family = family;
        rec.port = port;
        rec.protocol = protocol;
        rec.sock_type = sock_type;
        rec.op = op;
        rec._pad = 0;
        rec.addr = addr;
        entry.submit(wake_flags(cfg, prompt || verdict != verdict::ALLOWED));
    } else {
        count_loss(Sensor::Network, cgroup_id);
    }
    if verdict == verdict::ALLOWED {
        ALLOW
    } else {
        DENY
    }
}

#[sock_ops]
pub fn vigil_sock_ops(ctx: SockOpsContext) -> u32 {
    if ctx.op() == BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB {
        let _ = try_accept(&ctx);
    }
    0
}

fn try_accept(ctx: &SockOpsContext) -> Option<()> {
    let cfg = config();
    // SAFETY: the context is the kernel's bpf_sock_ops for this callback.
    let ops: &bpf_sock_ops = unsafe { &*ctx.ops };
    // SAFETY: reading the union member the kernel fills for full sockets.
    let sk = unsafe { ops.__bindgen_anon_2.sk } as u64;
    // The verifier forbids arithmetic on a socket pointer; copying it through
    // the stack with a probe read turns it into a plain number we may offset.
    // SAFETY: reads our own stack slot.
    let sk = unsafe { bpf_probe_read_kernel(&raw const sk) }.ok()? as *const u8;
    let cgrp: *const u8 = read_field(sk, cfg.offsets.sock_cgroup)?;
    let cgroup_id = watched_cgroup(cfg, cgrp)?;
    let family = ctx.family() as u16;
    let Some(mut entry) = EVENTS.reserve::<AcceptRecord>(0) else {
        count_loss(Sensor::Network, cgroup_id);
        return None;
    };
    // SAFETY: the reservation is sizeof(AcceptRecord); all fields are written.
    let rec = unsafe { &mut *entry.as_mut_ptr() };
    fill_header_no_task(&mut rec.header, RecordKind::Accept as u16, cgroup_id);
    rec.family = family;
    rec.local_port = ctx.local_port() as u16;
    // remote_port is the network-order port in the upper half on little endian.
    rec.remote_port = u32::from_be(ctx.remote_port()) as u16;
    rec._pad = 0;
    rec.local_addr = [0; 16];
    rec.remote_addr = [0; 16];
    if family == AF_INET {
        rec.local_addr[..4].copy_from_slice(&ctx.local_ip4().to_ne_bytes());
        rec.remote_addr[..4].copy_from_slice(&ctx.remote_ip4().to_ne_bytes());
    } else {
        for i in 0..4 {
            // One 4-byte load per word: the verifier rejects wider ctx loads
            // that the compiler would otherwise merge these into.
            // SAFETY: in-bounds fields of the context.
            let (l, r) = unsafe {
                (
                    core::ptr::read_volatile(&raw const ops.local_ip6[i]),
                    core::ptr::read_volatile(&raw const ops.remote_ip6[i]),
                )
            };
            rec.local_addr[i * 4..i * 4 + 4].copy_from_slice(&l.to_ne_bytes());
            rec.remote_addr[i * 4..i * 4 + 4].copy_from_slice(&r.to_ne_bytes());
        }
    }
    // Accepted connections are not acted on at once: collected on the
    // reader's next round.
    entry.submit(wake_flags(cfg, false));
    Some(())
}
