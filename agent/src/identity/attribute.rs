//! Attribution: which agent and session a cgroup belongs to.
//!
//! A `vigil exec` session lives at `/<parent>/<agent>/<session>` under the
//! cgroup v2 mount, so its path names both even before the daemon has
//! registered it: no event between the session's start and the daemon
//! learning of it is lost or misattributed. Other cgroups are matched against
//! the agents' `match.cgroups` globs.

use std::{collections::HashMap, sync::Arc};

use crate::event::Workload;

use super::cgroup::parse_workload;

/// Who a cgroup belongs to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attribution {
    pub agent: Option<Arc<str>>,
    pub session: Option<Arc<str>>,
    pub cgroup: Option<Arc<str>>,
    pub workload: Option<Workload>,
}

/// Agent and session named by a session cgroup path, if `path` is one (or a
/// sub-cgroup of one).
#[must_use]
pub fn session_of_path<'a>(parent: &str, path: &'a str) -> Option<(&'a str, &'a str)> {
    let parent = parent.trim_matches('/');
    let rest = path.trim_start_matches('/').strip_prefix(parent)?;
    let rest = rest.strip_prefix('/')?;
    let mut parts = rest.split('/');
    let agent = parts.next().filter(|s| !s.is_empty())?;
    let session = parts.next().filter(|s| !s.is_empty())?;
    Some((agent, session))
}

/// Caches attribution per cgroup id; cleared when the config changes.
#[derive(Debug, Default)]
pub struct Attributor {
    parent: String,
    cache: HashMap<u64, Arc<Attribution>>,
    /// Cgroups a process of a session escaped into: the session's, whatever
    /// their path says, until forgotten.
    adopted: HashMap<u64, Arc<Attribution>>,
}

impl Attributor {
    /// `parent` is the session parent's path relative to the mount (`/vigil`).
    #[must_use]
    pub fn new(parent: &str) -> Self {
        Self {
            parent: parent.to_owned(),
            cache: HashMap::new(),
            adopted: HashMap::new(),
        }
    }

    /// Attribution of a cgroup id. `path` is asked only on a cache miss;
    /// `match_agent` maps a non-session cgroup path to an agent name.
    pub fn attribute(
        &mut self,
        cgroup_id: u64,
        path: impl FnOnce() -> Option<Arc<str>>,
        match_agent: impl FnOnce(&str) -> Option<Arc<str>>,
    ) -> Arc<Attribution> {
        if let Some(a) = self
            .adopted
            .get(&cgroup_id)
            .or_else(|| self.cache.get(&cgroup_id))
        {
            return Arc::clone(a);
        }
        let Some(path) = path() else {
            // Unknown for now (the cgroup may be gone): not cached, so a
            // later rescan can still resolve it.
            return Arc::new(Attribution::default());
        };
        let a = if let Some((agent, session)) = session_of_path(&self.parent, &path) {
            Attribution {
                agent: Some(agent.into()),
                session: Some(session.into()),
                workload: None,
                cgroup: Some(path),
            }
        } else {
            Attribution {
                agent: match_agent(&path),
                session: None,
                workload: parse_workload(&path),
                cgroup: Some(path),
            }
        };
        let a = Arc::new(a);
        self.cache.insert(cgroup_id, Arc::clone(&a));
        a
    }

    /// Forgets every cached attribution (the agents' match rules changed).
    pub fn clear(&mut self) {
        self.cache.clear();
    }

    /// Forgets one cgroup (removed).
    pub fn forget(&mut self, cgroup_id: u64) {
        self.cache.remove(&cgroup_id);
        self.adopted.remove(&cgroup_id);
    }

    /// Attributes `cgroup_id` as `to` (a session a process escaped from)
    /// from now on, whatever its path; a config change keeps it.
    pub fn adopt(&mut self, cgroup_id: u64, to: Arc<Attribution>) {
        if to.agent.is_some() {
            self.adopted.insert(cgroup_id, to);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_adopted_cgroup_is_the_sessions_whatever_its_path_and_config_changes() {
        let mut a = Attributor::new("/vigil");
        let session = a.attribute(10, || Some("/vigil/coder/s-1".into()), |_| None);
        a.adopt(20, Arc::clone(&session));
        let outside = a.attribute(20, || Some("/elsewhere".into()), |_| None);
        assert_eq!(outside.session.as_deref(), Some("s-1"));
        a.clear();
        let outside = a.attribute(20, || Some("/elsewhere".into()), |_| None);
        assert_eq!(outside.agent.as_deref(), Some("coder"));
        a.forget(20);
        let outside = a.attribute(20, || Some("/elsewhere".into()), |_| None);
        assert_eq!(outside.agent, None);
        // Nothing to adopt from an unattributed cgroup.
        let nobody = a.attribute(30, || Some("/other".into()), |_| None);
        a.adopt(40, nobody);
        assert_eq!(a.attribute(40, || Some("/x".into()), |_| None).agent, None);
    }

    #[test]
    fn session_paths_name_agent_and_session() {
        assert_eq!(
            session_of_path("/vigil", "/vigil/coder/s-1"),
            Some(("coder", "s-1"))
        );
        assert_eq!(
            session_of_path("vigil", "/vigil/coder/s-1/sub/deeper"),
            Some(("coder", "s-1"))
        );
        assert_eq!(session_of_path("/vigil", "/vigil/coder"), None);
        assert_eq!(session_of_path("/vigil", "/vigilant/coder/s-1"), None);
        assert_eq!(session_of_path("/vigil", "/system.slice/x"), None);
        assert_eq!(
            session_of_path("/nested/vigil", "/nested/vigil/a/b"),
            Some(("a", "b"))
        );
    }

    #[test]
    fn caches_and_matches_non_session_cgroups() {
        let mut at = Attributor::new("/vigil");
        let path = "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1b2c3d4e_1111_2222_3333_444455556666.slice/cri-containerd-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope";
        let a = at.attribute(5, || Some(path.into()), |_| Some("coder".into()));
        assert_eq!(a.agent.as_deref(), Some("coder"));
        assert_eq!(a.session, None);
        let w = a.workload.as_ref().expect("container path has a workload");
        assert_eq!(w.runtime, "containerd");
        // Cached: neither closure runs again.
        let b = at.attribute(
            5,
            || panic!("path asked twice"),
            |_| panic!("matched twice"),
        );
        assert_eq!(a, b);
        at.clear();
        let c = at.attribute(5, || Some(path.into()), |_| None);
        assert_eq!(c.agent, None);
    }

    #[test]
    fn unknown_paths_are_not_cached() {
        let mut at = Attributor::new("/vigil");
        assert_eq!(at.attribute(9, || None, |_| None).agent, None);
        let a = at.attribute(9, || Some("/vigil/x/y".into()), |_| None);
        assert_eq!(a.agent.as_deref(), Some("x"));
    }
}
