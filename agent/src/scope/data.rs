//! File rules: lexical path clean-up, the data-class index, and the small
//! bit sets that record which classes and identities an agent was given.

use std::borrow::Cow;
use std::cell::RefCell;

use globset::{Candidate, GlobSet, GlobSetBuilder};

use crate::config::{Config, build_glob};

/// A set of small integer ids (data classes, identities) granted to an agent.
#[derive(Clone, Debug, Default)]
pub struct Grants(Vec<u64>);

impl Grants {
    pub fn insert(&mut self, id: usize) {
        let word = id / 64;
        if self.0.len() <= word {
            self.0.resize(word + 1, 0);
        }
        self.0[word] |= 1 << (id % 64);
    }

    #[inline]
    #[must_use]
    pub fn contains(&self, id: usize) -> bool {
        self.0
            .get(id / 64)
            .is_some_and(|w| w & (1 << (id % 64)) != 0)
    }
}

thread_local! {
    // Match lists reused across evaluations so that a glob hit does not allocate.
    static SCRATCH: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with the indices of the globs of `set` that match `cand`.
pub fn with_matches<R>(set: &GlobSet, cand: &Candidate<'_>, f: impl FnOnce(&[usize]) -> R) -> R {
    // Taken out of the cell so that a nested call gets its own (fresh) list.
    let mut hits = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
    set.matches_candidate_into(cand, &mut hits);
    let out = f(&hits);
    SCRATCH.with(|s| *s.borrow_mut() = hits);
    out
}

/// Cleans `.`, `..` and repeated or trailing slashes out of a path, without
/// touching the file system (the file may be gone by the time we look).
/// Borrowed when the path is already clean, which is the common case.
#[must_use]
pub fn normalize(path: &str) -> Cow<'_, str> {
    if is_clean(path) {
        return Cow::Borrowed(path);
    }
    let absolute = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !absolute {
                    parts.push("..");
                }
            }
            p => parts.push(p),
        }
    }
    let joined = parts.join("/");
    Cow::Owned(if absolute {
        format!("/{joined}")
    } else if joined.is_empty() {
        ".".to_owned()
    } else {
        joined
    })
}

fn is_clean(path: &str) -> bool {
    if path == "/" {
        return true;
    }
    let b = path.as_bytes();
    if b.is_empty() || (b.len() > 1 && b[b.len() - 1] == b'/') {
        return false;
    }
    let mut components = path.split('/');
    // A leading empty component is the root of an absolute path.
    if path.starts_with('/') {
        components.next();
    }
    components.all(|c| !c.is_empty() && c != "." && c != "..")
}

/// Data classes compiled for every agent at once: one glob set for the
/// territory of all classes (read and write globs) and one for their write
/// globs, each glob remembering its class.
#[derive(Debug)]
pub struct DataIndex {
    /// Class names in config order; a class id is an index here.
    pub names: Vec<String>,
    territory: GlobSet,
    territory_class: Vec<usize>,
    write: GlobSet,
    write_class: Vec<usize>,
    write_ignore: GlobSet,
}

/// What a read of a path means for an agent.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadCheck {
    /// In no class, or in a class the agent was given.
    Allowed,
    /// In this class (id), which the agent was not given, and in none it was.
    Foreign(usize),
}

impl DataIndex {
    pub fn compile(config: &Config) -> Result<Self, globset::Error> {
        let mut names = Vec::new();
        let (mut territory, mut territory_class) = (GlobSetBuilder::new(), Vec::new());
        let (mut write, mut write_class) = (GlobSetBuilder::new(), Vec::new());
        for (id, (name, class)) in config.data.iter().enumerate() {
            names.push(name.as_str().to_owned());
            for g in class.read.iter().chain(&class.write) {
                territory.add(g.glob().clone());
                territory_class.push(id);
            }
            for g in &class.write {
                write.add(g.glob().clone());
                write_class.push(id);
            }
        }
        let mut ignore = GlobSetBuilder::new();
        for g in config.scope.effective_write_ignore() {
            ignore.add(build_glob(&g)?);
        }
        Ok(Self {
            names,
            territory: territory.build()?,
            territory_class,
            write: write.build()?,
            write_class,
            write_ignore: ignore.build()?,
        })
    }

    #[must_use]
    pub fn class_id(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// A class's write globs imply reading it: what an agent wrote it may read back.
    pub fn check_read(&self, cand: &Candidate<'_>, granted: &Grants) -> ReadCheck {
        if !self.territory.is_match_candidate(cand) {
            return ReadCheck::Allowed;
        }
        with_matches(&self.territory, cand, |hits| {
            let mut foreign = None;
            for &g in hits {
                let class = self.territory_class[g];
                if granted.contains(class) {
                    return ReadCheck::Allowed;
                }
                foreign.get_or_insert(class);
            }
            foreign.map_or(ReadCheck::Allowed, ReadCheck::Foreign)
        })
    }

    /// True when the agent may write the path: a write glob of a granted
    /// class covers it, or it is on the write-ignore list.
    pub fn may_write(&self, cand: &Candidate<'_>, granted: &Grants) -> bool {
        if self.write_ignore.is_match_candidate(cand) {
            return true;
        }
        if !self.write.is_match_candidate(cand) {
            return false;
        }
        with_matches(&self.write, cand, |hits| {
            hits.iter().any(|&g| granted.contains(self.write_class[g]))
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn normalize_paths() {
        assert!(matches!(normalize("/srv/w/a.txt"), Cow::Borrowed(_)));
        assert!(matches!(normalize("/"), Cow::Borrowed(_)));
        assert_eq!(normalize("/srv/w/../../etc/shadow"), "/etc/shadow");
        assert_eq!(normalize("/srv//w/./a"), "/srv/w/a");
        assert_eq!(normalize("/srv/w/"), "/srv/w");
        assert_eq!(normalize("/../../x"), "/x");
        assert_eq!(normalize("/.."), "/");
        assert_eq!(normalize("a/../../b"), "../b");
        assert_eq!(normalize("./a"), "a");
        assert_eq!(normalize(""), ".");
        assert_eq!(
            normalize("/srv/w/..."),
            "/srv/w/...",
            "'...' is a plain name"
        );
    }

    #[test]
    fn grants_bitset() {
        let mut g = Grants::default();
        assert!(!g.contains(0));
        g.insert(0);
        g.insert(130);
        assert!(g.contains(0) && g.contains(130));
        assert!(!g.contains(1) && !g.contains(129) && !g.contains(100_000));
    }

    proptest! {
        #[test]
        fn normalized_paths_are_clean_and_stable(parts in proptest::collection::vec(
            prop_oneof![Just(""), Just("."), Just(".."), Just("a"), Just("b.c"), Just("...")], 0..12)
        ) {
            let path = format!("/{}", parts.join("/"));
            let n = normalize(&path).into_owned();
            prop_assert!(n.starts_with('/'));
            prop_assert!(is_clean(&n), "{n:?} from {path:?}");
            prop_assert_eq!(normalize(&n), n.as_str());
            prop_assert!(!n.split('/').any(|c| c == ".." || c == "."));
        }
    }
}
