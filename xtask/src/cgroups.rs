//! cgroup v2 helpers for the tasks that start daemons (bench, demo).

use std::{
    fs,
    path::{Path, PathBuf},
};

/// Removes a cgroup and those below it, innermost first.
pub fn remove(dir: &Path) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            remove(&entry.path())?;
        }
    }
    fs::remove_dir(dir)
}

/// Where the cgroup v2 hierarchy is mounted, from `/proc/self/mountinfo`.
pub fn v2_mount() -> Option<PathBuf> {
    parse_v2_mount(&fs::read_to_string("/proc/self/mountinfo").ok()?)
}

fn parse_v2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (mount, fs) = line.split_once(" - ")?;
        (fs.split_whitespace().next() == Some("cgroup2"))
            .then(|| mount.split_whitespace().nth(4).map(PathBuf::from))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cgroup2_mount_after_the_separator() {
        let mountinfo = "\
24 1 253:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate
36 24 0:31 / /sys/fs/bpf rw,relatime shared:10 - bpf bpf rw
";
        assert_eq!(
            parse_v2_mount(mountinfo),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        assert_eq!(
            parse_v2_mount("24 1 253:0 / / rw - ext4 /dev/vda rw\n"),
            None
        );
    }
}
