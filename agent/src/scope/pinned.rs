//! Tools pinned by content (`tools_by_hash = true`): the SHA-256 of every
//! file an agent's `tools` name, taken when the config loads, so that a
//! program copied or renamed under an allowed name is not allowed. An exec
//! is then in scope when its program matches `tools` by path *and* its
//! content is one of the pinned files'.
//!
//! Digests of executed files are cached by the file's identity and version
//! (device, inode, size, modification and change times), so an agent that
//! runs the same tools over and over pays for one `stat` per exec.

use std::collections::{HashMap, HashSet};
use std::io::Read as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant};

use globset::GlobSet;
use sha2::{Digest as _, Sha256};

/// Files one agent's tools may pin at most: a glob over a whole tree would
/// make every config load read it all.
pub const MAX_PINNED_FILES: usize = 4096;
/// Bound on cached digests; the cache is cleared when it is full.
const DIGEST_CAPACITY: usize = 8192;

pub type Digest = [u8; 32];

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error(
        "tools_by_hash: the tools match more than {max} files (at {at}); name them more narrowly"
    )]
    TooMany { max: usize, at: String },
}

/// The pinned digests of one agent's tools, and what taking them cost.
#[derive(Debug, Default)]
pub struct Pinned {
    digests: HashSet<Digest>,
    /// Files hashed.
    pub files: usize,
    /// Bytes read.
    pub bytes: u64,
    /// Time the hashing took.
    pub took: Duration,
    /// Files the tools name that could not be read (skipped).
    pub unreadable: Vec<String>,
}

impl Pinned {
    /// Hashes every file `tools` (compiled from the glob texts `sources`)
    /// match now: literal paths directly, globs by walking the directory
    /// their fixed leading part names.
    pub fn take(tools: &GlobSet, sources: &[String]) -> Result<Self, PinError> {
        let started = Instant::now();
        let mut out = Self::default();
        // Every file first, so that a glob over a tree is refused before
        // anything is read.
        let mut files: Vec<String> = Vec::new();
        let mut seen = HashSet::new();
        for src in sources {
            let (root, depth) = walk_root(src);
            let walker = walkdir::WalkDir::new(root)
                .follow_links(false)
                .max_depth(depth)
                .into_iter()
                .filter_map(Result::ok);
            for entry in walker {
                if entry.file_type().is_dir() {
                    continue;
                }
                let Some(path) = entry.path().to_str() else {
                    continue;
                };
                // A link is pinned as the file it leads to; one to a
                // directory names no program.
                if !tools.is_match(path)
                    || !std::fs::metadata(path).is_ok_and(|m| m.is_file())
                    || !seen.insert(path.to_owned())
                {
                    continue;
                }
                if seen.len() > MAX_PINNED_FILES {
                    return Err(PinError::TooMany {
                        max: MAX_PINNED_FILES,
                        at: path.to_owned(),
                    });
                }
                files.push(path.to_owned());
            }
        }
        for path in files {
            match std::fs::File::open(&path).and_then(hash) {
                Ok((d, n)) => {
                    out.digests.insert(d);
                    out.files += 1;
                    out.bytes += n;
                }
                Err(_) => out.unreadable.push(path),
            }
        }
        out.took = started.elapsed();
        Ok(out)
    }

    #[must_use]
    pub fn contains(&self, d: &Digest) -> bool {
        self.digests.contains(d)
    }
}

/// Where to walk for a glob and how deep: its fixed leading directory, and
/// the number of components after it (unbounded with `**`).
fn walk_root(pattern: &str) -> (&Path, usize) {
    let Some(first_meta) = pattern.find(super::tools::GLOB_META) else {
        return (Path::new(pattern), 0);
    };
    let dir_end = pattern[..first_meta].rfind('/').unwrap_or(0);
    let dir = if dir_end == 0 {
        "/"
    } else {
        &pattern[..dir_end]
    };
    let rest = &pattern[dir_end..];
    let depth = if rest.contains("**") {
        usize::MAX
    } else {
        rest.matches('/').count()
    };
    (Path::new(dir), depth)
}

