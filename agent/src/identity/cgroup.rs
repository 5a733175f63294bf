//! cgroup v2: finding the hierarchy, managing the cgroups the daemon owns,
//! mapping the cgroup ids the kernel reports back to paths, and reading
//! container and pod identity out of the names container runtimes choose.
//!
//! Paths handled here are relative to the mount and start with `/`
//! (`/vigil/code-assistant/s-1`), the shape of the `0::` line of
//! `/proc/<pid>/cgroup`.
//!
//! On cgroup v2 the id that `bpf_get_current_cgroup_id` returns is the id of
//! the cgroup's kernfs node, and on 64-bit kernels kernfs uses that id as the
//! directory's inode number; so a `stat` of the directory gives the id with no
//! BPF involved.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use procfs::ProcessCGroups;
use procfs::process::{MountInfo, Process};

use crate::event::Workload;
use crate::paths;

/// Default minimum time between two full rescans of the hierarchy.
pub const DEFAULT_RESCAN_INTERVAL: Duration = Duration::from_millis(200);

/// Unknown ids remembered between rescans; more are answered without caching.
const MAX_UNKNOWN_IDS: usize = 65_536;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup2 filesystem is mounted according to {0}")]
    NoMount(&'static str),
    #[error(
        "invalid cgroup path {0:?}: expected an absolute path below the cgroup mount without '.' or '..' components"
    )]
    InvalidPath(String),
    #[error("refusing to remove the cgroup v2 root")]
    RemoveRoot,
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("malformed {path}: {detail}")]
    Malformed { path: PathBuf, detail: String },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CgroupError {
    let path = path.to_path_buf();
    move |source| CgroupError::Io { op, path, source }
}

/// The cgroup v2 mount point from the text of a `mountinfo` file.
///
/// Several `cgroup2` lines appear in containers that bind-mount sub-cgroups;
/// the one whose root field is `/` is the whole (namespace) hierarchy, so it
/// wins over the others, which are only used when it is absent. On a hybrid
/// host that is `/sys/fs/cgroup/unified`, on a pure v2 one `/sys/fs/cgroup`.
pub fn parse_mountinfo(text: &str) -> Option<PathBuf> {
    let mut fallback = None;
    // Line by line, so that a line procfs cannot parse costs only that line,
    // not the whole table.
    let mounts = text
        .lines()
        .filter_map(|line| MountInfo::from_line(line).ok())
        .filter(|m| m.fs_type == "cgroup2");
    for m in mounts {
        // procfs hands the mount point over as the kernel wrote it, with
        // spaces and the like still escaped.
        let mount_point = || unescape_mount_field(&m.mount_point.to_string_lossy());
        if m.root == "/" {
            return Some(mount_point());
        }
        fallback.get_or_insert_with(mount_point);
    }
    fallback
}

/// Undoes the kernel's octal escaping of space, tab, newline and backslash.
fn unescape_mount_field(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(octal) = bytes.get(i + 1..i + 4)
            && octal.iter().all(|b| (b'0'..=b'7').contains(b))
            && octal[0] <= b'3'
        {
            out.push(octal.iter().fold(0u8, |acc, b| acc * 8 + (b - b'0')));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    PathBuf::from(OsString::from_vec(out))
}

/// Nesting level of a relative cgroup path, as `bpf_get_current_ancestor_cgroup_id`
/// counts it: the root is level 0 and each component adds one.
pub fn level_of(rel: &str) -> usize {
    rel.split('/').filter(|c| !c.is_empty()).count()
}

/// The cgroup v2 path of a process (its `0::` line), or `None` when the
/// process is gone or is not in a v2 hierarchy.
pub fn cgroup_of_pid(pid: u32) -> Option<String> {
    cgroup_of(&Process::new(i32::try_from(pid).ok()?).ok()?)
}

/// [`cgroup_of_pid`] for a process already opened.
pub fn cgroup_of(process: &Process) -> Option<String> {
    v2_path(process.cgroups().ok()?)
}

/// The path of the cgroup v2 entry (hierarchy 0, no controllers).
fn v2_path(cgroups: ProcessCGroups) -> Option<String> {
    let path = cgroups
        .into_iter()
        .find(|c| c.hierarchy == 0 && c.controllers.is_empty())?
        .pathname;
    // The kernel marks a cgroup that was removed while the process still
    // pointed at it (possible for zombies).
    Some(match path.strip_suffix(" (deleted)") {
        Some(live) => live.to_owned(),
        None => path,
    })
}

/// A mounted cgroup v2 hierarchy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupFs {
    pub mount: PathBuf,
}

