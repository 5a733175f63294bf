//! A private daemon for the kernel benchmarks: the release build, with its
//! own socket, cgroup parent, state and bpffs pin directories, event output
//! off, and one agent, [`AGENT`], that matches `vigil exec` sessions and
//! allows everything (so the figures measure observation, not anomaly
//! handling).

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::cmd;

/// The agent the benchmark workloads run as.
pub const AGENT: &str = "bench";

/// How long the daemon may take to load its programs and open its socket.
const START_TIMEOUT: Duration = Duration::from_mins(1);
/// How long SIGTERM may take before the daemon is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// The release binaries the kernel benchmarks run.
pub struct Binaries {
    pub vigil: PathBuf,
    pub workload: PathBuf,
}

impl Binaries {
    /// Builds `vigil` (with its eBPF object) and `vigil-workload` in release
    /// mode: a debug daemon would overstate its own cost several times.
    pub fn build(target_dir: &Path) -> Result<Self> {
        cmd::run(cmd::new("cargo").args(["build", "--release", "-p", "vigil", "--bin", "vigil"]))?;
        cmd::run(cmd::new("cargo").args([
            "build",
            "--release",
            "-p",
            "vigil-tests",
            "--bin",
            "vigil-workload",
        ]))?;
        let release = target_dir.join("release");
        let bins = Self {
            vigil: release.join("vigil"),
            workload: release.join("vigil-workload"),
        };
        for bin in [&bins.vigil, &bins.workload] {
            if !cmd::exists(bin)? {
                bail!("{} is missing after the build", bin.display());
            }
        }
        Ok(bins)
    }
}

static STARTED: AtomicU32 = AtomicU32::new(0);

/// A running daemon; stopped and cleaned up on [`Daemon::stop`] or drop.
pub struct Daemon {
    child: Option<Child>,
    vigil: PathBuf,
    dir: tempfile::TempDir,
    socket: PathBuf,
    cgroup_parent: String,
    pin_dir: PathBuf,
}

impl Daemon {
    /// Starts `vigil run` on a private config and waits until it answers
    /// `vigil status`.
    pub fn start(vigil: &Path) -> Result<Self> {
        Self::start_with(vigil, "")
    }

    /// [`Daemon::start`] with extra `[daemon]` settings.
    pub fn start_with(vigil: &Path, daemon_settings: &str) -> Result<Self> {
        Self::start_with_output(vigil, daemon_settings, None)
    }

