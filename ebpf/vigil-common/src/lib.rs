//! Record types shared by Vigil's eBPF programs and its daemon.
//!
//! Every record the kernel writes to the ring buffer starts with a [`Header`]
//! whose `kind` says which record follows. All types are `#[repr(C)]`, contain
//! no padding the kernel could leave uninitialised (explicit `_pad` fields
//! instead), and have their sizes pinned by tests so both sides agree.
//!
//! The `user` feature implements `aya::Pod` for the types userspace reads
//! from maps or writes as globals.
#![no_std]

/// Length of a task's `comm`.
pub const COMM_LEN: usize = 16;
/// Bytes kept of a path (exec file name, opened file).
pub const PATH_LEN: usize = 256;
/// Bytes kept of an exec's argument vector (NUL-separated).
pub const ARGV_LEN: usize = 1024;
/// Bytes of a kernel-resolved directory or executable path kept. The path
/// is stored as its components leaf first, each NUL-terminated (see
/// [`PathComponents`]).
pub const DIR_LEN: usize = 512;
/// Bytes read of one path component; room past [`DIR_LEN`] for the last one.
pub const NAME_READ: usize = 128;

/// Bytes of a DNS payload kept.
pub const DNS_LEN: usize = 512;

/// Discriminant of a ring-buffer record, in [`Header::kind`].
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    Exec = 1,
    Fork = 2,
    Exit = 3,
    Connect = 4,
    Accept = 5,
    Open = 6,
    Dns = 7,
    IoUring = 8,
    Link = 9,
    Socket = 10,
    Unix = 11,
    Escape = 12,
    Tamper = 13,
}

impl RecordKind {
    /// Decodes a header's `kind`, `None` for values this build does not know.
    #[must_use]
    pub const fn from_u16(v: u16) -> Option<Self> {
        Some(match v {
            1 => Self::Exec,
            2 => Self::Fork,
            3 => Self::Exit,
            4 => Self::Connect,
            5 => Self::Accept,
            6 => Self::Open,
            7 => Self::Dns,
            8 => Self::IoUring,
            9 => Self::Link,
            10 => Self::Socket,
            11 => Self::Unix,
            12 => Self::Escape,
            13 => Self::Tamper,
            _ => return None,
        })
    }
}

/// Which loss counter a sensor increments when the ring buffer is full.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sensor {
    Process = 0,
    Network = 1,
    File = 2,
}

/// Number of entries in the per-CPU loss counter array.
pub const SENSOR_COUNT: u32 = 3;
/// Names of the sensors, indexed by [`Sensor`].
pub const SENSOR_NAMES: [&str; SENSOR_COUNT as usize] = ["process", "network", "file"];

/// Key of the `LOSS_BY_CGROUP` map: records lost of one sensor for one
/// cgroup, so a session that floods the ring buffer to hide an action among
/// the lost records is named by what it lost.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LossKey {
    pub cgroup_id: u64,
    /// A [`Sensor`].
    pub sensor: u32,
    pub _pad: u32,
}

/// Capacity of `LOSS_BY_CGROUP` (an LRU map: the least recently losing
/// cgroups go first when more than this many lose records).
pub const LOSS_BY_CGROUP_ENTRIES: u32 = 4096;

/// Common prefix of every record.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Header {
    /// A [`RecordKind`].
    pub kind: u16,
    /// Record-specific flags (`*_TRUNCATED`, …).
    pub flags: u16,
    /// Enforcement verdict taken in the kernel (see [`verdict`]).
    pub verdict: u32,
    /// `bpf_ktime_get_boot_ns` at the hook.
    pub ts_ns: u64,
    /// cgroup v2 id of the task (or, for accepted sockets, of the socket's owner).
    pub cgroup_id: u64,
    /// Thread id; 0 where the hook runs in no task's context.
    pub pid: u32,
    /// Process id (thread-group id).
    pub tgid: u32,
    /// Parent's process id, from `task->real_parent->tgid`; 0 where unknown.
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub _pad: u32,
    pub comm: [u8; COMM_LEN],
}

/// What the kernel did with the action a record reports, and why.
pub mod verdict {
    /// Observed and let through.
    pub const ALLOWED: u32 = 0;
    /// Denied (EPERM or SIGKILL): the agent or session is revoked.
    pub const BLOCKED_REVOKED: u32 = 1;
    /// Denied: the agent requires a task approval and none is active.
    pub const BLOCKED_NO_TASK: u32 = 2;
    /// Denied: the destination is outside the agent's enforced `systems`.
    pub const BLOCKED_SCOPE: u32 = 3;
    /// Denied: the agent may not use io_uring (`io_uring = "deny"`).
    pub const BLOCKED_IO_URING: u32 = 4;
    /// Denied: the socket's family (or raw type) is outside the agent's
    /// `socket_families`.
    pub const BLOCKED_SOCKET: u32 = 5;
    /// Killed: a watched process moved itself (or another) out of its
    /// session, and the agent is enforced.
    pub const BLOCKED_ESCAPE: u32 = 6;
    /// Killed: a watched process of an enforced agent reached for the
    /// daemon (a signal, `ptrace`, its memory) or called `bpf()`.
    pub const BLOCKED_TAMPER: u32 = 7;
    /// Killed before its first instruction: the program has no name on
    /// any file system (a memfd, or a file deleted before the exec).
    pub const BLOCKED_MEMORY_EXEC: u32 = 8;
}

/// Value of the pinned `POLICY` map, keyed by cgroup id: a session cgroup,
/// an agent's directory (covering all its sessions) or a matched container.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// [`policy`] bits.
    pub flags: u32,
    /// Key of the agent's rows in the `SYSTEMS` trie.
    pub agent_key: u32,
    /// `CLOCK_BOOTTIME` deadline of the active task approval (0: none).
    pub grant_expires_ns: u64,
}

/// [`Policy::flags`].
pub mod policy {
    pub const REVOKED: u32 = 1;
    pub const REQUIRE_APPROVAL: u32 = 2;
    pub const ENFORCE_SYSTEMS: u32 = 4;
    /// The daemon acts on this cgroup's violations (`on_violation` kill or
    /// revoke): its records wake the reader at once.
    pub const PROMPT: u32 = 8;
    /// Setting up an io_uring kills the process (`io_uring = "deny"`).
    pub const DENY_IO_URING: u32 = 16;
    /// Sockets of an unusual family (see [`socket_class`]) are refused
    /// unless their class bit is in the allowed set.
    pub const DENY_SOCKETS: u32 = 32;
    /// Running a program that no file system names kills it before its
    /// first instruction.
    pub const DENY_MEMORY_EXEC: u32 = 64;
    /// Bit of the first [`socket_class`] in the allowed set: class `c` is
    /// allowed when `flags & (1 << (SOCKET_ALLOW_SHIFT + c))` is set. The
    /// set lives in the flags so the pinned `POLICY` rows keep their layout.
    pub const SOCKET_ALLOW_SHIFT: u32 = 16;

    /// Whether a task with these merged `flags` may create a socket of
    /// `class` (a [`socket_class`](super::socket_class) value).
    // Inlined on purpose: a BPF-to-BPF call costs stack and verifier work.
    #[allow(clippy::inline_always)]
    #[inline(always)]
    #[must_use]
    pub const fn allows_socket(flags: u32, class: u8) -> bool {
        if class == super::socket_class::ORDINARY || flags & DENY_SOCKETS == 0 {
            return true;
        }
        class < super::socket_class::COUNT
            && flags & (1 << (SOCKET_ALLOW_SHIFT + class as u32)) != 0
    }
}

