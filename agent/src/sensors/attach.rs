//! Which program hooks where, and attaching it: tracepoints through the
//! tracefs name, cgroup programs at the cgroup v2 root, each link pinned
//! under `pin_dir` so that enforcement outlives the daemon.

use std::{
    fs::File,
    os::fd::OwnedFd,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf,
    programs::{
        CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSock, CgroupSockAddr, ProgramError,
        RawTracePoint, SockOps, TracePoint,
        links::{FdLink, PinnedLink},
    },
};

use super::{SensorError, guard};

/// Where a program hooks in.
#[derive(Clone, Copy, Debug)]
pub(super) enum Hook {
    /// `category/name` tracepoint.
    Tracepoint {
        category: &'static str,
        name: &'static str,
    },
    Raw(&'static str),
    /// A cgroup program, attached once at the cgroup v2 root.
    CgroupRoot,
    /// A `cgroup_skb` program at the cgroup v2 root, on the packets sockets
    /// send (`egress`) or receive.
    CgroupSkbRoot {
        egress: bool,
    },
}

const fn tp(category: &'static str, name: &'static str) -> Hook {
    Hook::Tracepoint { category, name }
}

/// `open`, `openat`, `openat2` on this architecture (`u32::MAX`: none).
#[cfg(target_arch = "x86_64")]
pub(super) const OPEN_SYSCALLS: [u32; 3] = [
    libc::SYS_open as u32,
    libc::SYS_openat as u32,
    libc::SYS_openat2 as u32,
];

#[cfg(not(target_arch = "x86_64"))]
pub(super) const OPEN_SYSCALLS: [u32; 3] =
    [u32::MAX, libc::SYS_openat as u32, libc::SYS_openat2 as u32];

/// The exit tracepoints of the open syscalls this architecture has.
#[cfg(target_arch = "x86_64")]
const OPEN_EXITS: &[Hook] = &[
    tp("syscalls", "sys_exit_openat"),
    tp("syscalls", "sys_exit_open"),
    tp("syscalls", "sys_exit_openat2"),
];

#[cfg(not(target_arch = "x86_64"))]
const OPEN_EXITS: &[Hook] = &[
    tp("syscalls", "sys_exit_openat"),
    tp("syscalls", "sys_exit_openat2"),
];

/// The `link_syscall` calls on this architecture, in its order
/// (`u32::MAX`: none).
#[cfg(target_arch = "x86_64")]
pub(super) const LINK_SYSCALLS: [u32; 8] = [
    libc::SYS_link as u32,
    libc::SYS_linkat as u32,
    libc::SYS_symlink as u32,
    libc::SYS_symlinkat as u32,
    libc::SYS_rename as u32,
    libc::SYS_renameat as u32,
    libc::SYS_renameat2 as u32,
    u32::MAX,
];

#[cfg(not(target_arch = "x86_64"))]
pub(super) const LINK_SYSCALLS: [u32; 8] = [
    u32::MAX,
    libc::SYS_linkat as u32,
    u32::MAX,
    libc::SYS_symlinkat as u32,
    u32::MAX,
    u32::MAX,
    libc::SYS_renameat2 as u32,
    u32::MAX,
];

/// The exit tracepoints of the link and rename syscalls.
#[cfg(target_arch = "x86_64")]
const LINK_EXITS: &[Hook] = &[
    tp("syscalls", "sys_exit_linkat"),
    tp("syscalls", "sys_exit_link"),
    tp("syscalls", "sys_exit_symlinkat"),
    tp("syscalls", "sys_exit_symlink"),
    tp("syscalls", "sys_exit_renameat2"),
    tp("syscalls", "sys_exit_renameat"),
    tp("syscalls", "sys_exit_rename"),
];

#[cfg(not(target_arch = "x86_64"))]
const LINK_EXITS: &[Hook] = &[
    tp("syscalls", "sys_exit_linkat"),
    tp("syscalls", "sys_exit_symlinkat"),
    tp("syscalls", "sys_exit_renameat2"),
];

/// Every program, the sensor it belongs to, and its hooks.
pub(super) const PROGRAMS: &[(&str, &str, &[Hook])] = &[
    (
        "vigil_sched_exec",
        "process",
        &[tp("sched", "sched_process_exec")],
    ),
    ("vigil_fork", "process", &[Hook::Raw("sched_process_fork")]),
    // Moves between cgroups: a watched process leaving its session.
    (
        "vigil_cgroup_attach",
        "process",
        &[Hook::Raw("cgroup_attach_task")],
    ),
    (
        "vigil_exit",
        "process",
        &[tp("sched", "sched_process_exit")],
    ),
    // Self-protection: a watched process reaching for the daemon, or for
    // the BPF objects that hold its decisions.
    ("vigil_signal", "process", &[Hook::Raw("signal_generate")]),
    (
        "vigil_ptrace_enter",
        "process",
        &[tp("syscalls", "sys_enter_ptrace")],
    ),
    (
        "vigil_vm_readv_enter",
        "process",
        &[tp("syscalls", "sys_enter_process_vm_readv")],
    ),
    (
        "vigil_vm_writev_enter",
        "process",
        &[tp("syscalls", "sys_enter_process_vm_writev")],
    ),
    (
        "vigil_pidfd_open_enter",
        "process",
        &[tp("syscalls", "sys_enter_pidfd_open")],
    ),
    (
        "vigil_bpf_enter",
        "process",
        &[tp("syscalls", "sys_enter_bpf")],
    ),
    ("vigil_connect4", "network", &[Hook::CgroupRoot]),
    ("vigil_connect6", "network", &[Hook::CgroupRoot]),
    ("vigil_sendmsg4", "network", &[Hook::CgroupRoot]),
    ("vigil_sendmsg6", "network", &[Hook::CgroupRoot]),
    ("vigil_sock_ops", "network", &[Hook::CgroupRoot]),
    // Unusual socket families: sock_create refuses IPv4/IPv6 raw sockets
    // with EPERM; the kernel runs it for no other family, which the
    // syscall's entry sees.
    ("vigil_sock_create", "network", &[Hook::CgroupRoot]),
    (
        "vigil_socket_enter",
        "network",
        &[tp("syscalls", "sys_enter_socket")],
    ),
    (
        "vigil_dns_ingress",
        "network",
        &[Hook::CgroupSkbRoot { egress: false }],
    ),
    (
        "vigil_dns_egress",
        "network",
        &[Hook::CgroupSkbRoot { egress: true }],
    ),
    // The exits of the open syscalls only: other syscalls pay a bitmap test.
    ("vigil_open_exit", "file", OPEN_EXITS),
    // New names for files: a link to a credential is a way to read it.
    ("vigil_link_exit", "file", LINK_EXITS),
    // io_uring's own tracepoints: its requests pass no syscall tracepoint.
    (
        "vigil_io_uring_create",
        "file",
        &[tp("io_uring", "io_uring_create")],
    ),
    (
        "vigil_io_uring_submit",
        "file",
        &[tp("io_uring", "io_uring_submit_req")],
    ),
];

pub(super) fn load_error(program: &'static str, e: ProgramError) -> SensorError {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            // For kernel developers: the whole log, which is too long for an error.
            if let Some(path) = std::env::var_os("VIGIL_VERIFIER_LOG") {
                let _ = std::fs::write(path, &log);
            }
            let tail: Vec<&str> = log.lines().rev().take(8).collect();
            let verifier = if tail.is_empty() {
                String::new()
            } else {
                let lines: Vec<&str> = tail.into_iter().rev().collect();
                format!("; verifier: {}", lines.join(" | "))
            };
            SensorError::Load {
                program,
                error: io_error.to_string(),
                verifier,
            }
        }
        other => SensorError::Load {
            program,
            error: other.to_string(),
            verifier: String::new(),
        },
    }
}