impl CgroupFs {
    pub fn new(mount: impl Into<PathBuf>) -> Self {
        Self {
            mount: mount.into(),
        }
    }

    /// Finds the node's cgroup v2 mount (`/sys/fs/cgroup` on pure-v2 nodes,
    /// `/sys/fs/cgroup/unified` on hybrid ones, anything else elsewhere).
    pub fn discover() -> Result<Self, CgroupError> {
        let text = fs::read_to_string(paths::MOUNTINFO)
            .map_err(io_err("read", Path::new(paths::MOUNTINFO)))?;
        parse_mountinfo(&text)
            .map(Self::new)
            .ok_or(CgroupError::NoMount(paths::MOUNTINFO))
    }

    /// The absolute directory of a relative cgroup path.
    pub fn abs(&self, rel: &str) -> Result<PathBuf, CgroupError> {
        if !rel.starts_with('/') || rel.contains('\0') {
            return Err(CgroupError::InvalidPath(rel.to_owned()));
        }
        let mut path = self.mount.clone();
        for comp in rel.split('/').filter(|c| !c.is_empty()) {
            if comp == "." || comp == ".." {
                return Err(CgroupError::InvalidPath(rel.to_owned()));
            }
            path.push(comp);
        }
        Ok(path)
    }

    /// The cgroup id (`bpf_get_current_cgroup_id`) of an existing cgroup.
    pub fn id_of(&self, rel: &str) -> Result<u64, CgroupError> {
        let path = self.abs(rel)?;
        fs::metadata(&path)
            .map(|m| m.ino())
            .map_err(io_err("stat cgroup", &path))
    }

    /// Creates the cgroup and any missing parents; returns its id.
    pub fn create(&self, rel: &str) -> Result<u64, CgroupError> {
        let path = self.abs(rel)?;
        fs::create_dir_all(&path).map_err(io_err("create cgroup", &path))?;
        self.id_of(rel)
    }

    /// Moves a whole process (all its threads) into the cgroup.
    pub fn move_pid(&self, rel: &str, pid: u32) -> Result<(), CgroupError> {
        let path = self.abs(rel)?.join("cgroup.procs");
        fs::write(&path, pid.to_string()).map_err(io_err("write", &path))
    }

    /// SIGKILLs every process in the cgroup and its descendants, atomically
    /// with respect to forks (kernel 5.14+).
    pub fn kill(&self, rel: &str) -> Result<(), CgroupError> {
        let path = self.abs(rel)?.join("cgroup.kill");
        fs::write(&path, "1").map_err(io_err("write", &path))
    }

    /// Whether any process lives in the cgroup or its descendants.
    pub fn populated(&self, rel: &str) -> Result<bool, CgroupError> {
        let path = self.abs(rel)?.join("cgroup.events");
        let text = fs::read_to_string(&path).map_err(io_err("read", &path))?;
        text.lines()
            .find_map(|l| l.strip_prefix("populated "))
            .map(|v| v.trim() == "1")
            .ok_or_else(|| CgroupError::Malformed {
                path,
                detail: "no 'populated' line".to_owned(),
            })
    }

    /// Removes the cgroup and all its descendants, deepest first. A cgroup
    /// that still holds processes fails with `EBUSY`; kill it and wait for
    /// [`Self::populated`] to turn false first. Missing cgroups are not an error.
    pub fn remove_tree(&self, rel: &str) -> Result<(), CgroupError> {
        if level_of(rel) == 0 {
            return Err(CgroupError::RemoveRoot);
        }
        remove_dir_tree(&self.abs(rel)?)
    }

    /// The processes (tgids) directly in the cgroup.
    pub fn procs(&self, rel: &str) -> Result<Vec<u32>, CgroupError> {
        let path = self.abs(rel)?.join("cgroup.procs");
        let text = fs::read_to_string(&path).map_err(io_err("read", &path))?;
        text.lines()
            .map(|l| {
                l.trim().parse().map_err(|_| CgroupError::Malformed {
                    path: path.clone(),
                    detail: format!("{l:?} is not a pid"),
                })
            })
            .collect()
    }
}

