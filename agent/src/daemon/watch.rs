//! Keeps the kernel's `WATCHED` cgroup set in line with the config: every
//! second the cgroup v2 hierarchy is walked and each cgroup is watched when
//! an agent's `match.cgroups` glob covers its path, or when it is a pod's
//! container and an agent's `match.kubernetes` selector chooses that pod.
//!
//! A container whose pod metadata has not arrived is watched for
//! `kubernetes.metadata_wait` after it is first seen, so its first events
//! can wait for the metadata in the pipeline instead of never being
//! reported; if its pod then turns out to be selected by no agent it is
//! unwatched at the next walk. Session cgroups are left alone: the kernel
//! watches everything below the session parent by itself.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::{DirEntryExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::identity::cgroup::parse_workload;
use crate::kube::Kube;
use crate::live::LiveConfig;
use crate::sensors::Watched;

/// What the walk reads and changes.
pub struct Parts {
    pub live: Arc<LiveConfig>,
    pub kube: Kube,
    /// The session parent cgroup, left to the kernel.
    pub session_parent: String,
    pub watched: Watched,
    /// Newly watched cgroups, for the pipeline to resolve at once.
    pub new_cgroups: mpsc::UnboundedSender<(u64, String)>,
    /// The cgroup v2 mount.
    pub mount: PathBuf,
}

/// Time between two walks.
pub const SCAN_INTERVAL: Duration = Duration::from_secs(1);

/// Every cgroup below `mount` as `(id, path relative to the mount)`.
/// Cgroups removed during the walk are skipped.
fn walk(mount: &Path) -> std::io::Result<Vec<(u64, String)>> {
    let root = std::fs::metadata(mount)?;
    let mut out = vec![(root.ino(), "/".to_owned())];
    let mut pending = vec![(mount.to_path_buf(), String::new())];
    while let Some((dir, rel)) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let child = format!("{rel}/{}", entry.file_name().to_string_lossy());
            // kernfs reports the cgroup id as the inode number, in readdir too.
            out.push((entry.ino(), child.clone()));
            pending.push((entry.path(), child));
        }
    }
    Ok(out)
}