/// One link made by [`attach`]: the hook's label, the link, and whether it
/// is a cgroup link.
pub(super) type Made = (String, FdLink, bool);

/// Loads one program and attaches it to its hooks; returns the links made.
pub(super) fn attach(
    ebpf: &mut Ebpf,
    name: &'static str,
    hooks: &[Hook],
    root: &File,
) -> Result<Vec<Made>, SensorError> {
    let program = ebpf
        .program_mut(name)
        .ok_or(SensorError::MissingProgram(name))?;
    let mut done = Vec::new();
    let attach_err = |hook: String| {
        move |source| SensorError::Attach {
            program: name,
            hook,
            source,
        }
    };
    let link_err = |hook: String| {
        move |e: aya::programs::links::LinkError| SensorError::Pin {
            path: PathBuf::from(hook),
            message: e.to_string(),
        }
    };
    match hooks.first() {
        Some(Hook::Tracepoint { .. }) => {
            let p: &mut TracePoint = program.try_into().map_err(|e| load_error(name, e))?;
            p.load().map_err(|e| load_error(name, e))?;
            for hook in hooks {
                let Hook::Tracepoint {
                    category,
                    name: tp_name,
                } = *hook
                else {
                    continue;
                };
                let label = format!("tracepoint/{category}/{tp_name}");
                let id = p
                    .attach(category, tp_name)
                    .map_err(attach_err(label.clone()))?;
                let link = p.take_link(id).map_err(attach_err(label.clone()))?;
                let link = FdLink::try_from(link).map_err(link_err(label.clone()))?;
                done.push((label, link, false));
            }
        }
        Some(Hook::Raw(tp_name)) => {
            let p: &mut RawTracePoint = program.try_into().map_err(|e| load_error(name, e))?;
            p.load().map_err(|e| load_error(name, e))?;
            let label = format!("raw_tracepoint/{tp_name}");
            let id = p.attach(tp_name).map_err(attach_err(label.clone()))?;
            let link = p.take_link(id).map_err(attach_err(label.clone()))?;
            done.push((label, FdLink::from(link), false));
        }
        Some(hook @ (Hook::CgroupRoot | Hook::CgroupSkbRoot { .. })) => {
            let label = match hook {
                Hook::CgroupSkbRoot { egress: true } => "cgroup v2 root (egress)",
                Hook::CgroupSkbRoot { egress: false } => "cgroup v2 root (ingress)",
                _ => CGROUP_HOOK,
            };
            let link = attach_cgroup(program, name, root, true)?;
            done.push((label.to_owned(), link, true));
        }
        None => {}
    }
    Ok(done)
}