/// cgroup directories refuse `unlink` of their interface files but accept
/// `rmdir` once their child directories are gone, so only directories are
/// visited.
fn remove_dir_tree(dir: &Path) -> Result<(), CgroupError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("list cgroup", dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_err("list cgroup", dir))?;
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_dir_tree(&entry.path())?;
        }
    }
    match fs::remove_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("remove cgroup", dir)(e)),
        _ => Ok(()),
    }
}

/// Every cgroup below `mount`, by id.
fn scan(mount: &Path) -> Result<HashMap<u64, Arc<str>>, CgroupError> {
    let root = fs::metadata(mount).map_err(io_err("stat cgroup", mount))?;
    let mut ids = HashMap::new();
    ids.insert(root.ino(), Arc::from("/"));
    let mut pending = vec![(mount.to_path_buf(), String::new())];
    while let Some((dir, rel)) = pending.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            // A cgroup removed during the walk simply is not there any more.
            Err(_) if dir != mount => continue,
            Err(e) => return Err(io_err("list cgroup", &dir)(e)),
        };
        for entry in entries.flatten() {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let child = format!("{rel}/{}", entry.file_name().to_string_lossy());
            // readdir on kernfs reports the same inode number as stat.
            ids.insert(entry.ino(), Arc::from(child.as_str()));
            pending.push((entry.path(), child));
        }
    }
    Ok(ids)
}

/// cgroup id → relative path, for the event hot path.
///
/// Hits are one hash lookup and a reference-count increment. A miss walks
/// the whole hierarchy, but at most once per interval, so a flood of unknown
/// ids cannot turn every event into a filesystem walk. cgroup ids are never
/// reused on 64-bit kernels, which makes remembering misses safe.
#[derive(Debug)]
pub struct CgroupResolver {
    mount: PathBuf,
    known: HashMap<u64, Arc<str>>,
    unknown: HashSet<u64>,
    last_scan: Option<Instant>,
    interval: Duration,
}

impl CgroupResolver {
    /// A resolver that rescans at most once per `interval`; nothing is
    /// scanned until the first miss.
    pub fn new(fs: &CgroupFs, interval: Duration) -> Self {
        Self {
            mount: fs.mount.clone(),
            known: HashMap::new(),
            unknown: HashSet::new(),
            last_scan: None,
            interval,
        }
    }

    /// Records a cgroup the daemon created, so its events resolve without a scan.
    pub fn insert(&mut self, id: u64, rel: &str) {
        self.unknown.remove(&id);
        self.known.insert(id, Arc::from(rel));
    }

    /// The relative path of cgroup `id`, or `None` when it is not (or, within
    /// the rescan interval, not yet known to be) in the hierarchy.
    pub fn resolve(&mut self, id: u64) -> Option<Arc<str>> {
        if let Some(path) = self.known.get(&id) {
            return Some(Arc::clone(path));
        }
        if self.unknown.contains(&id) || self.last_scan.is_some_and(|t| t.elapsed() < self.interval)
        {
            return None;
        }
        if let Err(e) = self.rescan() {
            tracing::warn!(error = %e, "cgroup rescan failed");
            return None;
        }
        let found = self.known.get(&id).cloned();
        if found.is_none() && self.unknown.len() < MAX_UNKNOWN_IDS {
            self.unknown.insert(id);
        }
        found
    }

    /// Walks the hierarchy now, replacing what is known (which also forgets
    /// removed cgroups); returns the number of cgroups found.
    pub fn rescan(&mut self) -> Result<usize, CgroupError> {
        self.last_scan = Some(Instant::now());
        self.known = scan(&self.mount)?;
        self.unknown.clear();
        Ok(self.known.len())
    }

    /// Number of cgroups currently known.
    pub fn len(&self) -> usize {
        self.known.len()
    }

    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }
}

/// What one path component says about containers.
enum Component<'a> {
    Container {
        runtime: &'static str,
        id: &'a str,
        /// The slice named in the same component (`slice:prefix:id` form).
        slice: Option<&'a str>,
    },
    /// CRI-O's monitor process, a sibling of the container, not part of it.
    Conmon,
    Other,
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Runtimes by the prefix they give systemd scopes (`<prefix>-<id>.scope`),
/// which is also the middle part of the `slice:prefix:id` form.
const SCOPE_PREFIXES: [(&str, &str); 4] = [
    ("cri-containerd", "containerd"),
    ("crio", "crio"),
    ("docker", "docker"),
    ("libpod", "podman"),
];

