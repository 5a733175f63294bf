//! DNS sensor: UDP answers (source port 53) delivered to watched processes,
//! so the daemon can match connects against host names the agent itself
//! resolved, and the datagrams those processes send to or from port 53, so
//! that it believes only answers to their own queries that no agent's
//! process served. A `cgroup_skb` ingress and an egress program at the
//! cgroup v2 root see every packet a socket receives or sends; only port-53
//! datagrams of watched cgroups are copied. They never drop anything. The
//! queries are also judged by their names (in the daemon: a name outside
//! the agent's systems, or one that carries encoded data).

use aya_ebpf::{
    bindings::__sk_buff,
    helpers::{
        bpf_get_current_pid_tgid,
        generated::{
            bpf_get_current_cgroup_id, bpf_skb_ancestor_cgroup_id, bpf_skb_cgroup_id,
            bpf_skb_load_bytes,
        },
    },
    macros::cgroup_skb,
    programs::SkBuffContext,
};
use vigil_common::{DNS_EGRESS, DNS_LEN, DnsRecord, KernelConfig, RecordKind, Sensor};

use crate::{
    abi::{AF_INET, AF_INET6, IPPROTO_UDP},
    maps::{EVENTS, WATCHED, config, count_loss, wake_flags},
    task::{fill_header, fill_header_no_task},
};

/// `skb->protocol` values, from `linux/if_ether.h` (not in the BPF bindings).
const ETH_P_IP: u32 = 0x0800;
const ETH_P_IPV6: u32 = 0x86DD;
/// Let the packet through (`cgroup_skb`: 1 = allow; the uapi names no
/// constant for it).
const PASS: i32 = 1;

#[cgroup_skb(ingress)]
pub fn vigil_dns_ingress(ctx: SkBuffContext) -> i32 {
    let _ = try_dns(&ctx, false);
    PASS
}

#[cgroup_skb(egress)]
pub fn vigil_dns_egress(ctx: SkBuffContext) -> i32 {
    let _ = try_dns(&ctx, true);
    PASS
}

fn load<T: Copy + Default>(ctx: &SkBuffContext, offset: u32) -> Option<T> {
    let mut v = T::default();
    // SAFETY: the helper copies at most size_of::<T>() bytes into v.
    let ret = unsafe {
        bpf_skb_load_bytes(
            ctx.skb.skb.cast(),
            offset,
            (&raw mut v).cast(),
            core::mem::size_of::<T>() as u32,
        )
    };
    (ret == 0).then_some(v)
}

/// The receiving socket's cgroup when it is watched.
fn watched(cfg: &KernelConfig, skb: *mut __sk_buff) -> Option<u64> {
    // SAFETY: helpers on the program's own skb.
    let id = unsafe { bpf_skb_cgroup_id(skb) };
    if id == 0 {
        return None;
    }
    if cfg.watch_all != 0 {
        return Some(id);
    }
    if cfg.session_parent_level != 0 {
        // SAFETY: as above; an out-of-range level returns 0.
        let a = unsafe { bpf_skb_ancestor_cgroup_id(skb, cfg.session_parent_level as i32) };
        if a == cfg.session_parent_id {
            return Some(id);
        }
    }
    // SAFETY: presence test only.
    unsafe { WATCHED.get(id) }.map(|_| id)
}

/// The byte at `offset` of the packet's linear data, read directly: the
/// test every packet of the node takes costs no helper call.
#[inline(always)]
fn byte_at(skb: *mut __sk_buff, offset: usize) -> Option<u8> {
    // SAFETY: context fields; the kernel turns them into packet pointers.
    let (data, end) = unsafe { ((*skb).data as usize, (*skb).data_end as usize) };
    if data + offset + 1 > end {
        return None;
    }
    // SAFETY: in bounds, as the verifier checks too.
    Some(unsafe { *((data + offset) as *const u8) })
}

/// Source and destination port of the UDP header at `udp_off`. Read
/// directly at the usual constant offsets (no IPv4 options), so that every
/// UDP packet of the node costs no helper call; the helper otherwise.
#[inline(always)]
fn udp_ports(ctx: &SkBuffContext, skb: *mut __sk_buff, udp_off: u32) -> Option<(u16, u16)> {
    let direct = |at: usize| -> Option<(u16, u16)> {
        Some((
            u16::from_be_bytes([byte_at(skb, at)?, byte_at(skb, at + 1)?]),
            u16::from_be_bytes([byte_at(skb, at + 2)?, byte_at(skb, at + 3)?]),
        ))
    };
    let found = match udp_off {
        20 => direct(20),
        40 => direct(40),
        _ => None,
    };
    found.or_else(|| {
        let p: [u8; 4] = load(ctx, udp_off)?;
        Some((
            u16::from_be_bytes([p[0], p[1]]),
            u16::from_be_bytes([p[2], p[3]]),
        ))
    })
}