/// Classes of sockets as the `socket_families` of an agent name them.
/// Ordinary sockets (IPv4 and IPv6 other than raw, unix sockets, and
/// `NETLINK_ROUTE`, which glibc's `getaddrinfo` and `if_nametoindex` open)
/// are never judged; every other family is one of the other classes.
pub mod socket_class {
    pub const ORDINARY: u8 = 0;
    /// `SOCK_RAW` (or the obsolete `SOCK_PACKET`) in `AF_INET`/`AF_INET6`:
    /// forged headers, ICMP, sniffing of one protocol.
    pub const RAW: u8 = 1;
    /// `AF_PACKET`: whole link-layer frames, every protocol.
    pub const PACKET: u8 = 2;
    /// `AF_NETLINK` other than `NETLINK_ROUTE` (audit, netfilter, sock diag,
    /// uevents, generic netlink, …).
    pub const NETLINK: u8 = 3;
    /// `AF_ALG`: the kernel crypto API.
    pub const ALG: u8 = 4;
    /// `AF_VSOCK`: the hypervisor and other VMs.
    pub const VSOCK: u8 = 5;
    /// `AF_XDP`.
    pub const XDP: u8 = 6;
    /// Any other family (Bluetooth, CAN, `AF_KEY`, TIPC, …).
    pub const OTHER: u8 = 7;
    /// Number of classes.
    pub const COUNT: u8 = 8;
    /// Names of the classes, indexed by class, as in config and events.
    pub const NAMES: [&str; COUNT as usize] = [
        "ordinary", "raw", "packet", "netlink", "alg", "vsock", "xdp", "other",
    ];

    pub const AF_UNIX: u16 = 1;
    pub const AF_INET: u16 = 2;
    pub const AF_INET6: u16 = 10;
    pub const AF_NETLINK: u16 = 16;
    pub const AF_PACKET: u16 = 17;
    pub const AF_ALG: u16 = 38;
    pub const AF_VSOCK: u16 = 40;
    pub const AF_XDP: u16 = 44;
    pub const SOCK_RAW: u32 = 3;
    pub const SOCK_PACKET: u32 = 10;
    pub const NETLINK_ROUTE: u32 = 0;
    /// The bits of a `socket(2)` type that are the type (the rest are
    /// `SOCK_NONBLOCK`, `SOCK_CLOEXEC`).
    pub const TYPE_MASK: u32 = 0xf;

    /// The class of a socket of `family`, `sock_type` and `protocol`: the
    /// kernel programs and the daemon both classify with it.
    #[allow(clippy::inline_always)]
    #[inline(always)]
    #[must_use]
    pub const fn classify(family: u16, sock_type: u32, protocol: u32) -> u8 {
        let ty = sock_type & TYPE_MASK;
        match family {
            AF_UNIX => ORDINARY,
            AF_INET | AF_INET6 => {
                if ty == SOCK_RAW || ty == SOCK_PACKET {
                    RAW
                } else {
                    ORDINARY
                }
            }
            AF_NETLINK => {
                if protocol == NETLINK_ROUTE {
                    ORDINARY
                } else {
                    NETLINK
                }
            }
            AF_PACKET => PACKET,
            AF_ALG => ALG,
            AF_VSOCK => VSOCK,
            AF_XDP => XDP,
            _ => OTHER,
        }
    }
}

/// Which hook produced a [`SocketRecord`].
pub mod socket_hook {
    /// cgroup `sock_create` (IPv4 and IPv6 families): a refusal fails
    /// `socket(2)` with `EPERM`.
    pub const SOCK_CREATE: u8 = 1;
    /// tracepoint `syscalls/sys_enter_socket` (every other family, which
    /// `sock_create` does not see): a refusal kills the caller before
    /// `socket(2)` returns.
    pub const SYSCALL: u8 = 2;
}

/// A watched process creating a socket of an unusual class.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SocketRecord {
    pub header: Header,
    pub family: u16,
    /// The socket type (`SOCK_RAW`, …), without `SOCK_NONBLOCK`/`SOCK_CLOEXEC`.
    pub sock_type: u16,
    pub protocol: u16,
    /// A [`socket_class`] value.
    pub class: u8,
    /// A [`socket_hook`] value.
    pub hook: u8,
}

/// Key data of the `SYSTEMS` LPM trie: agent, then an IPv6 (or v4-mapped)
/// address. The prefix length counts the 32 agent bits too.
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemKey {
    /// Agent key, big-endian so the trie matches it bit by bit.
    pub agent_be: [u8; 4],
    pub addr: [u8; 16],
}

/// Rules per trie entry.
pub const PORT_RULES: usize = 8;

/// One allowed port range on a prefix.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortRule {
    pub lo: u16,
    pub hi: u16,
    /// `IPPROTO_TCP`, `IPPROTO_UDP`, or 0 for any.
    pub protocol: u8,
    pub _pad: [u8; 3],
    /// `CLOCK_BOOTTIME` expiry (DNS TTL); 0 never expires.
    pub expires_ns: u64,
}

impl PortRule {
    /// Whether this rule lets a connect or send to `port` with `protocol`
    /// through at `now_ns` (`CLOCK_BOOTTIME`). The kernel programs and the
    /// daemon both decide with it, so they cannot disagree on a rule.
    ///
    /// Plain comparisons only, no loop and no panic path: it is inlined into
    /// the connect and sendmsg programs, where each branch costs verifier
    /// steps.
    // Inlined on purpose: a BPF-to-BPF call costs stack and verifier work.
    #[allow(clippy::inline_always)]
    #[inline(always)]
    #[must_use]
    pub const fn allows(&self, port: u16, protocol: u8, now_ns: u64) -> bool {
        (self.protocol == 0 || self.protocol == protocol)
            && self.lo <= port
            && port <= self.hi
            && (self.expires_ns == 0 || self.expires_ns > now_ns)
    }
}

/// Value of the `SYSTEMS` trie: what a prefix allows.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SystemRules {
    pub count: u32,
    pub _pad: u32,
    pub rules: [PortRule; PORT_RULES],
}

impl SystemRules {
    /// Whether any of the first `count` rules [allows](PortRule::allows)
    /// `port` with `protocol` at `now_ns`; a `count` above [`PORT_RULES`]
    /// counts as [`PORT_RULES`].
    ///
    /// The loop has a constant bound and indexes below it, so the compiler
    /// unrolls it without a bounds check and the verifier accepts it.
    #[allow(clippy::inline_always)]
    #[inline(always)]
    #[must_use]
    pub fn allows(&self, port: u16, protocol: u8, now_ns: u64) -> bool {
        let count = self.count as usize;
        for i in 0..PORT_RULES {
            if i >= count {
                break;
            }
            if self.rules[i].allows(port, protocol, now_ns) {
                return true;
            }
        }
        false
    }
}

/// `Header::flags` of an exec: argv did not fit.
pub const EXEC_ARGV_TRUNCATED: u16 = 1;
/// `Header::flags` of an exec: file name did not fit.
pub const EXEC_FILENAME_TRUNCATED: u16 = 2;
/// `Header::flags` of an exec: argv was not captured at syscall entry.
pub const EXEC_ARGV_MISSING: u16 = 4;
/// `Header::flags` of an open: the path did not fit.
pub const OPEN_PATH_TRUNCATED: u16 = 1;
/// `Header::flags` of an open: [`OpenRecord::resolved`] is the opened file
/// itself (the open succeeded), not the base directory of a relative path.
pub const OPEN_RESOLVED_FILE: u16 = 2;
/// `Header::flags` of a link or rename: one of its paths did not fit.
pub const LINK_PATH_TRUNCATED: u16 = 1;

/// A successful `execve`/`execveat` (from `sched_process_exec`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecRecord {
    pub header: Header,
    /// The tid that called exec (differs from `pid` when a thread execs).
    pub old_pid: u32,
    /// Bytes used in `filename`, without the NUL.
    pub filename_len: u16,
    /// Bytes used in `argv`: the new image's arguments, each NUL-terminated
    /// (a last one without NUL was cut, see [`EXEC_ARGV_TRUNCATED`]).
    pub argv_len: u16,
    /// Link count of the executable's inode (`u32::MAX`: unknown); 0 for a
    /// file deleted since it was opened, a memfd among them.
    pub exe_nlink: u32,
    /// The executable's device (the kernel's `dev_t`) and inode number; 0
    /// when unreadable.
    pub exe_dev: u32,
    pub exe_ino: u64,
    pub filename: [u8; PATH_LEN],
    pub argv: [u8; ARGV_LEN],
    /// The program that runs: `mm->exe_file` resolved in the kernel. The
    /// file name the caller passed may name something else by the time the
    /// daemon reads it, or nothing the daemon can resolve at all
    /// (`/dev/fd/N`, `/proc/self/fd/N` name the caller's descriptors).
    pub exe: PathComponents,
}

