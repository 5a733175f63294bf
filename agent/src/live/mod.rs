//! The running config and its hot reload.
//!
//! [`LiveConfig`] holds the current config and its compiled scope behind one
//! atomic pointer: an event is evaluated against one version or the next,
//! never a mix. A reload that fails keeps the running version.
//!
//! [`spawn_watcher`] reloads on file changes and on SIGHUP. It watches the
//! config file's directory rather than the file: editors replace files by
//! rename, and a Kubernetes `ConfigMap` volume updates by swapping the
//! `..data` symlink next to the file, which leaves the file's own symlink
//! untouched.

use std::path::{Path, PathBuf};

mod check;
pub use check::check_file;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use futures_util::StreamExt as _;
use inotify::{EventStream, Inotify, WatchMask};
use tokio::sync::watch;

use crate::config::{Config, ConfigError, EMBEDDED_SOURCE};
use crate::paths;
use crate::scope::Scope;

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot watch config directory {dir}: {source}")]
    Inotify {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot install the SIGHUP handler: {0}")]
    Signal(#[source] std::io::Error),
}

/// Where the config comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// `deploy/config/default.toml`, compiled in.
    Embedded,
    File(PathBuf),
}

impl Source {
    fn read(&self) -> Result<(String, String), ConfigError> {
        match self {
            Self::Embedded => Ok((
                paths::EMBEDDED_CONFIG.to_owned(),
                EMBEDDED_SOURCE.to_owned(),
            )),
            Self::File(p) => {
                let name = p.display().to_string();
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    file: name.clone(),
                    source,
                })?;
                Ok((text, name))
            }
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Embedded => f.write_str(EMBEDDED_SOURCE),
            Self::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// One loaded version.
#[derive(Debug)]
pub struct Loaded {
    /// 1 for the first load, then +1 per accepted change.
    pub version: u64,
    pub config: Config,
    pub scope: Arc<Scope>,
    pub source: Source,
    /// When this version was loaded.
    pub loaded_at: SystemTime,
    /// Things that are valid but probably not what the operator meant.
    pub warnings: Vec<String>,
    text: String,
}

/// Result of a successful reload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reloaded {
    /// A new version is now current.
    Replaced { version: u64 },
    /// The text did not change; the running version stays.
    Unchanged { version: u64 },
}

#[derive(Debug)]
pub struct LiveConfig {
    current: ArcSwap<Loaded>,
    source: Source,
    /// Serialises reloads so that versions are assigned in order; holds
    /// their bookkeeping.
    reloading: Mutex<LiveStatus>,
    versions: watch::Sender<u64>,
}

fn load(source: &Source, version: u64) -> Result<Loaded, ConfigError> {
    let (text, name) = source.read()?;
    let config = Config::from_toml_str(&text, &name)?;
    let scope = Arc::new(Scope::compile(&config)?);
    Ok(Loaded {
        version,
        warnings: warnings(&config),
        config,
        scope,
        source: source.clone(),
        loaded_at: SystemTime::now(),
        text,
    })
}

fn warnings(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if config.agents.is_empty() {
        out.push("the config declares no agent: nothing is governed".to_owned());
    }
    if config.daemon.watch_all {
        out.push("daemon.watch_all is on: every process on the node is reported".to_owned());
    }
    for a in &config.agents {
        if a.scope.tools.is_empty() {
            out.push(format!(
                "agent {} lists no tools: every exec it makes is an anomaly",
                a.name
            ));
        }
    }
    out
}

/// Reload bookkeeping, for the status API.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LiveStatus {
    /// The config file, or `<embedded>`.
    pub path: String,
    /// The error of the last reload attempt; `None` when it succeeded.
    pub last_error: Option<String>,
    /// Accepted reloads (new versions) since start.
    pub reloads: u64,
    /// Rejected reloads since start.
    pub failures: u64,
}

impl LiveConfig {
    /// Loads the first version from `source`.
    pub fn from_source(source: Source) -> Result<Self, ConfigError> {
        let first = load(&source, 1)?;
        Ok(Self {
            current: ArcSwap::from_pointee(first),
            reloading: Mutex::new(LiveStatus {
                path: source.to_string(),
                ..LiveStatus::default()
            }),
            source,
            versions: watch::channel(1).0,
        })
    }

