//! Unix socket sensor: connects and datagram sends to unix socket
//! addresses (cgroup `connect_unix`, `sendmsg_unix`, Linux 6.7+), the way an
//! agent asks a more privileged local daemon (Docker, containerd, systemd)
//! to act for it. An address outside an enforced agent's `systems` fails
//! with EPERM before the peer is looked up.
//!
//! aya 0.14 knows no unix attach type, so these programs sit in sections it
//! parses (`cgroup/connect4`, `cgroup/sendmsg4`); the daemon loads them
//! itself with the unix expected attach types (`sensors::unix`).

use aya_ebpf::{
    bindings::bpf_sock_addr,
    helpers::{bpf_probe_read_kernel, bpf_probe_read_kernel_buf},
    macros::{cgroup_sock_addr, map},
    maps::HashMap,
    programs::SockAddrContext,
};
use vigil_common::{
    RecordKind, Sensor, UNIX_PATH_MAX, UNIX_SYSTEMS_ENTRIES, UnixKey, UnixRecord, policy, sock_op,
    verdict,
};

use crate::{
    enforce::{self, current_policy},
    maps::{EVENTS, config, count_loss, wake_flags},
    task::{fill_header, read_field, watched_current},
};

const ALLOW: i32 = 1;
const DENY: i32 = 0;

/// Unix socket addresses agents may use (agent key 0: every agent).
#[map]
pub static UNIX_SYSTEMS: HashMap<UnixKey, u32> = HashMap::pinned(UNIX_SYSTEMS_ENTRIES, 0);

#[cgroup_sock_addr(connect4)]
pub fn vigil_connect_unix(ctx: SockAddrContext) -> i32 {
    try_unix(&ctx, sock_op::CONNECT)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn vigil_sendmsg_unix(ctx: SockAddrContext) -> i32 {
    try_unix(&ctx, sock_op::SENDMSG)
}

fn try_unix(ctx: &SockAddrContext, op: u8) -> i32 {
    match judge(ctx, op) {
        Some(false) => DENY,
        _ => ALLOW,
    }
}

/// The address the caller passed, in the form `UNIX_SYSTEMS` compares.
#[inline(always)]
fn address(ctx: &SockAddrContext, key: &mut UnixKey) -> Option<()> {
    let off = &config().offsets;
    if off.sa_kern_uaddr == 0 || off.sa_kern_uaddrlen == 0 {
        return None;
    }
    // The context is a `bpf_sock_addr_kern` at run time; copying its
    // pointer through the stack with a probe read turns it into a plain
    // number we may offset, as for the socket in `sock_ops`.
    let at = ctx.sock_addr as u64;
    // SAFETY: reads our own stack slot.
    let kern = unsafe { bpf_probe_read_kernel(&raw const at) }.ok()? as *const u8;
    // The kernel's copy of the caller's `sockaddr_un`, and its length.
    let uaddr: *const u8 = read_field(kern, off.sa_kern_uaddr)?;
    let len: u32 = read_field(kern, off.sa_kern_uaddrlen)?;
    // sun_path follows the two bytes of sun_family.
    let n = (len.saturating_sub(2) as usize) & 0x7f;
    let n = if n > UNIX_PATH_MAX { UNIX_PATH_MAX } else { n };
    if n == 0 {
        return None;
    }
    // SAFETY: kernel memory read through a helper that faults safely.
    unsafe { bpf_probe_read_kernel_buf(uaddr.wrapping_add(2), &mut key.path[..n]) }.ok()?;
    key.normalize(n);
    Some(())
}

/// Reports the attempt of a watched task and decides it: `Some(false)`
/// when it is refused.
#[inline(always)]
fn judge(ctx: &SockAddrContext, op: u8) -> Option<bool> {
    let cfg = config();
    let cgroup_id = watched_current(cfg)?;
    let mut key = UnixKey::default();
    address(ctx, &mut key)?;
    // The node's plumbing (resolver, system log): allowed and not reported.
    // SAFETY: the value is only tested for presence.
    if unsafe { UNIX_SYSTEMS.get(key) }.is_some() {
        return None;
    }
    // SAFETY: the context is the kernel's bpf_sock_addr for this call.
    let sa: &bpf_sock_addr = unsafe { &*ctx.sock_addr };
    let sock_type = sa.type_ as u8;
    let policy = current_policy(cfg, cgroup_id);
    let prompt = enforce::is_prompt(policy.as_ref());
    let verdict = policy.map_or(verdict::ALLOWED, |p| {
        enforce::blocked(&p).unwrap_or_else(|| {
            if p.flags & policy::ENFORCE_SYSTEMS == 0 {
                return verdict::ALLOWED;
            }
            key.agent_key = p.agent_key;
            // SAFETY: as above.
            if unsafe { UNIX_SYSTEMS.get(key) }.is_some() {
                verdict::ALLOWED
            } else {
                verdict::BLOCKED_SCOPE
            }
        })
    });
    if let Some(mut entry) = EVENTS.reserve::<UnixRecord>(0) {
        // SAFETY: the reservation is sizeof(UnixRecord); every field is written.
        let rec = unsafe { &mut *entry.as_mut_ptr() };
        fill_header(&mut rec.header, RecordKind::Unix as u16, cgroup_id, cfg);
        rec.header.verdict = verdict;
        rec.op = op;
        rec.sock_type = sock_type;
        rec.path_len = key.len as u16;
        rec._pad = 0;
        rec.path = key.path;
        entry.submit(wake_flags(cfg, prompt || verdict != verdict::ALLOWED));
    } else {
        count_loss(Sensor::Network, cgroup_id);
    }
    Some(verdict == verdict::ALLOWED)
}
