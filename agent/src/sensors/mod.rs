//! Kernel sensors: loads Vigil's eBPF programs, attaches them, and gives the
//! daemon their ring buffer, loss counters and watch list.

pub mod decode;
pub mod loss;
pub mod offsets;

use std::{
    fs::File,
    path::{Path, PathBuf},
    sync::Mutex,
};

use aya::programs::links::FdLink;
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
    // Dropping `Ebpf` detaches every program; it lives as long as the sensors.
    ebpf: Ebpf,
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
    let mounted = std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| {
            let mut f = l.split_whitespace();
            f.nth(1) == Some(paths::BPFFS) && f.next() == Some("bpf")
        });
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
        for &(name, sensor, hooks) in PROGRAMS {
            for hook in attach(&mut ebpf, name, hooks, &root, &links)? {
                attached.push(format!("{sensor}: {name} -> {hook}"));
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
            ebpf,
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

/// Loads one program and attaches it to its hooks; returns the hooks attached.
fn attach(
    ebpf: &mut Ebpf,
    name: &'static str,
    hooks: &[Hook],
    root: &File,
    links: &Links,
) -> Result<Vec<String>, SensorError> {
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
                links.pin(name, FdLink::try_from(link))?;
                done.push(label);
            }
        }
        Some(Hook::Raw(tp_name)) => {
            let p: &mut RawTracePoint = program.try_into().map_err(|e| load_error(name, e))?;
            p.load().map_err(|e| load_error(name, e))?;
            let label = format!("raw_tracepoint/{tp_name}");
            let id = p.attach(tp_name).map_err(attach_err(label.clone()))?;
            // Pinned like the others.
            let link = p.take_link(id).map_err(attach_err(label.clone()))?;
            links.pin(name, Ok(FdLink::from(link)))?;
            done.push(label);
        }
        Some(Hook::CgroupRoot) => {
            // Through bpf_link (kernel >= 5.7) programs of several daemons
            // coexist at the root; the ALLOW_MULTI flag is for the legacy
            // attach API and bpf_link_create rejects it.
            let label = "cgroup v2 root".to_owned();
            if let Ok(p) = <&mut CgroupSockAddr>::try_from(&mut *program) {
                p.load().map_err(|e| load_error(name, e))?;
                let id = p
                    .attach(root, CgroupAttachMode::Single)
                    .map_err(attach_err(label.clone()))?;
                let link = p.take_link(id).map_err(attach_err(label.clone()))?;
                links.pin(name, FdLink::try_from(link))?;
            } else {
                let p: &mut SockOps = program.try_into().map_err(|e| load_error(name, e))?;
                p.load().map_err(|e| load_error(name, e))?;
                let id = p
                    .attach(root, CgroupAttachMode::Single)
                    .map_err(attach_err(label.clone()))?;
                let link = p.take_link(id).map_err(attach_err(label.clone()))?;
                links.pin(name, FdLink::try_from(link))?;
            }
            done.push(label);
        }
        Some(&Hook::CgroupSkbRoot { egress }) => {
            let (label, kind) = if egress {
                ("cgroup v2 root (egress)", CgroupSkbAttachType::Egress)
            } else {
                ("cgroup v2 root (ingress)", CgroupSkbAttachType::Ingress)
            };
            let label = label.to_owned();
            let p: &mut CgroupSkb = program.try_into().map_err(|e| load_error(name, e))?;
            p.load().map_err(|e| load_error(name, e))?;
            let id = p
                .attach(root, kind, CgroupAttachMode::Single)
                .map_err(attach_err(label.clone()))?;
            let link = p.take_link(id).map_err(attach_err(label.clone()))?;
            links.pin(name, FdLink::try_from(link))?;
            done.push(label);
        }
        None => {}
    }
    Ok(done)
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

    fn pin(
        &self,
        program: &str,
        link: Result<FdLink, aya::programs::links::LinkError>,
    ) -> Result<(), SensorError> {
        let n = self
            .count
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = self.dir.join(format!("{program}-{n}"));
        let err = |message: String| SensorError::Pin {
            path: path.clone(),
            message,
        };
        let link = link.map_err(|e| err(e.to_string()))?;
        // The pinned link outlives this handle; dropping it keeps the pin.
        link.pin(&path).map_err(|e| err(e.to_string()))?;
        Ok(())
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
