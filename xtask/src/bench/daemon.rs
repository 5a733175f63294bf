//! A private daemon for the kernel benchmarks: the release build, with its
//! own socket, cgroup parent, state and bpffs pin directories, event output
//! off, and one agent, [`AGENT`], that matches `vigil exec` sessions and
//! allows everything (so the figures measure observation, not anomaly
//! handling).

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use vigil_harness::{Events, Layout, START_TIMEOUT, Stop, every, names};

use crate::cmd;

/// The agent the benchmark workloads run as.
pub const AGENT: &str = "bench";
const AGENT_CONFIG: &str =
    vigil_harness::permissive_agent!("bench", "bench@localhost", "cargo xtask bench workloads");

/// How long SIGTERM may take before the daemon is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// A running daemon; stopped and cleaned up on [`Daemon::stop`] or drop.
pub struct Daemon {
    // Declared before `_dir`, so that the daemon is stopped before its
    // directory is removed.
    inner: vigil_harness::Daemon,
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts `vigil run` on a private config and waits until it answers
    /// `vigil status`.
    pub fn start(vigil: &Path) -> Result<Self> {
        Self::start_with(vigil, "")
    }

    /// [`Daemon::start`] with extra `[daemon]` settings.
    pub fn start_with(vigil: &Path, daemon_settings: &str) -> Result<Self> {
        Self::start_with_config(vigil, daemon_settings, None, "")
    }

    /// [`Daemon::start_with`], writing every event to `events.jsonl` in its
    /// directory in `format` (`json` or `ocsf`) instead of to no output, and
    /// with more config after the agent's (`[[export]]` sinks).
    pub fn start_with_config(
        vigil: &Path,
        daemon_settings: &str,
        format: Option<&str>,
        config: &str,
    ) -> Result<Self> {
        let (dir, layout) = Layout::temp("vigil-bench-", &names::unique("vigil-bench"))?;
        let events = format.map_or(Events::Off, Events::FileAs);
        let config = layout.config_text(
            daemon_settings,
            events,
            &format!("{AGENT_CONFIG}\n{config}"),
        );
        let mut inner = vigil_harness::Daemon::new(vigil, layout);
        inner.write_config(&config)?;
        eprintln!("$ {}", cmd::display(&inner.run_command()));
        inner.spawn()?;
        inner
            .wait_ready(START_TIMEOUT, every(Duration::from_millis(50)))
            .map_err(|e| anyhow!("{e:#}:\n{}", inner.log()))?;
        Ok(Self { inner, _dir: dir })
    }

    pub fn socket(&self) -> &Path {
        &self.inner.layout().socket
    }

    pub fn pid(&self) -> Option<u32> {
        self.inner.pid()
    }

    /// `vigil exec --agent bench --session SESSION -- PROGRAM`: the caller
    /// adds the program's arguments.
    pub fn exec(&self, session: &str, program: impl AsRef<OsStr>) -> Command {
        let mut c = self.inner.exec(AGENT, session);
        c.arg(program);
        c
    }

    /// `vigil status` output.
    pub fn status(&self) -> Result<String> {
        cmd::probe(self.inner.client().arg("status"))
    }

    /// Records the kernel could not deliver so far, over all sensors (from
    /// the `sensor NAME STATE lost N` lines of `vigil status`).
    pub fn lost(&self) -> Result<u64> {
        let status = self.status()?;
        let counts: Vec<u64> = status
            .lines()
            .filter(|l| l.starts_with("sensor "))
            .map(|l| {
                l.rsplit_once(" lost ")
                    .and_then(|(_, n)| n.trim().parse().ok())
                    .with_context(|| format!("no loss counter in `vigil status` line {l:?}"))
            })
            .collect::<Result<_>>()?;
        if counts.is_empty() {
            bail!("`vigil status` lists no sensors:\n{status}");
        }
        Ok(counts.iter().sum())
    }

    /// Events the daemon delivered so far: the newest sequence of its
    /// journal (the `journal ... sequences A..=B` line of `vigil status`).
    pub fn delivered(&self) -> Result<u64> {
        let status = self.status()?;
        journal_newest(&status)
            .with_context(|| format!("no journal sequences in `vigil status`:\n{status}"))
    }

    /// CPU time the daemon used so far, in clock ticks.
    fn cpu_ticks(&self) -> Result<u64> {
        vigil_harness::cpu::ticks(self.pid().context("the daemon is not running")?)
    }

    /// Waits until the daemon has worked off what earlier runs left it (at
    /// most one tick of CPU time in 300 ms), so that a run does not pay for
    /// the previous one's events.
    pub fn wait_idle(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_mins(1);
        let mut before = self.cpu_ticks()?;
        loop {
            std::thread::sleep(Duration::from_millis(300));
            let now = self.cpu_ticks()?;
            if now <= before + 1 {
                return Ok(());
            }
            if Instant::now() > deadline {
                eprintln!("bench: the daemon is still busy after 60 s; measuring anyway");
                return Ok(());
            }
            before = now;
        }
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        self.inner.log()
    }