/// Whether `path` is `parent` or below it.
fn is_under(path: &str, parent: &str) -> bool {
    let parent = parent.trim_end_matches('/');
    path.strip_prefix(parent)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Whether any agent is matched by `match.cgroups` or `match.kubernetes`.
fn matches_outside_sessions(parts: &Parts) -> bool {
    let scope = parts.live.scope();
    scope.agents().any(|a| !a.cgroups.is_empty())
        || (!scope.pod_selectors().is_empty() && parts.kube.enabled())
}

/// The state kept between walks.
#[derive(Debug, Default)]
pub struct WatchSet {
    watched: HashSet<u64>,
    first_seen: HashMap<u64, Instant>,
    failing: bool,
}

impl WatchSet {
    /// cgroups watched now.
    #[must_use]
    pub fn len(&self) -> usize {
        self.watched.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.watched.is_empty()
    }

    /// The cgroups that should be watched now, of those in `cgroups`.
    /// (Globs and selectors are asked again: a reload may have come between.)
    fn wanted(&mut self, parts: &Parts, cgroups: &[(u64, String)]) -> HashSet<u64> {
        let loaded = parts.live.current();
        let scope = &loaded.scope;
        let by_glob = scope.agents().any(|a| !a.cgroups.is_empty());
        let by_pod = !scope.pod_selectors().is_empty() && parts.kube.enabled();
        let mut want = HashSet::new();
        if !by_glob && !by_pod {
            self.first_seen.clear();
            return want;
        }
        let now = Instant::now();
        let index = parts.kube.index();
        let may_wait = parts.kube.metadata_expected();
        let wait = parts.kube.metadata_wait();
        let parent = parts.session_parent.as_str();
        let mut seen = HashMap::with_capacity(self.first_seen.len());
        for (id, path) in cgroups {
            if is_under(path, parent) {
                continue;
            }
            if by_glob && scope.match_cgroup(path).is_some() {
                want.insert(*id);
                continue;
            }
            if !by_pod {
                continue;
            }
            let Some(mut w) = parse_workload(path).filter(|w| w.pod_uid.is_some()) else {
                continue;
            };
            let first = *self.first_seen.get(id).unwrap_or(&now);
            seen.insert(*id, first);
            let selected = match index.find(&w) {
                Some((pod, container)) => {
                    pod.fill(&mut w, container, &loaded.config.kubernetes.trust_domain);
                    scope.pod_selectors().first_match(&w).is_some()
                }
                None => may_wait && now.duration_since(first) < wait,
            };
            if selected {
                want.insert(*id);
            }
        }
        self.first_seen = seen;
        want
    }

    /// One walk: watches what is wanted and not watched, unwatches the rest.
    pub fn scan(&mut self, parts: &Parts) {
        let mount = parts.mount.as_path();
        // Nothing to walk for when no agent is matched outside sessions.
        let cgroups = if matches_outside_sessions(parts) {
            match walk(mount) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("walking the cgroup hierarchy at {}: {e}", mount.display());
                    return;
                }
            }
        } else {
            Vec::new()
        };
        let want = self.wanted(parts, &cgroups);
        let paths: HashMap<u64, &str> = cgroups
            .iter()
            .filter(|(id, _)| want.contains(id) && !self.watched.contains(id))
            .map(|(id, p)| (*id, p.as_str()))
            .collect();
        let mut failed = None;
        for (&id, path) in &paths {
            match parts.watched.watch(id) {
                Ok(()) => {
                    self.watched.insert(id);
                    // The pipeline then resolves its events without a rescan.
                    let _ = parts.new_cgroups.send((id, (*path).to_owned()));
                    tracing::debug!("watching cgroup {path} (id {id})");
                }
                Err(e) => failed = Some(format!("watching cgroup {path}: {e}")),
            }
        }
        let gone: Vec<u64> = self.watched.difference(&want).copied().collect();
        for id in gone {
            match parts.watched.unwatch(id) {
                Ok(()) => {
                    self.watched.remove(&id);
                }
                Err(e) => failed = Some(format!("unwatching cgroup id {id}: {e}")),
            }
        }
        match failed {
            Some(e) if !self.failing => {
                tracing::warn!("{e}");
                self.failing = true;
            }
            Some(_) => {}
            None => self.failing = false,
        }
        parts
            .kube
            .counters()
            .watched_cgroups
            .store(self.watched.len() as u64, Ordering::Relaxed);
    }
}

/// Walks the hierarchy every [`SCAN_INTERVAL`] until the daemon exits.
pub async fn run(parts: Parts) {
    let parts = Arc::new(parts);
    let mut set = WatchSet::default();
    let mut every = tokio::time::interval(SCAN_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let p = Arc::clone(&parts);
        set = match tokio::task::spawn_blocking(move || {
            set.scan(&p);
            set
        })
        .await
        {
            Ok(set) => set,
            Err(e) => {
                tracing::error!("cgroup watch scan failed: {e}");
                WatchSet::default()
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn under_the_session_parent() {
        assert!(is_under("/vigil", "/vigil"));
        assert!(is_under("/vigil/coder/s-1", "/vigil"));
        assert!(is_under("/vigil/coder/s-1", "/vigil/"));
        assert!(!is_under("/vigilant/x", "/vigil"));
        assert!(!is_under("/kubepods.slice", "/vigil"));
    }

    #[test]
    fn walk_finds_nested_directories_with_their_inodes() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a.slice/b.slice/c.scope");
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(dir.path().join("a.slice/cgroup.procs"), "").unwrap();
        let found = walk(dir.path()).unwrap();
        let paths: HashSet<&str> = found.iter().map(|(_, p)| p.as_str()).collect();
        assert_eq!(
            paths,
            HashSet::from([
                "/",
                "/a.slice",
                "/a.slice/b.slice",
                "/a.slice/b.slice/c.scope"
            ])
        );
        let ino = std::fs::metadata(&deep).unwrap().ino();
        assert!(found.contains(&(ino, "/a.slice/b.slice/c.scope".to_owned())));
    }
}
