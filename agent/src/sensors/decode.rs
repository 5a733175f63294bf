//! Decoding of ring-buffer records into typed events.
//!
//! The kernel side is trusted to write well-formed records, but the daemon
//! never assumes it: a short, unknown or inconsistent record is an error that
//! the caller counts and skips.

use std::{
    mem::size_of,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use vigil_common::{
    ARGV_LEN, AcceptRecord, ConnectRecord, DnsRecord, ESCAPE_SELF, EXEC_ARGV_TRUNCATED,
    EXEC_FILENAME_TRUNCATED, EscapeRecord, ExecRecord, ExitRecord, ForkRecord, Header,
    IoUringRecord, LinkRecord, OPEN_PATH_TRUNCATED, OPEN_RESOLVED_FILE, OpenRecord, PATH_LEN,
    PathComponents, RecordKind, SocketRecord, TamperRecord, UNIX_PATH_MAX, UnixRecord, io_uring_op,
    io_uring_opcode, link_syscall, open_syscall, path_flags, sock_op, socket_class,
};

use crate::event::{
    Accept, Access, Connect, Event, Exec, Exit, FileInode, FileLink, FileOpen, Fork, Identity,
    Payload, Process, Protocol,
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {got} bytes is shorter than a header ({need} bytes)")]
    ShortHeader { need: usize, got: usize },
    #[error("unknown record kind {0}")]
    UnknownKind(u16),
    #[error("{kind:?} record of {got} bytes is shorter than {need} bytes")]
    Short {
        kind: RecordKind,
        need: usize,
        got: usize,
    },
    #[error("{kind:?} record: {field} = {value} is out of range")]
    OutOfRange {
        kind: RecordKind,
        field: &'static str,
        value: u64,
    },
}

/// A record copied out of the ring buffer.
// Records are copied once out of the ring and consumed at once; boxing the
// large exec variant would add an allocation per exec for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Copy, Debug)]
pub enum Record {
    Exec(ExecRecord),
    Fork(ForkRecord),
    Exit(ExitRecord),
    Connect(ConnectRecord),
    Accept(AcceptRecord),
    Open(OpenRecord),
    Dns(DnsRecord),
    IoUring(IoUringRecord),
    Link(LinkRecord),
    Socket(SocketRecord),
    Unix(UnixRecord),
    Escape(EscapeRecord),
    Tamper(TamperRecord),
}

impl Record {
    #[must_use]
    pub const fn header(&self) -> &Header {
        match self {
            Self::Exec(r) => &r.header,
            Self::Fork(r) => &r.header,
            Self::Exit(r) => &r.header,
            Self::Connect(r) => &r.header,
            Self::Accept(r) => &r.header,
            Self::Open(r) => &r.header,
            Self::Dns(r) => &r.header,
            Self::IoUring(r) => &r.header,
            Self::Link(r) => &r.header,
            Self::Socket(r) => &r.header,
            Self::Unix(r) => &r.header,
            Self::Escape(r) => &r.header,
            Self::Tamper(r) => &r.header,
        }
    }
}

/// Copies a `T` out of `bytes` after checking the length.
fn read<T: Copy>(bytes: &[u8], kind: RecordKind) -> Result<T, DecodeError> {
    read_trimmed(bytes, kind, size_of::<T>())
}

/// Copies a `T` whose last bytes the kernel may leave out (the unused end
/// of a trailing buffer): at least `need` bytes, the rest zero.
fn read_trimmed<T: Copy>(bytes: &[u8], kind: RecordKind, need: usize) -> Result<T, DecodeError> {
    if bytes.len() < need {
        return Err(DecodeError::Short {
            kind,
            need,
            got: bytes.len(),
        });
    }
    if bytes.len() >= size_of::<T>() {
        // SAFETY: length checked; T is a repr(C) record of integers and byte
        // arrays, valid for any bit pattern; the read tolerates any alignment.
        return Ok(unsafe { bytes.as_ptr().cast::<T>().read_unaligned() });
    }
    let n = bytes.len();
    let mut out = std::mem::MaybeUninit::<T>::zeroed();
    // SAFETY: fewer than size_of::<T>() bytes into the zeroed value; T is a
    // repr(C) record of integers and byte arrays, valid for any bit pattern
    // (all zeros included).
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), out.as_mut_ptr().cast::<u8>(), n);
        Ok(out.assume_init())
    }
}

fn check(kind: RecordKind, field: &'static str, value: u64, max: u64) -> Result<(), DecodeError> {
    if value > max {
        Err(DecodeError::OutOfRange { kind, field, value })
    } else {
        Ok(())
    }
}

fn check_family(kind: RecordKind, family: u16) -> Result<(), DecodeError> {
    if family == libc::AF_INET as u16 || family == libc::AF_INET6 as u16 {
        Ok(())
    } else {
        Err(DecodeError::OutOfRange {
            kind,
            field: "family",
            value: u64::from(family),
        })
    }
}

