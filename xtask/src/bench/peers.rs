//! Vigil against what a user would run instead: auditd with rules for the
//! same syscalls, and a bpftrace script printing them to a file.
//!
//! The loops of the `overhead` bench, and a scripted coding session (a
//! local `git clone` of a generated repository, `git status`, `git log`,
//! `git grep`, `python3 -m compileall` of its package and its unit tests),
//! run under five conditions: no monitor, auditd, bpftrace, inside a
//! watched Vigil session, and unwatched while the daemon runs. Each round
//! runs every condition once, in an order rotated from round to round, and
//! each loop several times within it; each figure is a ratio of medians to
//! the no-monitor runs. Vigil's daemon writes every event to a file and
//! keeps its journal, as a deployment does.
//!
//! A peer that is not installed is installed from the distribution's
//! packages; one that cannot be is left out, and the output says so.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use vigil_harness::Binaries;
use vigil_harness::stats::median;

use super::daemon::{self, Daemon};
use super::overhead::{Loop, Sample, time};
use super::{Figure, Target};
use crate::cmd;

const ROUNDS: usize = 3;
/// Runs of each loop per condition within one round.
const REPEATS: usize = 2;
/// Files of the generated repository of the coding session.
const REPO_MODULES: usize = 2_400;
const REPO_TESTS: usize = 240;
/// Audit rules of the bench carry this key, so that only they are deleted.
const AUDIT_KEY: &str = "vigil-bench";

const DISTINCT_WATCHED_MAX: f64 = 1.5;
const TASK_WATCHED_MAX: f64 = 1.03;
const TASK_UNWATCHED_MAX: f64 = 1.01;
/// Daemon CPU time per event of the distinct-file loop, in µs.
const DAEMON_CPU_MAX_US: f64 = 2.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Monitor {
    None,
    Auditd,
    Bpftrace,
    Watched,
    Unwatched,
}

impl Monitor {
    fn label(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Auditd => "auditd",
            Self::Bpftrace => "bpftrace",
            Self::Watched => "watched",
            Self::Unwatched => "unwatched",
        }
    }
}

/// One phase of a round: a monitor running (Vigil runs its watched and
/// unwatched conditions in one phase).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    None,
    Auditd,
    Bpftrace,
    Vigil,
}