fn runtime_of_prefix(prefix: &str) -> Option<&'static str> {
    SCOPE_PREFIXES
        .iter()
        .find(|(p, _)| *p == prefix)
        .map(|(_, runtime)| *runtime)
}

fn classify<'a>(comp: &'a str, ancestors: &[&str]) -> Component<'a> {
    // containerd's systemd driver, when it cannot reach systemd (kind, k3s),
    // keeps the "slice:prefix:id" cgroupsPath as one directory name.
    if let Some((slice, rest)) = comp.split_once(':') {
        let Some((prefix, id)) = rest.split_once(':') else {
            return Component::Other;
        };
        if !is_container_id(id) {
            return Component::Other;
        }
        if prefix == "crio-conmon" {
            return Component::Conmon;
        }
        return runtime_of_prefix(prefix).map_or(Component::Other, |runtime| {
            Component::Container {
                runtime,
                id,
                slice: Some(slice),
            }
        });
    }
    // CRI-O names scopes `crio-<id>` with both drivers (`.scope` only with systemd).
    let stem = comp.strip_suffix(".scope").unwrap_or(comp);
    if stem
        .strip_prefix("crio-conmon-")
        .is_some_and(is_container_id)
    {
        return Component::Conmon;
    }
    if let Some((prefix, id)) = stem.rsplit_once('-')
        && is_container_id(id)
        && let Some(runtime) = runtime_of_prefix(prefix)
    {
        return Component::Container {
            runtime,
            id,
            slice: None,
        };
    }
    if is_container_id(comp) {
        // With the cgroupfs driver the directory is the bare id; only its
        // place in the tree tells the runtime. Kubernetes' CRI runtime of
        // record for bare ids is containerd (dockershim is gone).
        if ancestors.last() == Some(&"docker") {
            return Component::Container {
                runtime: "docker",
                id: comp,
                slice: None,
            };
        }
        if ancestors.iter().any(|a| a.contains("kubepods")) {
            return Component::Container {
                runtime: "containerd",
                id: comp,
                slice: None,
            };
        }
    }
    Component::Other
}

/// A pod UID as it appears in a pod cgroup name, in canonical form.
///
/// systemd slices (`kubepods-burstable-pod<uid>.slice`) spell the UID with
/// `_` for `-` because `-` separates slice levels; cgroupfs (`pod<uid>`)
/// keeps the dashes. Static pods have a 32-hex UID without dashes.
fn pod_uid_of(comp: &str) -> Option<String> {
    let uid = match comp.strip_suffix(".slice") {
        Some(slice) => slice
            .rsplit('-')
            .next()?
            .strip_prefix("pod")?
            .replace('_', "-"),
        None => comp.strip_prefix("pod")?.to_owned(),
    };
    let hex = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit());
    let dashed = uid.len() == 36
        && uid.split('-').map(str::len).eq([8, 4, 4, 4, 12])
        && uid.split('-').all(hex);
    let plain = uid.len() == 32 && hex(&uid);
    (dashed || plain).then(|| uid.to_ascii_lowercase())
}