/// Decodes and validates one ring-buffer record.
pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
    if bytes.len() < size_of::<Header>() {
        return Err(DecodeError::ShortHeader {
            need: size_of::<Header>(),
            got: bytes.len(),
        });
    }
    let raw_kind = u16::from_ne_bytes([bytes[0], bytes[1]]);
    let kind = RecordKind::from_u16(raw_kind).ok_or(DecodeError::UnknownKind(raw_kind))?;
    Ok(match kind {
        RecordKind::Exec => {
            let r: ExecRecord = read(bytes, kind)?;
            check(
                kind,
                "filename_len",
                r.filename_len.into(),
                PATH_LEN as u64 - 1,
            )?;
            check(kind, "argv_len", r.argv_len.into(), ARGV_LEN as u64)?;
            Record::Exec(r)
        }
        RecordKind::Fork => Record::Fork(read(bytes, kind)?),
        RecordKind::Exit => Record::Exit(read(bytes, kind)?),
        RecordKind::Connect => {
            let r: ConnectRecord = read(bytes, kind)?;
            check_family(kind, r.family)?;
            Record::Connect(r)
        }
        RecordKind::Accept => {
            let r: AcceptRecord = read(bytes, kind)?;
            check_family(kind, r.family)?;
            Record::Accept(r)
        }
        RecordKind::Open => {
            // The kernel sends the resolved path's text only as far as it goes.
            let fixed = std::mem::offset_of!(OpenRecord, resolved) + 8;
            let r: OpenRecord = read_trimmed(bytes, kind, fixed)?;
            check(
                kind,
                "resolved.len",
                r.resolved.len.into(),
                (bytes.len().min(size_of::<OpenRecord>()) - fixed) as u64,
            )?;
            check(kind, "path_len", r.path_len.into(), PATH_LEN as u64 - 1)?;
            check(
                kind,
                "syscall",
                r.syscall.into(),
                u64::from(open_syscall::OPENAT2),
            )?;
            Record::Open(r)
        }
        RecordKind::Dns => {
            let r: DnsRecord = read(bytes, kind)?;
            check_family(kind, r.family)?;
            check(kind, "len", r.len.into(), vigil_common::DNS_LEN as u64)?;
            Record::Dns(r)
        }
        RecordKind::Link => {
            // As for opens, the base's text only as far as it goes.
            let fixed = std::mem::offset_of!(LinkRecord, base) + 8;
            let r: LinkRecord = read_trimmed(bytes, kind, fixed)?;
            check(
                kind,
                "base.len",
                r.base.len.into(),
                (bytes.len().min(size_of::<LinkRecord>()) - fixed) as u64,
            )?;
            check(kind, "old_len", r.old_len.into(), PATH_LEN as u64 - 1)?;
            check(kind, "new_len", r.new_len.into(), PATH_LEN as u64 - 1)?;
            check(
                kind,
                "syscall",
                r.syscall.into(),
                link_syscall::COUNT as u64 - 1,
            )?;
            Record::Link(r)
        }
        RecordKind::IoUring => {
            let r: IoUringRecord = read(bytes, kind)?;
            check(kind, "path_len", r.path_len.into(), PATH_LEN as u64 - 1)?;
            check(kind, "op", r.op.into(), u64::from(io_uring_op::SUBMIT))?;
            Record::IoUring(r)
        }
        RecordKind::Socket => {
            let r: SocketRecord = read(bytes, kind)?;
            check(
                kind,
                "class",
                r.class.into(),
                u64::from(socket_class::COUNT - 1),
            )?;
            Record::Socket(r)
        }
        RecordKind::Unix => {
            let r: UnixRecord = read(bytes, kind)?;
            check(kind, "path_len", r.path_len.into(), UNIX_PATH_MAX as u64)?;
            check(kind, "op", r.op.into(), u64::from(sock_op::SENDMSG))?;
            Record::Unix(r)
        }
        RecordKind::Escape => Record::Escape(read(bytes, kind)?),
        RecordKind::Tamper => {
            let r: TamperRecord = read(bytes, kind)?;
            check(
                kind,
                "method",
                r.method.into(),
                u64::from(vigil_common::tamper::BPF),
            )?;
            if r.method == 0 {
                return Err(DecodeError::OutOfRange {
                    kind,
                    field: "method",
                    value: 0,
                });
            }
            Record::Tamper(r)
        }
    })
}

/// A unix socket address as events show it: the path, or `@NAME` for an
/// abstract address (every NUL shown as `@`, as `ss` does).
#[must_use]
pub fn unix_path(bytes: &[u8]) -> String {
    if bytes.first() == Some(&0) {
        let shown: Vec<u8> = bytes
            .iter()
            .map(|&b| if b == 0 { b'@' } else { b })
            .collect();
        String::from_utf8_lossy(&shown).into_owned()
    } else {
        String::from_utf8_lossy(bytes).into_owned()
    }
}

/// The name of an address family the socket sensor reports.
fn family_name(family: u16) -> String {
    match family {
        socket_class::AF_INET => "AF_INET".to_owned(),
        socket_class::AF_INET6 => "AF_INET6".to_owned(),
        socket_class::AF_NETLINK => "AF_NETLINK".to_owned(),
        socket_class::AF_PACKET => "AF_PACKET".to_owned(),
        socket_class::AF_ALG => "AF_ALG".to_owned(),
        socket_class::AF_VSOCK => "AF_VSOCK".to_owned(),
        socket_class::AF_XDP => "AF_XDP".to_owned(),
        15 => "AF_KEY".to_owned(),
        29 => "AF_CAN".to_owned(),
        30 => "AF_TIPC".to_owned(),
        31 => "AF_BLUETOOTH".to_owned(),
        other => other.to_string(),
    }
}