type Samples = BTreeMap<(&'static str, Monitor), Vec<Sample>>;

/// Daemon CPU ticks and events delivered during watched runs, per loop.
type DaemonCost = BTreeMap<&'static str, (u64, u64)>;

pub fn run(target_dir: &Path) -> Result<Vec<Figure>> {
    let bins = crate::workspace::build_release(target_dir)?;
    let scratch = tempfile::tempdir().context("creating a scratch directory")?;
    let mut loops = Loop::all(scratch.path())?;
    loops.push(coding_session(scratch.path())?);

    let mut phases = vec![Phase::None, Phase::Vigil];
    let mut skipped = Vec::new();
    match installed("auditctl", "auditd").and_then(|()| installed("auditd", "auditd")) {
        Ok(()) => phases.push(Phase::Auditd),
        Err(e) => skipped.push(format!("auditd: {e:#}")),
    }
    match installed("bpftrace", "bpftrace") {
        Ok(()) => phases.push(Phase::Bpftrace),
        Err(e) => skipped.push(format!("bpftrace: {e:#}")),
    }
    for s in &skipped {
        eprintln!("bench: peers: skipping {s}");
    }
    quiet_audit()?;
    daemon::note_machine();
    let load_before = load_average();

    let mut samples = Samples::new();
    let mut cost = DaemonCost::new();
    let mut lost = 0;
    for round in 0..ROUNDS {
        let mut order = phases.clone();
        order.rotate_left(round % phases.len());
        for phase in order {
            match phase {
                Phase::None => runs(&bins, &loops, Monitor::None, round, &mut samples)?,
                Phase::Auditd => {
                    let audit = Auditd::start()?;
                    runs(&bins, &loops, Monitor::Auditd, round, &mut samples)?;
                    audit.stop()?;
                }
                Phase::Bpftrace => {
                    let trace = Bpftrace::start(&scratch.path().join("bpftrace.out"))?;
                    runs(&bins, &loops, Monitor::Bpftrace, round, &mut samples)?;
                    trace.stop()?;
                }
                Phase::Vigil => {
                    lost += vigil_runs(&bins, &loops, round, &mut samples, &mut cost)?;
                }
            }
        }
    }
    daemon::note_machine();
    let load = format!(
        "load average {load_before} before, {} after",
        load_average()
    );
    print_matrix(&loops, &samples, &cost, &load, &skipped);
    Ok(figures(&loops, &samples, &cost, lost))
}

/// Each loop [`REPEATS`] times under `monitor`, with no daemon running.
fn runs(
    bins: &Binaries,
    loops: &[Loop],
    monitor: Monitor,
    round: usize,
    samples: &mut Samples,
) -> Result<()> {
    for _ in 0..REPEATS {
        for l in loops {
            let sample = time(&mut Command::new(&bins.workload), l)
                .with_context(|| format!("{} loop under {}", l.name, monitor.label()))?;
            record(samples, l, monitor, sample, round);
        }
    }
    Ok(())
}

/// Each loop watched and unwatched under a fresh daemon that writes every
/// event to a file. The daemon's CPU time over each watched run (until it
/// has worked off the run's events) is charged to the events it delivered
/// meanwhile. Returns the records the kernel could not deliver.
fn vigil_runs(
    bins: &Binaries,
    loops: &[Loop],
    round: usize,
    samples: &mut Samples,
    cost: &mut DaemonCost,
) -> Result<u64> {
    let daemon = Daemon::start_with_config(&bins.vigil, "", Some("json"), "")?;
    let lost_before = daemon.lost()?;
    let pid = daemon.pid().context("the daemon is not running")?;
    for repeat in 0..REPEATS {
        let order = if (round + repeat).is_multiple_of(2) {
            [Monitor::Watched, Monitor::Unwatched]
        } else {
            [Monitor::Unwatched, Monitor::Watched]
        };
        for l in loops {
            for monitor in order {
                daemon.wait_idle()?;
                let (ticks, events) = (vigil_harness::cpu::ticks(pid)?, daemon.delivered()?);
                let mut command = if monitor == Monitor::Watched {
                    daemon.exec(
                        &format!("peers-{round}-{repeat}-{}", l.name),
                        &bins.workload,
                    )
                } else {
                    Command::new(&bins.workload)
                };
                let sample = time(&mut command, l)
                    .with_context(|| format!("{} loop {}", l.name, monitor.label()))?;
                record(samples, l, monitor, sample, round);
                if monitor == Monitor::Watched {
                    daemon.wait_idle()?;
                    let spent = vigil_harness::cpu::ticks(pid)?.saturating_sub(ticks);
                    let delivered = daemon.delivered()?.saturating_sub(events);
                    let c = cost.entry(l.name).or_default();
                    c.0 += spent;
                    c.1 += delivered;
                }
            }
        }
    }
    daemon.wait_idle()?;
    let lost = daemon.lost()?.saturating_sub(lost_before);
    daemon.stop()?;
    Ok(lost)
}

fn record(samples: &mut Samples, l: &Loop, monitor: Monitor, sample: Sample, round: usize) {
    let per_op = |ns: f64| ns / 1e3 / l.iterations as f64;
    eprintln!(
        "bench: round {round}: {:<13} {:<9} {:>11.3} µs/op wall {:>11.3} µs/op CPU",
        l.name,
        monitor.label(),
        per_op(sample.wall_ns),
        per_op(sample.cpu_ns),
    );
    samples.entry((l.name, monitor)).or_default().push(sample);
}

/// Median wall-clock and CPU time of a loop under a monitor.
fn medians(samples: &Samples, name: &'static str, monitor: Monitor) -> Option<(f64, f64)> {
    let runs = samples.get(&(name, monitor))?;
    let wall: Vec<f64> = runs.iter().map(|s| s.wall_ns).collect();
    let cpu: Vec<f64> = runs.iter().map(|s| s.cpu_ns).collect();
    Some((median(&wall), median(&cpu)))
}

/// Events below which the daemon's CPU time per event is not shown: a loop
/// whose repeats the kernel folds into a handful of reports would charge
/// them the daemon's idle rounds, not its work.
const MIN_EVENTS: u64 = 1_000;

/// Daemon CPU per event delivered, in µs.
fn cpu_per_event(cost: &DaemonCost, name: &str) -> Option<f64> {
    let &(ticks, events) = cost.get(name)?;
    (events >= MIN_EVENTS)
        .then(|| ticks as f64 * vigil_harness::cpu::tick().as_secs_f64() * 1e6 / events as f64)
}

const PEERS: [Monitor; 4] = [
    Monitor::Auditd,
    Monitor::Bpftrace,
    Monitor::Watched,
    Monitor::Unwatched,
];

/// The comparison as one table: each loop's time with no monitor, and its
/// wall-clock / CPU ratio under each monitor.
fn print_matrix(
    loops: &[Loop],
    samples: &Samples,
    cost: &DaemonCost,
    load: &str,
    skipped: &[String],
) {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nbench: peers: ratio to no monitor, wall / CPU (median of {} runs each; {load})",
        ROUNDS * REPEATS
    );
    let _ = write!(out, "{:<14} {:>13}", "loop", "none µs/op");
    for m in PEERS {
        let _ = write!(out, " {:>13}", m.label());
    }
    let _ = writeln!(out, " {:>16}", "daemon µs/event");
    for l in loops {
        let Some((base, base_cpu)) = medians(samples, l.name, Monitor::None) else {
            continue;
        };
        let _ = write!(
            out,
            "{:<14} {:>13.3}",
            l.name,
            base / 1e3 / l.iterations as f64
        );
        for m in PEERS {
            let cell = medians(samples, l.name, m).map_or_else(
                || "-".to_owned(),
                |(w, c)| format!("{:.2}×/{:.2}×", w / base, c / base_cpu),
            );
            let _ = write!(out, " {cell:>13}");
        }
        let per_event =
            cpu_per_event(cost, l.name).map_or_else(|| "-".to_owned(), |us| format!("{us:.2}"));
        let _ = writeln!(out, " {per_event:>16}");
    }
    for s in skipped {
        let _ = writeln!(out, "skipped {s}");
    }
    println!("{out}");
}