/// Container runtime, container id and pod UID from a cgroup path.
///
/// Processes in sub-cgroups of a container (`.../cri-containerd-<id>.scope/init`)
/// map to that container; the deepest container component wins, so nested
/// setups (kind nodes in Docker) yield the innermost container.
pub fn parse_workload(path: &str) -> Option<Workload> {
    let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    for (i, comp) in comps.iter().enumerate().rev() {
        let ancestors = &comps[..i];
        match classify(comp, ancestors) {
            Component::Other => {}
            Component::Conmon => return None,
            Component::Container { runtime, id, slice } => {
                let pod_uid = slice
                    .into_iter()
                    .chain(ancestors.iter().rev().copied())
                    .find_map(pod_uid_of);
                return Some(Workload {
                    runtime: runtime.to_owned(),
                    container_id: id.to_ascii_lowercase(),
                    pod_uid,
                    ..Workload::default()
                });
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::process::{Child, Command};
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    const ID: &str = "3f9a1c6e8b2d4f70a5c3e1b9d7f6a4c2e0b8d6f4a2c0e8b6d4f2a0c8e6b4d2f0";
    const UID: &str = "1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c6d";
    const UID_SYSTEMD: &str = "1a2b3c4d_5e6f_7a8b_9c0d_1e2f3a4b5c6d";

    fn workload(runtime: &str, pod_uid: Option<&str>) -> Workload {
        Workload {
            runtime: runtime.to_owned(),
            container_id: ID.to_owned(),
            pod_uid: pod_uid.map(str::to_owned),
            ..Workload::default()
        }
    }

    #[test]
    fn mountinfo_hybrid() {
        let text = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
        assert_eq!(
            parse_mountinfo(text),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
    }

    #[test]
    fn mountinfo_pure_v2_with_optional_fields() {
        let text = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";
        assert_eq!(parse_mountinfo(text), Some(PathBuf::from("/sys/fs/cgroup")));
    }

    #[test]
    fn mountinfo_without_cgroup2() {
        let text = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
garbage line
";
        assert_eq!(parse_mountinfo(text), None);
        assert_eq!(parse_mountinfo(""), None);
    }

    #[test]
    fn mountinfo_container_prefers_whole_hierarchy() {
        let text = "\
801 790 0:30 /kubepods.slice/pod.slice /run/sub rw,relatime master:9 - cgroup2 cgroup2 rw
802 790 0:30 / /sys/fs/cgroup ro,nosuid,relatime - cgroup2 cgroup ro
";
        assert_eq!(parse_mountinfo(text), Some(PathBuf::from("/sys/fs/cgroup")));
        let only_sub = "801 790 0:30 /docker/abc /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            parse_mountinfo(only_sub),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
    }

    #[test]
    fn mountinfo_unescapes_mount_point() {
        let text = r"50 1 0:40 / /mnt/my\040cgroup\134x\011y rw - cgroup2 none rw
";
        assert_eq!(
            parse_mountinfo(text),
            Some(PathBuf::from("/mnt/my cgroup\\x\ty"))
        );
        // Not an escape: kept as written.
        assert_eq!(
            unescape_mount_field(r"/a\9b\04"),
            PathBuf::from(r"/a\9b\04")
        );
    }

    fn v2_of(text: &str) -> Option<String> {
        v2_path(procfs::FromBufRead::from_buf_read(text.as_bytes()).unwrap())
    }

    #[test]
    fn v2_path_of_hybrid_and_pure_hosts() {
        let hybrid = "\
12:cpu,cpuacct:/user.slice
1:name=systemd:/user.slice/user-0.slice/session-3.scope
0::/vigil/code-assistant/s-1
";
        assert_eq!(v2_of(hybrid).as_deref(), Some("/vigil/code-assistant/s-1"));
        assert_eq!(v2_of("0::/\n").as_deref(), Some("/"));
        // Colons in a cgroup name belong to the path.
        assert_eq!(v2_of("0::/a:b/c\n").as_deref(), Some("/a:b/c"));
    }

    #[test]
    fn v2_path_of_a_removed_cgroup_and_of_none() {
        assert_eq!(
            v2_of("0::/vigil/gone (deleted)\n").as_deref(),
            Some("/vigil/gone")
        );
        assert_eq!(v2_of("4:memory:/x\n1:name=systemd:/y\n"), None);
        assert_eq!(v2_of(""), None);
    }

    #[test]
    fn cgroup_of_this_process_matches_its_procfs_file() {
        let text = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let expected = text
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .map(str::to_owned);
        assert_eq!(cgroup_of_pid(std::process::id()), expected);
        assert_eq!(cgroup_of_pid(u32::MAX), None);
    }

    #[test]
    fn levels() {
        assert_eq!(level_of("/"), 0);
        assert_eq!(level_of(""), 0);
        assert_eq!(level_of("/vigil"), 1);
        assert_eq!(level_of("/vigil/code-assistant/s-1"), 3);
        assert_eq!(level_of("/vigil//a/"), 2);
    }

    #[test]
    fn abs_rejects_escapes() {
        let fs = CgroupFs::new("/sys/fs/cgroup");
        assert_eq!(fs.abs("/").unwrap(), PathBuf::from("/sys/fs/cgroup"));
        assert_eq!(
            fs.abs("/vigil/a").unwrap(),
            PathBuf::from("/sys/fs/cgroup/vigil/a")
        );
        for bad in ["vigil", "/vigil/../etc", "/./x", "/a\0b", ""] {
            assert!(
                matches!(fs.abs(bad), Err(CgroupError::InvalidPath(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(fs.remove_tree("/"), Err(CgroupError::RemoveRoot)));
    }

    #[test]
    fn containerd_systemd_driver() {
        for qos in ["burstable", "besteffort"] {
            let path = format!(
                "/kubepods.slice/kubepods-{qos}.slice/kubepods-{qos}-pod{UID_SYSTEMD}.slice/cri-containerd-{ID}.scope"
            );
            assert_eq!(
                parse_workload(&path),
                Some(workload("containerd", Some(UID)))
            );
        }
    }

    #[test]
    fn containerd_cgroupfs_driver() {
        let path = format!("/kubepods/burstable/pod{UID}/{ID}");
        assert_eq!(
            parse_workload(&path),
            Some(workload("containerd", Some(UID)))
        );
    }

    #[test]
    fn guaranteed_qos() {
        let systemd =
            format!("/kubepods.slice/kubepods-pod{UID_SYSTEMD}.slice/cri-containerd-{ID}.scope");
        assert_eq!(
            parse_workload(&systemd),
            Some(workload("containerd", Some(UID)))
        );
        let cgroupfs = format!("/kubepods/pod{UID}/{ID}");
        assert_eq!(
            parse_workload(&cgroupfs),
            Some(workload("containerd", Some(UID)))
        );
    }

    #[test]
    fn crio() {
        let systemd = format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_SYSTEMD}.slice/crio-{ID}.scope"
        );
        assert_eq!(parse_workload(&systemd), Some(workload("crio", Some(UID))));
        let cgroupfs = format!("/kubepods/besteffort/pod{UID}/crio-{ID}");
        assert_eq!(parse_workload(&cgroupfs), Some(workload("crio", Some(UID))));
        let conmon = format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_SYSTEMD}.slice/crio-conmon-{ID}.scope"
        );
        assert_eq!(parse_workload(&conmon), None);
        assert_eq!(
            parse_workload(&format!("/kubepods/pod{UID}/crio-conmon-{ID}")),
            None
        );
    }

    #[test]
    fn docker() {
        assert_eq!(
            parse_workload(&format!("/system.slice/docker-{ID}.scope")),
            Some(workload("docker", None))
        );
        assert_eq!(
            parse_workload(&format!("/docker/{ID}")),
            Some(workload("docker", None))
        );
        let k8s = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SYSTEMD}.slice/docker-{ID}.scope"
        );
        assert_eq!(parse_workload(&k8s), Some(workload("docker", Some(UID))));
    }

    #[test]
    fn podman() {
        assert_eq!(
            parse_workload(&format!("/machine.slice/libpod-{ID}.scope/container")),
            Some(workload("podman", None))
        );
    }

    #[test]
    fn nested_kind_and_k3s() {
        let outer = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        // kind node container on the host, cgroupfs driver inside it.
        let kind = format!("/docker/{outer}/kubepods/burstable/pod{UID}/{ID}");
        assert_eq!(
            parse_workload(&kind),
            Some(workload("containerd", Some(UID)))
        );
        // kind with cgroup root /kubelet and the systemd driver.
        let kubelet = format!(
            "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_SYSTEMD}.slice/cri-containerd-{ID}.scope"
        );
        assert_eq!(
            parse_workload(&kubelet),
            Some(workload("containerd", Some(UID)))
        );
        // containerd's "slice:prefix:id" form kept as one directory.
        let colon = format!(
            "/system.slice/containerd.service/kubepods-burstable-pod{UID_SYSTEMD}.slice:cri-containerd:{ID}"
        );
        assert_eq!(
            parse_workload(&colon),
            Some(workload("containerd", Some(UID)))
        );
        let colon_crio = format!("/kubepods-pod{UID_SYSTEMD}.slice:crio:{ID}");
        assert_eq!(
            parse_workload(&colon_crio),
            Some(workload("crio", Some(UID)))
        );
        assert_eq!(parse_workload(&format!("/x.slice:crio-conmon:{ID}")), None);
    }

    #[test]
    fn sub_cgroups_map_to_their_container() {
        let path = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SYSTEMD}.slice/cri-containerd-{ID}.scope/init"
        );
        assert_eq!(
            parse_workload(&path),
            Some(workload("containerd", Some(UID)))
        );
        let deep = format!("/kubepods/pod{UID}/{ID}/a/b");
        assert_eq!(
            parse_workload(&deep),
            Some(workload("containerd", Some(UID)))
        );
    }

    #[test]
    fn ids_are_lowercased_and_static_pod_uids_kept() {
        let upper = ID.to_ascii_uppercase();
        let static_uid = "0123456789abcdef0123456789abcdef";
        let path = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{static_uid}.slice/cri-containerd-{upper}.scope"
        );
        let w = parse_workload(&path).unwrap();
        assert_eq!(w.container_id, ID);
        assert_eq!(w.pod_uid.as_deref(), Some(static_uid));
    }

    #[test]
    fn non_container_paths() {
        let short = &ID[..12];
        let non_hex = format!("{}g", &ID[..63]);
        for path in [
            "/user.slice/user-0.slice/session-1.scope".to_owned(),
            "/".to_owned(),
            String::new(),
            "/system.slice/containerd.service".to_owned(),
            format!("/kubepods/burstable/pod{UID}"),
            format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SYSTEMD}.slice"
            ),
            format!("/system.slice/docker-{short}.scope"),
            format!("/system.slice/docker-{non_hex}.scope"),
            format!("/kubepods/pod{UID}/{non_hex}"),
            format!("/system.slice/docker-{ID}0.scope"),
            format!("/system.slice/unknown-{ID}.scope"),
            // A bare id outside Kubernetes and Docker names no runtime.
            format!("/default/{ID}"),
            format!("/a:cri-containerd:{short}"),
        ] {
            assert_eq!(parse_workload(&path), None, "{path}");
        }
    }

    #[test]
    fn malformed_pod_uids_are_dropped() {
        for pod in [
            "podxyz",
            "pod1a2b3c4d-5e6f-7a8b-9c0d",
            "pod1a2b3c4d_5e6f_7a8b_9c0d_1e2f3a4b5c6d",
        ] {
            let path = format!("/kubepods/{pod}/{ID}");
            assert_eq!(
                parse_workload(&path),
                Some(workload("containerd", None)),
                "{path}"
            );
        }
    }

    // ---- against the real hierarchy (root) ----

    /// A uniquely named cgroup removed on drop.
    struct TempCgroup {
        fs: CgroupFs,
        rel: String,
    }

    impl TempCgroup {
        fn new() -> Self {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let fs = CgroupFs::discover().expect("cgroup v2 mount");
            let rel = format!(
                "/vigil-test-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            );
            Self { fs, rel }
        }
    }

    impl Drop for TempCgroup {
        fn drop(&mut self) {
            let _ = self.fs.kill(&self.rel);
            for _ in 0..100 {
                if self.fs.remove_tree(&self.rel).is_ok() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// The id the kernel exports for a kernfs node through file handles,
    /// independently of the inode number.
    fn handle_id(path: &Path) -> u64 {
        #[repr(C)]
        struct Handle {
            bytes: u32,
            kind: i32,
            data: [u8; 64],
        }
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        let mut h = Handle {
            bytes: 64,
            kind: 0,
            data: [0; 64],
        };
        let mut mount_id = 0;
        // SAFETY: `h` starts with the `file_handle` header and has room for
        // `bytes` bytes of handle; `c` is NUL-terminated.
        let rc = unsafe {
            libc::name_to_handle_at(
                libc::AT_FDCWD,
                c.as_ptr(),
                std::ptr::from_mut(&mut h).cast(),
                &raw mut mount_id,
                0,
            )
        };
        assert_eq!(rc, 0, "name_to_handle_at: {}", io::Error::last_os_error());
        assert_eq!(h.bytes, 8);
        u64::from_ne_bytes(h.data[..8].try_into().unwrap())
    }

    fn sleeper() -> Child {
        Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep")
    }

    #[test]
    fn discovers_a_live_hierarchy() {
        let fs = CgroupFs::discover().unwrap();
        assert!(
            fs.mount.join("cgroup.procs").is_file(),
            "{}",
            fs.mount.display()
        );
        assert_eq!(fs.id_of("/").unwrap(), handle_id(&fs.mount));
    }

    #[test]
    fn ids_are_kernfs_ids() {
        let t = TempCgroup::new();
        let nested = format!("{}/a/b", t.rel);
        let id = t.fs.create(&nested).unwrap();
        assert_eq!(id, t.fs.id_of(&nested).unwrap());
        assert_eq!(id, handle_id(&t.fs.abs(&nested).unwrap()));
        assert_ne!(id, t.fs.id_of(&t.rel).unwrap());
        // Creating again is not an error and keeps the id.
        assert_eq!(t.fs.create(&nested).unwrap(), id);
    }

    #[test]
    fn move_list_kill_remove() {
        let t = TempCgroup::new();
        let sub = format!("{}/sub", t.rel);
        t.fs.create(&t.rel).unwrap();
        t.fs.create(&sub).unwrap();
        assert!(!t.fs.populated(&t.rel).unwrap());

        let mut top = sleeper();
        let mut below = sleeper();
        t.fs.move_pid(&t.rel, top.id()).unwrap();
        t.fs.move_pid(&sub, below.id()).unwrap();
        assert_eq!(t.fs.procs(&t.rel).unwrap(), vec![top.id()]);
        assert_eq!(t.fs.procs(&sub).unwrap(), vec![below.id()]);
        assert_eq!(cgroup_of_pid(top.id()).as_deref(), Some(t.rel.as_str()));
        assert_eq!(cgroup_of_pid(below.id()).as_deref(), Some(sub.as_str()));
        assert!(t.fs.populated(&t.rel).unwrap());

        // Busy cgroups cannot be removed.
        assert!(matches!(
            t.fs.remove_tree(&t.rel),
            Err(CgroupError::Io { .. })
        ));

        t.fs.kill(&t.rel).unwrap();
        for child in [&mut top, &mut below] {
            let status = child.wait().unwrap();
            assert_eq!(
                std::os::unix::process::ExitStatusExt::signal(&status),
                Some(libc::SIGKILL)
            );
        }
        assert!(!t.fs.populated(&t.rel).unwrap());
        t.fs.remove_tree(&t.rel).unwrap();
        assert!(!t.fs.abs(&t.rel).unwrap().exists());
        // Removing what is gone is fine.
        t.fs.remove_tree(&t.rel).unwrap();
        assert!(matches!(
            t.fs.move_pid(&t.rel, std::process::id()),
            Err(CgroupError::Io { .. })
        ));
    }

    #[test]
    fn cgroup_of_missing_pid() {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert_eq!(cgroup_of_pid(pid), None);
        assert!(cgroup_of_pid(std::process::id()).is_some_and(|p| p.starts_with('/')));
    }

    #[test]
    fn resolver_rescans_on_miss_and_forgets_removed() {
        let t = TempCgroup::new();
        let mut resolver = CgroupResolver::new(&t.fs, Duration::ZERO);
        let root = t.fs.id_of("/").unwrap();
        assert_eq!(resolver.resolve(root).as_deref(), Some("/"));

        let nested = format!("{}/x", t.rel);
        let id = t.fs.create(&nested).unwrap();
        assert_eq!(resolver.resolve(id).as_deref(), Some(nested.as_str()));
        let parent = t.fs.id_of(&t.rel).unwrap();
        assert_eq!(resolver.resolve(parent).as_deref(), Some(t.rel.as_str()));

        t.fs.remove_tree(&t.rel).unwrap();
        resolver.rescan().unwrap();
        assert_eq!(resolver.resolve(id), None);
        assert_eq!(resolver.resolve(parent), None);
    }

    #[test]
    fn resolver_throttles_rescans() {
        let t = TempCgroup::new();
        let mut resolver = CgroupResolver::new(&t.fs, Duration::from_hours(1));
        // The first miss scans; ids that never existed stay unknown.
        assert_eq!(resolver.resolve(u64::MAX), None);
        assert!(!resolver.is_empty());

        // A cgroup created after that scan is not found by walking again
        // within the interval...
        let id = t.fs.create(&t.rel).unwrap();
        assert_eq!(resolver.resolve(id), None);
        // ...but resolves once the daemon registers it.
        resolver.insert(id, &t.rel);
        assert_eq!(resolver.resolve(id).as_deref(), Some(t.rel.as_str()));
    }

    #[test]
    fn resolver_remembers_misses_until_next_scan() {
        let t = TempCgroup::new();
        let mut resolver = CgroupResolver::new(&t.fs, Duration::ZERO);
        assert_eq!(resolver.resolve(u64::MAX), None);
        assert!(resolver.unknown.contains(&u64::MAX));
        let scanned_at = resolver.last_scan;
        assert_eq!(resolver.resolve(u64::MAX), None);
        assert_eq!(
            resolver.last_scan, scanned_at,
            "a known miss must not rescan"
        );

        // A new id does rescan, which finds new cgroups and resets the misses.
        let id = t.fs.create(&t.rel).unwrap();
        assert_eq!(resolver.resolve(id).as_deref(), Some(t.rel.as_str()));
        assert_ne!(resolver.last_scan, scanned_at);
        assert!(resolver.unknown.is_empty());
    }
}