    /// Loads the first version from a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::from_source(Source::File(path.to_path_buf()))
    }

    /// Runs on the embedded default config (which never changes).
    pub fn embedded() -> Result<Self, ConfigError> {
        Self::from_source(Source::Embedded)
    }

    /// Reload bookkeeping and the current version's warnings.
    #[must_use]
    pub fn status(&self) -> (LiveStatus, Vec<String>) {
        let status = self
            .reloading
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        (status, self.current.load().warnings.clone())
    }

    /// The current version; holding it keeps it alive across reloads.
    #[must_use]
    pub fn current(&self) -> Arc<Loaded> {
        self.current.load_full()
    }

    #[must_use]
    pub fn scope(&self) -> Arc<Scope> {
        Arc::clone(&self.current.load().scope)
    }

    #[must_use]
    pub fn version(&self) -> u64 {
        self.current.load().version
    }

    #[must_use]
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// Receives the version number after every accepted change.
    #[must_use]
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.versions.subscribe()
    }

    /// Reads, checks and compiles the source again and swaps it in. On error
    /// the running version stays and the error is returned.
    pub fn reload(&self) -> Result<Reloaded, ConfigError> {
        let mut status = self
            .reloading
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let outcome = self.try_reload();
        match &outcome {
            Ok(Reloaded::Replaced { .. }) => {
                status.reloads += 1;
                status.last_error = None;
            }
            Ok(Reloaded::Unchanged { .. }) => status.last_error = None,
            Err(e) => {
                status.failures += 1;
                status.last_error = Some(e.to_string());
            }
        }
        outcome
    }

    fn try_reload(&self) -> Result<Reloaded, ConfigError> {
        let old = self.current.load_full();
        let (text, _) = self.source.read()?;
        if text == old.text {
            return Ok(Reloaded::Unchanged {
                version: old.version,
            });
        }
        let version = old.version + 1;
        let new = load(&self.source, version)?;
        self.current.store(Arc::new(new));
        self.versions.send_replace(version);
        Ok(Reloaded::Replaced { version })
    }
}

/// What triggers a reload.
#[derive(Clone, Debug)]
pub struct WatchOptions {
    /// The config file whose directory is watched; `None`: no file watching.
    pub file: Option<PathBuf>,
    /// Reload on SIGHUP.
    pub sighup: bool,
    /// Quiet time after the last file event before reloading; a `ConfigMap`
    /// update or an editor's save is a burst of events.
    pub debounce: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            file: None,
            sighup: true,
            debounce: Duration::from_millis(250),
        }
    }
}

/// The running watcher. It keeps running when this handle is dropped;
/// [`ConfigWatcher::stop`] ends it.
#[derive(Debug)]
pub struct ConfigWatcher {
    task: tokio::task::JoinHandle<()>,
}

impl ConfigWatcher {
    pub fn stop(self) {
        self.task.abort();
    }
}

/// Directories to watch for `path`: its own, and that of its resolved
/// target when a symlink points somewhere else entirely.
fn watch_dirs(path: &Path) -> Vec<PathBuf> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut dirs = vec![parent.clone()];
    if let Some(target_dir) = std::fs::canonicalize(path)
        .ok()
        .and_then(|t| t.parent().map(Path::to_path_buf))
    {
        let inside = std::fs::canonicalize(&parent).is_ok_and(|p| target_dir.starts_with(p));
        if !inside {
            dirs.push(target_dir);
        }
    }
    dirs
}

/// What changes a config file: written, replaced by a rename, created or
/// removed, or its directory moved. Not opens, reads, or closes without a
/// write: `notify`'s inotify watcher always asks for `IN_OPEN`, which woke
/// the daemon for every open of any file in the directory (every exec on
/// the node, for a config in `/etc`), so the daemon asks inotify itself.
const CHANGES: WatchMask = WatchMask::CLOSE_WRITE
    .union(WatchMask::MODIFY)
    .union(WatchMask::ATTRIB)
    .union(WatchMask::CREATE)
    .union(WatchMask::DELETE)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::DELETE_SELF)
    .union(WatchMask::MOVE_SELF);

type Changes = EventStream<[u8; 4096]>;

/// Change events in the directories of `path` ([`watch_dirs`]); needs a
/// tokio runtime.
fn changes(path: &Path) -> Result<Changes, WatchError> {
    let err = |dir: &Path| {
        let dir = dir.display().to_string();
        move |source| WatchError::Inotify { dir, source }
    };
    let inotify = Inotify::init().map_err(err(path))?;
    for dir in watch_dirs(path) {
        inotify.watches().add(&dir, CHANGES).map_err(err(&dir))?;
    }
    inotify.into_event_stream([0; 4096]).map_err(err(path))
}

/// The next change; pending forever without file watching. A failing watch
/// is logged and dropped: SIGHUP still reloads.
async fn next_change(files: &mut Option<Changes>) {
    let Some(stream) = files.as_mut() else {
        return std::future::pending().await;
    };
    match stream.next().await {
        Some(Ok(_)) => {}
        Some(Err(e)) => {
            tracing::error!("config file watch failed, reloading on SIGHUP only: {e}");
            *files = None;
            std::future::pending::<()>().await;
        }
        None => {
            *files = None;
            std::future::pending::<()>().await;
        }
    }
}