fn figures(loops: &[Loop], samples: &Samples, cost: &DaemonCost, lost: u64) -> Vec<Figure> {
    let mut out = Vec::new();
    let ratio = |name: String, value: f64, target| Figure {
        name,
        value,
        unit: "ratio".into(),
        target,
    };
    for l in loops {
        let Some((base, _)) = medians(samples, l.name, Monitor::None) else {
            continue;
        };
        out.push(Figure {
            name: format!("peers.{}.none", l.name),
            value: base / 1e3 / l.iterations as f64,
            unit: "µs/op".into(),
            target: Target::None,
        });
        for m in PEERS {
            let Some((wall, _)) = medians(samples, l.name, m) else {
                continue;
            };
            let target = match (l.name, m) {
                ("open_distinct", Monitor::Watched) => Target::AtMost(DISTINCT_WATCHED_MAX),
                ("task", Monitor::Watched) => Target::AtMost(TASK_WATCHED_MAX),
                ("task", Monitor::Unwatched) => Target::AtMost(TASK_UNWATCHED_MAX),
                _ => Target::None,
            };
            out.push(ratio(
                format!("peers.{}.{}", l.name, m.label()),
                wall / base,
                target,
            ));
        }
        // Watched Vigil against the cheapest thing a user would run instead.
        if l.name == "open_distinct"
            && let (Some((watched, _)), Some((trace, _))) = (
                medians(samples, l.name, Monitor::Watched),
                medians(samples, l.name, Monitor::Bpftrace),
            )
        {
            out.push(ratio(
                format!("peers.{}.watched_vs_bpftrace", l.name),
                watched / trace,
                Target::AtMost(1.0),
            ));
        }
        if let Some(us) = cpu_per_event(cost, l.name) {
            out.push(Figure {
                name: format!("peers.{}.daemon_cpu", l.name),
                value: us,
                unit: "µs/event".into(),
                target: if l.name == "open_distinct" {
                    Target::AtMost(DAEMON_CPU_MAX_US)
                } else {
                    Target::None
                },
            });
        }
    }
    out.push(Figure {
        name: "peers.kernel_lost".into(),
        value: lost as f64,
        unit: "records".into(),
        target: Target::None,
    });
    out
}

