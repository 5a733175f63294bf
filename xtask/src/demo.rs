//! `cargo xtask demo`: a scripted story against a real daemon, for a
//! newcomer. An agent session works inside its scope, reads a credential it
//! was not given and is revoked in the kernel; an operator restores it; a
//! second agent acts under a task approval that runs out.
//!
//! Everything runs for real: the debug daemon on a private config (socket,
//! state and events in a temp dir, cgroup parent and bpffs pins under fixed
//! `vigil-demo` names), and `vigil-workload serve` processes as the agents,
//! driven one action at a time over their stdin. Each step checks that what
//! it narrates happened; the first that does not ends the demo with an
//! error, keeping the temp dir (daemon log, events) for a look.
//!
//! Ctrl-C reaches the daemon and the sessions too (one process group); xtask
//! stops the story at its next step and cleans up as at its end. A second
//! Ctrl-C exits at once, and the fixed names let the next run clean up what
//! that left behind: pinned programs would otherwise stay attached until
//! reboot.

use std::fmt::Write as _;
use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use nix::errno::Errno;
use nix::libc;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use serde_json::Value;
use vigil_harness::{Binaries, Daemon, Events, Layout, START_TIMEOUT, Served, Stop, cgroup};

use crate::{cmd, setup, workspace};

const CGROUP_PARENT: &str = "vigil-demo";
const CODER: &str = "code-assistant";
const RELEASE_BOT: &str = "release-bot";
const CODER_SESSION: &str = "refactor-1";
const RELEASE_SESSION: &str = "release-1";
const TASK: &str = "REL-42";
const TASK_TTL: Duration = Duration::from_secs(2);

/// How long an expected event may take to reach the events file.
const EVENT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long SIGTERM may take before the daemon is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Set by the first SIGINT, SIGTERM or SIGHUP; the story stops at its next
/// step and cleans up.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

pub fn demo() -> Result<()> {
    setup::ensure(setup::Scope::Kernel, setup::Report::Changes)?;
    cmd::run(cmd::new("cargo").args(["build", "-p", "vigil", "-p", "vigil-tests", "--bins"]))?;
    let debug = workspace::Metadata::load()?.target_dir()?.join("debug");
    let Binaries { vigil, workload } = Binaries::in_dir(&debug)?;
    // Held until the demo ends: the cgroup parent and pin dir are shared
    // by every run, so a second one would tear down the first's sessions.
    let _lock = lock()?;
    catch_interrupts()?;

    // The service the agents may reach. Accepted connections are dropped at
    // once: the story is about whether the connect is allowed.
    let service = TcpListener::bind("127.0.0.1:0").context("opening the demo's local service")?;
    let service_addr = service.local_addr()?;
    std::thread::spawn(move || service.incoming().for_each(drop));

    let stage = Stage::create(&workload, service_addr)?;
    let cgroup2 = cgroup::v2_mount().context("no cgroup v2 hierarchy is mounted")?;
    // Plain text: the log is read in a file or a failure message.
    let daemon = Daemon::new(&vigil, stage.layout.clone()).with_env("NO_COLOR", "1");
    let mut demo = Demo {
        sessions: Vec::new(),
        daemon,
        workload,
        service: service_addr,
        cgroup_parent: cgroup2.join(CGROUP_PARENT),
        stage,
    };
    let told = demo.remove_leftovers().and_then(|()| demo.tell());
    let cleaned = demo.clean_up();
    match (told, cleaned) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(_), cleaned) if INTERRUPTED.load(Ordering::SeqCst) => {
            cleaned.context("interrupted, and cleaning up failed")?;
            bail!("interrupted; the daemon is stopped and its cgroups and pins removed")
        }
        (Err(e), cleaned) => {
            eprintln!("\n{}", demo.daemon_log_tail());
            if let Err(c) = cleaned {
                eprintln!("xtask: demo: cleaning up also failed: {c:#}");
            }
            let kept = demo.stage.dir.keep();
            Err(e.context(format!(
                "the demo failed; its config, daemon log and events are kept in {}",
                kept.display()
            )))
        }
        (Ok(()), Err(c)) => Err(c.context("the demo ran, but cleaning up failed")),
    }
}

