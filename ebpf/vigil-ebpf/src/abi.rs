//! Kernel ABI numbers the programs compare against (no libc in BPF).
//!
//! `aya_ebpf::bindings` covers the BPF uapi (`linux/bpf.h`) only, so the
//! BPF constants (`BPF_RB_*`, `BPF_SOCK_OPS_*`, `BPF_NOEXIST`) come from
//! there; these are socket, signal and protocol numbers from other uapi
//! headers, which it does not have.

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const SOCK_STREAM: u32 = 1;
pub const SOCK_DGRAM: u32 = 2;
pub const SIGKILL: u32 = 9;