/// A path the kernel resolved by walking dentries and mounts up to the
/// task's root: components leaf first, each NUL-terminated.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PathComponents {
    /// Bytes used in `buf`.
    pub len: u16,
    /// [`path_flags`] bits.
    pub flags: u16,
    pub _pad: u32,
    pub buf: [u8; DIR_LEN + NAME_READ],
}

/// [`PathComponents::flags`].
pub mod path_flags {
    /// The walk reached the task's root: the path is complete.
    pub const COMPLETE: u16 = 1;
    /// Components were dropped (too deep or too long).
    pub const TRUNCATED: u16 = 2;
    /// The file is on no mounted path (a memfd, an anonymous or internal
    /// file): `buf` holds its one name, and the walk ended there.
    pub const DETACHED: u16 = 4;
}

/// A new task (from `sched_process_fork`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ForkRecord {
    pub header: Header,
    pub child_pid: u32,
    /// Child's thread-group id; equals `header.tgid` for a new thread.
    pub child_tgid: u32,
}

/// A process (thread-group leader) exiting (from `sched_process_exit`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExitRecord {
    pub header: Header,
    /// `task->exit_code`: wait status (`code << 8 | signal`).
    pub exit_code: u32,
    pub _pad: u32,
}

/// Which cgroup socket-address hook produced a [`ConnectRecord`].
pub mod sock_op {
    pub const CONNECT: u8 = 1;
    pub const SENDMSG: u8 = 2;
}

/// An outbound connect or unconnected datagram send.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConnectRecord {
    pub header: Header,
    /// `AF_INET` or `AF_INET6`.
    pub family: u16,
    /// Destination port, host byte order.
    pub port: u16,
    /// `IPPROTO_TCP`, `IPPROTO_UDP`, … (0 when the socket did not say).
    pub protocol: u8,
    /// A [`sock_op`] value.
    pub op: u8,
    /// `SOCK_STREAM`, `SOCK_DGRAM`, …
    pub sock_type: u8,
    pub _pad: u8,
    /// Destination; IPv4 in the first four bytes.
    pub addr: [u8; 16],
}

/// An accepted inbound TCP connection (from `sock_ops` passive-established).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct AcceptRecord {
    pub header: Header,
    pub family: u16,
    /// Local port, host byte order.
    pub local_port: u16,
    /// Remote port, host byte order.
    pub remote_port: u16,
    pub _pad: u16,
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
}

/// Which syscall produced an [`OpenRecord`].
pub mod open_syscall {
    pub const OPEN: u8 = 1;
    pub const OPENAT: u8 = 2;
    pub const OPENAT2: u8 = 3;
}

/// Which syscall produced a [`LinkRecord`], and the index of its number in
/// [`KernelConfig::link_nrs`].
pub mod link_syscall {
    pub const LINK: u8 = 0;
    pub const LINKAT: u8 = 1;
    pub const SYMLINK: u8 = 2;
    pub const SYMLINKAT: u8 = 3;
    pub const RENAME: u8 = 4;
    pub const RENAMEAT: u8 = 5;
    pub const RENAMEAT2: u8 = 6;
    /// Number of entries (the last slot of `link_nrs` is unused).
    pub const COUNT: usize = 7;

    /// True for the calls that make a symbolic link, whose first path is
    /// the link's text (relative to the link's directory), not a file.
    #[must_use]
    pub const fn is_symlink(s: u8) -> bool {
        s == SYMLINK || s == SYMLINKAT
    }

    /// True for the renames.
    #[must_use]
    pub const fn is_rename(s: u8) -> bool {
        s == RENAME || s == RENAMEAT || s == RENAMEAT2
    }
}

/// A new name for a file, reported at syscall exit with its result: a hard
/// link (`link`, `linkat`), a symbolic link (`symlink`, `symlinkat`) or a
/// rename (`rename`, `renameat`, `renameat2`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LinkRecord {
    pub header: Header,
    /// 0, or `-errno`.
    pub ret: i64,
    /// Directory fd `old` is relative to (`AT_FDCWD` = -100; for a symbolic
    /// link, none: its text is kept as written).
    pub old_dfd: i32,
    /// Directory fd `new` is relative to.
    pub new_dfd: i32,
    /// A [`link_syscall`] value.
    pub syscall: u8,
    pub _pad: u8,
    /// Bytes used in `old` and `new`, without the NUL.
    pub old_len: u16,
    pub new_len: u16,
    pub _pad2: u16,
    /// The existing file's name (for a symbolic link: the link's text).
    pub old: [u8; PATH_LEN],
    /// The new name.
    pub new: [u8; PATH_LEN],
    /// The directory the relative path of the record is relative to,
    /// resolved in the kernel at the call: `old`'s base for a hard link or
    /// a rename (for `linkat(fd, "", ..., AT_EMPTY_PATH)`, the file of
    /// `fd` itself), `new`'s for a symbolic link. Empty when that path is
    /// absolute.
    pub base: PathComponents,
}

/// A file open, reported at syscall exit with its result.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct OpenRecord {
    pub header: Header,
    /// Return value: a file descriptor, or `-errno`.
    pub ret: i64,
    /// `open(2)` flags.
    pub flags: u32,
    pub mode: u32,
    /// Directory fd the path is relative to (`AT_FDCWD` = -100).
    pub dfd: i32,
    /// An [`open_syscall`] value.
    pub syscall: u8,
    pub _pad: u8,
    /// Bytes used in `path`, without the NUL.
    pub path_len: u16,
    /// The rest of this open's [`OpenKey`] (with the header's cgroup and
    /// tgid, `flags`, the result class and `path_len`).
    pub base_mnt: u64,
    pub base_dentry: u64,
    pub path_hash: u64,
    /// [`OpenSeen::repeats`] when this record was written.
    pub repeats: u64,
    /// The opened file's inode number (0 when the open failed or it was
    /// unreadable).
    pub ino: u64,
    /// Its device (`super_block.s_dev`, the kernel's encoding: major << 20 | minor).
    pub dev: u32,
    /// Its link count (`u32::MAX`: unknown).
    pub nlink: u32,
    pub path: [u8; PATH_LEN],
    /// With [`OPEN_RESOLVED_FILE`], the file that was opened, resolved from
    /// the new descriptor: symlinks, `..`, `/proc/*/root` and `/proc/*/fd/*`
    /// are behind it. Else, for a relative path, the directory it is
    /// relative to (cwd or `dfd`).
    pub resolved: PathComponents,
}

/// What makes two opens the same open, for repeat counting: the process,
/// the path as passed and the directory it is relative to, the flags and
/// the result (a descriptor, or which error).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct OpenKey {
    pub cgroup_id: u64,
    pub tgid: u32,
    pub flags: u32,
    /// 0 for a descriptor, else `-errno`.
    pub result: i32,
    pub path_len: u32,
    /// `struct path` of the base directory of a relative path (0: absolute).
    pub base_mnt: u64,
    pub base_dentry: u64,
    /// Keyed hash of the path bytes.
    pub path_hash: u64,
}

/// Capacity of the kernel's LRU map of repeat counters (`OPEN_SEEN`): the
/// daemon tracks about as many keys, since a key the kernel evicted counts
/// nothing more.
pub const OPEN_SEEN_ENTRIES: u32 = 16384;

/// Repeat counter of an [`OpenKey`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenSeen {
    /// Boot-clock time of the last reported open of this key.
    pub reported_ns: u64,
    /// Opens of this key not reported on their own, since the key was first
    /// seen. Only ever grows: the daemon reports the difference.
    pub repeats: u64,
}

/// `Header::flags` of a [`DnsRecord`]: a datagram a watched socket sent
/// (to or from port 53: a query, or an answer it served), not one it received.
pub const DNS_EGRESS: u16 = 1;