/// Locks `<temp dir>/vigil-demo.lock` for this run.
fn lock() -> Result<fs::File> {
    let path = std::env::temp_dir().join("vigil-demo.lock");
    let file = fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => {
            bail!(
                "another `cargo xtask demo` is running (it holds {})",
                path.display()
            )
        }
        Err(fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}

/// Catches SIGINT, SIGTERM and SIGHUP: the first sets [`INTERRUPTED`], a
/// second exits at once.
fn catch_interrupts() -> Result<()> {
    extern "C" fn on_signal(_: libc::c_int) {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            // SAFETY: _exit(2) is async-signal-safe.
            unsafe { libc::_exit(130) };
        }
    }
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only touches an atomic and calls _exit(2),
        // both async-signal-safe.
        unsafe { sigaction(signal, &action) }
            .with_context(|| format!("installing a {signal} handler"))?;
    }
    Ok(())
}

fn interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleeps for `d`, or less when interrupted.
fn pause(d: Duration) -> Result<()> {
    let until = Instant::now() + d;
    loop {
        interrupted()?;
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        std::thread::sleep(left.min(Duration::from_millis(20)));
    }
}

/// The demo's temp dir: config, workspace, events file and daemon log.
struct Stage {
    dir: tempfile::TempDir,
    /// In the temp dir, with symlinks resolved as the kernel reports paths.
    layout: Layout,
    notes: PathBuf,
    dotenv: PathBuf,
}

impl Stage {
    fn create(workload: &Path, service: SocketAddr) -> Result<Self> {
        let (dir, layout) = Layout::temp("vigil-demo-", CGROUP_PARENT)?;
        let workspace = layout.root.join("workspace");
        fs::create_dir(&workspace).context("creating the demo workspace")?;
        let stage = Self {
            notes: workspace.join("NOTES.md"),
            dotenv: workspace.join(".env"),
            layout,
            dir,
        };
        fs::write(
            &stage.notes,
            "# Refactor notes\n- split the parser module\n",
        )
        .context("writing the workspace notes")?;
        fs::write(
            &stage.dotenv,
            "DATABASE_URL=postgres://app:hunter2@db.internal/app\n",
        )
        .context("writing the workspace .env")?;
        let config = stage
            .layout
            .config_text("", Events::File, &stage.agents(workload, service));
        fs::write(&stage.layout.config, config)
            .with_context(|| format!("writing {}", stage.layout.config.display()))?;
        Ok(stage)
    }

    /// The agents of the story and the data class they share.
    fn agents(&self, workload: &Path, service: SocketAddr) -> String {
        let quote = |p: &Path| vigil_harness::toml_string(&p.to_string_lossy());
        let workspace = quote(&self.layout.root.join("workspace/**"));
        let workload = quote(workload);
        format!(
            r#"
[[agent]]
name = "{CODER}"
owner = "platform-team@example.com"
description = "a coding agent working in the demo workspace"
on_violation = "revoke"
  [agent.match]
  sessions = true
  [agent.scope]
  # Loopback only; the demo's local service is {service}.
  systems = ["127.0.0.0/8", "[::1]"]
  tools = [{workload}, "/bin/sh"]
  data = ["workspace"]
  # No identities: not even the .env in its own workspace.

[[agent]]
name = "{RELEASE_BOT}"
owner = "release-team@example.com"
description = "publishes releases, one approved task at a time"
require_approval = true
  [agent.match]
  sessions = true
  [agent.scope]
  systems = ["127.0.0.0/8", "[::1]"]
  tools = [{workload}, "/bin/sh"]
  data = ["workspace"]

[data.workspace]
description = "the project checkout the agents work in"
read = [{workspace}]
write = [{workspace}]
"#
        )
    }
}

struct Demo {
    // The sessions, then the daemon, go before the stage's temp dir.
    sessions: Vec<Served>,
    daemon: Daemon,
    workload: PathBuf,
    service: SocketAddr,
    /// `<cgroup v2 mount>/vigil-demo`: every session of the demo lives below.
    cgroup_parent: PathBuf,
    stage: Stage,
}

impl Demo {
    /// The story. Every step checks what it narrates.
    fn tell(&mut self) -> Result<()> {
        println!();
        println!("Vigil demo: an AI agent steps outside its boundary and loses its access,");
        println!("in the kernel, at once; an approval granted for a task ends with the task.");
        self.start_daemon()?;
        self.within_scope()?;
        let latency_ns = self.credential_read()?;
        self.operator_restores()?;
        self.task_approval()?;

        heading("Measured");
        println!("  revocation latency: {}", micros(latency_ns));
        println!("  from the kernel timestamp of the offending open to the update of the");
        println!("  kernel map that cut the session off (`latency_ns` of the revocation");
        println!("  event; one trial, debug build of the daemon).");
        Ok(())
    }

