//! Self-protection of the pinned objects: the daemon holds its own fd for
//! every link and pinned map, puts back a pin that was removed or replaced,
//! and re-attaches a cgroup link another process detached.
//!
//! Pins exist so that programs and enforcement survive the daemon's death;
//! while the daemon runs they are not what keeps anything attached (the
//! fds held here are). A root process can still detach a cgroup link with
//! `BPF_LINK_DETACH`, which no fd prevents; [`Guard::check`] sees it in the
//! link's kernel info and attaches a new link.

use std::sync::atomic::Ordering;

use super::attach::{attach_cgroup, pin_link};
use super::{ProgramState, SensorError, Sensors};
use std::{
    ffi::CString,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    os::unix::{ffi::OsStrExt as _, fs::MetadataExt as _},
    path::{Path, PathBuf},
};

use aya::programs::links::PinnedLink;

const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
/// `bpf_link_type`: links that attach a program to a cgroup.
const BPF_LINK_TYPE_CGROUP: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("{call} on {path}: {source}")]
    Syscall {
        call: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("path {0} has a NUL byte")]
    Path(PathBuf),
}

/// `bpf_attr` for `BPF_OBJ_PIN` / `BPF_OBJ_GET`.
#[repr(C)]
#[derive(Default)]
struct ObjAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

/// `bpf_attr` for `BPF_OBJ_GET_INFO_BY_FD`.
#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

pub(super) fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<i64> {
    // SAFETY: `attr` is a valid `bpf_attr` prefix for `cmd`, as large as its size says.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr).cast::<libc::c_void>(),
            std::mem::size_of::<T>(),
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn c_path(path: &Path) -> Result<CString, GuardError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| GuardError::Path(path.to_owned()))
}

/// Pins the object behind `fd` at `path`.
pub fn pin(fd: &OwnedFd, path: &Path) -> Result<(), GuardError> {
    let name = c_path(path)?;
    let mut attr = ObjAttr {
        pathname: name.as_ptr() as u64,
        bpf_fd: u32::try_from(fd.as_raw_fd()).unwrap_or(u32::MAX),
        file_flags: 0,
    };
    bpf(BPF_OBJ_PIN, &mut attr)
        .map(drop)
        .map_err(|source| GuardError::Syscall {
            call: "BPF_OBJ_PIN",
            path: path.to_owned(),
            source,
        })
}

/// Opens a new fd for the object pinned at `path`.
pub fn open_pin(path: &Path) -> Result<OwnedFd, GuardError> {
    let name = c_path(path)?;
    let mut attr = ObjAttr {
        pathname: name.as_ptr() as u64,
        ..ObjAttr::default()
    };
    let fd = bpf(BPF_OBJ_GET, &mut attr).map_err(|source| GuardError::Syscall {
        call: "BPF_OBJ_GET",
        path: path.to_owned(),
        source,
    })?;
    // SAFETY: BPF_OBJ_GET returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(i32::try_from(fd).unwrap_or(-1)) })
}

/// What the kernel says about a link now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkState {
    pub id: u32,
    pub prog_id: u32,
    /// Whether the link still ties its program to its hook. A cgroup link
    /// that was detached reports no cgroup; the other links this daemon
    /// makes (tracepoints) cannot be detached while an fd is open.
    pub attached: bool,
}

/// `BPF_OBJ_GET_INFO_BY_FD` of a link.
pub fn link_state(fd: &OwnedFd) -> std::io::Result<LinkState> {
    // `struct bpf_link_info`: type, id, prog_id, then an 8-aligned union
    // whose cgroup member starts with the cgroup id.
    let mut info = [0_u64; 8];
    let mut attr = InfoAttr {
        bpf_fd: u32::try_from(fd.as_raw_fd()).unwrap_or(u32::MAX),
        info_len: 64,
        info: info.as_mut_ptr() as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    let link_type = (info[0] & 0xffff_ffff) as u32;
    let id = (info[0] >> 32) as u32;
    let prog_id = (info[1] & 0xffff_ffff) as u32;
    let attached = link_type != BPF_LINK_TYPE_CGROUP || info[2] != 0;
    Ok(LinkState {
        id,
        prog_id,
        attached,
    })
}

/// Runs and run time (ns) of every BPF program on the node, by id. A
/// program that cannot be queried is left out (its figures read 0).
pub fn program_runs() -> std::collections::HashMap<u32, (u64, u64)> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .map(|p| {
            let ns = u64::try_from(p.run_time().as_nanos()).unwrap_or(u64::MAX);
            (p.id(), (p.run_count(), ns))
        })
        .collect()
}

/// Whether `kernel.bpf_stats_enabled` is on. Statistics a process turned on
/// with a `BPF_ENABLE_STATS` descriptor do not show in the sysctl; the run
/// figures grow all the same.
pub fn program_stats_enabled() -> bool {
    std::fs::read_to_string(crate::paths::BPF_STATS_ENABLED).is_ok_and(|v| v.trim() == "1")
}

/// The inode of a pin, or `None` when nothing is pinned there.
pub fn pin_inode(path: &Path) -> Option<u64> {
    std::fs::symlink_metadata(path).ok().map(|m| m.ino())
}

/// How a pin or link was tampered with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TamperKind {
    /// The pin file is gone.
    PinRemoved,
    /// Another object (or another pin of the same one) is at the path.
    PinReplaced,
    /// The link no longer attaches its program (`BPF_LINK_DETACH`).
    LinkDetached,
}

impl TamperKind {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::PinRemoved => "pin_removed",
            Self::PinReplaced => "pin_replaced",
            Self::LinkDetached => "link_detached",
        }
    }
}

