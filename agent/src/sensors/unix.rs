//! Loading the unix socket programs (`vigil_connect_unix`,
//! `vigil_sendmsg_unix`), which aya 0.14 cannot: it knows no
//! `BPF_CGROUP_UNIX_CONNECT`/`_SENDMSG` attach type, and a cgroup `sock_addr`
//! program must be loaded with the attach type it is attached with. The
//! programs sit in sections aya parses; here the object is parsed again with
//! aya's own `aya-obj`, its map references are pointed at the maps aya
//! created (so both sets of programs share every map), and the programs are
//! loaded and attached with `bpf(2)`. On a kernel before Linux 6.7 the load
//! fails and [`UnixHooks::Unavailable`] says why.

use std::{
    collections::HashSet,
    fs::File,
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
    path::Path,
    sync::Arc,
};

use aya::{Ebpf, maps::Map, programs::links::PinnedLink};

use super::{SensorError, guard};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_CGROUP_SOCK_ADDR: u32 = 18;
/// `BPF_CGROUP_UNIX_CONNECT` (Linux 6.7).
const BPF_CGROUP_UNIX_CONNECT: u32 = 49;
/// `BPF_CGROUP_UNIX_SENDMSG` (Linux 6.7).
const BPF_CGROUP_UNIX_SENDMSG: u32 = 50;

/// The unix programs and the attach type each is loaded and attached with.
pub(super) const UNIX_PROGRAMS: &[(&str, u32)] = &[
    ("vigil_connect_unix", BPF_CGROUP_UNIX_CONNECT),
    ("vigil_sendmsg_unix", BPF_CGROUP_UNIX_SENDMSG),
];

/// `bpf_attr` for `BPF_PROG_LOAD`, up to `expected_attach_type`.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `bpf_attr` for `BPF_LINK_CREATE`, without the per-type union.
#[repr(C)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
}

/// A unix program loaded by this module: what a re-attach after a detach
/// needs.
#[derive(Clone, Debug)]
pub struct RawProgram {
    pub fd: Arc<OwnedFd>,
    pub attach_type: u32,
}

/// Whether the unix socket hooks are in place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UnixHooks {
    Attached,
    /// Why not (the kernel predates them, or refused the program).
    Unavailable(String),
}

/// The fd of the map behind aya's handle.
fn map_fd(map: &Map) -> Option<BorrowedFd<'_>> {
    let (Map::Array(data)
    | Map::HashMap(data)
    | Map::LpmTrie(data)
    | Map::LruHashMap(data)
    | Map::PerCpuArray(data)
    | Map::PerCpuHashMap(data)
    | Map::PerCpuLruHashMap(data)
    | Map::PerfEventArray(data)
    | Map::RingBuf(data)) = map
    else {
        return None;
    };
    Some(data.fd().as_fd())
}