/// Copies a port-53 datagram of a watched socket: an answer it receives
/// (source port 53) or, on `egress`, one it sends to or from port 53.
fn try_dns(ctx: &SkBuffContext, egress: bool) -> Option<()> {
    let skb = ctx.skb.skb;
    // SAFETY: reading fields of the program's own context.
    let (proto, len) = unsafe { (u32::from(u16::from_be((*skb).protocol as u16)), (*skb).len) };
    let (family, udp_off, src_off, addr_len) = if proto == ETH_P_IP {
        // cgroup_skb data starts at the network header.
        if byte_at(skb, 9)? != IPPROTO_UDP {
            return None;
        }
        (AF_INET, u32::from(byte_at(skb, 0)? & 0x0f) * 4, 12u32, 4u32)
    } else if proto == ETH_P_IPV6 {
        // Extension headers are not followed: DNS datagrams do not carry them.
        if byte_at(skb, 6)? != IPPROTO_UDP {
            return None;
        }
        (AF_INET6, 40, 8, 16)
    } else {
        return None;
    };
    let (sport, dport) = udp_ports(ctx, skb, udp_off)?;
    // Sent: a query, or an answer the socket serves (which is then no
    // resolver's).
    if !(sport == 53 || egress && dport == 53) {
        return None;
    }
    let cfg = config();
    let cgroup_id = watched(cfg, skb)?;
    let payload_off = udp_off + 8;
    if len <= payload_off {
        return None;
    }
    let n = (len - payload_off) as usize;
    // A datagram leaves in the context of the task that sends it (UDP
    // sends it synchronously), so the record can name the process that
    // asked, when the task is in the socket's own cgroup: the daemon can
    // then kill it like any other offender. Received answers and sockets
    // handed to another cgroup name no process.
    // SAFETY: helpers without memory arguments.
    let sender = egress && unsafe { bpf_get_current_cgroup_id() } == cgroup_id;
    if sender && (bpf_get_current_pid_tgid() >> 32) as u32 == cfg.daemon_tgid {
        return None;
    }
    let Some(mut entry) = EVENTS.reserve::<DnsRecord>(0) else {
        count_loss(Sensor::Network, cgroup_id);
        return None;
    };
    // SAFETY: the reservation is sizeof(DnsRecord); fields are written below.
    let rec = unsafe { &mut *entry.as_mut_ptr() };
    if sender {
        fill_header(&mut rec.header, RecordKind::Dns as u16, cgroup_id, cfg);
    } else {
        fill_header_no_task(&mut rec.header, RecordKind::Dns as u16, cgroup_id);
    }
    if egress {
        rec.header.flags = DNS_EGRESS;
    }
    rec.family = family;
    rec.src_port = sport;
    rec.dst_port = dport;
    rec.src_addr = [0; 16];
    rec.dst_addr = [0; 16];
    // Constant bound for the verifier: 1..=DNS_LEN bytes.
    let take = ((n.min(DNS_LEN) - 1) & (DNS_LEN - 1)) + 1;
    // SAFETY: at most DNS_LEN bytes into a DNS_LEN buffer; each address
    // (4 or 16 bytes) into a 16-byte array.
    let ok = unsafe {
        bpf_skb_load_bytes(
            skb.cast(),
            payload_off,
            rec.payload.as_mut_ptr().cast(),
            take as u32,
        ) == 0
            && bpf_skb_load_bytes(
                skb.cast(),
                src_off,
                rec.src_addr.as_mut_ptr().cast(),
                addr_len,
            ) == 0
            && bpf_skb_load_bytes(
                skb.cast(),
                src_off + addr_len,
                rec.dst_addr.as_mut_ptr().cast(),
                addr_len,
            ) == 0
    };
    if !ok {
        entry.discard(0);
        return None;
    }
    rec.len = take as u16;
    // Enforced agents may connect to an answer's addresses right away: the
    // daemon must learn them first. A sent datagram needs no wake-up of its
    // own: it is ahead of its answer in the ring, and the answer wakes the
    // reader.
    entry.submit(wake_flags(cfg, !egress));
    Some(())
}
