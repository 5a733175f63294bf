//! What the daemon's decisions rest on, as files: its pins (the maps that
//! hold revocations and scopes, the links of its programs), its state
//! directory (journal, revocations, task approvals), its config file, the
//! cgroups of its sessions, and its own `/proc` entry (memory, descriptors).
//! A watched process that opens one of them for writing, or gives one a new
//! name, is reaching for its governor: a `tamper_attempt`.

use std::path::Path;

use crate::event::{Access, Event, Payload};

/// The guarded paths, each with what it is.
#[derive(Debug, Default)]
pub struct Guarded {
    /// `(path, what)`: the path itself and everything under it.
    trees: Vec<(String, &'static str)>,
}

impl Guarded {
    /// The daemon's paths. Each is taken as the kernel resolves it (symbolic
    /// links followed), since that is the path events carry.
    #[must_use]
    pub fn new(
        pin_dir: &Path,
        state_dir: &Path,
        config_file: Option<&Path>,
        session_cgroups: &Path,
        daemon_pid: u32,
    ) -> Self {
        let real = |p: &Path| {
            std::fs::canonicalize(p)
                .unwrap_or_else(|_| p.to_path_buf())
                .to_string_lossy()
                .trim_end_matches('/')
                .to_owned()
        };
        let mut trees = vec![
            (real(pin_dir), "the daemon's pins"),
            (real(state_dir), "the daemon's state directory"),
            (real(session_cgroups), "the cgroups of its sessions"),
            (format!("/proc/{daemon_pid}"), "the daemon's process"),
        ];
        if let Some(c) = config_file {
            trees.push((real(c), "the node config file"));
        }
        trees.retain(|(p, _)| !p.is_empty() && p != "/");
        Self { trees }
    }

    /// What `path` (absolute, resolved) is part of, if it is guarded.
    #[must_use]
    pub fn part_of(&self, path: &str) -> Option<&'static str> {
        self.trees.iter().find_map(|(tree, what)| {
            let under = path
                .strip_prefix(tree.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
            under.then_some(*what)
        })
    }

    /// The guarded path an event writes or renames, and what it is: an open
    /// for writing (`O_CREAT` and `O_TRUNC` count), or a link or rename
    /// whose new name or target is guarded. Failed attempts count: the
    /// attempt is what is reported.
    #[must_use]
    pub fn written_by<'e>(&self, event: &'e Event) -> Option<(&'e str, &'static str)> {
        match &event.payload {
            Payload::FileOpen(f) if f.access != Access::Read && !f.repeat_summary => {
                self.part_of(&f.path).map(|what| (f.path.as_str(), what))
            }
            Payload::FileLink(l) => [l.path.as_str(), l.target.as_str()]
                .into_iter()
                .find_map(|p| self.part_of(p).map(|what| (p, what))),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guarded() -> Guarded {
        Guarded::new(
            Path::new("/sys/fs/bpf/vigil-test-none"),
            Path::new("/var/lib/vigil-test-none/"),
            Some(Path::new("/etc/vigil-test-none/vigil.toml")),
            Path::new("/sys/fs/cgroup/vigil-test-none"),
            4242,
        )
    }

    #[test]
    fn a_tree_covers_itself_and_what_is_under_it_only() {
        let g = guarded();
        assert_eq!(
            g.part_of("/var/lib/vigil-test-none/journal.redb"),
            Some("the daemon's state directory")
        );
        assert_eq!(
            g.part_of("/var/lib/vigil-test-none"),
            Some("the daemon's state directory")
        );
        assert_eq!(g.part_of("/var/lib/vigil-test-none2/x"), None);
        assert_eq!(g.part_of("/proc/4242/mem"), Some("the daemon's process"));
        assert_eq!(g.part_of("/proc/42420/mem"), None);
        assert_eq!(
            g.part_of("/sys/fs/cgroup/vigil-test-none/coder/s-1/cgroup.procs"),
            Some("the cgroups of its sessions")
        );
        assert_eq!(
            g.part_of("/etc/vigil-test-none/vigil.toml"),
            Some("the node config file")
        );
        assert_eq!(g.part_of("/etc/vigil-test-none/other.toml"), None);
    }

    #[test]
    fn only_writes_and_new_names_are_attempts() {
        use crate::event::{FileLink, FileOpen};
        let g = guarded();
        let open = |flags: u32| {
            let mut e = crate::journal::testing::exec("coder", "s-1");
            e.payload = Payload::FileOpen(FileOpen {
                path: "/var/lib/vigil-test-none/journal.redb".into(),
                raw_path: None,
                flags,
                access: Access::from_flags(flags),
                syscall: "openat".into(),
                fd: None,
                error: Some("EACCES".into()),
                path_truncated: false,
                blocked: false,
                repeats: 0,
                repeat_summary: false,
                inode: None,
            });
            e
        };
        assert_eq!(g.written_by(&open(libc::O_RDONLY as u32)), None);
        assert_eq!(
            g.written_by(&open(libc::O_WRONLY as u32)),
            Some((
                "/var/lib/vigil-test-none/journal.redb",
                "the daemon's state directory"
            ))
        );
        assert!(
            g.written_by(&open((libc::O_RDONLY | libc::O_TRUNC) as u32))
                .is_some()
        );
        let mut link = crate::journal::testing::exec("coder", "s-1");
        link.payload = Payload::FileLink(FileLink {
            op: "rename".into(),
            syscall: "renameat2".into(),
            path: "/tmp/j".into(),
            raw_path: None,
            target: "/var/lib/vigil-test-none/journal.redb".into(),
            raw_target: None,
            error: None,
            path_truncated: false,
            blocked: false,
            inode: None,
        });
        assert!(g.written_by(&link).is_some());
    }
}