const CGROUP_HOOK: &str = "cgroup v2 root";

/// Which side of the packet path a `cgroup_skb` program is for (from its
/// hook in [`PROGRAMS`]), so a re-attach after a detach puts it back there.
fn skb_attach_type(name: &str) -> CgroupSkbAttachType {
    let egress = PROGRAMS
        .iter()
        .find(|(program, _, _)| *program == name)
        .and_then(|(_, _, hooks)| hooks.first())
        .is_some_and(|h| matches!(h, Hook::CgroupSkbRoot { egress: true }));
    if egress {
        CgroupSkbAttachType::Egress
    } else {
        CgroupSkbAttachType::Ingress
    }
}

/// Attaches a cgroup program at the cgroup v2 root (loading it first when
/// `load`) and returns its link.
pub(super) fn attach_cgroup(
    program: &mut aya::programs::Program,
    name: &'static str,
    root: &File,
    load: bool,
) -> Result<FdLink, SensorError> {
    let attach_err = |source| SensorError::Attach {
        program: name,
        hook: CGROUP_HOOK.to_owned(),
        source,
    };
    let link_err = |e: aya::programs::links::LinkError| SensorError::Attach {
        program: name,
        hook: CGROUP_HOOK.to_owned(),
        source: ProgramError::IOError(std::io::Error::other(e.to_string())),
    };
    // Through bpf_link (kernel >= 5.7) programs of several daemons
    // coexist at the root; the ALLOW_MULTI flag is for the legacy
    // attach API and bpf_link_create rejects it.
    if let Ok(p) = <&mut CgroupSockAddr>::try_from(&mut *program) {
        if load {
            p.load().map_err(|e| load_error(name, e))?;
        }
        let id = p
            .attach(root, CgroupAttachMode::Single)
            .map_err(attach_err)?;
        let link = p.take_link(id).map_err(attach_err)?;
        FdLink::try_from(link).map_err(link_err)
    } else if let Ok(p) = <&mut CgroupSock>::try_from(&mut *program) {
        if load {
            p.load().map_err(|e| load_error(name, e))?;
        }
        let id = p
            .attach(root, CgroupAttachMode::Single)
            .map_err(attach_err)?;
        let link = p.take_link(id).map_err(attach_err)?;
        FdLink::try_from(link).map_err(link_err)
    } else if let Ok(p) = <&mut CgroupSkb>::try_from(&mut *program) {
        if load {
            p.load().map_err(|e| load_error(name, e))?;
        }
        let id = p
            .attach(root, skb_attach_type(name), CgroupAttachMode::Single)
            .map_err(attach_err)?;
        let link = p.take_link(id).map_err(attach_err)?;
        FdLink::try_from(link).map_err(link_err)
    } else {
        let p: &mut SockOps = program.try_into().map_err(|e| load_error(name, e))?;
        if load {
            p.load().map_err(|e| load_error(name, e))?;
        }
        let id = p
            .attach(root, CgroupAttachMode::Single)
            .map_err(attach_err)?;
        let link = p.take_link(id).map_err(attach_err)?;
        FdLink::try_from(link).map_err(link_err)
    }
}