    fn start_daemon(&mut self) -> Result<()> {
        heading("Setting the stage");
        println!(
            "  a private daemon on {}",
            self.stage.layout.config.display()
        );
        println!(
            "  {CODER}: may read and write {}/workspace, connect to loopback",
            self.stage.layout.root.display()
        );
        println!(
            "      (a local service listens on {}), run vigil-workload and /bin/sh;",
            self.service
        );
        println!("      on_violation = \"revoke\"");
        println!("  {RELEASE_BOT}: the same scope, but require_approval = true");
        println!(
            "  events (JSON lines): {}",
            self.stage.layout.events.display()
        );

        let started = Instant::now();
        self.daemon.spawn()?;
        self.daemon
            .wait_ready(START_TIMEOUT, || pause(Duration::from_millis(50)))?;
        println!(
            "  daemon ready in {:.1} s: sensors attached, programs pinned under {}",
            started.elapsed().as_secs_f64(),
            self.stage.layout.pin_dir.display()
        );
        Ok(())
    }

    fn within_scope(&mut self) -> Result<()> {
        heading(&format!("1. {CODER} works inside its scope"));
        println!(
            "  The agent runs as a session: `vigil exec --agent {CODER} -- vigil-workload serve`"
        );
        println!("  puts it and all its descendants in a cgroup Vigil watches.");
        let notes = self.stage.notes.clone();
        let service = self.service;
        self.start_session(CODER, CODER_SESSION)?;
        self.show(CODER_SESSION, "exec", |e| {
            e["kind"] == "exec"
                && e["argv"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x == "serve"))
        })?;
        self.act(
            CODER_SESSION,
            &format!("open {}", notes.display()),
            Expect::Ok,
        )?;
        self.show(CODER_SESSION, "file_open", |e| {
            e["kind"] == "file_open" && e["path"] == notes.to_string_lossy().as_ref()
        })?;
        self.act(CODER_SESSION, "exec /bin/sh -c :", Expect::Exit(0))?;
        self.show(CODER_SESSION, "exec", |e| {
            e["kind"] == "exec" && e["filename"] == "/bin/sh"
        })?;
        self.act(CODER_SESSION, &format!("connect {service}"), Expect::Ok)?;
        self.show(CODER_SESSION, "connect", |e| is_connect(e, service, false))?;
        println!("  All in scope: reported with who did it, and let be.");
        Ok(())
    }

    /// Returns the revocation's `latency_ns`.
    fn credential_read(&mut self) -> Result<u64> {
        heading(&format!("2. {CODER} reads a credential it was not given"));
        println!("  workspace/.env lies in the workspace it may read, but .env files are");
        println!("  credentials (built-in identity `dotenv`), and it was given none.");
        let dotenv = self.stage.dotenv.clone();
        let service = self.service;
        self.act(
            CODER_SESSION,
            &format!("open {}", dotenv.display()),
            Expect::Ok,
        )?;
        let anomaly = self.show(CODER_SESSION, "identity_outside_scope anomaly", |e| {
            is_anomaly(e, "identity_outside_scope")
        })?;
        if anomaly["action"] != "revoked" {
            bail!("the anomaly should say the session was revoked: {anomaly}");
        }
        let revocation = self.show(CODER_SESSION, "revocation", |e| {
            e["kind"] == "revocation" && e["session"] == CODER_SESSION
        })?;
        let latency_ns = revocation["latency_ns"].as_u64().with_context(|| {
            format!("the automatic revocation carries no latency_ns: {revocation}")
        })?;
        println!("  The open itself went through: Vigil sees it as it happens, and revoked the");
        println!(
            "  session {} later. From then on the kernel refuses its connects (and",
            micros(latency_ns)
        );
        println!("  kills it at its next exec or open):");
        self.act(
            CODER_SESSION,
            &format!("connect {service}"),
            Expect::Errno(Errno::EPERM),
        )?;
        self.show(CODER_SESSION, "blocked connect", |e| {
            is_connect(e, service, true)
        })?;
        self.show(CODER_SESSION, "revoked_activity anomaly", |e| {
            is_anomaly(e, "revoked_activity")
        })?;
        Ok(latency_ns)
    }

    fn operator_restores(&mut self) -> Result<()> {
        heading("3. An operator reviews it and restores the session");
        let service = self.service;
        self.operator(&[
            "restore",
            CODER,
            "--session",
            CODER_SESSION,
            "--reason",
            "reviewed: the .env holds no production secret",
        ])?;
        let restore = self.show(CODER_SESSION, "restore", |e| {
            e["kind"] == "restore" && e["session"] == CODER_SESSION
        })?;
        let restored_at = seq(&restore);
        self.act(CODER_SESSION, &format!("connect {service}"), Expect::Ok)?;
        self.show(CODER_SESSION, "connect", |e| {
            is_connect(e, service, false) && seq(e) > restored_at
        })?;
        Ok(())
    }

    fn task_approval(&mut self) -> Result<()> {
        heading(&format!(
            "4. {RELEASE_BOT} may act only while a task is approved"
        ));
        println!("  Its processes are refused everything unless an approval is active; the");
        println!("  approval's expiry lives in a kernel map, checked on the kernel clock.");
        let service = self.service;
        let notes = self.stage.notes.clone();
        self.operator(&[
            "approve",
            RELEASE_BOT,
            "--task",
            TASK,
            "--purpose",
            "tag and publish release 1.4",
            "--ttl",
            &format!("{}s", TASK_TTL.as_secs()),
        ])?;
        let approved = Instant::now();
        self.start_session(RELEASE_BOT, RELEASE_SESSION)?;
        self.act(RELEASE_SESSION, &format!("connect {service}"), Expect::Ok)?;
        let e = self.show(RELEASE_SESSION, "connect", |e| {
            is_connect(e, service, false)
        })?;
        if e["identity"]["task"] != TASK {
            bail!("the connect during the task should carry task {TASK}: {e}");
        }
        println!("  Inside the task: allowed, and every event names the task it belongs to.");
        println!("  … waiting for the approval to run out");
        // The grant's deadline is at most TTL after `approve` returned.
        pause(
            (approved + TASK_TTL + Duration::from_millis(200))
                .saturating_duration_since(Instant::now()),
        )?;
        self.show_any("task_ended", |e| {
            e["kind"] == "task_ended" && e["task"] == TASK && e["reason"] == "expired"
        })?;
        self.act(
            RELEASE_SESSION,
            &format!("connect {service}"),
            Expect::Errno(Errno::EPERM),
        )?;
        self.show(RELEASE_SESSION, "unapproved_task anomaly", |e| {
            is_anomaly(e, "unapproved_task")
        })?;
        self.act(
            RELEASE_SESSION,
            &format!("open {}", notes.display()),
            Expect::Killed,
        )?;
        println!("  Killed in the open syscall, before it could read a byte of the file.");
        Ok(())
    }

    /// Starts `vigil-workload serve` as session `name` of `agent`.
    fn start_session(&mut self, agent: &str, name: &str) -> Result<()> {
        let log = self.stage.layout.root.join(format!("session-{name}.log"));
        let stderr =
            fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let session = Served::start(&self.daemon, &self.workload, agent, name, stderr.into())
            .map_err(|e| {
                let said = fs::read_to_string(&log).unwrap_or_default();
                anyhow!("{e:#}: {}", said.trim())
            })?;
        self.sessions.push(session);
        Ok(())
    }

    /// One action of session `name`, printed with its outcome, which must be
    /// `expect`.
    fn act(&mut self, name: &str, action: &str, expect: Expect) -> Result<()> {
        interrupted()?;
        let Some(session) = self.sessions.iter_mut().find(|s| s.session() == name) else {
            bail!("no session {name} was started");
        };
        let answer = session
            .ask(action)
            .with_context(|| format!("reading from session {name}"))?;
        let got = Outcome::parse(answer.as_deref(), || {
            session
                .wait_signal()
                .with_context(|| format!("waiting for session {name}"))
        })?;
        println!("  {} $ {action}", session.agent());
        println!("      → {got}");
        if !expect.matches(&got) {
            bail!(
                "in session {name}, `{action}` should have ended with {expect}, but it ended with {got}"
            );
        }
        Ok(())
    }

    /// A `vigil` command of the operator, printed with its output.
    fn operator(&self, args: &[&str]) -> Result<()> {
        println!("  operator $ vigil {}", shell_words(args));
        let out = self.client(args)?;
        if !out.status.success() {
            bail!(
                "`vigil {}` failed ({}): {}",
                shell_words(args),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            println!("      → {line}");
        }
        Ok(())
    }

    fn client(&self, args: &[&str]) -> Result<Output> {
        self.daemon.vigil(args)
    }

    /// Waits for the first event of `session` that satisfies `pred`, prints
    /// it and returns it.
    fn show(&self, session: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Result<Value> {
        let e = self.wait_for(what, |e| {
            (e["identity"]["session"] == session
                || e["offending"]["identity"]["session"] == session
                || e["session"] == session)
                && pred(e)
        })?;
        print_event(&e);
        Ok(e)
    }

    /// [`Demo::show`] for events that belong to no session.
    fn show_any(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Result<Value> {
        let e = self.wait_for(what, pred)?;
        print_event(&e);
        Ok(e)
    }

    fn wait_for(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Result<Value> {
        let found =
            self.daemon
                .wait_for_event(EVENT_TIMEOUT, || pause(Duration::from_millis(20)), pred)?;
        found.with_context(|| {
            format!(
                "no {what} event reached {} within {EVENT_TIMEOUT:?}",
                self.stage.layout.events.display()
            )
        })
    }

    fn daemon_log_tail(&self) -> String {
        let log = self.daemon.log();
        let lines: Vec<&str> = log.lines().collect();
        let tail = &lines[lines.len().saturating_sub(30)..];
        format!(
            "daemon log (last {} lines):\n{}",
            tail.len(),
            tail.join("\n")
        )
    }

    /// A run that was killed leaves the cgroup parent (maybe with session
    /// processes) and the pins; the lock says no run is in progress.
    fn remove_leftovers(&mut self) -> Result<()> {
        let cgroups = cmd::exists(&self.cgroup_parent)?;
        let pins = cmd::exists(&self.stage.layout.pin_dir)?;
        if !cgroups && !pins {
            return Ok(());
        }
        println!("demo: removing what a killed run left behind");
        self.remove_cgroups_and_pins()
    }

    /// Stops the daemon, kills what is left in the sessions and removes the
    /// session cgroups and the pins. Tries every step even when one fails.
    fn clean_up(&mut self) -> Result<()> {
        heading("Cleaning up");
        for mut s in self.sessions.drain(..) {
            s.stop();
        }
        let stopped = self.stop_daemon();
        let removed = self.remove_cgroups_and_pins();
        if stopped.is_ok() && removed.is_ok() {
            println!(
                "  daemon stopped (SIGTERM), sessions killed, {} and {} removed",
                self.cgroup_parent.display(),
                self.stage.layout.pin_dir.display()
            );
        }
        stopped.and(removed)
    }

    fn stop_daemon(&mut self) -> Result<()> {
        let stopped = self
            .daemon
            .terminate(STOP_TIMEOUT)
            .context("sending SIGTERM to the daemon")?;
        match stopped {
            Stop::NotRunning => Ok(()),
            Stop::Exited(status) if status.success() => Ok(()),
            Stop::Exited(status) => bail!("the daemon exited with {status} on SIGTERM"),
            Stop::Killed => {
                bail!("the daemon did not stop within {STOP_TIMEOUT:?} of SIGTERM; killed it")
            }
        }
    }

    fn remove_cgroups_and_pins(&self) -> Result<()> {
        let mut problems = Vec::new();
        if cmd::exists(&self.cgroup_parent)? {
            // cgroup.kill covers the whole subtree, and a cgroup can be
            // removed once its last task has gone.
            if let Err(e) = cgroup::kill(&self.cgroup_parent) {
                problems.push(format!(
                    "killing the processes in {}: {e}",
                    self.cgroup_parent.display()
                ));
            }
            if let Err(e) = cgroup::remove(&self.cgroup_parent) {
                problems.push(format!("removing {}: {e}", self.cgroup_parent.display()));
            }
        }
        // `vigil run --cleanup` knows what the daemon pins; it reads pin_dir
        // from the config.
        let mut cleanup = Command::new(self.daemon.vigil_path());
        cleanup
            .args(["run", "--cleanup", "--config"])
            .arg(&self.stage.layout.config);
        match cleanup.output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => problems.push(format!(
                "`{}` failed ({}): {}",
                cmd::display(&cleanup),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) => problems.push(format!("running `{}`: {e}", cmd::display(&cleanup))),
        }
        if problems.is_empty() {
            Ok(())
        } else {
            bail!("{}", problems.join("; "))
        }
    }
}

/// What an action of a session came to.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Ok,
    Errno(Errno),
    Exit(i32),
    /// The session process itself was killed by this signal.
    Killed(i32),
    /// A child it started was killed by this signal.
    ChildKilled(i32),
    Other(String),
}

impl Outcome {
    fn parse(answer: Option<&str>, died: impl FnOnce() -> Result<Option<i32>>) -> Result<Self> {
        let Some(answer) = answer else {
            return Ok(
                died()?.map_or_else(|| Self::Other("the process exited".into()), Self::Killed)
            );
        };
        let parsed = match answer.split_once(' ') {
            None if answer == "ok" => Some(Self::Ok),
            Some(("err", n)) => n.parse().ok().map(|n| Self::Errno(Errno::from_raw(n))),
            Some(("exit", n)) => n.parse().ok().map(Self::Exit),
            Some(("signal", n)) => n.parse().ok().map(Self::ChildKilled),
            _ => None,
        };
        Ok(parsed.unwrap_or_else(|| Self::Other(answer.to_owned())))
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ok => f.write_str("ok"),
            Self::Errno(e) => write!(f, "{e}"),
            Self::Exit(n) => write!(f, "exit {n}"),
            Self::Killed(n) => write!(f, "the agent process was killed by {}", signal_name(*n)),
            Self::ChildKilled(n) => write!(f, "the program was killed by {}", signal_name(*n)),
            Self::Other(s) => write!(f, "{s:?}"),
        }
    }
}

fn signal_name(n: i32) -> String {
    Signal::try_from(n).map_or_else(|_| format!("signal {n}"), |s| s.as_str().to_owned())
}

/// The outcome a step narrates.
#[derive(Clone, Copy)]
enum Expect {
    Ok,
    Errno(Errno),
    Exit(i32),
    /// The session process is killed (SIGKILL) by the action.
    Killed,
}

impl Expect {
    fn matches(self, got: &Outcome) -> bool {
        match (self, got) {
            (Self::Ok, Outcome::Ok) => true,
            (Self::Errno(want), Outcome::Errno(e)) => want == *e,
            (Self::Exit(want), Outcome::Exit(n)) => want == *n,
            (Self::Killed, Outcome::Killed(n)) => *n == Signal::SIGKILL as i32,
            _ => false,
        }
    }
}

impl std::fmt::Display for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ok => f.write_str("ok"),
            Self::Errno(e) => write!(f, "{e}"),
            Self::Exit(n) => write!(f, "exit {n}"),
            Self::Killed => f.write_str("the agent process killed by SIGKILL"),
        }
    }
}