/// A DNS datagram of a watched socket: an answer it received (UDP source
/// port 53) or, with [`DNS_EGRESS`], one it sent to or from port 53.
/// The addresses and ports are the datagram's own, so for an answer `src`
/// is the server and for a query `dst` is.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DnsRecord {
    pub header: Header,
    pub family: u16,
    /// Bytes of payload captured in `payload`.
    pub len: u16,
    /// Source port, host byte order.
    pub src_port: u16,
    /// Destination port, host byte order.
    pub dst_port: u16,
    /// Source address; IPv4 in the first four bytes.
    pub src_addr: [u8; 16],
    /// Destination address; IPv4 in the first four bytes.
    pub dst_addr: [u8; 16],
    pub payload: [u8; DNS_LEN],
}

/// Which io_uring tracepoint produced an [`IoUringRecord`].
pub mod io_uring_op {
    /// `io_uring_setup`: a ring was created (`io_uring:io_uring_create`).
    pub const SETUP: u8 = 1;
    /// A request was submitted (`io_uring:io_uring_submit_req`); only the
    /// opcodes that act on a file or a system are reported.
    pub const SUBMIT: u8 = 2;
}

/// io_uring opcodes (`enum io_uring_op`) that the sensor reports.
pub mod io_uring_opcode {
    pub const CONNECT: u8 = 16;
    pub const OPENAT: u8 = 18;
    pub const OPENAT2: u8 = 28;
    pub const SOCKET: u8 = 45;
}

/// io_uring activity of a watched process. Its requests do not pass the
/// syscall tracepoints the other sensors use: an `IORING_OP_OPENAT` is an
/// open no `sys_exit_openat` sees.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct IoUringRecord {
    pub header: Header,
    /// An [`io_uring_op`] value.
    pub op: u8,
    /// The request's opcode (for [`io_uring_op::SUBMIT`]).
    pub opcode: u8,
    /// Bytes used in `path`, without the NUL.
    pub path_len: u16,
    /// The ring's descriptor (for [`io_uring_op::SETUP`]).
    pub fd: i32,
    pub sq_entries: u32,
    pub cq_entries: u32,
    /// Setup flags, or the open flags of an openat request.
    pub flags: u64,
    /// For an openat request: the path as the request names it.
    pub path: [u8; PATH_LEN],
}

/// Bytes of `sockaddr_un.sun_path`.
pub const UNIX_PATH_MAX: usize = 108;
/// [`UNIX_PATH_MAX`] rounded up to 8 bytes, so the types below have no
/// implicit padding.
pub const UNIX_PATH_BUF: usize = 112;

/// Key of the pinned `UNIX_SYSTEMS` map: a unix socket address an agent may
/// connect or send to. The address is compared exactly, as the caller
/// passed it: a pathname socket up to its first NUL, the bytes after it
/// zero; an abstract one (`path[0] == 0`) as long as the address length
/// says. Agent key 0 holds the sockets every agent may use (the resolver's
/// and the system log's), which are not reported.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UnixKey {
    pub agent_key: u32,
    /// Bytes of `path` used (for an abstract address, the leading NUL too).
    pub len: u32,
    pub path: [u8; UNIX_PATH_BUF],
}

impl Default for UnixKey {
    fn default() -> Self {
        Self {
            agent_key: 0,
            len: 0,
            path: [0; UNIX_PATH_BUF],
        }
    }
}

impl UnixKey {
    /// Puts the first `n` bytes of `sun_path` (as the caller passed them,
    /// the rest of `path` being anything) into the form the map compares:
    /// a pathname ends at its first NUL and everything after is zero; an
    /// abstract address keeps its `n` bytes. Sets and returns `len`. The
    /// kernel programs and the daemon (for the addresses in `systems`) both
    /// build keys with it.
    ///
    /// One loop with a constant bound and constant indexes: the verifier
    /// accepts it unrolled.
    #[allow(clippy::inline_always)]
    #[inline(always)]
    pub fn normalize(&mut self, n: usize) -> u32 {
        let n = if n > UNIX_PATH_MAX { UNIX_PATH_MAX } else { n };
        let is_abstract = n > 0 && self.path[0] == 0;
        let mut len = 0;
        let mut ended = false;
        for i in 0..UNIX_PATH_BUF {
            if i >= n || (!is_abstract && self.path[i] == 0) {
                ended = true;
            }
            if ended {
                self.path[i] = 0;
            } else {
                len = i as u32 + 1;
            }
        }
        self.len = len;
        len
    }
}

/// Capacity of `UNIX_SYSTEMS`.
pub const UNIX_SYSTEMS_ENTRIES: u32 = 4096;

/// A connect (stream or datagram) or datagram send to a unix socket
/// address, from cgroup `connect_unix`/`sendmsg_unix` (Linux 6.7+).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct UnixRecord {
    pub header: Header,
    /// A [`sock_op`] value.
    pub op: u8,
    /// `SOCK_STREAM`, `SOCK_DGRAM`, `SOCK_SEQPACKET`.
    pub sock_type: u8,
    /// Bytes used in `path`, as in [`UnixKey::len`].
    pub path_len: u16,
    pub _pad: u32,
    pub path: [u8; UNIX_PATH_BUF],
}

/// Bytes a [`Span`] covers at most: the programs read it into a stack
/// buffer of this size.
pub const SPAN_MAX: u32 = 64;

/// Members of one kernel struct that a program reads with one helper call
/// instead of one call each: a `bpf_probe_read_kernel` call costs tens of
/// nanoseconds (about 30 on a kernel with return thunks), and a resolved
/// open reads a few dozen kernel words. `start` is 8-aligned (words are
/// then extracted without crossing), the range ends at the last member's
/// end (never past the struct, which may end a page).
/// `len` 0: the members are read one by one.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    pub start: u32,
    pub len: u32,
}

impl Span {
    /// Reads member by member.
    pub const NONE: Self = Self { start: 0, len: 0 };

    /// The range covering `members`, each (offset, size in bytes), or
    /// [`Span::NONE`] when a member is unknown, is not 1, 2, 4 or 8 bytes,
    /// straddles a word, or the range is over [`SPAN_MAX`] bytes. Offset 0
    /// means "not found" unless `first_at_zero` (the first member listed is
    /// the struct's first member).
    pub fn covering(members: &[(u32, u32)], first_at_zero: bool) -> Self {
        let mut lo = u32::MAX;
        let mut hi = 0u32;
        for (i, &(off, size)) in members.iter().enumerate() {
            let word_aligned = matches!(size, 1 | 2 | 4 | 8) && off % 8 + size <= 8;
            if (off == 0 && !(first_at_zero && i == 0)) || !word_aligned {
                return Self::NONE;
            }
            lo = lo.min(off);
            hi = hi.max(off + size);
        }
        if members.is_empty() {
            return Self::NONE;
        }
        let start = lo & !7;
        let len = hi - start;
        if len > SPAN_MAX {
            return Self::NONE;
        }
        Self { start, len }
    }
}

