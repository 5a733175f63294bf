//! Identity index: the built-in catalog plus `[identity.*]`, compiled into
//! one glob set for files and one endpoint set for the network.

use std::time::Instant;

use globset::{Candidate, GlobSet, GlobSetBuilder};

use super::data::{Grants, with_matches};
use super::inodes::InodeIndex;
use super::systems::EndpointSet;
use crate::config::catalog::CATALOG;
use crate::config::{Config, SystemEntry, build_glob};

/// What touching a path or endpoint means for an agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Touch {
    /// No identity there.
    None,
    /// Identities only of those the agent was given.
    Granted,
    /// This identity (id), which the agent was not given.
    Denied(usize),
}

#[derive(Debug)]
pub struct IdentityIndex {
    /// Catalog names first, then declared ones; an identity id indexes here.
    pub names: Vec<String>,
    files: GlobSet,
    file_owner: Vec<usize>,
    except: GlobSet,
    except_owner: Vec<usize>,
    pub endpoints: EndpointSet<usize>,
    /// The same files by (device, inode), under whatever name they are opened.
    inodes: InodeIndex,
}

impl IdentityIndex {
    pub fn compile(config: &Config) -> Result<Self, String> {
        let mut names = Vec::new();
        let (mut files, mut file_owner) = (GlobSetBuilder::new(), Vec::new());
        let (mut except, mut except_owner) = (GlobSetBuilder::new(), Vec::new());
        let mut endpoints = EndpointSet::default();
        let mut file_globs: Vec<String> = Vec::new();
        let glob = |g: &str| build_glob(g).map_err(|e| format!("built-in glob {g:?}: {e}"));
        for (id, entry) in CATALOG.iter().enumerate() {
            names.push(entry.name.to_owned());
            for g in entry.files {
                files.add(glob(g)?);
                file_owner.push(id);
                file_globs.push((*g).to_owned());
            }
            for g in entry.except {
                except.add(glob(g)?);
                except_owner.push(id);
            }
            for e in entry.endpoints {
                let e: SystemEntry = e
                    .parse()
                    .map_err(|err| format!("built-in endpoint of {}: {err}", entry.name))?;
                endpoints.insert(&e, id);
            }
        }
        for (name, identity) in &config.identities {
            let id = names.len();
            names.push(name.as_str().to_owned());
            for g in &identity.files {
                files.add(g.glob().clone());
                file_owner.push(id);
                file_globs.push(g.as_str().to_owned());
            }
            for e in &identity.endpoints {
                endpoints.insert(e, id);
            }
        }
        let build = |b: GlobSetBuilder| b.build().map_err(|e| format!("identity globs: {e}"));
        let index = Self {
            names,
            files: build(files)?,
            file_owner,
            except: build(except)?,
            except_owner,
            endpoints,
            inodes: InodeIndex::new(file_globs.iter().map(String::as_str)),
        };
        index.refresh_files(Instant::now());
        Ok(index)
    }

    /// Learns the identity files' inodes again (see [`InodeIndex`]) when
    /// the last look is old enough.
    pub fn refresh_files(&self, now: Instant) {
        self.inodes.refresh_if_due(
            |path| {
                let cand = Candidate::new(path);
                match self.touch_file(&cand, &Grants::default()) {
                    Touch::Denied(id) => Some(id),
                    Touch::None | Touch::Granted => None,
                }
            },
            now,
        );
    }

    /// What opening the file (device, inode) means for an agent, whatever
    /// name it was opened by.
    #[must_use]
    pub fn touch_inode(&self, dev: u64, ino: u64, granted: &Grants) -> Touch {
        match self.inodes.owner(dev, ino) {
            None => Touch::None,
            Some(id) if granted.contains(id) => Touch::Granted,
            Some(id) => Touch::Denied(id),
        }
    }

    #[must_use]
    pub fn id(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// Every configured host name of an identity endpoint.
    pub fn host_names(&self) -> impl Iterator<Item = &str> {
        self.endpoints.hosts.exact_names()
    }

    pub fn touch_file(&self, cand: &Candidate<'_>, granted: &Grants) -> Touch {
        if !self.files.is_match_candidate(cand) {
            return Touch::None;
        }
        let excepted = |id: usize| {
            self.except.is_match_candidate(cand)
                && with_matches(&self.except, cand, |hits| {
                    hits.iter().any(|&g| self.except_owner[g] == id)
                })
        };
        with_matches(&self.files, cand, |hits| {
            let mut touch = Touch::None;
            for &g in hits {
                let id = self.file_owner[g];
                if excepted(id) {
                    continue;
                }
                if !granted.contains(id) {
                    return Touch::Denied(id);
                }
                touch = Touch::Granted;
            }
            touch
        })
    }
}
