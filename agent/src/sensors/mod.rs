//! Kernel sensors: loads Vigil's eBPF programs, attaches them, and gives the
//! daemon their ring buffer, loss counters and watch list.

mod attach;
pub mod batch;
pub mod decode;
pub mod guard;
mod kfunc;
pub mod loss;
mod state;
pub mod unix;
mod watched;

pub use state::{Figures, ProgramState, SensorState};
pub use watched::Watched;
pub mod offsets;

use std::{
    fs::File,
    path::{Path, PathBuf},
    sync::{Mutex, atomic::AtomicU64},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, Map, MapData, PerCpuArray, RingBuf},
    programs::ProgramError,
};

use attach::{LINK_SYSCALLS, Links, OPEN_SYSCALLS, PROGRAMS};
use vigil_common::{KernelConfig, Offsets, OpenKey, OpenSeen};

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
    #[error(transparent)]
    Kfunc(#[from] kfunc::KfuncError),
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
    #[error("listing the daemon's own threads: {0}")]
    OwnThreads(String),
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
    /// Read resolved paths by typed loads where the kernel allows them;
    /// false: by helper calls everywhere.
    pub typed_reads: bool,
}

/// Loads and attaches the unix socket programs where the kernel has their
/// hooks (Linux 6.7+); elsewhere the daemon runs without them and says so.
fn attach_unix(
    programs: Result<Vec<(&'static str, unix::RawProgram)>, String>,
    root: &File,
    links: &Links,
    held: &mut Held,
    attached: &mut Vec<String>,
) -> Result<unix::UnixHooks, SensorError> {
    let programs = match programs {
        Ok(p) => p,
        Err(why) => {
            tracing::warn!("unix socket hooks unavailable: {why}");
            return Ok(unix::UnixHooks::Unavailable(why));
        }
    };
    for (program, raw) in programs {
        let hook = "cgroup v2 root".to_owned();
        let link = match unix::attach(&raw, root) {
            Ok(l) => l,
            Err(e) => {
                let why = format!("attaching {program}: {e}");
                tracing::warn!("unix socket hooks unavailable: {why}");
                return Ok(unix::UnixHooks::Unavailable(why));
            }
        };
        let path = links.next_path(program);
        let (pinned, fd) = unix::pin_link(&link, &path)?;
        attached.push(format!("network: {program} -> {hook}"));
        held.links.push(guard::HeldLink {
            sensor: "network",
            program,
            hook,
            inode: guard::pin_inode(&path),
            path,
            pinned,
            fd,
            cgroup: true,
            reattached: 0,
            raw: Some(raw),
        });
    }
    Ok(unix::UnixHooks::Attached)
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
    /// Whether the unix socket hooks are in place.
    unix: unix::UnixHooks,
    /// Whether resolved paths are read by typed loads, or why not.
    typed_reads: Result<(), String>,
    offsets: Offsets,
    ring_buffer_bytes: u32,
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

/// Writes the daemon's present threads into `DAEMON_TASKS`: the syscalls
/// that reach for another process name a thread id, and the kernel
/// programs tell the daemon's from those.
fn seed_daemon_tasks(ebpf: &mut Ebpf) -> Result<(), SensorError> {
    const MAP: &str = "DAEMON_TASKS";
    let map = ebpf.map_mut(MAP).ok_or(SensorError::MissingMap(MAP))?;
    let mut tasks: HashMap<_, u32, u8> =
        HashMap::try_from(map).map_err(|source| SensorError::Map { map: MAP, source })?;
    let threads = procfs::process::Process::myself()
        .and_then(|me| me.tasks())
        .map_err(|e| SensorError::OwnThreads(e.to_string()))?;
    for t in threads.flatten() {
        let tid = u32::try_from(t.tid).unwrap_or(0);
        tasks
            .insert(tid, 1, 0)
            .map_err(|source| SensorError::Map { map: MAP, source })?;
    }
    Ok(())
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
        let mut layout = offsets::discover(&tracefs, Path::new(paths::KERNEL_BTF))?;
        let typed_reads = match layout.rdonly_cast {
            Some(_) if !opts.typed_reads => {
                layout.rdonly_cast = None;
                layout.offsets.types = vigil_common::TypeIds::NONE;
                Err("switched off (daemon.typed_reads = false)".to_owned())
            }
            Some(_) => Ok(()),
            None => Err(
                "this kernel has no bpf_rdonly_cast to untrusted memory (Linux 6.17): \
                 paths are read by helper calls"
                    .to_owned(),
            ),
        };
        let offsets = layout.offsets;
        let object = kfunc::resolve_casts(EBPF_OBJECT, layout.rdonly_cast)?;
        match &typed_reads {
            Ok(()) => tracing::info!(
                casts = object.casts,
                "resolved paths are read by typed loads"
            ),
            Err(why) => tracing::info!("typed reads unused: {why}"),
        }
        let (parent_id, parent_level) = opts.session_parent.unwrap_or((0, 0));
        let config = KernelConfig {
            daemon_tgid: std::process::id(),
            watch_all: u32::from(opts.watch_all),
            session_parent_id: parent_id,
            session_parent_level: parent_level,
            wake_bytes: opts.wake_bytes,
            open_nrs: OPEN_SYSCALLS,
            _pad: 0,
            link_nrs: LINK_SYSCALLS,
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
            .load(object.bytes())
            .map_err(SensorError::Object)?;
        // Before the logger takes its map: the unix programs use every map
        // the object has, each by the fd aya created it with.
        let unix_programs = unix::load_all(object.bytes(), &ebpf);
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
            for (hook, link, cgroup) in attach::attach(&mut ebpf, program, hooks, &root)? {
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
                    raw: None,
                });
            }
        }
        let unix = attach_unix(unix_programs, &root, &links, &mut held, &mut attached)?;
        // After the fork and exit programs are attached, which keep it up
        // to date from here on.
        seed_daemon_tasks(&mut ebpf)?;
        // Our links are in place: only now let go of a previous daemon's.
        links.remove_others();
        Ok(Self {
            ebpf: Mutex::new(ebpf),
            root,
            held: Mutex::new(held),
            tampers: AtomicU64::new(0),
            last_tamper: Mutex::new(None),
            attached,
            unix,
            typed_reads,
            offsets,
            ring_buffer_bytes: opts.ring_buffer_bytes,
        })
    }

    /// Whether the unix socket hooks are attached, and why not.
    #[must_use]
    pub const fn unix_hooks(&self) -> &unix::UnixHooks {
        &self.unix
    }

    /// Whether resolved paths are read by typed loads, and why not.
    pub const fn typed_reads(&self) -> &Result<(), String> {
        &self.typed_reads
    }

    /// Takes the pinned enforcement maps `POLICY`, `SYSTEMS` and
    /// `UNIX_SYSTEMS` (once), for the enforcer.
    pub fn take_policy_maps(&mut self) -> Result<(Map, Map, Map), SensorError> {
        let ebpf = self
            .ebpf
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let policy = ebpf
            .take_map("POLICY")
            .ok_or(SensorError::MissingMap("POLICY"))?;
        let systems = ebpf
            .take_map("SYSTEMS")
            .ok_or(SensorError::MissingMap("SYSTEMS"))?;
        let unix = ebpf
            .take_map("UNIX_SYSTEMS")
            .ok_or(SensorError::MissingMap("UNIX_SYSTEMS"))?;
        Ok((policy, systems, unix))
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

    /// Takes the per-sensor loss counters of the node (once).
    pub fn take_node_losses(&mut self) -> Result<loss::NodeLosses, SensorError> {
        let map = self
            .ebpf
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take_map("LOSS")
            .ok_or(SensorError::MissingMap("LOSS"))?;
        PerCpuArray::try_from(map)
            .map(loss::NodeLosses::new)
            .map_err(|source| SensorError::Map {
                map: "LOSS",
                source,
            })
    }

    /// Takes the kernel's set of watched cgroups (once).
    pub fn take_watched(&mut self) -> Result<Watched, SensorError> {
        let map = self
            .ebpf
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take_map("WATCHED")
            .ok_or(SensorError::MissingMap("WATCHED"))?;
        HashMap::try_from(map)
            .map(|m| Watched { map: Mutex::new(m) })
            .map_err(|source| SensorError::Map {
                map: "WATCHED",
                source,
            })
    }
}

/// The links and pinned maps the daemon holds.
struct Held {
    links: Vec<guard::HeldLink>,
    maps: Vec<guard::HeldMap>,
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