/// A program's name, attach type and instructions.
type Prepared = (&'static str, u32, Vec<aya_obj::generated::bpf_insn>);

/// The unix programs' instructions, their map references resolved to the
/// maps `ebpf` holds.
fn instructions(object: &[u8], ebpf: &Ebpf) -> Result<Vec<Prepared>, String> {
    let mut obj = aya_obj::Object::parse(object).map_err(|e| e.to_string())?;
    let mut fds = Vec::new();
    for name in obj.maps.keys() {
        let map = ebpf
            .map(name)
            .ok_or_else(|| format!("map {name} was not created"))?;
        let fd = map_fd(map).ok_or_else(|| format!("map {name}: unexpected type"))?;
        fds.push((name.clone(), fd.as_raw_fd()));
    }
    let text_sections: HashSet<usize> = obj.functions.keys().map(|(s, _)| *s).collect();
    let maps = std::mem::take(&mut obj.maps);
    obj.relocate_maps(
        fds.iter()
            .filter_map(|(name, fd)| maps.get(name).map(|m| (name.as_str(), *fd, m))),
        &text_sections,
    )
    .map_err(|e| e.to_string())?;
    obj.relocate_calls(&text_sections)
        .map_err(|e| e.to_string())?;
    UNIX_PROGRAMS
        .iter()
        .map(|&(name, attach_type)| {
            let program = obj
                .programs
                .get(name)
                .ok_or_else(|| format!("no program {name} in the object"))?;
            let function = obj
                .functions
                .get(&program.function_key())
                .ok_or_else(|| format!("no function of {name}"))?;
            Ok((name, attach_type, function.instructions.clone()))
        })
        .collect()
}

/// Loads a program; on failure loads it again with the verifier's log on,
/// for the error (a log on every load could fail a large program with
/// `ENOSPC`).
fn load(
    name: &str,
    attach_type: u32,
    insns: &[aya_obj::generated::bpf_insn],
) -> Result<OwnedFd, String> {
    load_with_log(name, attach_type, insns, false)
        .or_else(|_| load_with_log(name, attach_type, insns, true))
}

fn load_with_log(
    name: &str,
    attach_type: u32,
    insns: &[aya_obj::generated::bpf_insn],
    with_log: bool,
) -> Result<OwnedFd, String> {
    let license = c"GPL";
    let mut log = vec![0u8; if with_log { 1 << 20 } else { 0 }];
    let mut prog_name = [0u8; 16];
    let n = name.len().min(15);
    prog_name[..n].copy_from_slice(&name.as_bytes()[..n]);
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
        insn_cnt: u32::try_from(insns.len()).map_err(|e| e.to_string())?,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: u32::from(with_log),
        log_size: u32::try_from(log.len()).unwrap_or(u32::MAX),
        log_buf: if with_log { log.as_mut_ptr() as u64 } else { 0 },
        prog_name,
        expected_attach_type: attach_type,
        ..ProgLoadAttr::default()
    };
    match guard::bpf(BPF_PROG_LOAD, &mut attr) {
        // SAFETY: BPF_PROG_LOAD returned a new fd that nothing else owns.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(i32::try_from(fd).unwrap_or(-1)) }),
        Err(e) => {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            let tail: Vec<&str> = text.lines().rev().take(4).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            Err(if tail.is_empty() {
                format!("BPF_PROG_LOAD: {e}")
            } else {
                format!("BPF_PROG_LOAD: {e}; verifier: {}", tail.join(" | "))
            })
        }
    }
}

/// Attaches a loaded unix program at the cgroup v2 root; returns the link.
pub(super) fn attach(program: &RawProgram, root: &File) -> std::io::Result<OwnedFd> {
    let mut attr = LinkCreateAttr {
        prog_fd: u32::try_from(program.fd.as_raw_fd()).unwrap_or(u32::MAX),
        target_fd: u32::try_from(root.as_raw_fd()).unwrap_or(u32::MAX),
        attach_type: program.attach_type,
        flags: 0,
    };
    let fd = guard::bpf(BPF_LINK_CREATE, &mut attr)?;
    // SAFETY: BPF_LINK_CREATE returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(i32::try_from(fd).unwrap_or(-1)) })
}

/// Pins a link made here at `path` (replacing what is there); returns aya's
/// handle of the pin and the daemon's own fd, as `attach::pin_link` does.
pub(super) fn pin_link(link: &OwnedFd, path: &Path) -> Result<(PinnedLink, OwnedFd), SensorError> {
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
    guard::pin(link, path).map_err(|e| err(e.to_string()))?;
    let pinned = PinnedLink::from_pin(path).map_err(|e| err(e.to_string()))?;
    let fd = guard::open_pin(path).map_err(|e| err(e.to_string()))?;
    Ok((pinned, fd))
}

/// Loads the unix programs; `Err` with the reason when this kernel cannot
/// have them (nothing is attached then).
pub(super) fn load_all(
    object: &[u8],
    ebpf: &Ebpf,
) -> Result<Vec<(&'static str, RawProgram)>, String> {
    let programs = instructions(object, ebpf)?;
    programs
        .into_iter()
        .map(|(name, attach_type, insns)| {
            let fd = load(name, attach_type, &insns).map_err(|e| format!("{name}: {e}"))?;
            Ok((
                name,
                RawProgram {
                    fd: Arc::new(fd),
                    attach_type,
                },
            ))
        })
        .collect()
}