fn is_connect(e: &Value, to: SocketAddr, blocked: bool) -> bool {
    e["kind"] == "connect"
        && e["address"] == to.ip().to_string()
        && e["port"] == to.port()
        && e["blocked"].as_bool().unwrap_or(false) == blocked
}

fn is_anomaly(e: &Value, kind: &str) -> bool {
    e["kind"] == "anomaly" && e["anomaly"] == kind
}

fn heading(title: &str) {
    println!();
    println!(
        "── {title} {}",
        "─".repeat(70usize.saturating_sub(title.chars().count()))
    );
}

fn print_event(e: &Value) {
    let mut lines = summary(e).into_iter();
    if let Some(first) = lines.next() {
        println!("    vigil ▸ {first}");
    }
    for line in lines {
        println!("            {line}");
    }
}

/// An event in a line or two, with the JSON field names a SIEM would see.
fn summary(e: &Value) -> Vec<String> {
    let s = |v: &Value| v.as_str().unwrap_or("?").to_owned();
    let who = {
        let id = &e["identity"];
        let mut who = format!("{}/{}", s(&id["agent"]), s(&id["session"]));
        if let Some(task) = id["task"].as_str() {
            let _ = write!(who, " task {task}");
        }
        if let Some(pid) = e["process"]["pid"].as_u64() {
            let _ = write!(who, " pid {pid}");
        }
        who
    };
    match e["kind"].as_str().unwrap_or("?") {
        "exec" => {
            let argv: Vec<String> = e["argv"]
                .as_array()
                .map_or_else(Vec::new, |a| a.iter().map(s).collect());
            vec![format!("exec {}  [{who}]", argv.join(" "))]
        }
        "file_open" => vec![format!(
            "file_open {} {}  [{who}]",
            s(&e["access"]),
            s(&e["path"])
        )],
        "connect" => {
            let blocked = if e["blocked"] == true {
                "  blocked: true"
            } else {
                ""
            };
            vec![format!(
                "connect {} {}:{}{blocked}  [{who}]",
                s(&e["protocol"]),
                s(&e["address"]),
                e["port"]
            )]
        }
        "anomaly" => vec![
            format!(
                "anomaly {}  severity {}  action {}",
                s(&e["anomaly"]),
                s(&e["severity"]),
                s(&e["action"])
            ),
            s(&e["reason"]),
        ],
        "revocation" => vec![
            format!(
                "revocation of session {} of {}  by \"{}\"",
                s(&e["session"]),
                s(&e["agent"]),
                s(&e["by"])
            ),
            format!("latency_ns {}", e["latency_ns"]),
        ],
        "restore" => vec![format!(
            "restore of session {} of {}  by \"{}\"",
            s(&e["session"]),
            s(&e["agent"]),
            s(&e["by"])
        )],
        "task_ended" => vec![format!(
            "task_ended {} of {}: {}",
            s(&e["task"]),
            s(&e["agent"]),
            s(&e["reason"])
        )],
        other => vec![format!("{other} {e}")],
    }
}