fn load_average() -> String {
    fs::read_to_string("/proc/loadavg").map_or_else(
        |_| "unknown".into(),
        |l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    )
}

/// Where `program` is on `PATH` (or in the system directories, which a
/// root shell has and `cargo` may not pass on).
fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Makes sure `program` is installed, from Debian's `package` when not.
fn installed(program: &str, package: &str) -> Result<()> {
    if find_program(program).is_some() {
        return Ok(());
    }
    let status = cmd::status(Command::new("apt-get").args(["install", "-y", package]))
        .context("installing it with apt-get")?;
    if !status.success() {
        bail!("`apt-get install -y {package}` failed: {status}");
    }
    find_program(program)
        .map(|_| ())
        .with_context(|| format!("{program} is still missing after installing {package}"))
}

/// The task rule that keeps the kernel from giving new processes an audit
/// context. Once auditing has been enabled, until the next boot, every new
/// process gets one, and with it the slow path on every system call, rules
/// or not: without this rule the bench's own auditd phase would slow every
/// later measurement (the no-monitor one included) and everything else on
/// the machine.
const NEVER_TASK: &str = "never,task";

/// Makes sure no audit rule but [`NEVER_TASK`] is in force, and that one
/// is. Refuses when someone else's rules are there: they would be in every
/// figure, and are not the bench's to change.
fn quiet_audit() -> Result<()> {
    if find_program("auditctl").is_none() {
        return Ok(());
    }
    let rules = cmd::probe(Command::new("auditctl").arg("-l"))?;
    let rules: Vec<&str> = rules
        .lines()
        .filter(|l| *l != "No rules" && *l != "-a never,task")
        .collect();
    if !rules.is_empty() {
        bail!(
            "audit rules are in force ({}): they would be in every figure",
            rules.join("; ")
        );
    }
    if !cmd::probe(Command::new("auditctl").arg("-l"))?.contains(NEVER_TASK) {
        cmd::run(Command::new("auditctl").args(["-a", NEVER_TASK]))?;
    }
    Ok(())
}

/// auditd in the foreground with rules for execve, connect and openat,
/// which a user auditing an agent would set. The rules are deleted, the
/// [`NEVER_TASK`] rule restored, auditing disabled and the daemon stopped
/// on [`Auditd::stop`] or drop.
struct Auditd {
    child: Option<Child>,
}