/// Offsets into tracepoint records and kernel structs, found at load time
/// (tracefs `format` files and `/sys/kernel/btf/vmlinux`) and handed to the
/// programs as a read-only global, so nothing depends on one kernel's layout.
/// A zero offset means "not found": the programs then skip that field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Offsets {
    /// `sched_process_exec`: `__data_loc char[] filename`.
    pub exec_filename: u16,
    /// `sched_process_exec`: `pid_t old_pid`.
    pub exec_old_pid: u16,
    /// `sched_process_exit`: `bool group_dead` (absent on older kernels).
    pub exit_group_dead: u16,
    /// `syscalls/sys_exit_*` records: `int __syscall_nr`.
    pub sys_exit_nr: u16,
    /// `syscalls/sys_exit_*` records: `long ret`.
    pub sys_exit_ret: u16,
    /// `io_uring_create`: `int fd`, `u32 sq_entries`, `u32 cq_entries`,
    /// `u32 flags` (0: the tracepoint does not exist).
    pub iou_create_fd: u16,
    pub iou_create_sq: u16,
    pub iou_create_cq: u16,
    pub iou_create_flags: u16,
    /// `io_uring_submit_req`: `void *req`, `u8 opcode`.
    pub iou_submit_req: u16,
    pub iou_submit_opcode: u16,
    /// 1 when the io_uring struct members below were all found (some of
    /// them are at offset 0).
    pub iou_known: u16,
    /// `syscalls/sys_enter_socket`: `int family`, `int type`, `int protocol`
    /// (0: the tracepoint does not exist).
    pub sock_family: u16,
    pub sock_type: u16,
    pub sock_protocol: u16,
    /// `syscalls/sys_enter_ptrace`: `long request`, `long pid`.
    pub ptrace_request: u16,
    pub ptrace_pid: u16,
    /// `syscalls/sys_enter_process_vm_readv` and `_writev`: `pid_t pid`
    /// (the same offset in both).
    pub process_vm_pid: u16,
    /// `syscalls/sys_enter_pidfd_open`: `pid_t pid`.
    pub pidfd_open_pid: u16,
    /// `syscalls/sys_enter_bpf`: `int cmd`.
    pub bpf_cmd: u16,
    /// `task_struct.real_parent`.
    pub task_real_parent: u32,
    /// `task_struct.tgid`.
    pub task_tgid: u32,
    /// `task_struct.pid`.
    pub task_pid: u32,
    /// `task_struct.exit_code`.
    pub task_exit_code: u32,
    /// `sock.sk_cgrp_data` + `sock_cgroup_data.cgroup`.
    pub sock_cgroup: u32,
    /// `cgroup.kn`.
    pub cgroup_kn: u32,
    /// `cgroup.level`.
    pub cgroup_level: u32,
    /// `cgroup.ancestors` (flexible array of `struct cgroup *`).
    pub cgroup_ancestors: u32,
    /// `kernfs_node.id`.
    pub kernfs_node_id: u32,
    /// `task_struct.fs`.
    pub task_fs: u32,
    /// `task_struct.files`.
    pub task_files: u32,
    /// `task_struct.mm`.
    pub task_mm: u32,
    /// `fs_struct.pwd`.
    pub fs_pwd: u32,
    /// `fs_struct.root`.
    pub fs_root: u32,
    /// `path.mnt`.
    pub path_mnt: u32,
    /// `path.dentry`.
    pub path_dentry: u32,
    /// `dentry.d_parent`.
    pub dentry_parent: u32,
    /// `dentry.d_name` + `qstr.name`.
    pub dentry_name: u32,
    /// `vfsmount.mnt_root`.
    pub vfsmount_root: u32,
    /// `mount.mnt` (the embedded `vfsmount`).
    pub mount_mnt: u32,
    /// `mount.mnt_parent`.
    pub mount_parent: u32,
    /// `mount.mnt_mountpoint`.
    pub mount_mountpoint: u32,
    /// `files_struct.fdt`.
    pub files_fdt: u32,
    /// `fdtable.fd`.
    pub fdtable_fd: u32,
    /// `fdtable.max_fds`.
    pub fdtable_max_fds: u32,
    /// `file.f_path`.
    pub file_path: u32,
    /// `file.f_inode`.
    pub file_inode: u32,
    pub _pad: u32,
    /// `mm_struct.exe_file`.
    pub mm_exe_file: u32,
    /// `dentry.d_inode`.
    pub dentry_inode: u32,
    /// `inode.i_nlink`.
    pub inode_nlink: u32,
    /// `inode.i_ino`.
    pub inode_ino: u32,
    /// `inode.i_sb`.
    pub inode_sb: u32,
    /// `super_block.s_dev`.
    pub sb_dev: u32,
    /// `mm_struct.arg_start`: the argument block of the image.
    pub mm_arg_start: u32,
    /// `mm_struct.arg_end`.
    pub mm_arg_end: u32,
    /// `io_kiocb.cmd`: where the request's per-opcode data (`struct io_open`) is.
    pub kiocb_cmd: u32,
    /// `io_open.filename` (a `struct filename *`).
    pub io_open_filename: u32,
    /// `io_open.how` + `open_how.flags`.
    pub io_open_flags: u32,
    /// `filename.name`.
    pub filename_name: u32,
    /// `bpf_sock_addr_kern.uaddr` and `.uaddrlen` (the context of cgroup
    /// `sock_addr` programs; `uaddrlen` exists from Linux 6.7, with the unix
    /// hooks). 0: unknown.
    pub sa_kern_uaddr: u32,
    pub sa_kern_uaddrlen: u32,
    /// `cgroup.root` and `cgroup_root.hierarchy_id` (0 is cgroup v2).
    pub cgroup_root: u32,
    pub root_hierarchy_id: u32,
    /// `task_struct.cgroups` and `css_set.dfl_cgrp`: a task's cgroup v2.
    pub task_cgroups: u32,
    pub css_set_dfl_cgrp: u32,
    /// `pt_regs` slots of the first four syscall arguments as they are at
    /// syscall exit (x86-64: `di`, `si`, `dx`, `r10`).
    pub regs_args: [u32; 4],
    /// `file`: `f_inode` and `f_path`.
    pub file_span: Span,
    /// `inode`: `i_sb`, `i_ino` and `i_nlink`.
    pub inode_span: Span,
    /// `dentry`: `d_parent` and `d_name.name`, what one step of a walk reads.
    pub dentry_span: Span,
    /// `mount`: `mnt_parent`, `mnt_mountpoint` and `mnt.mnt_root`.
    pub mount_span: Span,
    /// `path`: `mnt` and `dentry`.
    pub path_span: Span,
    /// `dentry.d_name.len`.
    pub dentry_name_len: u32,
    /// `kiocb.ki_filp`: a `struct file *` member, through which a slot of a
    /// descriptor table is read as a typed pointer.
    pub kiocb_filp: u32,
    /// Where the resolution reads by typed loads instead of helper calls.
    pub types: TypeIds,
}

/// BTF type ids, in the running kernel's `vmlinux`, of the structs a
/// resolved-path read goes through. A pointer cast to its type with the
/// `bpf_rdonly_cast` kfunc (which the verifier turns into a register move)
/// is read by plain loads that the kernel makes fault-safe, and a name by
/// loads from untrusted memory (`bpf_rdonly_cast(p, 0)`, Linux 6.17); a
/// `bpf_probe_read_kernel` call instead costs about 30 ns on kernels built
/// with retpolines and return thunks. All 0 where the kernel lacks either:
/// the programs then read with helpers, a [`Span`] at a time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TypeIds {
    pub file: u32,
    pub dentry: u32,
    pub inode: u32,
    pub super_block: u32,
    pub mount: u32,
    pub kiocb: u32,
}

impl TypeIds {
    /// Helper reads only.
    pub const NONE: Self = Self {
        file: 0,
        dentry: 0,
        inode: 0,
        super_block: 0,
        mount: 0,
        kiocb: 0,
    };

    /// Whether every id is known (typed reads are all or nothing).
    pub const fn complete(&self) -> bool {
        self.file != 0
            && self.dentry != 0
            && self.inode != 0
            && self.super_block != 0
            && self.mount != 0
            && self.kiocb != 0
    }
}

/// The instruction the programs hold where they cast a pointer to a BTF
/// type: a kfunc call (`BPF_JMP | BPF_CALL`, source register
/// `BPF_PSEUDO_KFUNC_CALL`) whose immediate is this marker. The loader
/// replaces the immediate with `bpf_rdonly_cast`'s BTF id, or the whole
/// instruction with `r0 = r1` where the kernel has no such kfunc (the
/// typed reads are then never taken: [`TypeIds`] are all 0).
pub const CAST_MARKER: u64 = (CAST_MARKER_IMM as u64) << 32 | 0x2085;
/// The marker's immediate (`"vigl"`).
pub const CAST_MARKER_IMM: u32 = 0x7669_676c;
/// `r0 = r1` (`BPF_ALU64 | BPF_MOV | BPF_X`), what the verifier makes of
/// the cast anyway.
pub const CAST_FALLBACK: u64 = 0x10bf;

