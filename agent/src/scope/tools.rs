//! Executable paths after symlinks: `/usr/bin/python3` is usually a link to
//! `python3.12`, and `tools` may name either. Resolutions are cached because
//! agents run the same few programs over and over.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};

use globset::{GlobSet, GlobSetBuilder};
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

/// An agent's `tools`, matched against the program that runs. A tool
/// named through a symbolic link (`/usr/bin/python3` → `python3.12`, or any
/// tool under `/bin` where `/bin` → `usr/bin`) is also the file the link
/// leads to: each glob is matched as written and with the links in its
/// fixed leading part resolved (the whole path for a literal tool). The
/// resolutions are redone every [`TTL`], since upgrades re-point links.
#[derive(Debug)]
pub struct ToolSet {
    globs: GlobSet,
    sources: Vec<String>,
    aliases: RwLock<Option<(Instant, GlobSet)>>,
}

impl ToolSet {
    /// The tools compiled as `globs`, from the glob texts `sources`.
    #[must_use]
    pub fn new(globs: GlobSet, sources: Vec<String>) -> Self {
        Self {
            globs,
            sources,
            aliases: RwLock::new(None),
        }
    }

    /// Whether `path` (absolute, resolved) is one of the tools.
    pub fn is_match(&self, path: &str, now: Instant) -> bool {
        if self.globs.is_match(path) {
            return true;
        }
        {
            let aliases = self.aliases.read().unwrap_or_else(PoisonError::into_inner);
            if let Some((at, set)) = aliases.as_ref()
                && now.saturating_duration_since(*at) < TTL
            {
                return set.is_match(path);
            }
        }
        let set = resolved_globs(&self.sources);
        let hit = set.is_match(path);
        *self.aliases.write().unwrap_or_else(PoisonError::into_inner) = Some((now, set));
        hit
    }
}

/// The globs of `sources` whose fixed leading part resolves, through
/// symbolic links, to another path: rewritten onto that path.
fn resolved_globs(sources: &[String]) -> GlobSet {
    let mut b = GlobSetBuilder::new();
    for src in sources {
        let Some(alias) = resolved_glob(src) else {
            continue;
        };
        if let Ok(g) = crate::config::build_glob(&alias) {
            b.add(g);
        }
    }
    b.build().unwrap_or_else(|_| GlobSet::empty())
}

/// The characters that make a path glob more than a literal path.
pub(super) const GLOB_META: &[char] = &['*', '?', '[', ']', '{', '}', '\\'];

/// `pattern` with its leading directories that hold no glob syntax (the
/// whole path when it holds none) resolved through symbolic links; `None`
/// when they do not resolve or resolve to themselves.
fn resolved_glob(pattern: &str) -> Option<String> {
    if !pattern.starts_with('/') {
        return None;
    }
    if !pattern.contains(GLOB_META) {
        let real = std::fs::canonicalize(pattern)
            .ok()?
            .into_os_string()
            .into_string()
            .ok()?;
        return (real != pattern).then(|| globset::escape(&real));
    }
    let first_meta = pattern.find(GLOB_META)?;
    let dir_end = pattern[..first_meta].rfind('/')?;
    let (dir, rest) = pattern.split_at(dir_end);
    if dir.is_empty() {
        return None;
    }
    let real = std::fs::canonicalize(dir)
        .ok()?
        .into_os_string()
        .into_string()
        .ok()?;
    (real != dir).then(|| format!("{}{rest}", globset::escape(&real)))
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
    fn a_tool_named_through_a_link_is_the_file_it_leads_to() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let real = root.join("usr-bin");
        std::fs::create_dir(&real).unwrap();
        std::fs::write(real.join("python3.12"), b"").unwrap();
        std::os::unix::fs::symlink(real.join("python3.12"), real.join("python3")).unwrap();
        std::os::unix::fs::symlink(&real, root.join("bin")).unwrap();
        let (r, b) = (real.display(), root.join("bin").display().to_string());
        let sources = vec![format!("{r}/python3"), format!("{b}/l*")];
        let mut gb = GlobSetBuilder::new();
        for s in &sources {
            gb.add(crate::config::build_glob(s).unwrap());
        }
        let tools = ToolSet::new(gb.build().unwrap(), sources);
        let now = Instant::now();
        assert!(tools.is_match(&format!("{r}/python3"), now), "as written");
        assert!(
            tools.is_match(&format!("{r}/python3.12"), now),
            "the link's target"
        );
        assert!(
            tools.is_match(&format!("{r}/ls"), now),
            "a glob under a linked directory"
        );
        assert!(!tools.is_match(&format!("{r}/curl"), now));
        assert!(!tools.is_match(&format!("{r}/python3.13"), now));
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
