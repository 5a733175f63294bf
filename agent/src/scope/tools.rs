//! Executable paths after symlinks: `/usr/bin/python3` is usually a link to
//! `python3.12`, and `tools` may name either. Resolutions are cached because
//! agents run the same few programs over and over.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant};

/// Re-resolve after this long: package upgrades and `update-alternatives`
/// re-point links.
const TTL: Duration = Duration::from_mins(1);
/// Bound on cached paths; the cache is cleared when it is full.
const CAPACITY: usize = 4096;

#[derive(Debug)]
struct Resolved {
    canonical: Option<Box<str>>,
    at: Instant,
}

#[derive(Debug, Default)]
pub struct ExeCache {
    map: RwLock<HashMap<Box<str>, Resolved>>,
}

impl ExeCache {
    /// Calls `f` with the canonical form of the absolute `path` (`None` when
    /// it cannot be resolved, for example because the file is gone).
    pub fn with_canonical<R>(
        &self,
        path: &str,
        now: Instant,
        f: impl FnOnce(Option<&str>) -> R,
    ) -> R {
        {
            let map = self.map.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(r) = map.get(path)
                && now.saturating_duration_since(r.at) < TTL
            {
                return f(r.canonical.as_deref());
            }
        }
        let canonical = if path.starts_with('/') && !names_a_descriptor(path) {
            std::fs::canonicalize(path)
                .ok()
                .and_then(|p| p.into_os_string().into_string().ok())
                .map(String::into_boxed_str)
        } else {
            None
        };
        let out = f(canonical.as_deref());
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= CAPACITY {
            map.clear();
        }
        map.insert(path.into(), Resolved { canonical, at: now });
        out
    }
}

/// Whether `path` is a dynamic loader (`ld-linux-x86-64.so.2`,
/// `ld-linux-aarch64.so.1`, `ld-musl-x86_64.so.1`, `ld.so`), which run
/// directly runs the program its arguments name.
#[must_use]
pub fn is_loader(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name == "ld.so"
        || ((name.starts_with("ld-linux") || name.starts_with("ld-musl-")) && name.contains(".so"))
}

/// The program and its argv in a loader's argv (`[ld.so, options…,
/// program, args…]`), skipping glibc's and musl's options and their values;
/// `None` when no program is named (`ld.so --help`).
#[must_use]
pub fn loader_program(argv: &[String]) -> Option<(&str, &[String])> {
    const WITH_VALUE: &[&str] = &[
        "--library-path",
        "--inhibit-rpath",
        "--audit",
        "--preload",
        "--argv0",
        "--glibc-hwcaps-prefix",
        "--glibc-hwcaps-mask",
    ];
    let mut i = 1;
    while let Some(arg) = argv.get(i) {
        if WITH_VALUE.contains(&arg.as_str()) {
            i += 2;
        } else if arg == "--" {
            i += 1;
            break;
        } else if arg.starts_with("--") {
            i += 1;
        } else {
            break;
        }
    }
    let program = argv.get(i)?;
    Some((program.as_str(), &argv[i..]))
}

/// Paths that name the *opening* process's descriptors or view of itself
/// (`/dev/fd/3`, `/proc/self/exe`, `/proc/1234/fd/3`): resolved here they
/// would name the daemon's own files (or another process's as the daemon
/// sees it), never what the exec ran. The kernel's `mm->exe_file` says that.
fn names_a_descriptor(path: &str) -> bool {
    path.starts_with("/proc/") || path.starts_with("/dev/fd/") || path.starts_with("/dev/std")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_real_symlinks_and_caches_until_ttl() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("python3.12");
        std::fs::write(&target, b"#!/bin/sh\n").unwrap();
        let link = dir.path().join("python3");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let cache = ExeCache::default();
        let now = Instant::now();
        let link_s = link.to_str().unwrap();
        let canon = std::fs::canonicalize(&target).unwrap();
        let got = cache.with_canonical(link_s, now, |c| c.map(str::to_owned));
        assert_eq!(got.as_deref(), canon.to_str());

        // Re-pointing the link is seen only after the TTL.
        let other = dir.path().join("python3.13");
        std::fs::write(&other, b"").unwrap();
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink(&other, &link).unwrap();
        let cached = cache.with_canonical(link_s, now + Duration::from_secs(1), |c| {
            c.map(str::to_owned)
        });
        assert_eq!(cached.as_deref(), canon.to_str());
        let fresh = cache.with_canonical(link_s, now + TTL, |c| c.map(str::to_owned));
        assert_eq!(
            fresh.as_deref(),
            std::fs::canonicalize(&other).unwrap().to_str()
        );
    }

    #[test]
    fn missing_and_relative_paths_have_no_canonical_form() {
        let cache = ExeCache::default();
        let now = Instant::now();
        assert!(cache.with_canonical("/nonexistent/vigil-test", now, |c| c.is_none()));
        assert!(cache.with_canonical("bin/ls", now, |c| c.is_none()));
    }

    #[test]
    fn the_loader_names_the_program_it_runs() {
        let argv = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(is_loader("/lib64/ld-linux-x86-64.so.2"));
        assert!(is_loader("/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"));
        assert!(is_loader("/lib/ld-musl-x86_64.so.1"));
        assert!(!is_loader("/usr/bin/ldd"));
        assert!(!is_loader("/usr/lib/libldap.so.2"));
        let a = argv(&["ld.so", "/usr/bin/id", "-u"]);
        assert_eq!(loader_program(&a), Some(("/usr/bin/id", &a[1..])));
        let a = argv(&[
            "ld.so",
            "--library-path",
            "/tmp/lib",
            "--inhibit-cache",
            "--argv0",
            "innocent",
            "/tmp/payload",
        ]);
        assert_eq!(loader_program(&a).map(|p| p.0), Some("/tmp/payload"));
        assert_eq!(loader_program(&argv(&["ld.so", "--help"])), None);
        let a = argv(&["ld.so", "--", "--weird-name"]);
        assert_eq!(loader_program(&a).map(|p| p.0), Some("--weird-name"));
    }

    /// `/dev/fd/N` and `/proc/self/...` exist in the daemon too, naming its
    /// own files: they must not be resolved on the caller's behalf.
    #[test]
    fn descriptor_paths_are_never_resolved_in_the_daemon() {
        let cache = ExeCache::default();
        let now = Instant::now();
        let own = tempfile::NamedTempFile::new().unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(own.as_file());
        for path in [
            format!("/dev/fd/{fd}"),
            format!("/proc/self/fd/{fd}"),
            "/proc/self/exe".to_owned(),
        ] {
            assert!(
                std::fs::canonicalize(&path).is_ok(),
                "{path} resolves in this process, so the check below means something"
            );
            assert!(cache.with_canonical(&path, now, |c| c.is_none()), "{path}");
        }
    }
}