/// Settings of the programs, fixed at load time (a read-only global, which
/// the verifier treats as constants).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelConfig {
    /// The daemon's own process, never reported (it would report its own writes).
    pub daemon_tgid: u32,
    /// Report every process, not only watched cgroups (discovery mode).
    pub watch_all: u32,
    /// cgroup id of the daemon's session parent; everything below is watched.
    pub session_parent_id: u64,
    /// Level of the session parent in the cgroup v2 tree (root is 0); 0 disables.
    pub session_parent_level: u32,
    /// Unread bytes in the ring buffer from which every record wakes the
    /// reader. Below it only urgent records do (blocked syscalls, DNS answers,
    /// processes with [`policy::PROMPT`]); the reader collects the rest on
    /// its own schedule, which spares each record a wake-up (an inter-processor
    /// interrupt, costly in a VM). 0: the kernel's default (wake whenever the
    /// reader has caught up).
    pub wake_bytes: u32,
    /// Syscall numbers of `open`, `openat` and `openat2` on this
    /// architecture (`u32::MAX` where one does not exist).
    pub open_nrs: [u32; 3],
    pub _pad: u32,
    /// Syscall numbers of the [`link_syscall`] calls on this architecture
    /// (`u32::MAX` where one does not exist).
    pub link_nrs: [u32; 8],
    /// An open identical to one the same process reported less than this
    /// long ago is counted in [`OpenSeen`] instead of reported. 0: every
    /// open is reported.
    pub open_repeat_ns: u64,
    /// Key of the path hash, random per load, so that repeats cannot be
    /// forged with precomputed collisions.
    pub hash_key: u64,
    pub offsets: Offsets,
}

impl Offsets {
    /// All offsets unknown; a `const` stand-in for `Default` (globals need one).
    #[must_use]
    pub const fn zeroed() -> Self {
        Self {
            exec_filename: 0,
            exec_old_pid: 0,
            exit_group_dead: 0,
            sys_exit_nr: 0,
            sys_exit_ret: 0,
            iou_create_fd: 0,
            iou_create_sq: 0,
            iou_create_cq: 0,
            iou_create_flags: 0,
            iou_submit_req: 0,
            iou_submit_opcode: 0,
            iou_known: 0,
            sock_family: 0,
            sock_type: 0,
            sock_protocol: 0,
            ptrace_request: 0,
            ptrace_pid: 0,
            process_vm_pid: 0,
            pidfd_open_pid: 0,
            bpf_cmd: 0,
            task_real_parent: 0,
            task_tgid: 0,
            task_pid: 0,
            task_exit_code: 0,
            sock_cgroup: 0,
            cgroup_kn: 0,
            cgroup_level: 0,
            cgroup_ancestors: 0,
            kernfs_node_id: 0,
            task_fs: 0,
            task_files: 0,
            task_mm: 0,
            fs_pwd: 0,
            fs_root: 0,
            path_mnt: 0,
            path_dentry: 0,
            dentry_parent: 0,
            dentry_name: 0,
            vfsmount_root: 0,
            mount_mnt: 0,
            mount_parent: 0,
            mount_mountpoint: 0,
            files_fdt: 0,
            fdtable_fd: 0,
            fdtable_max_fds: 0,
            file_path: 0,
            file_inode: 0,
            _pad: 0,
            mm_exe_file: 0,
            dentry_inode: 0,
            inode_nlink: 0,
            inode_ino: 0,
            inode_sb: 0,
            sb_dev: 0,
            mm_arg_start: 0,
            mm_arg_end: 0,
            kiocb_cmd: 0,
            io_open_filename: 0,
            io_open_flags: 0,
            filename_name: 0,
            sa_kern_uaddr: 0,
            sa_kern_uaddrlen: 0,
            cgroup_root: 0,
            root_hierarchy_id: 0,
            task_cgroups: 0,
            css_set_dfl_cgrp: 0,
            regs_args: [0; 4],
            file_span: Span::NONE,
            inode_span: Span::NONE,
            dentry_span: Span::NONE,
            mount_span: Span::NONE,
            path_span: Span::NONE,
            dentry_name_len: 0,
            kiocb_filp: 0,
            types: TypeIds::NONE,
        }
    }
}

impl KernelConfig {
    /// The value the object file carries before the loader overrides it.
    #[must_use]
    pub const fn zeroed() -> Self {
        Self {
            daemon_tgid: 0,
            watch_all: 0,
            session_parent_id: 0,
            session_parent_level: 0,
            wake_bytes: 0,
            open_nrs: [u32::MAX; 3],
            _pad: 0,
            link_nrs: [u32::MAX; 8],
            open_repeat_ns: 0,
            hash_key: 0,
            offsets: Offsets::zeroed(),
        }
    }
}

/// Value of the `WATCHED` map: why a cgroup is watched.
pub mod watch {
    /// Matched by the config (an agent's `match.cgroups`).
    pub const CONFIGURED: u32 = 1;
    /// A watched process escaped into it: watched until that process exits.
    pub const ESCAPED: u32 = 2;
}

/// Value of the kernel's `WATCHED_TASKS` map, keyed by process id: where a
/// watched process belongs, noted at its fork or exec, so that a move out
/// of its cgroup (seen only after the fact) is known for what it left.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskSession {
    /// Its cgroup when noted.
    pub cgroup_id: u64,
    /// The cgroups one and two levels below the session parent (agent
    /// directory and session) when it is in a session, else 0.
    pub agent_dir: u64,
    pub session: u64,
    /// The cgroup it escaped into (kept watched until it exits), else 0.
    pub escaped_to: u64,
}

/// Capacity of `WATCHED_TASKS` (an LRU map).
pub const WATCHED_TASKS_ENTRIES: u32 = 16384;

/// [`EscapeRecord::flags`]: the process moved itself.
pub const ESCAPE_SELF: u32 = 1;
/// [`EscapeRecord::flags`]: a new process its parent (the writer) created
/// in another cgroup (`clone3` with `CLONE_INTO_CGROUP`), which no move
/// tracepoint sees.
pub const ESCAPE_CLONE: u32 = 2;

/// A watched process moved out of its session cgroup (`cgroup.procs`
/// written), by itself or by another watched process. The header names
/// the writer; its cgroup id is the one the moved process left.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EscapeRecord {
    pub header: Header,
    pub moved_tgid: u32,
    /// [`ESCAPE_SELF`].
    pub flags: u32,
    /// The cgroup v2 id it moved into.
    pub dst_cgroup_id: u64,
}

/// How a watched process reached for the daemon ([`TamperRecord::method`]).
pub mod tamper {
    /// A signal to one of the daemon's threads (`signal_generate`).
    pub const SIGNAL: u16 = 1;
    /// `ptrace` of one of the daemon's threads.
    pub const PTRACE: u16 = 2;
    /// `process_vm_readv` of the daemon's memory.
    pub const VM_READ: u16 = 3;
    /// `process_vm_writev` into the daemon's memory.
    pub const VM_WRITE: u16 = 4;
    /// `pidfd_open` of the daemon (the way to its descriptors, `pidfd_getfd`).
    pub const PIDFD_OPEN: u16 = 5;
    /// Any `bpf()` call: the pinned maps hold the revocations and scopes.
    pub const BPF: u16 = 6;

    /// Names in events, by method; `None` for values this build does not know.
    #[must_use]
    pub const fn name(method: u16) -> Option<&'static str> {
        Some(match method {
            SIGNAL => "signal",
            PTRACE => "ptrace",
            VM_READ => "process_vm_readv",
            VM_WRITE => "process_vm_writev",
            PIDFD_OPEN => "pidfd_open",
            BPF => "bpf",
            _ => return None,
        })
    }
}

/// Capacity of `DAEMON_TASKS`: the daemon's thread ids.
pub const DAEMON_TASKS_ENTRIES: u32 = 1024;

/// A watched process reached for the daemon or for the kernel's BPF
/// objects. The header names the caller.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TamperRecord {
    pub header: Header,
    /// A [`tamper`] method.
    pub method: u16,
    pub _pad: u16,
    /// The signal number, `ptrace` request or `bpf` command; 0 otherwise.
    pub arg: u32,
    /// The daemon thread reached (0 for `bpf`).
    pub target_tid: u32,
    pub _pad2: u32,
}