/// Reloads `live` when `path` (its config file) changes and on SIGHUP.
/// See [`spawn_watcher_with`].
pub fn spawn_watcher(live: Arc<LiveConfig>, path: PathBuf) -> Result<ConfigWatcher, WatchError> {
    spawn_watcher_with(
        live,
        WatchOptions {
            file: Some(path),
            ..WatchOptions::default()
        },
    )
}

/// Starts reloading `live` on file changes and/or SIGHUP (needs a tokio
/// runtime). Every outcome is logged: a new version at info, a rejected
/// config at error with every problem, and the old version keeps running.
pub fn spawn_watcher_with(
    live: Arc<LiveConfig>,
    options: WatchOptions,
) -> Result<ConfigWatcher, WatchError> {
    let WatchOptions {
        file,
        sighup,
        debounce,
    } = options;
    let mut files = file.as_deref().map(changes).transpose()?;
    // Installed before returning, so a SIGHUP sent afterwards never takes
    // the default action (terminate).
    let mut hup = if sighup {
        Some(
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .map_err(WatchError::Signal)?,
        )
    } else {
        None
    };
    let task = tokio::spawn(async move {
        // Owned by the task: file events last as long as the watcher runs.
        loop {
            let from_file = tokio::select! {
                () = next_change(&mut files) => true,
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => false,
                else => return,
            };
            if from_file {
                while tokio::time::timeout(debounce, next_change(&mut files))
                    .await
                    .is_ok()
                {}
            }
            let l = Arc::clone(&live);
            let outcome = tokio::task::spawn_blocking(move || l.reload()).await;
            let cause = if from_file { "file change" } else { "SIGHUP" };
            match outcome {
                Ok(Ok(Reloaded::Replaced { version })) => {
                    tracing::info!(source = %live.source(), version, cause, "config reloaded");
                }
                Ok(Ok(Reloaded::Unchanged { version })) => {
                    tracing::debug!(source = %live.source(), version, cause, "config unchanged");
                }
                Ok(Err(e)) => tracing::error!(
                    source = %live.source(),
                    running_version = live.version(),
                    cause,
                    "config reload rejected, keeping the running version:\n{e}"
                ),
                Err(e) => tracing::error!(error = %e, "config reload task failed"),
            }
        }
    });
    Ok(ConfigWatcher { task })
}

