//! Agent sessions: `vigil exec` asks the daemon for one, the daemon creates
//! its cgroup at `/<parent>/<agent>/<session>` and moves the caller in, and
//! the caller then execs the agent's command. Everything the command and its
//! descendants do is watched from its first instruction, because the kernel
//! programs treat the whole parent subtree as watched.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::SystemTime,
};

use crate::identity::cgroup::{CgroupError, CgroupFs};

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("invalid {what} {value:?}: use 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' and '-'")]
    InvalidName { what: &'static str, value: String },
    #[error("session {0:?} already exists")]
    Exists(String),
    #[error("session cgroup: {0}")]
    Cgroup(#[from] CgroupError),
    #[error("reading random bytes for a session id: {0}")]
    Random(#[source] std::io::Error),
}

/// Checks a name that becomes a cgroup directory (agent or session).
pub fn validate_name(what: &'static str, value: &str) -> Result<(), SessionError> {
    let ok = (1..=64).contains(&value.len())
        && value != "."
        && value != ".."
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(SessionError::InvalidName {
            what,
            value: value.to_owned(),
        })
    }
}

/// A fresh session id, `s-` and 12 hex digits.
pub fn new_session_id() -> Result<String, SessionError> {
    use std::io::Read as _;
    let mut b = [0u8; 6];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(SessionError::Random)?;
    let mut id = String::from("s-");
    for x in b {
        use std::fmt::Write as _;
        let _ = write!(id, "{x:02x}");
    }
    Ok(id)
}

/// A running session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    pub agent: String,
    pub session: String,
    /// cgroup path relative to the mount.
    pub cgroup: String,
    pub cgroup_id: u64,
    /// The process placed in the session; lineage stops there.
    pub root_pid: u32,
    pub started: SystemTime,
}

/// Creates, tracks and reaps session cgroups.
pub struct SessionManager {
    cgroups: CgroupFs,
    parent: String,
    parent_id: u64,
    sessions: Mutex<HashMap<String, Arc<SessionInfo>>>,
}

impl SessionManager {
    /// Creates the parent cgroup (`/<parent>`) if needed and adopts sessions
    /// left by a previous daemon.
    pub fn new(cgroups: CgroupFs, parent: &str) -> Result<Self, SessionError> {
        let parent = format!("/{}", parent.trim_matches('/'));
        let parent_id = cgroups.create(&parent)?;
        let me = Self {
            cgroups,
            parent,
            parent_id,
            sessions: Mutex::new(HashMap::new()),
        };
        me.adopt();
        Ok(me)
    }

    /// Path of the parent relative to the mount (`/vigil`).
    pub fn parent(&self) -> &str {
        &self.parent
    }

    /// `(cgroup id, level)` of the parent, for the kernel programs.
    pub fn parent_id_level(&self) -> (u64, u32) {
        (
            self.parent_id,
            crate::identity::cgroup::level_of(&self.parent) as u32,
        )
    }