/// Bytes up to the first NUL, lossily as UTF-8.
fn cstr(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// Splits an argument block (each argument NUL-terminated); a last piece
/// without NUL was cut. Empty arguments are kept.
fn split_argv(buf: &[u8]) -> Vec<String> {
    if buf.is_empty() {
        return Vec::new();
    }
    let buf = buf.strip_suffix(&[0]).unwrap_or(buf);
    buf.split(|&b| b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// Text of a kernel-resolved path (components leaf first), or `None` when
/// the walk did not reach the root (the caller then falls back to `/proc`).
#[must_use]
pub fn components_to_path(pc: &PathComponents) -> Option<String> {
    let len = usize::from(pc.len).min(pc.buf.len());
    if len == 0 || pc.flags & path_flags::COMPLETE == 0 {
        return None;
    }
    let parts: Vec<&[u8]> = pc.buf[..len]
        .split(|&b| b == 0)
        .filter(|p| !p.is_empty())
        .collect();
    let mut out = String::with_capacity(len + 1);
    for part in parts.iter().rev() {
        out.push('/');
        out.push_str(&String::from_utf8_lossy(part));
    }
    if out.is_empty() {
        out.push('/');
    }
    Some(out)
}

/// The program an exec runs, named as `/proc/PID/exe` names it: its path;
/// `/NAME` for a file on no mounted path (a memfd is `/memfd:NAME`); with
/// ` (deleted)` once no directory links it. `None` when the kernel could not
/// resolve it.
#[must_use]
pub fn exe_to_path(pc: &PathComponents, nlink: u32) -> Option<String> {
    let mut path = if pc.flags & path_flags::DETACHED == 0 {
        components_to_path(pc)?
    } else {
        let len = usize::from(pc.len).min(pc.buf.len());
        let name = pc.buf[..len].split(|&b| b == 0).next().unwrap_or_default();
        if name.is_empty() {
            return None;
        }
        format!("/{}", String::from_utf8_lossy(name))
    };
    if nlink == 0 {
        path.push_str(" (deleted)");
    }
    Some(path)
}

/// A tamper record as an event: the method, and its argument by name.
fn tamper(h: &Header, r: &TamperRecord) -> crate::event::TamperAttempt {
    use vigil_common::tamper as t;
    let detail = match r.method {
        t::SIGNAL => i32::try_from(r.arg)
            .ok()
            .and_then(|n| nix::sys::signal::Signal::try_from(n).ok())
            .map_or_else(|| format!("signal {}", r.arg), |s| s.as_str().to_owned()),
        t::PTRACE => ptrace_request(r.arg),
        t::BPF => bpf_command(r.arg),
        _ => String::new(),
    };
    crate::event::TamperAttempt {
        method: t::name(r.method).unwrap_or("unknown").to_owned(),
        detail,
        target_tid: (r.method != t::BPF).then_some(r.target_tid),
        blocked: h.verdict != vigil_common::verdict::ALLOWED,
    }
}

/// A `ptrace` request by its `<sys/ptrace.h>` name.
fn ptrace_request(request: u32) -> String {
    let name = match request {
        0 => "PTRACE_TRACEME",
        1 => "PTRACE_PEEKTEXT",
        2 => "PTRACE_PEEKDATA",
        3 => "PTRACE_PEEKUSER",
        4 => "PTRACE_POKETEXT",
        5 => "PTRACE_POKEDATA",
        6 => "PTRACE_POKEUSER",
        7 => "PTRACE_CONT",
        8 => "PTRACE_KILL",
        9 => "PTRACE_SINGLESTEP",
        12 => "PTRACE_GETREGS",
        13 => "PTRACE_SETREGS",
        16 => "PTRACE_ATTACH",
        17 => "PTRACE_DETACH",
        24 => "PTRACE_SYSCALL",
        0x4200 => "PTRACE_SETOPTIONS",
        0x4204 => "PTRACE_GETREGSET",
        0x4205 => "PTRACE_SETREGSET",
        0x4206 => "PTRACE_SEIZE",
        0x4207 => "PTRACE_INTERRUPT",
        _ => return format!("ptrace request {request}"),
    };
    name.to_owned()
}

/// A `bpf()` command by its `<linux/bpf.h>` name (`enum bpf_cmd`, whose
/// values are the kernel ABI and only ever appended to).
fn bpf_command(cmd: u32) -> String {
    const NAMES: [&str; 37] = [
        "BPF_MAP_CREATE",
        "BPF_MAP_LOOKUP_ELEM",
        "BPF_MAP_UPDATE_ELEM",
        "BPF_MAP_DELETE_ELEM",
        "BPF_MAP_GET_NEXT_KEY",
        "BPF_PROG_LOAD",
        "BPF_OBJ_PIN",
        "BPF_OBJ_GET",
        "BPF_PROG_ATTACH",
        "BPF_PROG_DETACH",
        "BPF_PROG_TEST_RUN",
        "BPF_PROG_GET_NEXT_ID",
        "BPF_MAP_GET_NEXT_ID",
        "BPF_PROG_GET_FD_BY_ID",
        "BPF_MAP_GET_FD_BY_ID",
        "BPF_OBJ_GET_INFO_BY_FD",
        "BPF_PROG_QUERY",
        "BPF_RAW_TRACEPOINT_OPEN",
        "BPF_BTF_LOAD",
        "BPF_BTF_GET_FD_BY_ID",
        "BPF_TASK_FD_QUERY",
        "BPF_MAP_LOOKUP_AND_DELETE_ELEM",
        "BPF_MAP_FREEZE",
        "BPF_BTF_GET_NEXT_ID",
        "BPF_MAP_LOOKUP_BATCH",
        "BPF_MAP_LOOKUP_AND_DELETE_BATCH",
        "BPF_MAP_UPDATE_BATCH",
        "BPF_MAP_DELETE_BATCH",
        "BPF_LINK_CREATE",
        "BPF_LINK_UPDATE",
        "BPF_LINK_GET_FD_BY_ID",
        "BPF_LINK_GET_NEXT_ID",
        "BPF_ENABLE_STATS",
        "BPF_ITER_CREATE",
        "BPF_LINK_DETACH",
        "BPF_PROG_BIND_MAP",
        "BPF_TOKEN_CREATE",
    ];
    NAMES
        .get(cmd as usize)
        .map_or_else(|| format!("bpf command {cmd}"), |n| (*n).to_owned())
}

/// Joins a relative path to its base and normalises `.` and `..` lexically.
fn join(base: &str, rel: &str) -> String {
    crate::identity::procs::normalize(&format!("{base}/{rel}"))
}

pub(crate) fn ip(family: u16, addr: &[u8; 16]) -> IpAddr {
    if family == libc::AF_INET as u16 {
        IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*addr))
    }
}

/// Converts kernel timestamps (`CLOCK_BOOTTIME`) to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// `CLOCK_REALTIME - CLOCK_BOOTTIME`, in ns.
    offset_ns: i128,
}

impl Clock {
    /// Samples both clocks now.
    #[must_use]
    pub fn now() -> Self {
        let real = clock_ns(libc::CLOCK_REALTIME);
        let boot = clock_ns(libc::CLOCK_BOOTTIME);
        Self {
            offset_ns: i128::from(real) - i128::from(boot),
        }
    }

    /// Wall-clock time of a kernel timestamp.
    #[must_use]
    pub fn wall(&self, boot_ns: u64) -> std::time::SystemTime {
        let ns = (i128::from(boot_ns) + self.offset_ns).max(0) as u128;
        std::time::UNIX_EPOCH
            + std::time::Duration::new((ns / 1_000_000_000) as u64, (ns % 1_000_000_000) as u32)
    }
}