impl Auditd {
    fn start() -> Result<Self> {
        let status = cmd::probe(Command::new("auditctl").arg("-s"))?;
        if let Some(pid) = audit_pid(&status) {
            bail!("an audit daemon (pid {pid}) is already running: it would be in every figure");
        }
        // New processes get audit contexts again, for the rules below.
        cmd::run(Command::new("auditctl").args(["-d", NEVER_TASK]))?;
        let mut child = Command::new(find_program("auditd").context("auditd is not installed")?)
            .arg("-n")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting auditd")?;
        let pid = child.id();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let status = cmd::probe(Command::new("auditctl").arg("-s"))?;
            if audit_pid(&status) == Some(pid) {
                break;
            }
            if let Some(exit) = child.try_wait()? {
                bail!("auditd exited at start: {exit}");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("auditd did not register with the kernel in 20 s:\n{status}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let audit = Self { child: Some(child) };
        cmd::run(Command::new("auditctl").args([
            "-a",
            "always,exit",
            "-F",
            "arch=b64",
            "-S",
            "execve",
            "-S",
            "connect",
            "-S",
            "openat",
            "-k",
            AUDIT_KEY,
        ]))?;
        Ok(audit)
    }

    fn stop(mut self) -> Result<()> {
        self.clean_up()
    }

    fn clean_up(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let deleted = cmd::run(Command::new("auditctl").args(["-D", "-k", AUDIT_KEY]))
            .and_then(|()| cmd::run(Command::new("auditctl").args(["-a", NEVER_TASK])))
            // `auditctl -e` prints the status: not worth showing.
            .and_then(|()| cmd::probe(Command::new("auditctl").args(["-e", "0"])).map(drop));
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        child.wait().context("waiting for auditd to stop")?;
        deleted
    }
}

impl Drop for Auditd {
    fn drop(&mut self) {
        let _ = self.clean_up();
    }
}

/// The audit daemon's pid in `auditctl -s` output, when one is registered.
fn audit_pid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("pid "))
        .and_then(|p| p.trim().parse().ok())
        .filter(|&p| p != 0)
}

/// The bpftrace script: each of the three syscalls printed as it is made.
const BPFTRACE_SCRIPT: &str = r#"
BEGIN { printf("vigil-bench ready\n"); }
tracepoint:syscalls:sys_enter_execve { printf("%d %s execve %s\n", pid, comm, str(args->filename)); }
tracepoint:syscalls:sys_enter_connect { printf("%d %s connect %d\n", pid, comm, args->fd); }
tracepoint:syscalls:sys_enter_openat { printf("%d %s openat %s\n", pid, comm, str(args->filename)); }
"#;

/// bpftrace printing [`BPFTRACE_SCRIPT`] to a file, as a user keeping a
/// record would (to `/dev/null` it would skip the writes such a user pays).
struct Bpftrace {
    child: Option<Child>,
    out: PathBuf,
}