    /// Stops the daemon with SIGTERM and removes its cgroups and pins.
    pub fn stop(mut self) -> Result<()> {
        let stopped = self.inner.terminate(STOP_TIMEOUT);
        // Dropping the daemon would do this too, without saying so.
        let _ = self.inner.clean_up();
        match stopped.context("sending SIGTERM to the daemon")? {
            Stop::NotRunning => Ok(()),
            Stop::Exited(status) if status.success() => Ok(()),
            Stop::Exited(status) => bail!(
                "the daemon exited with {status} on SIGTERM:\n{}",
                self.log()
            ),
            Stop::Killed => {
                bail!("the daemon did not stop within {STOP_TIMEOUT:?} of SIGTERM; killed it")
            }
        }
    }
}

/// The newest journal sequence in `vigil status` output.
fn journal_newest(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("journal "))?;
    let (_, rest) = line.split_once("..=")?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Refuses to measure while Vigil programs left by a daemon that is gone
/// are still attached. A daemon pins its links so that enforcement holds
/// while it is down, so a daemon that was killed (or a test that was) leaves
/// its programs running on every syscall of the machine: they would be in
/// every figure, the no-daemon baseline included, and nothing else shows it.
pub fn refuse_stale_programs() -> Result<()> {
    let mounts = fs::read_to_string("/proc/self/mounts").context("reading /proc/self/mounts")?;
    let stale = stale_pin_dirs(&mounts, &other_daemons());
    if stale.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = stale.iter().map(|p| p.display().to_string()).collect();
    bail!(
        "Vigil programs pinned by a daemon that is no longer running are still attached \
         ({}); they would run in every measurement, the no-daemon baseline included. \
         Detach them with `vigil run --cleanup --config FILE` for that daemon's config, \
         or `rm -r` the directory",
        list.join(", ")
    )
}

/// Pin directories (`PIN_DIR/links/*` non-empty) on the bpf file systems in
/// `mounts`, one or two levels down, while no daemon runs (`others` empty).
/// A running daemon's pins are its own business: [`note_machine`] warns
/// about the daemon itself.
fn stale_pin_dirs(mounts: &str, others: &[u32]) -> Vec<PathBuf> {
    if !others.is_empty() {
        return Vec::new();
    }
    let children = |dir: &Path| -> Vec<PathBuf> {
        fs::read_dir(dir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.is_dir())
                    .collect()
            })
            .unwrap_or_default()
    };
    let has_links = |dir: &Path| !children(&dir.join("links")).is_empty();
    let mut stale = Vec::new();
    for mount in crate::setup::mount_points(mounts, "bpf") {
        for dir in children(Path::new(mount)) {
            if has_links(&dir) {
                stale.push(dir);
            } else {
                stale.extend(children(&dir).into_iter().filter(|d| has_links(d)));
            }
        }
    }
    stale
}

/// Says what else loads the machine: on a small shared machine, other work
/// (and above all another daemon, whose programs run in every measurement,
/// the no-daemon baseline included) skews the figures.
pub fn note_machine() {
    if let Ok(load) = fs::read_to_string("/proc/loadavg") {
        let load: Vec<&str> = load.split_whitespace().take(3).collect();
        eprintln!("bench: load average {}", load.join(" "));
    }
    let others = other_daemons();
    if !others.is_empty() {
        eprintln!(
            "bench: warning: other `vigil run` processes are running (pids {others:?}); \
             their programs slow every measurement"
        );
    }
}

/// Other `vigil run` processes on this machine.
fn other_daemons() -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            args.first().is_some_and(|a| {
                Path::new(OsStr::from_bytes(a)).file_name() == Some(OsStr::new("vigil"))
            }) && args.get(1) == Some(&b"run".as_slice())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_journal_sequence_is_read_from_the_status() {
        let status = "node      n1 (vigil 0.1.0)\njournal   /s/journal: 4096 bytes, sequences 1..=7312, 0 pruned, 0 gaps sent (keeps 1 bytes, 7days)\n";
        assert_eq!(journal_newest(status), Some(7312));
        assert_eq!(journal_newest("node n1\n"), None);
    }

    #[test]
    fn pins_of_a_daemon_that_is_gone_are_found_one_or_two_levels_down() {
        let bpffs = tempfile::tempdir().unwrap();
        let root = bpffs.path();
        for dir in ["a/links/1-2", "b/maps", "c/d/links/3-4", "e/links"] {
            fs::create_dir_all(root.join(dir)).unwrap();
        }
        let mounts = format!(
            "proc /proc proc rw 0 0\nbpffs {} bpf rw,relatime 0 0\n",
            root.display()
        );
        let mut stale = stale_pin_dirs(&mounts, &[]);
        stale.sort();
        // `e` has an empty `links` directory: nothing is attached.
        assert_eq!(stale, vec![root.join("a"), root.join("c/d")]);
        // A running daemon's pins are not stale.
        assert!(stale_pin_dirs(&mounts, &[42]).is_empty());
        // Other file systems are not looked at.
        let other = format!("tmpfs {} tmpfs rw 0 0\n", root.display());
        assert!(stale_pin_dirs(&other, &[]).is_empty());
    }
}