fn hash(mut f: std::fs::File) -> std::io::Result<(Digest, u64)> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        total += n as u64;
    }
    Ok((h.finalize().into(), total))
}

/// A file's identity and version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Version {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Version {
    fn of(m: &std::fs::Metadata) -> Self {
        Self {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
        }
    }
}

/// Digests of executed files, by [`Version`].
#[derive(Debug, Default)]
pub struct DigestCache {
    map: RwLock<HashMap<Version, Digest>>,
}

impl DigestCache {
    /// The digest of the file open as `f`.
    fn digest(&self, f: std::fs::File) -> std::io::Result<Digest> {
        let v = Version::of(&f.metadata()?);
        if let Some(d) = self
            .map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&v)
        {
            return Ok(*d);
        }
        let (d, _) = hash(f)?;
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= DIGEST_CAPACITY {
            map.clear();
        }
        map.insert(v, d);
        Ok(d)
    }

    /// The digest of the program process `pid` runs (`/proc/PID/exe`, the
    /// very file the kernel mapped, whatever has been renamed since), or of
    /// `path` when the process is gone or the program is a script.
    pub fn of_exec(&self, pid: Option<u32>, binary: bool, path: &str) -> std::io::Result<Digest> {
        if binary
            && let Some(pid) = pid
            && let Ok(f) = std::fs::File::open(format!("/proc/{pid}/exe"))
        {
            return self.digest(f);
        }
        self.digest(std::fs::File::open(path)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools(sources: &[String]) -> GlobSet {
        let mut b = globset::GlobSetBuilder::new();
        for s in sources {
            b.add(crate::config::build_glob(s).unwrap());
        }
        b.build().unwrap()
    }

    #[test]
    fn the_files_the_tools_name_are_pinned_by_content() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir_all(root.join("bin/sub")).unwrap();
        std::fs::write(root.join("bin/a"), b"tool a").unwrap();
        std::fs::write(root.join("bin/sub/deep"), b"too deep for *").unwrap();
        std::fs::write(root.join("lone"), b"a literal tool").unwrap();
        let r = root.display();
        let sources = vec![
            format!("{r}/bin/*"),
            format!("{r}/lone"),
            format!("{r}/missing"),
        ];
        let p = Pinned::take(&tools(&sources), &sources).unwrap();
        assert_eq!(p.files, 2, "{p:?}");
        let d = |bytes: &[u8]| -> Digest { Sha256::digest(bytes).into() };
        assert!(p.contains(&d(b"tool a")));
        assert!(p.contains(&d(b"a literal tool")));
        assert!(!p.contains(&d(b"too deep for *")));
        // Copying another program under an allowed name changes nothing pinned.
        std::fs::write(root.join("bin/a"), b"curl, renamed").unwrap();
        let cache = DigestCache::default();
        let now = cache.of_exec(None, false, &format!("{r}/bin/a")).unwrap();
        assert!(!p.contains(&now));
        assert_eq!(now, d(b"curl, renamed"));
    }

    #[test]
    fn a_glob_over_a_tree_is_refused_past_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        for i in 0..=MAX_PINNED_FILES {
            std::fs::write(root.join(format!("f{i}")), b"").unwrap();
        }
        let sources = vec![format!("{}/**", root.display())];
        let e = Pinned::take(&tools(&sources), &sources).unwrap_err();
        assert!(e.to_string().contains("more than 4096 files"), "{e}");
    }

    #[test]
    fn a_changed_file_is_hashed_again() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let path = f.path().to_str().unwrap().to_owned();
        std::fs::write(&path, b"one").unwrap();
        let cache = DigestCache::default();
        let one = cache.of_exec(None, false, &path).unwrap();
        std::fs::write(&path, b"two, longer").unwrap();
        let two = cache.of_exec(None, false, &path).unwrap();
        assert_ne!(one, two);
    }
}