/// Pins this daemon's program links under `<pin_dir>/links/<generation>`,
/// so programs (and with them revocations) stay attached when the daemon
/// exits or crashes; the next daemon removes older generations once its own
/// links are in place.
pub(super) struct Links {
    root: PathBuf,
    dir: PathBuf,
    count: std::sync::atomic::AtomicU32,
}

impl Links {
    pub(super) fn new(pin_dir: &Path) -> Result<Self, SensorError> {
        let root = pin_dir.join("links");
        let generation = format!(
            "{}-{}",
            crate::sensors::decode::clock_ns(libc::CLOCK_BOOTTIME),
            std::process::id()
        );
        let dir = root.join(generation);
        std::fs::create_dir_all(&dir).map_err(|e| SensorError::Pin {
            path: dir.clone(),
            message: e.to_string(),
        })?;
        Ok(Self {
            root,
            dir,
            count: std::sync::atomic::AtomicU32::new(0),
        })
    }

    /// Pins a link under this daemon's generation and keeps an fd of it:
    /// the pin outlives the daemon, the fd keeps the link while it runs.
    pub(super) fn pin(
        &self,
        program: &str,
        link: FdLink,
    ) -> Result<(PinnedLink, OwnedFd, PathBuf), SensorError> {
        pin_link(link, &self.next_path(program))
    }

    /// Where the next link of `program` is pinned.
    pub(super) fn next_path(&self, program: &str) -> PathBuf {
        let n = self
            .count
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.dir.join(format!("{program}-{n}"))
    }

    /// Unpins (and so detaches) links of earlier daemons.
    pub(super) fn remove_others(&self) {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return;
        };
        for e in entries.filter_map(Result::ok) {
            if e.path() != self.dir {
                if let Err(err) = std::fs::remove_dir_all(e.path()) {
                    tracing::warn!("removing old links {}: {err}", e.path().display());
                } else {
                    tracing::info!(
                        "replaced the links of a previous daemon ({})",
                        e.path().display()
                    );
                }
            }
        }
    }
}

/// Pins `link` at `path` (replacing what is there) and opens a second fd
/// of it for the daemon's own queries and re-pins.
pub(super) fn pin_link(
    link: FdLink,
    path: &Path,
) -> Result<(PinnedLink, OwnedFd, PathBuf), SensorError> {
    let err = |message: String| SensorError::Pin {
        path: path.to_owned(),
        message,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e.to_string())),
    }
    let pinned = link.pin(path).map_err(|e| err(e.to_string()))?;
    let fd = guard::open_pin(path).map_err(|e| err(e.to_string()))?;
    Ok((pinned, fd, path.to_owned()))
}