/// Reads a clock in ns.
#[must_use]
pub fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec; the clocks used always exist.
    unsafe { libc::clock_gettime(clock, &raw mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn process(h: &Header) -> Process {
    Process {
        pid: h.tgid,
        tid: h.pid,
        ppid: h.ppid,
        uid: h.uid,
        gid: h.gid,
        comm: cstr(&h.comm),
        exe: None,
        argv: Vec::new(),
        lineage: Vec::new(),
    }
}

fn errno_name(errno: i32) -> String {
    format!("{:?}", nix::errno::Errno::from_raw(errno))
}

/// The errno a negative syscall return stands for. The kernel returns
/// -4095..=-1; a record is untrusted bytes, so any other value (down to
/// `i64::MIN`, which has no negation) names no errno rather than overflow.
fn error_of(ret: i64) -> String {
    errno_name(i32::try_from(ret.unsigned_abs()).unwrap_or(0))
}

/// The parent directory of an absolute path (`/` for `/x`).
fn parent_dir(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// A link record: the names made absolute where the kernel's base
/// resolves them. A relative name it did not resolve stays as passed
/// (the pipeline tries the caller's `/proc` view).
fn link(h: &Header, r: &LinkRecord) -> Payload {
    let old = cstr(&r.old[..usize::from(r.old_len)]);
    let new = cstr(&r.new[..usize::from(r.new_len)]);
    let base = components_to_path(&r.base);
    let symlink = link_syscall::is_symlink(r.syscall);
    let absolute = |name: &str, base: Option<&str>| -> Option<String> {
        if name.starts_with('/') {
            Some(crate::identity::procs::normalize(name))
        } else {
            base.map(|b| {
                if name.is_empty() {
                    b.to_owned()
                } else {
                    join(b, name)
                }
            })
        }
    };
    let (target, path) = if symlink {
        let path = absolute(&new, base.as_deref());
        // A symbolic link's text is relative to the link's own directory.
        let target = if old.starts_with('/') {
            Some(crate::identity::procs::normalize(&old))
        } else {
            path.as_deref().map(|p| join(parent_dir(p), &old))
        };
        (target, path)
    } else {
        let target = absolute(&old, base.as_deref());
        // The base is `old`'s: it serves `new` when both name the same
        // directory descriptor.
        let new_base = base.as_deref().filter(|_| r.new_dfd == r.old_dfd);
        (target, absolute(&new, new_base))
    };
    let named = |resolved: Option<String>, raw: String| match resolved {
        Some(abs) if abs != raw => (abs, Some(raw)),
        Some(abs) => (abs, None),
        None => (raw, None),
    };
    let (target, raw_target) = named(target, old);
    let (path, raw_path) = named(path, new);
    Payload::FileLink(FileLink {
        op: if symlink {
            "symlink"
        } else if link_syscall::is_rename(r.syscall) {
            "rename"
        } else {
            "hardlink"
        }
        .to_owned(),
        syscall: match r.syscall {
            link_syscall::LINK => "link",
            link_syscall::LINKAT => "linkat",
            link_syscall::SYMLINK => "symlink",
            link_syscall::SYMLINKAT => "symlinkat",
            link_syscall::RENAME => "rename",
            link_syscall::RENAMEAT => "renameat",
            _ => "renameat2",
        }
        .to_owned(),
        target,
        raw_target,
        path,
        raw_path,
        inode: None,
        error: (r.ret < 0).then(|| error_of(r.ret)),
        path_truncated: h.flags & vigil_common::LINK_PATH_TRUNCATED != 0,
        blocked: h.verdict != vigil_common::verdict::ALLOWED,
    })
}

/// An io_uring record: an openat request is a file open (judged like one);
/// the rest is its own kind.
fn io_uring(h: &Header, r: &IoUringRecord) -> Payload {
    let blocked = h.verdict != vigil_common::verdict::ALLOWED;
    let opcode = |name: &str| {
        Payload::IoUring(crate::event::IoUring {
            op: name.to_owned(),
            fd: None,
            sq_entries: 0,
            cq_entries: 0,
            flags: 0,
            blocked,
        })
    };
    match (r.op, r.opcode) {
        (io_uring_op::SETUP, _) => Payload::IoUring(crate::event::IoUring {
            op: "setup".to_owned(),
            fd: Some(r.fd),
            sq_entries: r.sq_entries,
            cq_entries: r.cq_entries,
            flags: r.flags as u32,
            blocked,
        }),
        (_, io_uring_opcode::OPENAT | io_uring_opcode::OPENAT2) => {
            let flags = r.flags as u32;
            Payload::FileOpen(FileOpen {
                path: cstr(&r.path[..r.path_len as usize]),
                raw_path: None,
                flags,
                access: Access::from_flags(flags),
                syscall: "io_uring".to_owned(),
                fd: None,
                error: None,
                path_truncated: false,
                blocked,
                repeats: 0,
                repeat_summary: false,
                inode: None,
            })
        }
        (_, io_uring_opcode::CONNECT) => opcode("connect"),
        (_, io_uring_opcode::SOCKET) => opcode("socket"),
        (_, other) => opcode(&format!("opcode {other}")),
    }
}

/// Builds the un-enriched event for a record: identity carries only the
/// cgroup id; paths are as the kernel saw them.
#[must_use]
pub fn to_event(record: &Record, clock: &Clock) -> Event {
    let h = record.header();
    let payload = match record {
        Record::Exec(r) => Payload::Exec(Exec {
            filename: cstr(&r.filename[..r.filename_len as usize]),
            argv: split_argv(&r.argv[..r.argv_len as usize]),
            argv_truncated: h.flags & (EXEC_ARGV_TRUNCATED | EXEC_FILENAME_TRUNCATED) != 0,
            blocked: h.verdict != vigil_common::verdict::ALLOWED,
            from_memory: vigil_common::exec_from_memory(r.exe_nlink),
            inode: (r.exe_ino != 0).then(|| FileInode {
                dev: libc::makedev(r.exe_dev >> 20, r.exe_dev & 0xf_ffff),
                ino: r.exe_ino,
                nlink: r.exe_nlink,
            }),
        }),
        Record::Fork(r) => Payload::Fork(Fork {
            child_pid: r.child_tgid,
        }),
        Record::Exit(r) => {
            let status = r.exit_code as i32;
            let signal = status & 0x7f;
            Payload::Exit(Exit {
                code: (signal == 0).then_some((status >> 8) & 0xff),
                signal: (signal != 0).then_some(signal),
            })
        }
        Record::Connect(r) => Payload::Connect(Connect {
            protocol: match (i32::from(r.protocol), i32::from(r.sock_type)) {
                (libc::IPPROTO_TCP, _) | (0, libc::SOCK_STREAM) => Protocol::Tcp,
                (libc::IPPROTO_UDP, _) | (0, libc::SOCK_DGRAM) => Protocol::Udp,
                _ => Protocol::Other,
            },
            address: ip(r.family, &r.addr),
            port: r.port,
            op: if r.op == sock_op::SENDMSG {
                "sendmsg"
            } else {
                "connect"
            }
            .to_owned(),
            blocked: h.verdict != vigil_common::verdict::ALLOWED,
        }),
        Record::Accept(r) => Payload::Accept(Accept {
            local_address: ip(r.family, &r.local_addr),
            local_port: r.local_port,
            remote_address: ip(r.family, &r.remote_addr),
            remote_port: r.remote_port,
        }),
        Record::Open(r) => {
            let raw = cstr(&r.path[..r.path_len as usize]);
            let resolved = components_to_path(&r.resolved);
            let opened = h.flags & OPEN_RESOLVED_FILE != 0;
            let (path, raw_path) = match resolved {
                // The file itself: the name used is kept beside it when it
                // differs (a symlink, `..`, `/proc/self/root/...`, relative).
                Some(file) if opened => {
                    let raw_path = (file != raw).then_some(raw);
                    (file, raw_path)
                }
                Some(base) if !raw.starts_with('/') => (join(&base, &raw), Some(raw)),
                _ => (raw, None),
            };
            let inode = (opened && r.ino != 0).then(|| FileInode {
                dev: libc::makedev(r.dev >> 20, r.dev & 0xf_ffff),
                ino: r.ino,
                nlink: r.nlink,
            });
            let (fd, error) = if r.ret >= 0 {
                (Some(r.ret as i32), None)
            } else {
                (None, Some(error_of(r.ret)))
            };
            Payload::FileOpen(FileOpen {
                path,
                raw_path,
                flags: r.flags,
                access: Access::from_flags(r.flags),
                syscall: match r.syscall {
                    open_syscall::OPEN => "open",
                    open_syscall::OPENAT => "openat",
                    _ => "openat2",
                }
                .to_owned(),
                fd,
                error,
                path_truncated: h.flags & OPEN_PATH_TRUNCATED != 0,
                blocked: h.verdict != vigil_common::verdict::ALLOWED,
                repeats: 0,
                repeat_summary: false,
                inode,
            })
        }
        Record::IoUring(r) => io_uring(h, r),
        Record::Link(r) => link(h, r),
        // Sent by a watched socket: a query (the daemon parses its payload).
        Record::Dns(r) if h.flags & vigil_common::DNS_EGRESS != 0 => {
            Payload::DnsQuery(crate::event::DnsQuery {
                server: ip(r.family, &r.dst_addr),
                server_port: r.dst_port,
                client: ip(r.family, &r.src_addr),
                client_port: r.src_port,
                id: 0,
                name: String::new(),
                qtype: 0,
            })
        }
        Record::Socket(r) => Payload::Socket(crate::event::Socket {
            class: socket_class::NAMES[usize::from(r.class)].to_owned(),
            family: r.family.into(),
            family_name: family_name(r.family),
            sock_type: r.sock_type.into(),
            protocol: r.protocol.into(),
            blocked: h.verdict != vigil_common::verdict::ALLOWED,
        }),
        Record::Unix(r) => Payload::UnixConnect(crate::event::UnixConnect {
            path: unix_path(&r.path[..usize::from(r.path_len)]),
            op: if r.op == sock_op::SENDMSG {
                "sendmsg"
            } else {
                "connect"
            }
            .to_owned(),
            sock_type: match i32::from(r.sock_type) {
                libc::SOCK_STREAM => "stream".to_owned(),
                libc::SOCK_DGRAM => "dgram".to_owned(),
                libc::SOCK_SEQPACKET => "seqpacket".to_owned(),
                other => other.to_string(),
            },
            blocked: h.verdict != vigil_common::verdict::ALLOWED,
        }),
        Record::Escape(r) => Payload::SessionEscape(crate::event::SessionEscape {
            moved_pid: r.moved_tgid,
            self_move: r.flags & ESCAPE_SELF != 0,
            created_there: r.flags & vigil_common::ESCAPE_CLONE != 0,
            to_cgroup_id: r.dst_cgroup_id,
            to_cgroup: None,
            blocked: h.verdict != vigil_common::verdict::ALLOWED,
        }),
        Record::Tamper(r) => Payload::TamperAttempt(tamper(h, r)),
        Record::Dns(r) => Payload::DnsAnswer(crate::event::DnsAnswer {
            server: ip(r.family, &r.src_addr),
            server_port: r.src_port,
            client: ip(r.family, &r.dst_addr),
            client_port: r.dst_port,
            id: 0,
            name: String::new(),
            addresses: Vec::new(),
            ttl: 0,
        }),
    };
    let mut process = (h.tgid != 0).then(|| process(h));
    if let (Record::Exec(r), Some(p)) = (record, process.as_mut()) {
        p.exe = exe_to_path(&r.exe, r.exe_nlink);
    }
    Event {
        seq: 0,
        time: clock.wall(h.ts_ns),
        kernel_ts_ns: h.ts_ns,
        identity: Identity {
            cgroup_id: h.cgroup_id,
            ..Identity::default()
        },
        process,
        payload,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
        // SAFETY: reading the bytes of a plain repr(C) value.
        unsafe { std::slice::from_raw_parts(std::ptr::from_ref(v).cast::<u8>(), size_of::<T>()) }
            .to_vec()
    }

    fn header(kind: RecordKind) -> Header {
        let mut comm = [0u8; 16];
        comm[..3].copy_from_slice(b"git");
        Header {
            kind: kind as u16,
            flags: 0,
            verdict: 0,
            ts_ns: 1_000,
            cgroup_id: 77,
            pid: 11,
            tgid: 10,
            ppid: 1,
            uid: 1000,
            gid: 1000,
            _pad: 0,
            comm,
        }
    }

    fn exec_record() -> ExecRecord {
        let mut filename = [0u8; PATH_LEN];
        filename[..12].copy_from_slice(b"/usr/bin/git");
        let mut argv = [0u8; ARGV_LEN];
        argv[..11].copy_from_slice(b"git\0status\0");
        ExecRecord {
            header: header(RecordKind::Exec),
            old_pid: 11,
            filename_len: 12,
            argv_len: 11,
            exe_nlink: 1,
            exe_dev: (8 << 20) | 1,
            exe_ino: 4321,
            filename,
            argv,
            exe: components(&["git", "bin", "usr"], true),
        }
    }

    fn empty_components() -> PathComponents {
        PathComponents {
            len: 0,
            flags: 0,
            _pad: 0,
            buf: [0; vigil_common::DIR_LEN + vigil_common::NAME_READ],
        }
    }

    fn components(parts_leaf_first: &[&str], complete: bool) -> PathComponents {
        let mut pc = empty_components();
        let mut n = 0;
        for p in parts_leaf_first {
            pc.buf[n..n + p.len()].copy_from_slice(p.as_bytes());
            n += p.len() + 1;
        }
        pc.len = n as u16;
        pc.flags = if complete {
            path_flags::COMPLETE
        } else {
            path_flags::TRUNCATED
        };
        pc
    }

    fn link_record(syscall: u8, old: &str, new: &str, base: &[&str]) -> LinkRecord {
        let mut r = LinkRecord {
            header: header(RecordKind::Link),
            ret: 0,
            old_dfd: -100,
            new_dfd: -100,
            syscall,
            _pad: 0,
            old_len: old.len() as u16,
            new_len: new.len() as u16,
            _pad2: 0,
            old: [0; PATH_LEN],
            new: [0; PATH_LEN],
            base: if base.is_empty() {
                empty_components()
            } else {
                components(base, true)
            },
        };
        r.old[..old.len()].copy_from_slice(old.as_bytes());
        r.new[..new.len()].copy_from_slice(new.as_bytes());
        r
    }

    fn link_of(r: &LinkRecord) -> FileLink {
        let rec = decode(&bytes_of(r)).unwrap();
        match to_event(&rec, &Clock::now()).payload {
            Payload::FileLink(l) => l,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn link_names_join_the_kernel_base() {
        // `ln secrets/token ws/hl` in /home/u: both relative to the cwd.
        let l = link_of(&link_record(
            link_syscall::LINKAT,
            "secrets/token",
            "ws/hl",
            &["u", "home"],
        ));
        assert_eq!(l.op, "hardlink");
        assert_eq!(l.syscall, "linkat");
        assert_eq!(l.target, "/home/u/secrets/token");
        assert_eq!(l.raw_target.as_deref(), Some("secrets/token"));
        assert_eq!(l.path, "/home/u/ws/hl");
        // `ln -s ../secrets/token link` in /home/u/ws: the text is relative
        // to the link's directory.
        let l = link_of(&link_record(
            link_syscall::SYMLINKAT,
            "../secrets/token",
            "link",
            &["ws", "u", "home"],
        ));
        assert_eq!(l.op, "symlink");
        assert_eq!(l.target, "/home/u/secrets/token");
        assert_eq!(l.path, "/home/u/ws/link");
        // Absolute names need no base; another directory fd for the new
        // name leaves it as passed, for the pipeline.
        let mut r = link_record(link_syscall::RENAMEAT2, "/a/./b", "c", &[]);
        r.new_dfd = 5;
        r.ret = -18;
        let l = link_of(&r);
        assert_eq!(l.op, "rename");
        assert_eq!(
            (l.target.as_str(), l.raw_target.as_deref()),
            ("/a/b", Some("/a/./b"))
        );
        assert_eq!((l.path.as_str(), l.raw_path), ("c", None));
        assert_eq!(l.error.as_deref(), Some("EXDEV"));
        // `linkat(fd, "", ..., AT_EMPTY_PATH)`: the base is the file itself.
        let mut r = link_record(link_syscall::LINKAT, "", "/w/x", &["token", "s"]);
        r.old_dfd = 3;
        assert_eq!(link_of(&r).target, "/s/token");
        // A syscall index out of range is refused.
        let mut bad = link_record(link_syscall::LINK, "a", "b", &[]);
        bad.syscall = 7;
        assert!(decode(&bytes_of(&bad)).is_err());
    }

    #[test]
    fn kernel_paths_are_reversed_and_joined() {
        assert_eq!(
            components_to_path(&components(&["git", "bin", "usr"], true)).as_deref(),
            Some("/usr/bin/git")
        );
        assert_eq!(components_to_path(&components(&[], true)).as_deref(), None);
        assert_eq!(components_to_path(&components(&["a", "b"], false)), None);
        let mut root = empty_components();
        root.len = 1;
        root.flags = path_flags::COMPLETE;
        assert_eq!(components_to_path(&root).as_deref(), Some("/"));
    }

    #[test]
    fn exe_is_named_as_procfs_names_it() {
        assert_eq!(
            exe_to_path(&components(&["git", "bin", "usr"], true), 1).as_deref(),
            Some("/usr/bin/git")
        );
        assert_eq!(
            exe_to_path(&components(&["tool", "tmp"], true), 0).as_deref(),
            Some("/tmp/tool (deleted)")
        );
        let mut memfd = components(&["memfd:payload"], false);
        memfd.flags = path_flags::DETACHED;
        assert_eq!(
            exe_to_path(&memfd, 0).as_deref(),
            Some("/memfd:payload (deleted)")
        );
        assert_eq!(exe_to_path(&components(&["a", "b"], false), 1), None);
        let mut unnamed = empty_components();
        unnamed.flags = path_flags::DETACHED;
        assert_eq!(exe_to_path(&unnamed, 0), None);
    }

    /// An `openat` record of `path` with result `ret`, nothing resolved.
    fn open_record(path: &str, ret: i64) -> OpenRecord {
        let mut buf = [0u8; PATH_LEN];
        buf[..path.len()].copy_from_slice(path.as_bytes());
        OpenRecord {
            header: header(RecordKind::Open),
            ret,
            flags: 0,
            mode: 0,
            dfd: -100,
            syscall: open_syscall::OPENAT,
            _pad: 0,
            path_len: path.len() as u16,
            base_mnt: 0,
            base_dentry: 0,
            path_hash: 0,
            repeats: 0,
            ino: 0,
            dev: 0,
            nlink: u32::MAX,
            path: buf,
            resolved: empty_components(),
        }
    }

    fn open_of(bytes: &[u8]) -> FileOpen {
        match to_event(&decode(bytes).unwrap(), &Clock::now()).payload {
            Payload::FileOpen(f) => f,
            other => panic!("not an open: {other:?}"),
        }
    }

    #[test]
    fn relative_opens_join_the_kernel_base() {
        let mut r = open_record("../etc/x.txt", 3);
        r.resolved = components(&["work", "srv"], true);
        let f = open_of(&bytes_of(&r));
        assert_eq!(f.path, "/srv/etc/x.txt");
        assert_eq!(f.raw_path.as_deref(), Some("../etc/x.txt"));
    }

    /// A successful open carries the file itself, resolved from the new
    /// descriptor: the name used is kept as `raw_path`.
    #[test]
    fn successful_opens_are_the_file_the_descriptor_names() {
        let mut r = open_record("ws/link.txt", 3);
        r.header.flags = OPEN_RESOLVED_FILE;
        r.ino = 1234;
        // major 8, minor 1 in the kernel's encoding.
        r.dev = (8 << 20) | 1;
        r.nlink = 2;
        r.resolved = components(&["token", "secrets", "srv"], true);
        let f = open_of(&bytes_of(&r));
        assert_eq!(f.path, "/srv/secrets/token");
        assert_eq!(f.raw_path.as_deref(), Some("ws/link.txt"));
        assert_eq!(
            f.inode,
            Some(FileInode {
                dev: libc::makedev(8, 1),
                ino: 1234,
                nlink: 2
            })
        );
    }

    /// The kernel leaves out the unused end of the resolved path; a record
    /// that claims more text than it carries is refused.
    #[test]
    fn trimmed_open_records_decode_and_lies_are_refused() {
        let mut r = open_record("/etc", 3);
        r.header.flags = OPEN_RESOLVED_FILE;
        r.ino = 7;
        r.resolved = components(&["etc"], true);
        let fixed = std::mem::offset_of!(OpenRecord, resolved) + 8;
        let bytes = bytes_of(&r);
        let f = open_of(&bytes[..fixed + 4]);
        assert_eq!(f.path, "/etc");
        assert!(matches!(
            decode(&bytes[..fixed + 2]),
            Err(DecodeError::OutOfRange {
                field: "resolved.len",
                ..
            })
        ));
        assert!(matches!(
            decode(&bytes[..fixed - 1]),
            Err(DecodeError::Short { .. })
        ));
    }

    #[test]
    fn decodes_exec() {
        let rec = decode(&bytes_of(&exec_record())).unwrap();
        let ev = to_event(&rec, &Clock::now());
        let Payload::Exec(e) = &ev.payload else {
            panic!("not an exec: {ev:?}")
        };
        assert_eq!(e.filename, "/usr/bin/git");
        assert_eq!(e.argv, ["git", "status"]);
        assert!(!e.argv_truncated);
        let p = ev.process.unwrap();
        assert_eq!((p.pid, p.tid, p.ppid, p.comm.as_str()), (10, 11, 1, "git"));
        assert_eq!(p.exe.as_deref(), Some("/usr/bin/git"));
        assert_eq!(ev.identity.cgroup_id, 77);
    }

    #[test]
    fn truncated_argv_keeps_the_cut_argument() {
        let mut r = exec_record();
        r.header.flags = EXEC_ARGV_TRUNCATED;
        r.argv[..9].copy_from_slice(b"a\0bb\0ccc\0");
        r.argv[9..12].copy_from_slice(b"ddd");
        r.argv_len = 12;
        let Payload::Exec(e) = to_event(&decode(&bytes_of(&r)).unwrap(), &Clock::now()).payload
        else {
            panic!()
        };
        assert_eq!(e.argv, ["a", "bb", "ccc", "ddd"]);
        assert!(e.argv_truncated);
    }

    #[test]
    fn argv_blocks_split_into_arguments_with_empty_ones_kept() {
        assert!(split_argv(b"").is_empty(), "an exec without arguments");
        assert_eq!(split_argv(b"\0"), [""], "one empty argument");
        assert_eq!(split_argv(b"sh\0\0-c\0"), ["sh", "", "-c"]);
        assert_eq!(
            split_argv(b"echo\0\0"),
            ["echo", ""],
            "a last empty argument"
        );
        assert_eq!(
            split_argv(b"echo\0hel"),
            ["echo", "hel"],
            "a cut last argument"
        );
    }

    #[test]
    fn rejects_short_and_unknown_records() {
        assert!(matches!(
            decode(&[1, 0, 0]),
            Err(DecodeError::ShortHeader { .. })
        ));
        let mut h = bytes_of(&header(RecordKind::Exec));
        assert!(matches!(
            decode(&h),
            Err(DecodeError::Short {
                kind: RecordKind::Exec,
                ..
            })
        ));
        h[0] = 0xff;
        h[1] = 0x7f;
        assert_eq!(decode(&h).unwrap_err(), DecodeError::UnknownKind(0x7fff));
    }

    #[test]
    fn rejects_inconsistent_lengths() {
        let mut r = exec_record();
        r.argv_len = (ARGV_LEN + 1) as u16;
        assert!(matches!(
            decode(&bytes_of(&r)),
            Err(DecodeError::OutOfRange {
                field: "argv_len",
                ..
            })
        ));
        let mut c = ConnectRecord {
            header: header(RecordKind::Connect),
            family: 99,
            port: 80,
            protocol: 6,
            op: 1,
            sock_type: 1,
            _pad: 0,
            addr: [0; 16],
        };
        assert!(matches!(
            decode(&bytes_of(&c)),
            Err(DecodeError::OutOfRange {
                field: "family",
                ..
            })
        ));
        c.family = libc::AF_INET6 as u16;
        c.addr[15] = 1;
        let Payload::Connect(conn) =
            to_event(&decode(&bytes_of(&c)).unwrap(), &Clock::now()).payload
        else {
            panic!()
        };
        assert_eq!(conn.address, "::1".parse::<IpAddr>().unwrap());
        assert_eq!(conn.protocol, Protocol::Tcp);
    }

    /// Random bytes never panic the decoder.
    #[test]
    fn random_bytes_never_panic() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..2000usize {
            let buf: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            if let Ok(r) = decode(&buf) {
                let _ = to_event(&r, &Clock::now());
            }
            let mut with_kind = buf.clone();
            if with_kind.len() >= 2 {
                with_kind[0] = (len % 13) as u8;
                with_kind[1] = 0;
                if let Ok(r) = decode(&with_kind) {
                    let _ = to_event(&r, &Clock::now());
                }
            }
        }
    }

    /// Found by the `ring_record` fuzz target: a return value with no
    /// negation (`i64::MIN`) overflowed when its errno was named.
    #[test]
    fn returns_out_of_the_kernels_range_name_no_errno() {
        for ret in [i64::MIN, i64::MIN + 1, -(1 << 40)] {
            let f = open_of(&bytes_of(&open_record("nope", ret)));
            assert_eq!(f.error.as_deref(), Some("UnknownErrno"), "{ret}");
            let mut r = link_record(link_syscall::RENAME, "a", "b", &[]);
            r.ret = ret;
            let ev = to_event(&decode(&bytes_of(&r)).unwrap(), &Clock::now());
            let Payload::FileLink(l) = ev.payload else {
                panic!("not a link: {:?}", ev.payload);
            };
            assert_eq!(l.error.as_deref(), Some("UnknownErrno"), "{ret}");
        }
    }

    #[test]
    fn open_errors_are_named() {
        let mut r = open_record("nope", -i64::from(libc::ENOENT));
        r.flags = libc::O_RDONLY as u32;
        let f = open_of(&bytes_of(&r));
        assert_eq!(f.error.as_deref(), Some("ENOENT"));
        assert_eq!(f.fd, None);
        assert_eq!(f.syscall, "openat");
    }

    #[test]
    fn socket_records_name_class_and_family() {
        let mut r = SocketRecord {
            header: header(RecordKind::Socket),
            family: 17,
            sock_type: 3,
            protocol: 768,
            class: socket_class::PACKET,
            hook: vigil_common::socket_hook::SYSCALL,
        };
        r.header.verdict = vigil_common::verdict::BLOCKED_SOCKET;
        let ev = to_event(&decode(&bytes_of(&r)).unwrap(), &Clock::now());
        let Payload::Socket(s) = ev.payload else {
            panic!("{ev:?}");
        };
        assert_eq!(
            (
                s.class.as_str(),
                s.family_name.as_str(),
                s.sock_type,
                s.protocol
            ),
            ("packet", "AF_PACKET", 3, 768)
        );
        assert!(s.blocked && !s.refused_with_eperm());
        r.class = socket_class::COUNT;
        assert!(matches!(
            decode(&bytes_of(&r)),
            Err(DecodeError::OutOfRange { field: "class", .. })
        ));
    }

    #[test]
    fn unix_records_show_paths_and_abstract_names() {
        let record = |bytes: &[u8], op: u8| {
            let mut r = UnixRecord {
                header: header(RecordKind::Unix),
                op,
                sock_type: libc::SOCK_DGRAM as u8,
                path_len: bytes.len() as u16,
                _pad: 0,
                path: [0; vigil_common::UNIX_PATH_BUF],
            };
            r.path[..bytes.len()].copy_from_slice(bytes);
            r
        };
        let unix_of = |r: &UnixRecord| match to_event(&decode(&bytes_of(r)).unwrap(), &Clock::now())
            .payload
        {
            Payload::UnixConnect(u) => u,
            other => panic!("{other:?}"),
        };
        let u = unix_of(&record(b"/run/docker.sock", sock_op::CONNECT));
        assert_eq!(
            (u.path.as_str(), u.op.as_str()),
            ("/run/docker.sock", "connect")
        );
        assert_eq!(u.sock_type, "dgram");
        let u = unix_of(&record(b"\0bus\0x", sock_op::SENDMSG));
        assert_eq!((u.path.as_str(), u.op.as_str()), ("@bus@x", "sendmsg"));
        let mut r = record(b"/x", sock_op::CONNECT);
        r.path_len = 200;
        assert!(decode(&bytes_of(&r)).is_err(), "longer than sun_path");
    }

    #[test]
    fn escape_records_name_the_moved_process() {
        let r = EscapeRecord {
            header: header(RecordKind::Escape),
            moved_tgid: 4242,
            flags: ESCAPE_SELF,
            dst_cgroup_id: 9001,
        };
        let ev = to_event(&decode(&bytes_of(&r)).unwrap(), &Clock::now());
        assert_eq!(ev.identity.cgroup_id, 77, "the cgroup it left");
        let Payload::SessionEscape(x) = ev.payload else {
            panic!("{ev:?}");
        };
        assert_eq!(
            (x.moved_pid, x.self_move, x.to_cgroup_id),
            (4242, true, 9001)
        );
        assert!(!x.blocked);
    }

    #[test]
    fn tamper_records_name_the_method_and_its_argument() {
        use vigil_common::tamper as t;
        let r = |method: u16, arg: u32, verdict: u32| {
            let mut header = header(RecordKind::Tamper);
            header.verdict = verdict;
            TamperRecord {
                header,
                method,
                _pad: 0,
                arg,
                target_tid: 812,
                _pad2: 0,
            }
        };
        let attempt =
            |rec: &TamperRecord| match to_event(&decode(&bytes_of(rec)).unwrap(), &Clock::now())
                .payload
            {
                Payload::TamperAttempt(x) => x,
                other => panic!("{other:?}"),
            };
        let x = attempt(&r(t::SIGNAL, 15, 0));
        assert_eq!(
            (
                x.method.as_str(),
                x.detail.as_str(),
                x.target_tid,
                x.blocked
            ),
            ("signal", "SIGTERM", Some(812), false)
        );
        let x = attempt(&r(t::PTRACE, 0x4206, vigil_common::verdict::BLOCKED_TAMPER));
        assert_eq!((x.detail.as_str(), x.blocked), ("PTRACE_SEIZE", true));
        let x = attempt(&r(t::BPF, 2, 0));
        assert_eq!(
            (x.method.as_str(), x.detail.as_str(), x.target_tid),
            ("bpf", "BPF_MAP_UPDATE_ELEM", None)
        );
        // Values this build does not name are shown as numbers, not guessed.
        assert_eq!(attempt(&r(t::BPF, 999, 0)).detail, "bpf command 999");
        assert_eq!(attempt(&r(t::SIGNAL, 77, 0)).detail, "signal 77");
        assert_eq!(
            attempt(&r(t::PTRACE, 4711, 0)).detail,
            "ptrace request 4711"
        );
        assert_eq!(attempt(&r(t::VM_WRITE, 0, 0)).detail, "");
        // A method no build knows is a bad record, not an event.
        for bad in [0, t::BPF + 1] {
            assert!(
                matches!(
                    decode(&bytes_of(&r(bad, 0, 0))),
                    Err(DecodeError::OutOfRange {
                        field: "method",
                        ..
                    })
                ),
                "method {bad}"
            );
        }
    }

    #[test]
    fn an_exec_of_an_unlinked_file_is_from_memory() {
        let mut r = exec_record();
        r.exe_nlink = 0;
        let Payload::Exec(x) = to_event(&Record::Exec(r), &Clock::now()).payload else {
            unreachable!()
        };
        assert!(x.from_memory);
        r.exe_nlink = u32::MAX;
        let Payload::Exec(x) = to_event(&Record::Exec(r), &Clock::now()).payload else {
            unreachable!()
        };
        assert!(!x.from_memory, "an unknown link count is no evidence");
        assert_eq!(
            x.inode,
            Some(FileInode {
                dev: libc::makedev(8, 1),
                ino: 4321,
                nlink: u32::MAX
            }),
            "the program's identity, in stat(2)'s encoding"
        );
    }
}