impl prometheus_client::collector::Collector for LiveConfig {
    fn encode(&self, mut enc: prometheus_client::encoding::DescriptorEncoder) -> std::fmt::Result {
        use crate::metrics::{counter, gauge};
        let (status, _) = self.status();
        counter(
            &mut enc,
            "config_reloads",
            "Config reloads accepted",
            status.reloads,
        )?;
        counter(
            &mut enc,
            "config_reload_failures",
            "Config reloads rejected",
            status.failures,
        )?;
        gauge(
            &mut enc,
            "config_version",
            "Version of the config in force (1 at start)",
            self.version(),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn agent(name: &str) -> String {
        format!("[[agent]]\nname = \"{name}\"\n[agent.match]\nsessions = true\n")
    }

    async fn wait_for(live: &LiveConfig, version: u64) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if live.version() >= version {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// Writes through a temporary file and a rename, as editors and config tools do.
    fn replace(path: &Path, text: &str) {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    #[test]
    fn reload_replaces_keeps_on_error_and_skips_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vigil.toml");
        std::fs::write(&path, agent("a")).unwrap();
        let live = LiveConfig::load(&path).unwrap();
        let mut versions = live.subscribe();
        assert_eq!(live.version(), 1);
        assert_eq!(live.reload().unwrap(), Reloaded::Unchanged { version: 1 });

        std::fs::write(&path, agent("a") + &agent("b")).unwrap();
        let before = live.current();
        assert_eq!(live.reload().unwrap(), Reloaded::Replaced { version: 2 });
        assert!(versions.has_changed().unwrap());
        assert_eq!(*versions.borrow_and_update(), 2);
        assert!(live.scope().agent_id("b").is_some());
        // A version held by an in-flight evaluation stays intact.
        assert!(before.scope.agent_id("b").is_none());

        std::fs::write(&path, "[[agent]]\nname = \"c\"\n").unwrap();
        let err = live.reload().unwrap_err();
        assert!(err.to_string().contains("has no match"), "{err}");
        assert_eq!(live.version(), 2);
        assert!(live.scope().agent_id("b").is_some());

        std::fs::remove_file(&path).unwrap();
        assert!(matches!(live.reload(), Err(ConfigError::Read { .. })));
        assert_eq!(live.version(), 2);
        let (status, warnings) = live.status();
        assert_eq!((status.reloads, status.failures), (1, 2));
        assert!(status.last_error.unwrap().contains("cannot read config"));
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("agent a lists no tools")),
            "{warnings:?}"
        );
    }

    #[test]
    fn embedded_source_loads() {
        let live = LiveConfig::embedded().unwrap();
        assert_eq!(live.reload().unwrap(), Reloaded::Unchanged { version: 1 });
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn watcher_follows_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vigil.toml");
        std::fs::write(&path, agent("a")).unwrap();
        let live = Arc::new(LiveConfig::load(&path).unwrap());
        let options = WatchOptions {
            file: Some(path.clone()),
            sighup: false,
            debounce: Duration::from_millis(50),
        };
        let w = spawn_watcher_with(Arc::clone(&live), options).unwrap();

        replace(&path, &(agent("a") + &agent("b")));
        assert!(wait_for(&live, 2).await, "valid change not picked up");
        assert!(live.scope().agent_id("b").is_some());

        // Invalid: rejected, the old version keeps running.
        replace(&path, "[[agent]]\nname = \"bad name\"\n");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(live.version(), 2);
        let err = live.reload().unwrap_err();
        assert!(err.to_string().contains("agent[0].name"), "{err}");

        // In-place write (no rename) is seen too.
        std::fs::write(&path, agent("c")).unwrap();
        assert!(wait_for(&live, 3).await, "in-place write not picked up");
        assert!(live.scope().agent_id("c").is_some());
        assert!(live.scope().agent_id("a").is_none());
        w.stop();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reading_files_next_to_the_config_is_no_change() {
        // A config in a busy directory (`/etc`) must not wake the daemon
        // for every open there.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vigil.toml");
        let other = dir.path().join("passwd");
        std::fs::write(&path, agent("a")).unwrap();
        std::fs::write(&other, "root:x:0:0::/root:/bin/sh\n").unwrap();
        let mut files = Some(changes(&path).unwrap());
        for _ in 0..100 {
            std::fs::read(&other).unwrap();
            std::fs::read(&path).unwrap();
        }
        let quiet = tokio::time::timeout(Duration::from_millis(300), next_change(&mut files)).await;
        assert!(quiet.is_err(), "a read was taken for a change");
        std::fs::write(&path, agent("b")).unwrap();
        let changed = tokio::time::timeout(Duration::from_secs(5), next_change(&mut files)).await;
        assert!(changed.is_ok(), "a write was not seen");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn watcher_follows_configmap_symlink_swap() {
        // Kubelet's layout: vigil.toml -> ..data/vigil.toml, ..data -> ..<timestamp>.
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let v1 = root.join("..2026_01_01_00_00_00.1");
        std::fs::create_dir(&v1).unwrap();
        std::fs::write(v1.join("vigil.toml"), agent("a")).unwrap();
        std::os::unix::fs::symlink("..2026_01_01_00_00_00.1", root.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/vigil.toml", root.join("vigil.toml")).unwrap();
        let live = Arc::new(LiveConfig::load(&root.join("vigil.toml")).unwrap());
        let options = WatchOptions {
            file: Some(root.join("vigil.toml")),
            sighup: false,
            debounce: Duration::from_millis(50),
        };
        let w = spawn_watcher_with(Arc::clone(&live), options).unwrap();

        let swap = |name: &str, text: &str| {
            let v = root.join(name);
            std::fs::create_dir(&v).unwrap();
            std::fs::write(v.join("vigil.toml"), text).unwrap();
            std::os::unix::fs::symlink(name, root.join("..data_tmp")).unwrap();
            std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
        };
        swap("..2026_01_01_00_01_00.2", &(agent("a") + &agent("k8s")));
        std::fs::remove_dir_all(&v1).unwrap();
        assert!(wait_for(&live, 2).await, "ConfigMap swap not picked up");
        assert!(live.scope().agent_id("k8s").is_some());

        swap("..2026_01_01_00_02_00.3", "not toml [");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            live.version(),
            2,
            "broken ConfigMap must not replace the running config"
        );
        assert!(live.scope().agent_id("k8s").is_some());
        let (status, _) = live.status();
        assert_eq!((status.reloads, status.failures), (1, 1));
        assert!(status.last_error.unwrap().contains("vigil.toml:1:"));
        w.stop();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sighup_triggers_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vigil.toml");
        std::fs::write(&path, agent("a")).unwrap();
        let live = Arc::new(LiveConfig::load(&path).unwrap());
        let w = spawn_watcher_with(Arc::clone(&live), WatchOptions::default()).unwrap();
        std::fs::write(&path, agent("after-hup")).unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            live.version(),
            1,
            "no file watching: nothing happens without the signal"
        );
        nix::sys::signal::raise(nix::sys::signal::Signal::SIGHUP).unwrap();
        assert!(wait_for(&live, 2).await, "SIGHUP did not reload");
        assert!(live.scope().agent_id("after-hup").is_some());
        w.stop();
    }
}
