//! cgroup v2 helpers: where the hierarchy is, and removing the cgroups that
//! sessions and simulated containers leave.

use std::{
    io,
    path::{Path, PathBuf},
    time::Duration,
};

/// Where the cgroup v2 hierarchy is mounted. A mount of its root is
/// preferred over one of a subtree (a container may see both).
#[must_use]
pub fn v2_mount() -> Option<PathBuf> {
    let mounts = procfs::process::Process::myself().ok()?.mountinfo().ok()?;
    pick_v2_mount(
        mounts
            .into_iter()
            .map(|m| (m.fs_type, m.root, m.mount_point)),
    )
}

/// The mount point of the first `cgroup2` mount of the hierarchy's root, or
/// else of the first `cgroup2` mount, from `(type, root, mount point)`.
fn pick_v2_mount(mounts: impl Iterator<Item = (String, String, PathBuf)>) -> Option<PathBuf> {
    let mut fallback = None;
    for (fs_type, root, mount_point) in mounts {
        if fs_type != "cgroup2" {
            continue;
        }
        if root == "/" {
            return Some(mount_point);
        }
        fallback.get_or_insert(mount_point);
    }
    fallback
}

/// Kills every process in the cgroup `dir` and below it.
pub fn kill(dir: &Path) -> io::Result<()> {
    std::fs::write(dir.join("cgroup.kill"), "1")
}

/// Removes the cgroup `dir` and those below it, innermost first. A cgroup
/// can only go once its last task has exited, which takes a moment after
/// [`kill`]: this tries for up to two seconds.
pub fn remove(dir: &Path) -> io::Result<()> {
    // Nothing to wait for when it is not there.
    std::fs::symlink_metadata(dir)?;
    let mut result = remove_once(dir);
    for _ in 0..100 {
        if result.is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        result = remove_once(dir);
    }
    result
}

fn remove_once(dir: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            remove_once(&entry.path())?;
        }
    }
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(fs_type: &str, root: &str, at: &str) -> (String, String, PathBuf) {
        (fs_type.into(), root.into(), at.into())
    }

    #[test]
    fn the_mount_of_the_hierarchy_root_is_preferred() {
        let mounts = [
            mount("ext4", "/", "/"),
            mount("cgroup2", "/kubepods/pod1", "/sys/fs/cgroup"),
            mount("cgroup2", "/", "/host/sys/fs/cgroup"),
            mount("bpf", "/", "/sys/fs/bpf"),
        ];
        assert_eq!(
            pick_v2_mount(mounts.clone().into_iter()),
            Some(PathBuf::from("/host/sys/fs/cgroup"))
        );
        assert_eq!(
            pick_v2_mount(mounts[..2].iter().cloned()),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        assert_eq!(pick_v2_mount([mount("ext4", "/", "/")].into_iter()), None);
    }

    #[test]
    fn trees_are_removed_innermost_first() {
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path().join("top");
        std::fs::create_dir_all(top.join("a/b")).unwrap();
        std::fs::create_dir_all(top.join("c")).unwrap();
        remove(&top).unwrap();
        assert!(!top.exists());
        assert!(remove(&top).is_err(), "a cgroup that is not there");
    }
}
