//! Kernel sensors: loads Vigil's eBPF programs, attaches them, and gives the
//! daemon their ring buffer, loss counters and watch list.

pub mod decode;
pub mod guard;
pub mod loss;
pub mod offsets;

use std::{
    fs::File,
    os::fd::OwnedFd,
    path::{Path, PathBuf},
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use aya::programs::links::{FdLink, PinnedLink};
use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::{
        CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSockAddr, ProgramError,
        RawTracePoint, SockOps, TracePoint,
    },
};
use vigil_common::{KernelConfig, Offsets, OpenKey, OpenSeen, SENSOR_COUNT, SENSOR_NAMES};

use crate::paths;

/// The eBPF object built by `agent/build.rs`.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/vigil"));

#[derive(Debug, thiserror::Error)]
pub enum SensorError {
    #[error(
        "vigil needs root (CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN, CAP_NET_ADMIN): effective uid is {0}"
    )]
    NotRoot(u32),
    #[error("{what} is not mounted at {path} and mounting it failed: {source}")]
    Mount {
        what: &'static str,
        path: String,
        source: nix::Error,
    },
    #[error(transparent)]
    Offsets(#[from] offsets::OffsetError),
    #[error("this vigil binary was built without its eBPF programs (AYA_BUILD_SKIP was set)")]
    NoObject,
    #[error("loading the eBPF object failed (is BPF enabled in this kernel?): {0}")]
    Object(#[source] aya::EbpfError),
    #[error("eBPF object has no program `{0}`")]
    MissingProgram(&'static str),
    #[error("eBPF object has no map `{0}`")]
    MissingMap(&'static str),
    #[error("loading program {program} failed: {error}{verifier}")]
    Load {
        program: &'static str,
        error: String,
        verifier: String,
    },
    #[error("attaching program {program} to {hook} failed: {source}")]
    Attach {
        program: &'static str,
        hook: String,
        source: ProgramError,
    },
    #[error("opening cgroup root {path}: {source}")]
    CgroupRoot {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("pinning under {path}: {message}")]
    Pin { path: PathBuf, message: String },
    #[error("BPF map {map}: {source}")]
    Map {
        map: &'static str,
        source: aya::maps::MapError,
    },
}

/// How the programs are configured at load time.
#[derive(Clone, Debug)]
pub struct SensorOptions {
    /// The cgroup v2 mount (programs attach at its root).
    pub cgroup_mount: PathBuf,
    /// `(id, level)` of the cgroup under which `vigil exec` sessions live.
    pub session_parent: Option<(u64, u32)>,
    /// Report every process (discovery mode).
    pub watch_all: bool,
    /// Ring buffer size, a power of two of at least one page.
    pub ring_buffer_bytes: u32,
    /// Unread bytes from which every record wakes the reader; below it only
    /// urgent ones do. 0: every record wakes a caught-up reader.
    pub wake_bytes: u32,
    /// Identical opens by a process within this long of its last reported
    /// one are counted instead of reported (zero: report every open).
    pub open_repeat: std::time::Duration,
    /// bpffs directory for the pinned enforcement maps and program links.
    pub pin_dir: PathBuf,
}

/// Where a program hooks in.
#[derive(Clone, Copy, Debug)]
enum Hook {
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

/// A random 64-bit key (for the kernel's path hash).
fn random_key() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// `open`, `openat`, `openat2` on this architecture (`u32::MAX`: none).
#[cfg(target_arch = "x86_64")]
const OPEN_SYSCALLS: [u32; 3] = [
    libc::SYS_open as u32,
    libc::SYS_openat as u32,
    libc::SYS_openat2 as u32,
];
#[cfg(not(target_arch = "x86_64"))]
const OPEN_SYSCALLS: [u32; 3] = [u32::MAX, libc::SYS_openat as u32, libc::SYS_openat2 as u32];

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

/// Every program, the sensor it belongs to, and its hooks.
const PROGRAMS: &[(&str, &str, &[Hook])] = &[
    (
        "vigil_sched_exec",
        "process",
        &[tp("sched", "sched_process_exec")],
    ),
    ("vigil_fork", "process", &[Hook::Raw("sched_process_fork")]),
    (
        "vigil_exit",
        "process",
        &[tp("sched", "sched_process_exit")],
    ),
    ("vigil_connect4", "network", &[Hook::CgroupRoot]),
    ("vigil_connect6", "network", &[Hook::CgroupRoot]),
    ("vigil_sendmsg4", "network", &[Hook::CgroupRoot]),
    ("vigil_sendmsg6", "network", &[Hook::CgroupRoot]),
    ("vigil_sock_ops", "network", &[Hook::CgroupRoot]),
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

/// Loaded and attached programs with the maps the daemon uses.
pub struct Sensors {
    // Holds the loaded programs, which a detached cgroup link is re-attached from.
    ebpf: Mutex<Ebpf>,
    /// The cgroup v2 root, where cgroup programs are re-attached.
    root: File,
    /// Every link and pinned map, with the daemon's own fds.
    held: Mutex<Held>,
    /// Tamperings found since load.
    tampers: AtomicU64,
    /// The last one, in words, for the status.
    last_tamper: Mutex<Option<String>>,
    attached: Vec<String>,
    offsets: Offsets,
    watched: Mutex<HashMap<MapData, u64, u32>>,
    loss: PerCpuArray<MapData, u64>,
    policy: crate::enforcement::kernel::KernelPolicy,
}

/// Mounts tracefs and bpffs when they are missing (a fresh node has neither).
pub fn ensure_mounts() -> Result<PathBuf, SensorError> {
    if let Ok(t) = offsets::tracefs() {
        ensure_bpffs()?;
        return Ok(t);
    }
    let target = paths::TRACEFS[0];
    nix::mount::mount(
        Some("tracefs"),
        target,
        Some("tracefs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|source| SensorError::Mount {
        what: "tracefs",
        path: target.to_owned(),
        source,
    })?;
    ensure_bpffs()?;
    Ok(offsets::tracefs()?)
}

fn ensure_bpffs() -> Result<(), SensorError> {
    let mounted = procfs::mounts()
        .unwrap_or_default()
        .iter()
        .any(|m| m.fs_file == paths::BPFFS && m.fs_vfstype == "bpf");
    if mounted {
        return Ok(());
    }
    nix::mount::mount(
        Some("bpffs"),
        paths::BPFFS,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|source| SensorError::Mount {
        what: "bpffs",
        path: paths::BPFFS.to_owned(),
        source,
    })
}

fn load_error(program: &'static str, e: ProgramError) -> SensorError {
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

impl Sensors {
    /// Checks privileges, finds offsets, loads every program and attaches it.
    pub fn load(opts: &SensorOptions) -> Result<Self, SensorError> {
        let euid = nix::unistd::geteuid().as_raw();
        if euid != 0 {
            return Err(SensorError::NotRoot(euid));
        }
        if EBPF_OBJECT.is_empty() {
            return Err(SensorError::NoObject);
        }
        let tracefs = ensure_mounts()?;
        let offsets = offsets::discover(&tracefs, Path::new(paths::KERNEL_BTF))?;
        let (parent_id, parent_level) = opts.session_parent.unwrap_or((0, 0));
        let config = KernelConfig {
            daemon_tgid: std::process::id(),
            watch_all: u32::from(opts.watch_all),
            session_parent_id: parent_id,
            session_parent_level: parent_level,
            wake_bytes: opts.wake_bytes,
            open_nrs: OPEN_SYSCALLS,
            _pad: 0,
            open_repeat_ns: opts.open_repeat.as_nanos().try_into().unwrap_or(u64::MAX),
            hash_key: random_key(),
            offsets,
        };
        std::fs::create_dir_all(&opts.pin_dir).map_err(|e| SensorError::Pin {
            path: opts.pin_dir.clone(),
            message: e.to_string(),
        })?;
        // Pinned maps (POLICY, SYSTEMS, WATCHED) are reused when a previous
        // daemon left them: that is how revocations survive a restart.
        let mut ebpf = EbpfLoader::new()
            .override_global("VIGIL_CONFIG", &config, true)
            .map_max_entries("EVENTS", opts.ring_buffer_bytes)
            .default_map_pin_directory(&opts.pin_dir)
            .load(EBPF_OBJECT)
            .map_err(SensorError::Object)?;
        if let Err(e) = aya_log::EbpfLogger::init(&mut ebpf).map(spawn_log_reader) {
            tracing::warn!("eBPF-side diagnostics unavailable: {e}");
        }
        let root = File::open(&opts.cgroup_mount).map_err(|source| SensorError::CgroupRoot {
            path: opts.cgroup_mount.clone(),
            source,
        })?;
        let links = Links::new(&opts.pin_dir)?;
        let mut attached = Vec::new();
        let mut held = Held {
            links: Vec::new(),
            maps: guard::HeldMap::all(&opts.pin_dir),
        };
        for &(program, sensor, hooks) in PROGRAMS {
            for (hook, link, cgroup) in attach(&mut ebpf, program, hooks, &root)? {
                attached.push(format!("{sensor}: {program} -> {hook}"));
                let (pinned, fd, path) = links.pin(program, link)?;
                held.links.push(guard::HeldLink {
                    sensor,
                    program,
                    hook,
                    inode: guard::pin_inode(&path),
                    path,
                    pinned,
                    fd,
                    cgroup,
                    reattached: 0,
                });
            }
        }
        // Our links are in place: only now let go of a previous daemon's.
        links.remove_others();
        let watched = HashMap::try_from(
            ebpf.take_map("WATCHED")
                .ok_or(SensorError::MissingMap("WATCHED"))?,
        )
        .map_err(|source| SensorError::Map {
            map: "WATCHED",
            source,
        })?;
        let loss = PerCpuArray::try_from(
            ebpf.take_map("LOSS")
                .ok_or(SensorError::MissingMap("LOSS"))?,
        )
        .map_err(|source| SensorError::Map {
            map: "LOSS",
            source,
        })?;
        let policy = crate::enforcement::kernel::KernelPolicy::new(
            ebpf.take_map("POLICY")
                .ok_or(SensorError::MissingMap("POLICY"))?,
            ebpf.take_map("SYSTEMS")
                .ok_or(SensorError::MissingMap("SYSTEMS"))?,
        )?;
        Ok(Self {
            ebpf: Mutex::new(ebpf),
            root,
            held: Mutex::new(held),
            tampers: AtomicU64::new(0),
            last_tamper: Mutex::new(None),
            attached,
            offsets,
            watched: Mutex::new(watched),
            loss,
            policy,
        })
    }

    /// The pinned enforcement maps.
    pub const fn policy(&self) -> &crate::enforcement::kernel::KernelPolicy {
        &self.policy
    }

    /// Each attached hook, as `sensor: program -> hook`.
    pub fn attached(&self) -> &[String] {
        &self.attached
    }

    /// The offsets the programs were loaded with.
    pub const fn offsets(&self) -> &Offsets {
        &self.offsets
    }

    /// Takes the kernel's repeat counters of file opens (once).
    pub fn take_open_repeats(
        &mut self,
    ) -> Result<HashMap<MapData, OpenKey, OpenSeen>, SensorError> {
        let map = self
            .ebpf
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take_map("OPEN_SEEN")
            .ok_or(SensorError::MissingMap("OPEN_SEEN"))?;
        HashMap::try_from(map).map_err(|source| SensorError::Map {
            map: "OPEN_SEEN",
            source,
        })
    }

    /// Takes the per-cgroup loss counters (once).
    pub fn take_session_losses(&mut self) -> Result<loss::SessionLosses, SensorError> {
        let map = self
            .ebpf
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take_map("LOSS_BY_CGROUP")
            .ok_or(SensorError::MissingMap("LOSS_BY_CGROUP"))?;
        aya::maps::PerCpuHashMap::try_from(map)
            .map(loss::SessionLosses::new)
            .map_err(|source| SensorError::Map {
                map: "LOSS_BY_CGROUP",
                source,
            })
    }

    /// Takes the event ring buffer (once).
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, SensorError> {
        let map = self
            .ebpf
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take_map("EVENTS")
            .ok_or(SensorError::MissingMap("EVENTS"))?;
        RingBuf::try_from(map).map_err(|source| SensorError::Map {
            map: "EVENTS",
            source,
        })
    }

    /// Records lost per sensor since load, summed over CPUs.
    pub fn loss(&self) -> Result<[(&'static str, u64); SENSOR_COUNT as usize], SensorError> {
        let mut out = [("", 0); SENSOR_COUNT as usize];
        for (i, slot) in out.iter_mut().enumerate() {
            let values = self
                .loss
                .get(&(i as u32), 0)
                .map_err(|source| SensorError::Map {
                    map: "LOSS",
                    source,
                })?;
            *slot = (SENSOR_NAMES[i], values.iter().sum());
        }
        Ok(out)
    }

    /// Starts reporting activity of a cgroup (and only that cgroup, not its children).
    pub fn watch(&self, cgroup_id: u64) -> Result<(), SensorError> {
        let mut map = self
            .watched
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.insert(cgroup_id, vigil_common::watch::CONFIGURED, 0)
            .map_err(|source| SensorError::Map {
                map: "WATCHED",
                source,
            })
    }

    /// Stops reporting a cgroup added with [`Sensors::watch`].
    pub fn unwatch(&self, cgroup_id: u64) -> Result<(), SensorError> {
        let mut map = self
            .watched
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.get(&cgroup_id, 0).is_err() {
            return Ok(());
        }
        map.remove(&cgroup_id).map_err(|source| SensorError::Map {
            map: "WATCHED",
            source,
        })
    }
}

/// One link made by [`attach`]: the hook's label, the link, and whether it
/// is a cgroup link.
type Made = (String, FdLink, bool);

/// The links and pinned maps the daemon holds.
struct Held {
    links: Vec<guard::HeldLink>,
    maps: Vec<guard::HeldMap>,
}

/// What the kernel says about one of the daemon's links now.
#[derive(Clone, Debug)]
pub struct ProgramState {
    pub sensor: &'static str,
    pub program: &'static str,
    pub hook: String,
    /// The program is attached to its hook (from the link's kernel info).
    pub attached: bool,
    /// Kernel id of the link, 0 when it could not be queried.
    pub link_id: u32,
    /// Its pin is in place.
    pub pinned: bool,
    /// Times it was attached anew after a detach.
    pub reattached: u64,
    /// Why the state could not be read.
    pub error: Option<String>,
}

impl Sensors {
    /// Each link's state, asked of the kernel.
    pub fn programs(&self) -> Vec<ProgramState> {
        let held = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        held.links
            .iter()
            .map(|l| {
                let state = guard::link_state(&l.fd);
                ProgramState {
                    sensor: l.sensor,
                    program: l.program,
                    hook: l.hook.clone(),
                    attached: state.as_ref().is_ok_and(|s| s.attached),
                    link_id: state.as_ref().map_or(0, |s| s.id),
                    pinned: l.inode.is_some() && guard::pin_inode(&l.path) == l.inode,
                    reattached: l.reattached,
                    error: state.err().map(|e| e.to_string()),
                }
            })
            .collect()
    }

    /// Tamperings found since load.
    pub fn tampers(&self) -> u64 {
        self.tampers.load(Ordering::Relaxed)
    }

    /// The last tampering, in words.
    pub fn last_tamper(&self) -> Option<String> {
        self.last_tamper
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Checks every link and pinned map: re-attaches a detached cgroup link
    /// (and pins the new link in the old one's place) and puts back a pin
    /// that was removed or replaced. Returns what it found.
    pub fn check(&self) -> Vec<guard::Tamper> {
        let mut found = Vec::new();
        let mut held = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for l in &mut held.links {
            if l.cgroup && guard::link_state(&l.fd).is_ok_and(|s| !s.attached) {
                let (action, repaired) = match self.reattach(l) {
                    Ok(id) => (format!("re-attached as link {id}"), true),
                    Err(e) => (format!("re-attaching failed: {e}"), false),
                };
                found.push(guard::Tamper {
                    kind: guard::TamperKind::LinkDetached,
                    sensor: l.sensor,
                    object: l.program.to_owned(),
                    path: l.path.clone(),
                    action,
                    repaired,
                });
                continue;
            }
            if let Some((kind, result)) = guard::check_pin(&l.fd, &l.path, &mut l.inode) {
                found.push(tamper(kind, l.sensor, l.program, &l.path, result));
            }
        }
        for m in &mut held.maps {
            if let Some((kind, result)) = guard::check_pin(&m.fd, &m.path, &mut m.inode) {
                found.push(tamper(kind, "maps", &m.name, &m.path, result));
            }
        }
        drop(held);
        if let Some(last) = found.last() {
            self.tampers
                .fetch_add(found.len() as u64, Ordering::Relaxed);
            *self
                .last_tamper
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(format!(
                "{} of {} ({}): {}",
                last.kind.as_str(),
                last.object,
                last.path.display(),
                last.action
            ));
        }
        found
    }

    /// Attaches a cgroup program anew and pins the new link at the old path.
    fn reattach(&self, l: &mut guard::HeldLink) -> Result<u32, SensorError> {
        let mut ebpf = self
            .ebpf
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let program = ebpf
            .program_mut(l.program)
            .ok_or(SensorError::MissingProgram(l.program))?;
        let link = attach_cgroup(program, l.program, &self.root, false)?;
        drop(ebpf);
        let (pinned, fd, _) = pin_link(link, &l.path)?;
        let id = guard::link_state(&fd).map_or(0, |s| s.id);
        // The detached link goes with these handles.
        l.pinned = pinned;
        l.fd = fd;
        l.inode = guard::pin_inode(&l.path);
        l.reattached += 1;
        Ok(id)
    }
}

fn tamper(
    kind: guard::TamperKind,
    sensor: &'static str,
    object: &str,
    path: &Path,
    result: Result<(), String>,
) -> guard::Tamper {
    let (action, repaired) = match result {
        Ok(()) => ("re-pinned".to_owned(), true),
        Err(e) => (format!("re-pinning failed: {e}"), false),
    };
    guard::Tamper {
        kind,
        sensor,
        object: object.to_owned(),
        path: path.to_owned(),
        action,
        repaired,
    }
}

/// Loads one program and attaches it to its hooks; returns the links made.
fn attach(
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
fn attach_cgroup(
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
struct Links {
    root: PathBuf,
    dir: PathBuf,
    count: std::sync::atomic::AtomicU32,
}

impl Links {
    fn new(pin_dir: &Path) -> Result<Self, SensorError> {
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
    fn pin(
        &self,
        program: &str,
        link: FdLink,
    ) -> Result<(PinnedLink, OwnedFd, PathBuf), SensorError> {
        let n = self
            .count
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = self.dir.join(format!("{program}-{n}"));
        pin_link(link, &path)
    }

    /// Unpins (and so detaches) links of earlier daemons.
    fn remove_others(&self) {
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
fn pin_link(link: FdLink, path: &Path) -> Result<(PinnedLink, OwnedFd, PathBuf), SensorError> {
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

/// Removes everything pinned under `pin_dir` (programs detach, maps and
/// revocations go): `vigil run --cleanup`.
pub fn cleanup(pin_dir: &Path) -> std::io::Result<bool> {
    match std::fs::remove_dir_all(pin_dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Forwards aya-log diagnostics from the programs to `tracing` (via `log`).
fn spawn_log_reader(logger: aya_log::EbpfLogger<&'static dyn log::Log>) {
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    handle.spawn(async move {
        // SAFETY: the logger owns its ring buffer fd for as long as the AsyncFd lives.
        let Ok(mut fd) = (unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE)
        }) else {
            return;
        };
        loop {
            let Ok(mut guard) = fd.readable_mut().await else {
                return;
            };
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    });
}
