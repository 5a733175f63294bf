//! A private `vigil run` process.

use std::{
    ffi::{OsStr, OsString},
    io,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use serde_json::Value;

use crate::{Layout, cgroup};

/// How long a daemon may take to load its programs and answer on its socket.
pub const START_TIMEOUT: Duration = Duration::from_mins(1);

/// How long [`Daemon`]'s drop waits after SIGTERM before it kills.
const DROP_GRACE: Duration = Duration::from_secs(10);

/// A daemon on a [`Layout`], started from the config file there. Dropping it
/// stops it and removes its cgroups and pins, whatever state it is in.
pub struct Daemon {
    vigil: PathBuf,
    layout: Layout,
    env: Vec<(OsString, OsString)>,
    child: Option<Child>,
}

/// How a daemon ended on [`Daemon::terminate`].
#[derive(Debug)]
pub enum Stop {
    /// It was not running.
    NotRunning,
    /// It exited on SIGTERM with this status.
    Exited(ExitStatus),
    /// It did not exit within the grace period and was killed.
    Killed,
}

/// A pause for the waiting loops: sleeps `interval`, never fails.
pub fn every(interval: Duration) -> impl FnMut() -> anyhow::Result<()> {
    move || {
        std::thread::sleep(interval);
        Ok(())
    }
}

impl Daemon {
    /// A daemon of the `vigil` binary on `layout`; nothing runs yet.
    #[must_use]
    pub fn new(vigil: &Path, layout: Layout) -> Self {
        Self {
            vigil: vigil.to_owned(),
            layout,
            env: Vec::new(),
            child: None,
        }
    }

    /// Sets an environment variable for `vigil run`, besides `RUST_LOG=info`.
    #[must_use]
    pub fn with_env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    #[must_use]
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The `vigil` binary it runs.
    #[must_use]
    pub fn vigil_path(&self) -> &Path {
        &self.vigil
    }

    /// Writes the config file the daemon starts from.
    pub fn write_config(&self, text: &str) -> anyhow::Result<()> {
        std::fs::write(&self.layout.config, text)
            .with_context(|| format!("writing {}", self.layout.config.display()))
    }

    /// `vigil run --config CONFIG` as [`Daemon::spawn`] runs it (but for its
    /// stderr, which goes to [`Layout::log`]).
    #[must_use]
    pub fn run_command(&self) -> Command {
        let mut run = Command::new(&self.vigil);
        run.args(["run", "--config"])
            .arg(&self.layout.config)
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        run
    }

    /// Starts (or restarts) the daemon process on the config file, its
    /// stderr appended to the log. Does not wait for it.
    pub fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.layout.log)
            .with_context(|| format!("opening {}", self.layout.log.display()))?;
        let child = self
            .run_command()
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting `{} run`", self.vigil.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits until the daemon answers `vigil status`, calling `pause`
    /// between attempts (an error from it ends the wait). An error when the
    /// daemon exits first or does not answer within `timeout`.
    pub fn wait_ready(
        &mut self,
        timeout: Duration,
        mut pause: impl FnMut() -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait().context("waiting for the daemon")?
            {
                bail!("the daemon exited during start ({status})");
            }
            if self.layout.socket.exists() && self.vigil(&["status"])?.status.success() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the daemon did not answer `vigil status` within {timeout:?}");
            }
            pause()?;
        }
    }

    /// [`Daemon::spawn`], then [`Daemon::wait_ready`] for up to
    /// [`START_TIMEOUT`].
    pub fn start(&mut self) -> anyhow::Result<()> {
        self.spawn()?;
        self.wait_ready(START_TIMEOUT, every(Duration::from_millis(50)))
    }

    /// `vigil` as a client of this daemon (on its socket, stdin closed).
    #[must_use]
    pub fn client(&self) -> Command {
        let mut c = Command::new(&self.vigil);
        c.env("VIGIL_SOCKET", &self.layout.socket)
            .stdin(Stdio::null());
        c
    }

    /// Runs a `vigil` client command against this daemon.
    pub fn vigil(&self, args: &[&str]) -> anyhow::Result<Output> {
        self.client()
            .args(args)
            .output()
            .with_context(|| format!("running {}", self.vigil.display()))
    }

    /// `vigil exec --agent AGENT --session SESSION --`: the caller adds the
    /// program and its arguments.
    #[must_use]
    pub fn exec(&self, agent: &str, session: &str) -> Command {
        let mut c = self.client();
        c.args(["exec", "--agent", agent, "--session", session, "--"]);
        c
    }

    /// The daemon's stderr so far.
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.layout.log).unwrap_or_default()
    }

    /// Every event written to [`Layout::events`] so far.
    pub fn events(&self) -> anyhow::Result<Vec<Value>> {
        crate::events::read(&self.layout.events)
    }

    /// Waits for the first event that satisfies `pred`, calling `pause`
    /// between looks; `None` when none came within `timeout`.
    pub fn wait_for_event(
        &self,
        timeout: Duration,
        mut pause: impl FnMut() -> anyhow::Result<()>,
        pred: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Option<Value>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.events()?.into_iter().find(|e| pred(e)) {
                return Ok(Some(e));
            }
            if Instant::now() > deadline {
                return Ok(None);
            }
            pause()?;
        }
    }

    /// The daemon's process id, while it runs.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// True while the daemon process runs.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Sends SIGKILL (a crash) and waits for the process.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM and waits up to `grace` for the daemon to exit, then
    /// kills it. Its cgroups and pins stay (see [`Daemon::clean_up`]).
    pub fn terminate(&mut self, grace: Duration) -> io::Result<Stop> {
        let Some(mut child) = self.child.take() else {
            return Ok(Stop::NotRunning);
        };
        let term = i32::try_from(child.id())
            .map_err(io::Error::other)
            .and_then(|pid| kill(Pid::from_raw(pid), Signal::SIGTERM).map_err(io::Error::from));
        if let Err(e) = term {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait()? {
                return Ok(Stop::Exited(status));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        Ok(Stop::Killed)
    }

    /// Kills what is left in the daemon's sessions and removes its cgroup
    /// parent and pin directory. Pinned programs outlive their daemon by
    /// design: left alone, they would run on every syscall of the machine.
    pub fn clean_up(&self) -> io::Result<()> {
        let mut result = Ok(());
        if let Some(mount) = cgroup::v2_mount() {
            let parent = mount.join(&self.layout.cgroup_parent);
            if parent.exists() {
                let _ = cgroup::kill(&parent);
                result = cgroup::remove(&parent);
            }
        }
        match std::fs::remove_dir_all(&self.layout.pin_dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => result,
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.terminate(DROP_GRACE);
        let _ = self.clean_up();
    }
}