impl Bpftrace {
    fn start(out: &Path) -> Result<Self> {
        let _ = fs::remove_file(out);
        let mut child =
            Command::new(find_program("bpftrace").context("bpftrace is not installed")?)
                .arg("-o")
                .arg(out)
                .args(["-e", BPFTRACE_SCRIPT])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .context("starting bpftrace")?;
        let deadline = Instant::now() + Duration::from_mins(1);
        while !fs::read(out).is_ok_and(|b| b.windows(17).any(|w| w == b"vigil-bench ready")) {
            if let Some(exit) = child.try_wait()? {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                bail!("bpftrace exited at start ({exit}): {}", err.trim());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("bpftrace did not attach within a minute");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(Self {
            child: Some(child),
            out: out.to_owned(),
        })
    }

    fn stop(mut self) -> Result<()> {
        self.clean_up()
    }

    fn clean_up(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        child.wait().context("waiting for bpftrace to stop")?;
        // Tens of megabytes a round: not kept.
        let _ = fs::remove_file(&self.out);
        Ok(())
    }
}

impl Drop for Bpftrace {
    fn drop(&mut self) {
        let _ = self.clean_up();
    }
}

/// The coding session an agent runs: clone a repository, look around in
/// it, byte-compile its package and run its tests. The repository (a
/// Python package of [`REPO_MODULES`] modules in 60 directories and
/// [`REPO_TESTS`] test files, in three commits) is generated once; each run
/// clones it afresh, so every run compiles and writes the same.
fn coding_session(scratch: &Path) -> Result<Loop> {
    let python = find_program("python3").context("python3 is needed for the coding session")?;
    let git = find_program("git").context("git is needed for the coding session")?;
    let dir = scratch.join("session");
    let repo = dir.join("origin");
    let package = repo.join("pkg");
    for d in 0..60 {
        fs::create_dir_all(package.join(format!("d{d}")))?;
        fs::write(package.join(format!("d{d}/__init__.py")), "")?;
    }
    fs::write(package.join("__init__.py"), "")?;
    for m in 0..REPO_MODULES {
        let text = format!(
            "\"\"\"Module {m}.\"\"\"\n\nVALUE = {m}\n\n\ndef scaled(x):\n    return x * VALUE + {m}\n\n\n\
             class Item{m}:\n    def __init__(self, n):\n        self.n = n\n\n    def total(self):\n        \
             return sum(scaled(i) for i in range(self.n))\n"
        );
        fs::write(package.join(format!("d{}/m{m}.py", m % 60)), text)?;
    }
    let tests = repo.join("tests");
    fs::create_dir_all(&tests)?;
    fs::write(tests.join("__init__.py"), "")?;
    for t in 0..REPO_TESTS {
        let mut text = String::from("import unittest\n\n");
        let modules: Vec<usize> = (0..10).map(|i| (t * 10 + i) % REPO_MODULES).collect();
        for m in &modules {
            let _ = writeln!(
                text,
                "from pkg.d{}.m{m} import Item{m}, scaled as s{m}",
                m % 60
            );
        }
        let _ = writeln!(text, "\n\nclass Test{t}(unittest.TestCase):");
        for m in &modules {
            let _ = write!(
                text,
                "    def test_{m}(self):\n        self.assertEqual(Item{m}(3).total(), s{m}(0) + s{m}(1) + s{m}(2))\n\n"
            );
        }
        fs::write(tests.join(format!("test_{t}.py")), text)?;
    }
    fs::write(repo.join("README.md"), "A generated repository.\n")?;
    let git_in = |args: &[&str]| {
        let mut c = Command::new(&git);
        c.current_dir(&repo)
            .args(["-c", "user.name=bench", "-c", "user.email=bench@localhost"])
            .args(args);
        cmd::probe(&mut c).map(drop)
    };
    git_in(&["init", "-q"])?;
    git_in(&["add", "pkg"])?;
    git_in(&["commit", "-q", "-m", "the package"])?;
    git_in(&["add", "tests"])?;
    git_in(&["commit", "-q", "-m", "its tests"])?;
    git_in(&["add", "README.md"])?;
    git_in(&["commit", "-q", "-m", "a readme"])?;
    let script = dir.join("session.sh");
    fs::write(
        &script,
        format!(
            "set -e\ncd \"$1\"\nrm -rf work\n\
             {git} clone -q origin work\ncd work\n\
             {git} status --short >/dev/null\n\
             {git} log --stat >/dev/null\n\
             {git} grep -n 'def total' >/dev/null\n\
             {python} -m compileall -q pkg tests >/dev/null\n\
             {python} -m unittest discover -q -s tests -t . 2>/dev/null\n",
            git = git.display(),
            python = python.display(),
        ),
    )?;
    Ok(Loop {
        name: "task",
        op: "scripted coding session (clone, status, log, grep, compileall, unittest)",
        iterations: 1,
        args: vec![
            "bench-run".into(),
            "/bin/sh".into(),
            script.to_string_lossy().into_owned(),
            dir.to_string_lossy().into_owned(),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_audit_daemon_is_found_in_auditctl_status() {
        let running = "enabled 1\nfailure 1\npid 4242\nrate_limit 0\n";
        assert_eq!(audit_pid(running), Some(4242));
        assert_eq!(audit_pid("enabled 1\npid 0\n"), None);
        assert_eq!(audit_pid("enabled 0\n"), None);
    }

    #[test]
    fn daemon_cpu_is_charged_per_event_delivered() {
        let mut cost = DaemonCost::new();
        cost.insert("open_distinct", (3, MIN_EVENTS - 1));
        assert_eq!(cpu_per_event(&cost, "open_distinct"), None);
        let tick_us = vigil_harness::cpu::tick().as_secs_f64() * 1e6;
        cost.insert("open_distinct", (2, 10_000));
        let us = cpu_per_event(&cost, "open_distinct").unwrap();
        assert!((us - 2.0 * tick_us / 10_000.0).abs() < 1e-9);
    }
}
