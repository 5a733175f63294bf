//! Credentials by file identity. A path rule is stepped around by any other
//! name for the same file: a hard link the agent makes itself (the owner of
//! a file may always link it), a rename, a bind mount. The (device, inode)
//! of every file an identity's globs match on this node is learned when the
//! config loads and again every [`REFRESH`], so an open through any name is
//! still that credential: the kernel reports the opened file's inode.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant};

/// How often the files are looked up again: credentials are rotated (a new
/// file renamed into place is a new inode).
pub const REFRESH: Duration = Duration::from_secs(10);
/// Files learned at most, over all identities.
const MAX_FILES: usize = 16_384;
/// Directory entries looked at per refresh at most: the walk is bounded
/// however large the directories are.
const MAX_VISITS: usize = 100_000;
/// Depth a `**` is followed to.
const MAX_DEPTH: usize = 12;

/// Where to look for the files of one glob: its literal directory prefix
/// and how deep below it a match can lie.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Root {
    dir: PathBuf,
    depth: usize,
}

impl Root {
    /// The roots of `glob`: a glob under any directory (`**/.aws/credentials`)
    /// is looked for in each of `homes`, where such files live; none for a
    /// glob with no literal directory to start from (`/*/x`): walking the
    /// whole file system for it is not done.
    fn all_of(glob: &str, homes: &[PathBuf]) -> Vec<Self> {
        match glob.strip_prefix("**/") {
            Some(rest) => homes
                .iter()
                .filter_map(|h| Self::of(&format!("{}/{rest}", h.display())))
                .collect(),
            None => Self::of(glob).into_iter().collect(),
        }
    }

    fn of(glob: &str) -> Option<Self> {
        let parts: Vec<&str> = glob.split('/').filter(|p| !p.is_empty()).collect();
        let literal = parts
            .iter()
            .take_while(|p| !p.contains(['*', '?', '[', '{', '\\']))
            .count();
        if literal == 0 || !glob.starts_with('/') {
            return None;
        }
        let rest = &parts[literal..];
        let depth = if rest.contains(&"**") {
            MAX_DEPTH
        } else {
            rest.len()
        };
        Some(Self {
            dir: PathBuf::from("/").join(parts[..literal].join("/")),
            depth,
        })
    }
}

#[derive(Debug, Default)]
struct Learned {
    by_file: HashMap<(u64, u64), usize>,
    at: Option<Instant>,
}

/// The files of the identities, by (device, inode).
#[derive(Debug, Default)]
pub struct InodeIndex {
    roots: Vec<Root>,
    learned: RwLock<Learned>,
}

impl InodeIndex {
    /// Roots to walk for these globs (duplicates and roots inside others
    /// are walked once), with the node's home directories for globs under
    /// any directory.
    pub fn new<'a>(globs: impl IntoIterator<Item = &'a str>) -> Self {
        Self::with_homes(globs, &home_dirs())
    }

    fn with_homes<'a>(globs: impl IntoIterator<Item = &'a str>, homes: &[PathBuf]) -> Self {
        let mut roots: Vec<Root> = globs
            .into_iter()
            .flat_map(|g| Root::all_of(g, homes))
            .collect();
        roots.sort_by(|a, b| a.dir.cmp(&b.dir).then(b.depth.cmp(&a.depth)));
        roots.dedup_by(|later, kept| {
            later.dir.starts_with(&kept.dir)
                && later.dir.components().count() - kept.dir.components().count() + later.depth
                    <= kept.depth
        });
        Self {
            roots,
            learned: RwLock::default(),
        }
    }

    /// Walks the roots and records the inode of every file for which
    /// `owner` names an identity. Files that cannot be read are skipped:
    /// they are still covered by their path.
    pub fn refresh(&self, owner: impl Fn(&str) -> Option<usize>, now: Instant) {
        let mut by_file = HashMap::new();
        let mut visits = 0;
        for root in &self.roots {
            walk(&root.dir, root.depth, &mut |path| {
                visits += 1;
                if by_file.len() >= MAX_FILES || visits > MAX_VISITS {
                    return false;
                }
                if let Some(id) = path.to_str().and_then(&owner)
                    && let Ok(meta) = std::fs::metadata(path)
                    && meta.is_file()
                {
                    by_file.insert((meta.dev(), meta.ino()), id);
                }
                true
            });
        }
        let mut learned = self.learned.write().unwrap_or_else(PoisonError::into_inner);
        *learned = Learned {
            by_file,
            at: Some(now),
        };
    }

    /// Refreshes when the last look is older than [`REFRESH`].
    pub fn refresh_if_due(&self, owner: impl Fn(&str) -> Option<usize>, now: Instant) {
        let due = self
            .learned
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .at
            .is_none_or(|at| now.saturating_duration_since(at) >= REFRESH);
        if due {
            self.refresh(owner, now);
        }
    }

    /// The identity whose file this is, if any.
    #[must_use]
    pub fn owner(&self, dev: u64, ino: u64) -> Option<usize> {
        self.learned
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .by_file
            .get(&(dev, ino))
            .copied()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.learned
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .by_file
            .len()
    }
}