/// Whether an exec runs a program that no file system names: a memfd, an
/// `O_TMPFILE` file or one deleted before the exec (run through its
/// descriptor). Such a program cannot be pinned by path or inspected after;
/// its executable's link count (`nlink` of `mm->exe_file`) is 0.
// Inlined on purpose: a BPF-to-BPF call costs stack and verifier work.
#[allow(clippy::inline_always)]
#[inline(always)]
#[must_use]
pub const fn exec_from_memory(exe_nlink: u32) -> bool {
    exe_nlink == 0
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: all of these are `repr(C)`, plain integers and byte arrays,
    // with explicit padding fields, so every bit pattern is valid.
    unsafe impl aya::Pod for super::KernelConfig {}
    unsafe impl aya::Pod for super::Offsets {}
    unsafe impl aya::Pod for super::Header {}
    unsafe impl aya::Pod for super::Policy {}
    unsafe impl aya::Pod for super::SystemKey {}
    unsafe impl aya::Pod for super::SystemRules {}
    unsafe impl aya::Pod for super::OpenKey {}
    unsafe impl aya::Pod for super::OpenSeen {}
    unsafe impl aya::Pod for super::LossKey {}
    unsafe impl aya::Pod for super::UnixKey {}
    unsafe impl aya::Pod for super::TaskSession {}
}

#[cfg(test)]
mod tests {
    use core::mem::size_of;

    use super::*;

    #[test]
    fn span_covers_members_from_an_aligned_start() {
        // struct inode on 6.18: i_sb 40, i_ino 64, i_nlink 72 (u32).
        let s = Span::covering(&[(40, 8), (64, 8), (72, 4)], false);
        assert_eq!(s, Span { start: 40, len: 36 });
        // A first member at an odd word offset starts the span at its word.
        assert_eq!(
            Span::covering(&[(12, 4), (16, 8)], false),
            Span { start: 8, len: 16 }
        );
        assert_eq!(
            Span::covering(&[(0, 4), (8, 8)], true),
            Span { start: 0, len: 16 }
        );
    }

    #[test]
    fn span_refuses_what_one_read_cannot_cover() {
        // Unknown member (offset 0 where it cannot be the first).
        assert_eq!(Span::covering(&[(0, 8), (8, 8)], false), Span::NONE);
        assert_eq!(Span::covering(&[(8, 8), (0, 8)], true), Span::NONE);
        // Too far apart for one buffer.
        assert_eq!(Span::covering(&[(8, 8), (200, 8)], false), Span::NONE);
        // A member straddling a word, or of an odd size.
        assert_eq!(Span::covering(&[(12, 8)], false), Span::NONE);
        assert_eq!(Span::covering(&[(16, 16)], false), Span::NONE);
        assert_eq!(Span::covering(&[], false), Span::NONE);
        // Exactly SPAN_MAX bytes is still one read.
        assert_eq!(
            Span::covering(&[(8, 8), (64, 8)], false),
            Span { start: 8, len: 64 }
        );
    }

    /// Pins the layouts: a change here is a change of the kernel/user ABI.
    #[test]
    fn record_sizes_are_stable() {
        assert_eq!(size_of::<Header>(), 64);
        assert_eq!(size_of::<PathComponents>(), 8 + DIR_LEN + NAME_READ);
        assert_eq!(
            size_of::<ExecRecord>(),
            64 + 24 + PATH_LEN + ARGV_LEN + size_of::<PathComponents>()
        );
        assert_eq!(size_of::<ForkRecord>(), 72);
        assert_eq!(size_of::<ExitRecord>(), 72);
        assert_eq!(size_of::<ConnectRecord>(), 64 + 8 + 16);
        assert_eq!(size_of::<AcceptRecord>(), 64 + 8 + 32);
        assert_eq!(
            size_of::<OpenRecord>(),
            64 + 72 + PATH_LEN + size_of::<PathComponents>()
        );
        assert_eq!(size_of::<DnsRecord>(), 64 + 40 + DNS_LEN);
        assert_eq!(size_of::<IoUringRecord>(), 64 + 24 + PATH_LEN);
        assert_eq!(
            size_of::<LinkRecord>(),
            64 + 24 + 2 * PATH_LEN + size_of::<PathComponents>()
        );
        // A multiple of 8, so `KernelConfig` has no implicit padding.

        assert_eq!(size_of::<KernelConfig>(), 88 + size_of::<Offsets>());
        assert_eq!(size_of::<SocketRecord>(), 64 + 8);
        assert_eq!(
            size_of::<Offsets>(),
            24 + 16 + 36 + 37 * 4 + 16 + 5 * 8 + 2 * 4 + size_of::<TypeIds>()
        );
        assert_eq!(size_of::<TypeIds>(), 6 * 4);
        assert_eq!(size_of::<TaskSession>(), 32);
        assert_eq!(size_of::<EscapeRecord>(), 64 + 16);
        assert_eq!(size_of::<TamperRecord>(), 64 + 16);
        assert_eq!(size_of::<UnixKey>(), 8 + UNIX_PATH_BUF);
        assert_eq!(size_of::<UnixRecord>(), 64 + 8 + UNIX_PATH_BUF);
        assert_eq!(size_of::<OpenKey>(), 48);
        assert_eq!(size_of::<OpenSeen>(), 16);
        assert_eq!(size_of::<LossKey>(), 16);
    }

    #[test]
    fn every_tamper_method_has_a_name() {
        for m in 1..=tamper::BPF {
            assert!(tamper::name(m).is_some(), "method {m}");
        }
        assert_eq!(tamper::name(0), None);
        assert_eq!(tamper::name(tamper::BPF + 1), None);
    }

    #[test]
    fn only_an_unlinked_executable_is_run_from_memory() {
        assert!(exec_from_memory(0));
        assert!(!exec_from_memory(1));
        assert!(!exec_from_memory(3));
        // Unknown (unreadable) is not evidence.
        assert!(!exec_from_memory(u32::MAX));
    }

    #[test]
    fn policy_layouts_are_stable() {
        assert_eq!(size_of::<Policy>(), 16);
        assert_eq!(size_of::<SystemKey>(), 20);
        assert_eq!(size_of::<PortRule>(), 16);
        assert_eq!(size_of::<SystemRules>(), 8 + 16 * PORT_RULES);
    }

    const TCP: u8 = 6;
    const UDP: u8 = 17;

    fn rule(lo: u16, hi: u16, protocol: u8, expires_ns: u64) -> PortRule {
        PortRule {
            lo,
            hi,
            protocol,
            _pad: [0; 3],
            expires_ns,
        }
    }

    fn rules(list: &[PortRule]) -> SystemRules {
        let mut r = SystemRules::default();
        r.rules[..list.len()].copy_from_slice(list);
        r.count = list.len() as u32;
        r
    }

    #[test]
    fn any_port_rule_allows_every_port_including_zero() {
        let any = rule(0, u16::MAX, 0, 0);
        for port in [0, 1, 53, 443, u16::MAX - 1, u16::MAX] {
            assert!(any.allows(port, TCP, 1), "{port}");
            assert!(any.allows(port, UDP, 1), "{port}");
            assert!(any.allows(port, 0, 1), "{port}");
        }
    }

    #[test]
    fn a_single_port_allows_only_that_port() {
        let https = rule(443, 443, TCP, 0);
        assert!(https.allows(443, TCP, 0));
        assert!(!https.allows(442, TCP, 0));
        assert!(!https.allows(444, TCP, 0));
        assert!(!https.allows(0, TCP, 0));
        // Port 0 as a rule is the port 0 a socket may name, not "any".
        let zero = rule(0, 0, 0, 0);
        assert!(zero.allows(0, TCP, 0));
        assert!(!zero.allows(1, TCP, 0));
    }

    #[test]
    fn ranges_include_both_bounds() {
        let r = rule(8000, 8080, 0, 0);
        assert!(r.allows(8000, TCP, 0));
        assert!(r.allows(8040, UDP, 0));
        assert!(r.allows(8080, TCP, 0));
        assert!(!r.allows(7999, TCP, 0));
        assert!(!r.allows(8081, TCP, 0));
        let top = rule(65_000, u16::MAX, 0, 0);
        assert!(top.allows(u16::MAX, TCP, 0));
        assert!(!top.allows(64_999, TCP, 0));
        // An inverted range (never written by the daemon) allows nothing.
        let inverted = rule(90, 80, 0, 0);
        assert!(!inverted.allows(85, TCP, 0));
        assert!(!inverted.allows(80, TCP, 0));
        assert!(!inverted.allows(90, TCP, 0));
    }