    /// [`Daemon::start_with`], writing every event to `events.jsonl` in its
    /// directory in `format` (`json` or `ocsf`) instead of to no output.
    pub fn start_with_output(
        vigil: &Path,
        daemon_settings: &str,
        format: Option<&str>,
    ) -> Result<Self> {
        let n = STARTED.fetch_add(1, Ordering::Relaxed);
        let name = format!("vigil-bench-{}-{n}", std::process::id());
        let dir = tempfile::Builder::new()
            .prefix("vigil-bench-")
            .tempdir()
            .context("creating the daemon's directory")?;
        let socket = dir.path().join("vigil.sock");
        let config = dir.path().join("vigil.toml");
        let pin_dir = Path::new("/sys/fs/bpf").join(&name);
        fs::write(
            &config,
            config_text(
                &socket,
                &name,
                &dir.path().join("state"),
                &pin_dir,
                daemon_settings,
                &format.map_or_else(
                    || "events = \"none\"".to_owned(),
                    |f| {
                        let events = dir.path().join("events.jsonl");
                        format!(
                            "events = {}\nformat = {}",
                            serde_json::Value::from(events.to_string_lossy()),
                            serde_json::Value::from(f)
                        )
                    },
                ),
            ),
        )
        .with_context(|| format!("writing {}", config.display()))?;
        let log = fs::File::create(dir.path().join("daemon.log")).context("daemon log")?;

        let mut run = Command::new(vigil);
        run.args(["run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        eprintln!("$ {}", cmd::display(&run));
        let child = run
            .spawn()
            .with_context(|| format!("starting {}", vigil.display()))?;
        let mut daemon = Self {
            child: Some(child),
            vigil: vigil.to_owned(),
            dir,
            socket,
            cgroup_parent: name,
            pin_dir,
        };
        daemon.wait_ready()?;
        Ok(daemon)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("the daemon exited during start ({status}):\n{}", self.log());
            }
            if self.socket.exists() && self.status().is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the daemon did not answer within {START_TIMEOUT:?}:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `vigil` as a client of this daemon.
    fn client(&self) -> Command {
        let mut c = Command::new(&self.vigil);
        c.env("VIGIL_SOCKET", &self.socket).stdin(Stdio::null());
        c
    }

    /// `vigil exec --agent bench --session SESSION -- PROGRAM`: the caller
    /// adds the program's arguments.
    pub fn exec(&self, session: &str, program: impl AsRef<OsStr>) -> Command {
        let mut c = self.client();
        c.args(["exec", "--agent", AGENT, "--session", session, "--"])
            .arg(program);
        c
    }

    /// `vigil status` output.
    pub fn status(&self) -> Result<String> {
        cmd::probe(self.client().arg("status"))
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

    /// CPU time the daemon used so far, in clock ticks.
    fn cpu_ticks(&self) -> Result<u64> {
        let pid = self.pid().context("the daemon is not running")?;
        let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
            .with_context(|| format!("reading /proc/{pid}/stat"))?;
        // Fields after the parenthesised comm: state is field 3, utime 14, stime 15.
        let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let tick = |i: usize| -> Result<u64> {
            fields
                .get(i)
                .and_then(|f| f.parse().ok())
                .with_context(|| format!("/proc/{pid}/stat has no field {}", i + 3))
        };
        Ok(tick(11)? + tick(12)?)
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
        fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// Stops the daemon with SIGTERM and removes its cgroups and pins.
    pub fn stop(mut self) -> Result<()> {
        let result = self.terminate();
        self.clean_up();
        result
    }

    fn terminate(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = Pid::from_raw(i32::try_from(child.id()).context("daemon pid")?);
        kill(pid, Signal::SIGTERM).context("sending SIGTERM to the daemon")?;
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait()? {
                if status.success() {
                    return Ok(());
                }
                bail!(
                    "the daemon exited with {status} on SIGTERM:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        bail!("the daemon did not stop within {STOP_TIMEOUT:?} of SIGTERM; killed it")
    }

    /// Kills what is left in the sessions, then removes the session cgroups
    /// (innermost first; a cgroup is removable once its tasks are gone) and
    /// the pinned programs and maps.
    fn clean_up(&self) {
        if let Some(mount) = crate::cgroups::v2_mount() {
            let parent = mount.join(&self.cgroup_parent);
            if parent.exists() {
                let _ = fs::write(parent.join("cgroup.kill"), "1");
                for _ in 0..100 {
                    if crate::cgroups::remove(&parent).is_ok() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        let _ = fs::remove_dir_all(&self.pin_dir);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.terminate();
            self.clean_up();
        }
    }
}

fn config_text(
    socket: &Path,
    cgroup_parent: &str,
    state: &Path,
    pin_dir: &Path,
    daemon_settings: &str,
    output_settings: &str,
) -> String {
    // A JSON string is a valid TOML basic string.
    let quote = |p: &Path| serde_json::Value::from(p.to_string_lossy()).to_string();
    let (socket, state, pin_dir) = (quote(socket), quote(state), quote(pin_dir));
    format!(
        r#"[daemon]
socket = {socket}
cgroup_parent = "{cgroup_parent}"
state_dir = {state}
pin_dir = {pin_dir}
{daemon_settings}

[output]
{output_settings}

[[agent]]
name = "{AGENT}"
owner = "bench@localhost"
description = "cargo xtask bench workloads"
on_violation = "alert"
  [agent.match]
  sessions = true
  [agent.scope]
  systems = ["127.0.0.0/8", "[::1]"]
  tools = ["/**"]
  data = ["everything"]

[data.everything]
read = ["/**"]
write = ["/**"]
"#
    )
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