/// Home directories of the node's accounts (`/etc/passwd`), and `/root`.
fn home_dirs() -> Vec<PathBuf> {
    let mut homes = vec![PathBuf::from("/root")];
    if let Ok(passwd) = std::fs::read_to_string("/etc/passwd") {
        for line in passwd.lines() {
            if let Some(home) = line.split(':').nth(5)
                && home.len() > 1
                && home.starts_with('/')
            {
                homes.push(PathBuf::from(home));
            }
        }
    }
    homes.sort();
    homes.dedup();
    // Service accounts point at shared system directories (`/bin`,
    // `/var/lib/...`): only directories that exist are walked, and each
    // root is bounded by its glob's depth.
    homes.retain(|h| h.is_dir());
    homes
}

/// Calls `visit` for every entry below `dir` down to `depth` levels, never
/// following a symlinked directory (a loop, or a way out of the root);
/// stops when `visit` returns false.
fn walk(dir: &Path, depth: usize, visit: &mut impl FnMut(&Path) -> bool) -> bool {
    if !visit(dir) {
        return false;
    }
    if depth == 0 {
        return true;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return true;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        let keep_going = if is_dir {
            walk(&path, depth - 1, visit)
        } else {
            visit(&path)
        };
        if !keep_going {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_start_at_the_literal_prefix() {
        let r = |g: &str| Root::of(g).map(|r| (r.dir.display().to_string(), r.depth));
        assert_eq!(
            r("/srv/secrets/token"),
            Some(("/srv/secrets/token".into(), 0))
        );
        assert_eq!(r("/home/*/.aws/credentials"), Some(("/home".into(), 3)));
        assert_eq!(
            r("/run/secrets/kubernetes.io/serviceaccount/**"),
            Some((
                "/run/secrets/kubernetes.io/serviceaccount".into(),
                MAX_DEPTH
            ))
        );
        assert_eq!(r("**/.env"), None);
        assert_eq!(r("/*/x"), None);
        let homes = [PathBuf::from("/root"), PathBuf::from("/home/dev")];
        let all: Vec<(String, usize)> = Root::all_of("**/.aws/credentials", &homes)
            .into_iter()
            .map(|r| (r.dir.display().to_string(), r.depth))
            .collect();
        assert_eq!(
            all,
            [
                ("/root/.aws/credentials".to_owned(), 0),
                ("/home/dev/.aws/credentials".to_owned(), 0)
            ]
        );
        assert_eq!(Root::all_of("**/.ssh/id_*", &homes)[1].depth, 1);
    }

    #[test]
    fn nested_roots_are_walked_once() {
        let index = InodeIndex::with_homes(["/srv/a/**", "/srv/a/b/token", "/srv/c/token"], &[]);
        let dirs: Vec<String> = index
            .roots
            .iter()
            .map(|r| r.dir.display().to_string())
            .collect();
        assert_eq!(dirs, ["/srv/a", "/srv/c/token"]);
    }

    /// A hard link and a rename of a credential are the same inode; a copy
    /// is not.
    #[test]
    fn a_credential_is_known_under_any_name() {
        let dir = tempfile::tempdir().unwrap();
        let secrets = dir.path().join("secrets");
        std::fs::create_dir(&secrets).unwrap();
        let token = secrets.join("token");
        std::fs::write(&token, "s3cr3t").unwrap();
        std::fs::write(secrets.join("other"), "not a credential").unwrap();
        let glob = format!("{}/secrets/*", dir.path().display());
        let token_s = token.to_str().unwrap().to_owned();
        let owner = |p: &str| (p == token_s).then_some(7);
        let index = InodeIndex::new([glob.as_str()]);
        let now = Instant::now();
        index.refresh(owner, now);
        assert_eq!(index.len(), 1);

        let link = dir.path().join("hl");
        std::fs::hard_link(&token, &link).unwrap();
        let copy = dir.path().join("copy");
        std::fs::copy(&token, &copy).unwrap();
        let id = |p: &Path| {
            let m = std::fs::metadata(p).unwrap();
            index.owner(m.dev(), m.ino())
        };
        assert_eq!(id(&link), Some(7));
        assert_eq!(id(&copy), None);

        // Rotated: a new file renamed over the old name is a new inode,
        // learned at the next refresh, not before.
        let fresh = secrets.join("token.new");
        std::fs::write(&fresh, "n3w").unwrap();
        std::fs::rename(&fresh, &token).unwrap();
        index.refresh_if_due(owner, now + Duration::from_secs(1));
        assert_eq!(id(&token), None);
        index.refresh_if_due(owner, now + REFRESH);
        assert_eq!(id(&token), Some(7));
    }
}