    #[test]
    fn protocol_zero_is_any_else_it_must_match() {
        let udp = rule(53, 53, UDP, 0);
        assert!(udp.allows(53, UDP, 0));
        assert!(!udp.allows(53, TCP, 0));
        // A socket that named no protocol matches only an any-protocol rule.
        assert!(!udp.allows(53, 0, 0));
        assert!(rule(53, 53, 0, 0).allows(53, 0, 0));
    }

    #[test]
    fn expiry_is_exclusive_and_zero_never_expires() {
        let r = rule(443, 443, TCP, 1_000);
        assert!(r.allows(443, TCP, 0));
        assert!(r.allows(443, TCP, 999));
        assert!(!r.allows(443, TCP, 1_000));
        assert!(!r.allows(443, TCP, u64::MAX));
        assert!(rule(443, 443, TCP, 0).allows(443, TCP, u64::MAX));
    }

    #[test]
    fn system_rules_check_only_the_first_count_rules() {
        let mut r = rules(&[rule(22, 22, TCP, 0), rule(443, 443, TCP, 0)]);
        assert!(r.allows(22, TCP, 0));
        assert!(r.allows(443, TCP, 0));
        assert!(!r.allows(80, TCP, 0));
        // A stale rule past `count` is not consulted.
        r.count = 1;
        assert!(!r.allows(443, TCP, 0));
        assert!(!SystemRules::default().allows(0, 0, 0));
        // A rule that has expired does not hide a later one that has not.
        let r = rules(&[rule(443, 443, TCP, 10), rule(443, 443, 0, 0)]);
        assert!(r.allows(443, TCP, 20));
    }

    #[test]
    fn system_rules_clamp_count_to_the_array() {
        let mut r = SystemRules::default();
        r.rules[PORT_RULES - 1] = rule(443, 443, TCP, 0);
        r.count = u32::MAX;
        assert!(r.allows(443, TCP, 0));
        r.count = PORT_RULES as u32;
        assert!(r.allows(443, TCP, 0));
        r.count = PORT_RULES as u32 - 1;
        assert!(!r.allows(443, TCP, 0));
    }

    #[test]
    fn ordinary_sockets_are_never_judged() {
        use socket_class::*;
        // SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET, with flags in the type.
        for ty in [1, 2, 5, 1 | 0o4000, 2 | 0o2_000_000] {
            assert_eq!(classify(AF_INET, ty, 0), ORDINARY, "{ty}");
            assert_eq!(classify(AF_INET6, ty, 0), ORDINARY, "{ty}");
            assert_eq!(classify(AF_UNIX, ty, 0), ORDINARY, "{ty}");
        }
        // ICMP datagram ("ping") sockets are datagram sockets.
        assert_eq!(classify(AF_INET, 2, 1), ORDINARY);
        // What getaddrinfo and if_nametoindex open.
        assert_eq!(
            classify(AF_NETLINK, 3 | 0o2_000_000, NETLINK_ROUTE),
            ORDINARY
        );
        assert!(policy::allows_socket(u32::MAX, ORDINARY));
    }

    #[test]
    fn unusual_sockets_are_classed() {
        use socket_class::*;
        assert_eq!(classify(AF_INET, SOCK_RAW, 1), RAW);
        assert_eq!(classify(AF_INET6, SOCK_RAW | 0o4000, 58), RAW);
        assert_eq!(classify(AF_INET, SOCK_PACKET, 0x300), RAW);
        assert_eq!(classify(AF_PACKET, SOCK_RAW, 0x300), PACKET);
        assert_eq!(classify(AF_PACKET, 2, 0x300), PACKET);
        // NETLINK_SOCK_DIAG, NETLINK_AUDIT, NETLINK_KOBJECT_UEVENT.
        for proto in [4, 9, 15] {
            assert_eq!(classify(AF_NETLINK, 3, proto), NETLINK, "{proto}");
        }
        assert_eq!(classify(AF_ALG, 5, 0), ALG);
        assert_eq!(classify(AF_VSOCK, 1, 0), VSOCK);
        assert_eq!(classify(AF_XDP, 3, 0), XDP);
        // AF_BLUETOOTH, AF_CAN, AF_KEY, and a family no kernel has.
        for family in [31, 29, 15, 200] {
            assert_eq!(classify(family, 3, 0), OTHER, "{family}");
        }
    }

    #[test]
    fn unusual_sockets_are_refused_unless_their_class_is_allowed() {
        use socket_class::*;
        let allow = |c: u8| 1u32 << (policy::SOCKET_ALLOW_SHIFT + u32::from(c));
        // Not enforced: everything goes (and is reported by the daemon).
        for c in 0..COUNT {
            assert!(policy::allows_socket(0, c), "{c}");
        }
        let deny = policy::DENY_SOCKETS;
        for c in 1..COUNT {
            assert!(!policy::allows_socket(deny, c), "{c}");
            assert!(policy::allows_socket(deny | allow(c), c), "{c}");
            // Another class's bit does not allow this one.
            let other = if c == OTHER { RAW } else { c + 1 };
            assert!(!policy::allows_socket(deny | allow(other), c), "{c}");
        }
        // A class number past the table is never allowed.
        assert!(!policy::allows_socket(u32::MAX, COUNT));
        // The class bits stay clear of the flag bits.
        const {
            assert!(policy::DENY_SOCKETS < 1 << policy::SOCKET_ALLOW_SHIFT);
            assert!(policy::SOCKET_ALLOW_SHIFT + COUNT as u32 <= 32);
        }
    }

    fn key(bytes: &[u8], fill: u8) -> UnixKey {
        let mut k = UnixKey {
            path: [fill; UNIX_PATH_BUF],
            ..UnixKey::default()
        };
        k.path[..bytes.len()].copy_from_slice(bytes);
        k.normalize(bytes.len());
        k
    }

    #[test]
    fn unix_paths_end_at_their_nul_and_compare_exactly() {
        let plain = key(b"/run/docker.sock", 0xaa);
        assert_eq!(plain.len, 16);
        assert_eq!(&plain.path[..16], b"/run/docker.sock");
        assert!(plain.path[16..].iter().all(|&b| b == 0));
        // The length a caller passes may count the NUL and bytes after it.
        assert_eq!(key(b"/run/docker.sock\0junk", 0x55), plain);
        assert_ne!(key(b"/run/docker.sockX", 0), plain);
        assert_ne!(key(b"/var/run/docker.sock", 0), plain);
        assert_eq!(key(b"", 0xff).len, 0);
        // Too long for sun_path: cut to UNIX_PATH_MAX.
        let long = key(&[b'a'; UNIX_PATH_BUF], 0);
        assert_eq!(long.len as usize, UNIX_PATH_MAX);
        assert!(long.path[UNIX_PATH_MAX..].iter().all(|&b| b == 0));
    }

    #[test]
    fn abstract_unix_addresses_keep_every_byte_they_were_given() {
        let a = key(b"\0vigil\0x", 0x77);
        assert_eq!(a.len, 8);
        assert_eq!(&a.path[..8], b"\0vigil\0x");
        assert!(a.path[8..].iter().all(|&b| b == 0));
        // A shorter abstract name is another address.
        assert_ne!(key(b"\0vigil", 0), a);
        // The pathname "vigil" is not the abstract "@vigil".
        assert_ne!(key(b"vigil", 0).path, key(b"\0vigil", 0).path);
    }

    #[test]
    fn kinds_round_trip() {
        for k in [
            RecordKind::Exec,
            RecordKind::Fork,
            RecordKind::Exit,
            RecordKind::Connect,
            RecordKind::Accept,
            RecordKind::Open,
            RecordKind::Dns,
            RecordKind::IoUring,
            RecordKind::Socket,
            RecordKind::Unix,
            RecordKind::Escape,
            RecordKind::Tamper,
        ] {
            assert_eq!(RecordKind::from_u16(k as u16), Some(k));
        }
        assert_eq!(RecordKind::from_u16(0), None);
        assert_eq!(RecordKind::from_u16(999), None);
    }
}