fn micros(ns: u64) -> String {
    format!("{:.1} µs", ns as f64 / 1e3)
}

fn seq(e: &Value) -> u64 {
    e["seq"].as_u64().unwrap_or(0)
}

/// Arguments as the operator would type them.
fn shell_words(args: &[&str]) -> String {
    args.iter()
        .map(|a| {
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "'\"$".contains(c)) {
                format!("\"{a}\"")
            } else {
                (*a).to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn answers_become_outcomes_and_meet_expectations() {
        let none = || -> Result<Option<i32>> { panic!("the process did not die") };
        let ok = Outcome::parse(Some("ok"), none).unwrap();
        assert!(Expect::Ok.matches(&ok));
        let eperm = Outcome::parse(Some("err 1"), none).unwrap();
        assert_eq!(eperm, Outcome::Errno(Errno::EPERM));
        assert!(Expect::Errno(Errno::EPERM).matches(&eperm));
        assert!(!Expect::Ok.matches(&eperm));
        assert_eq!(
            Outcome::parse(Some("exit 0"), none).unwrap(),
            Outcome::Exit(0)
        );
        assert_eq!(
            Outcome::parse(Some("signal 9"), none).unwrap(),
            Outcome::ChildKilled(9)
        );
        assert_eq!(
            Outcome::parse(Some("err usage"), none).unwrap(),
            Outcome::Other("err usage".into())
        );
        let killed = Outcome::parse(None, || Ok(Some(9))).unwrap();
        assert!(Expect::Killed.matches(&killed));
        assert!(!Expect::Killed.matches(&Outcome::ChildKilled(9)));
        assert_eq!(
            killed.to_string(),
            "the agent process was killed by SIGKILL"
        );
    }

    #[test]
    fn events_are_summarised_with_their_json_names() {
        let revocation = json!({
            "kind": "revocation", "agent": "code-assistant", "session": "s1",
            "by": "on_violation of agent code-assistant", "latency_ns": 700_123,
            "identity": {"agent": "code-assistant"}
        });
        assert_eq!(
            summary(&revocation),
            [
                "revocation of session s1 of code-assistant  by \"on_violation of agent code-assistant\"",
                "latency_ns 700123"
            ]
        );
        let connect = json!({
            "kind": "connect", "protocol": "tcp", "address": "127.0.0.1", "port": 8080,
            "blocked": true,
            "identity": {"agent": "a", "session": "s", "task": "T-1"},
            "process": {"pid": 42}
        });
        assert_eq!(
            summary(&connect),
            ["connect tcp 127.0.0.1:8080  blocked: true  [a/s task T-1 pid 42]"]
        );
        assert!(is_connect(
            &connect,
            "127.0.0.1:8080".parse().unwrap(),
            true
        ));
        assert!(!is_connect(
            &connect,
            "127.0.0.1:8080".parse().unwrap(),
            false
        ));
    }

    #[test]
    fn operator_commands_are_shown_as_typed() {
        assert_eq!(
            shell_words(&["restore", "a", "--reason", "looked at it"]),
            "restore a --reason \"looked at it\""
        );
    }
}