    pub const fn cgroups(&self) -> &CgroupFs {
        &self.cgroups
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<SessionInfo>>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Re-registers sessions whose cgroups still exist (daemon restart).
    fn adopt(&self) {
        let Ok(root) = self.cgroups.abs(&self.parent) else {
            return;
        };
        let Ok(agents) = std::fs::read_dir(root) else {
            return;
        };
        let mut map = self.lock();
        for agent in agents.filter_map(Result::ok).filter(|e| e.path().is_dir()) {
            let agent_name = agent.file_name().to_string_lossy().into_owned();
            let Ok(sessions) = std::fs::read_dir(agent.path()) else {
                continue;
            };
            for s in sessions
                .filter_map(Result::ok)
                .filter(|e| e.path().is_dir())
            {
                let session = s.file_name().to_string_lossy().into_owned();
                let cgroup = format!("{}/{agent_name}/{session}", self.parent);
                let Ok(cgroup_id) = self.cgroups.id_of(&cgroup) else {
                    continue;
                };
                let root_pid = self
                    .cgroups
                    .procs(&cgroup)
                    .ok()
                    .and_then(|p| p.into_iter().min())
                    .unwrap_or(0);
                map.insert(
                    session.clone(),
                    Arc::new(SessionInfo {
                        agent: agent_name.clone(),
                        session,
                        cgroup,
                        cgroup_id,
                        root_pid,
                        started: SystemTime::now(),
                    }),
                );
            }
        }
    }

    /// Starts a session for `agent` and moves `pid` into it.
    pub fn start(
        &self,
        agent: &str,
        session: Option<&str>,
        pid: u32,
    ) -> Result<Arc<SessionInfo>, SessionError> {
        validate_name("agent name", agent)?;
        let session = match session.filter(|s| !s.is_empty()) {
            Some(s) => {
                validate_name("session id", s)?;
                s.to_owned()
            }
            None => new_session_id()?,
        };
        let cgroup = format!("{}/{agent}/{session}", self.parent);
        let mut map = self.lock();
        if map.contains_key(&session) || self.cgroups.abs(&cgroup).is_ok_and(|p| p.exists()) {
            return Err(SessionError::Exists(session));
        }
        let cgroup_id = self.cgroups.create(&cgroup)?;
        if let Err(e) = self.cgroups.move_pid(&cgroup, pid) {
            let _ = self.cgroups.remove_tree(&cgroup);
            return Err(e.into());
        }
        let info = Arc::new(SessionInfo {
            agent: agent.to_owned(),
            session: session.clone(),
            cgroup,
            cgroup_id,
            root_pid: pid,
            started: SystemTime::now(),
        });
        map.insert(session, Arc::clone(&info));
        Ok(info)
    }

    /// The cgroup holding every session of `agent` (created when missing),
    /// as `(id, path)`: policy set on it covers present and future sessions.
    pub fn agent_dir(&self, agent: &str) -> Result<(u64, String), SessionError> {
        validate_name("agent name", agent)?;
        let path = format!("{}/{agent}", self.parent);
        let id = self.cgroups.create(&path)?;
        Ok((id, path))
    }

    /// Like [`SessionManager::agent_dir`], without creating it.
    pub fn existing_agent_dir(&self, agent: &str) -> Result<(u64, String), SessionError> {
        validate_name("agent name", agent)?;
        let path = format!("{}/{agent}", self.parent);
        let id = self.cgroups.id_of(&path)?;
        Ok((id, path))
    }

    pub fn get(&self, session: &str) -> Option<Arc<SessionInfo>> {
        self.lock().get(session).cloned()
    }

    /// Sessions of one agent (all when `agent` is `None`).
    pub fn list(&self, agent: Option<&str>) -> Vec<Arc<SessionInfo>> {
        let mut v: Vec<_> = self
            .lock()
            .values()
            .filter(|s| agent.is_none_or(|a| s.agent == a))
            .cloned()
            .collect();
        v.sort_by(|a, b| a.session.cmp(&b.session));
        v
    }

    /// Removes sessions whose processes have all exited; returns them.
    pub fn reap(&self) -> Vec<Arc<SessionInfo>> {
        let mut map = self.lock();
        let done: Vec<String> = map
            .values()
            .filter(|s| !self.cgroups.populated(&s.cgroup).unwrap_or(false))
            .map(|s| s.session.clone())
            .collect();
        let mut out = Vec::new();
        for s in done {
            if let Some(info) = map.remove(&s) {
                if let Err(e) = self.cgroups.remove_tree(&info.cgroup) {
                    tracing::debug!("removing session cgroup {}: {e}", info.cgroup);
                }
                // The agent directory stays: revocations and approvals of the
                // agent are kept on it, by cgroup id.
                out.push(info);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(validate_name("agent name", "code-assistant").is_ok());
        assert!(validate_name("agent name", "a.b_c-1").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", &"x".repeat(65), "ü"] {
            assert!(
                validate_name("agent name", bad).is_err(),
                "{bad:?} accepted"
            );
        }
        let id = new_session_id().unwrap();
        assert!(id.starts_with("s-") && id.len() == 14);
        validate_name("session id", &id).unwrap();
    }

    /// Real cgroups: a session is created, a process moved in, reaped when it exits.
    #[test]
    fn sessions_live_in_real_cgroups() {
        if !nix::unistd::geteuid().is_root() {
            assert!(
                std::env::var_os("VIGIL_REQUIRE_KERNEL").is_none(),
                "kernel test needs root"
            );
            return;
        }
        let fs = CgroupFs::discover().unwrap();
        let parent = format!("vigil-unit-{}", std::process::id());
        let mgr = SessionManager::new(fs, &parent).unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let info = mgr.start("coder", Some("s-test"), child.id()).unwrap();
        assert_eq!(info.cgroup, format!("/{parent}/coder/s-test"));
        assert!(matches!(
            mgr.start("coder", Some("s-test"), child.id()),
            Err(SessionError::Exists(_))
        ));
        let procs = mgr.cgroups().procs(&info.cgroup).unwrap();
        assert_eq!(procs, vec![child.id()]);
        assert!(mgr.reap().is_empty(), "populated session reaped");
        child.kill().unwrap();
        child.wait().unwrap();
        // cgroup.events may lag the exit by a moment.
        let mut reaped = Vec::new();
        for _ in 0..50 {
            reaped = mgr.reap();
            if !reaped.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(reaped.len(), 1);
        assert!(mgr.get("s-test").is_none());
        mgr.cgroups().remove_tree(&format!("/{parent}")).unwrap();
    }
}