/// One tampering found by a check, and what the daemon did about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tamper {
    pub kind: TamperKind,
    /// The sensor of the program (`process`, `network`, `file`), or `maps`.
    pub sensor: &'static str,
    /// The program, or the map's name.
    pub object: String,
    pub path: PathBuf,
    /// `re-pinned`, `re-attached as link N`, or what failed.
    pub action: String,
    /// Whether the object is back in place.
    pub repaired: bool,
}

/// A link this daemon made and holds.
pub struct HeldLink {
    pub sensor: &'static str,
    pub program: &'static str,
    pub hook: String,
    pub path: PathBuf,
    /// aya's handle; dropping it would close one of the two fds.
    pub pinned: PinnedLink,
    /// The daemon's own fd of the link, for the kernel queries and re-pins.
    pub fd: OwnedFd,
    pub inode: Option<u64>,
    /// Whether the program is a cgroup program (its link can be detached).
    pub cgroup: bool,
    /// Times this hook was attached anew after a detach.
    pub reattached: u64,
    /// A program aya did not load (the unix socket hooks): attached anew
    /// from its own fd.
    pub raw: Option<super::unix::RawProgram>,
}

/// A pinned map this daemon holds.
pub struct HeldMap {
    pub name: String,
    pub path: PathBuf,
    pub fd: OwnedFd,
    pub inode: Option<u64>,
}

impl HeldMap {
    /// Holds every map pinned directly under `pin_dir`.
    pub fn all(pin_dir: &Path) -> Vec<Self> {
        let Ok(entries) = std::fs::read_dir(pin_dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in entries.filter_map(Result::ok) {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let path = e.path();
            match open_pin(&path) {
                Ok(fd) => out.push(Self {
                    name: e.file_name().to_string_lossy().into_owned(),
                    inode: pin_inode(&path),
                    path,
                    fd,
                }),
                Err(err) => tracing::warn!("holding pinned map: {err}"),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

/// Puts `fd` back at `path` if its pin is gone or replaced; returns what
/// was wrong, or `None` when the pin is ours.
pub fn check_pin(
    fd: &OwnedFd,
    path: &Path,
    inode: &mut Option<u64>,
) -> Option<(TamperKind, Result<(), String>)> {
    let now = pin_inode(path);
    let kind = match now {
        None => TamperKind::PinRemoved,
        Some(i) if Some(i) != *inode => TamperKind::PinReplaced,
        Some(_) => return None,
    };
    Some((kind, repin(fd, path, inode)))
}

/// Pins `fd` at `path`, replacing whatever is there.
pub fn repin(fd: &OwnedFd, path: &Path, inode: &mut Option<u64>) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("removing {}: {e}", path.display())),
    }
    pin(fd, path).map_err(|e| e.to_string())?;
    *inode = pin_inode(path);
    Ok(())
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
                let state = link_state(&l.fd);
                ProgramState {
                    program_id: state.as_ref().map_or(0, |s| s.prog_id),
                    sensor: l.sensor,
                    program: l.program,
                    hook: l.hook.clone(),
                    attached: state.as_ref().is_ok_and(|s| s.attached),
                    link_id: state.as_ref().map_or(0, |s| s.id),
                    pinned: l.inode.is_some() && pin_inode(&l.path) == l.inode,
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
    pub fn check(&self) -> Vec<Tamper> {
        let mut found = Vec::new();
        let mut held = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for l in &mut held.links {
            if l.cgroup && link_state(&l.fd).is_ok_and(|s| !s.attached) {
                let (action, repaired) = match self.reattach(l) {
                    Ok(id) => (format!("re-attached as link {id}"), true),
                    Err(e) => (format!("re-attaching failed: {e}"), false),
                };
                found.push(Tamper {
                    kind: TamperKind::LinkDetached,
                    sensor: l.sensor,
                    object: l.program.to_owned(),
                    path: l.path.clone(),
                    action,
                    repaired,
                });
                continue;
            }
            if let Some((kind, result)) = check_pin(&l.fd, &l.path, &mut l.inode) {
                found.push(tamper(kind, l.sensor, l.program, &l.path, result));
            }
        }
        for m in &mut held.maps {
            if let Some((kind, result)) = check_pin(&m.fd, &m.path, &mut m.inode) {
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
    fn reattach(&self, l: &mut HeldLink) -> Result<u32, SensorError> {
        if let Some(raw) = &l.raw {
            let link = super::unix::attach(raw, &self.root).map_err(|e| SensorError::Pin {
                path: l.path.clone(),
                message: format!("attaching {}: {e}", l.program),
            })?;
            let (pinned, fd) = super::unix::pin_link(&link, &l.path)?;
            let id = link_state(&fd).map_or(0, |s| s.id);
            l.pinned = pinned;
            l.fd = fd;
            l.inode = pin_inode(&l.path);
            l.reattached += 1;
            return Ok(id);
        }
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
        let id = link_state(&fd).map_or(0, |s| s.id);
        // The detached link goes with these handles.
        l.pinned = pinned;
        l.fd = fd;
        l.inode = pin_inode(&l.path);
        l.reattached += 1;
        Ok(id)
    }
}

fn tamper(
    kind: TamperKind,
    sensor: &'static str,
    object: &str,
    path: &Path,
    result: Result<(), String>,
) -> Tamper {
    let (action, repaired) = match result {
        Ok(()) => ("re-pinned".to_owned(), true),
        Err(e) => (format!("re-pinning failed: {e}"), false),
    };
    Tamper {
        kind,
        sensor,
        object: object.to_owned(),
        path: path.to_owned(),
        action,
        repaired,
    }
}
