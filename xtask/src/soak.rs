//! `cargo xtask soak --minutes N`: a daemon under a steady mixed workload
//! for N minutes, its memory and CPU sampled, failing when its resident set
//! grows past a bound after the warm-up.
//!
//! The workload, each part on its own thread: sessions opening files at a
//! steady rate (each open an event), one subscriber that follows the stream
//! for the whole run and one that replays the journal from the oldest event
//! every few seconds, and a config reload (a new file renamed over the old)
//! every few seconds. The journal is capped small enough that retention
//! prunes all along, so its size is no excuse for growth.

use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use vigil_harness::{Binaries, Events, Layout, START_TIMEOUT, every, names};

use crate::{cmd, setup, workspace};

const AGENT: &str = "soak";
const AGENT_CONFIG: &str =
    vigil_harness::permissive_agent!("soak", "soak@localhost", "cargo xtask soak workloads");
/// Every this often: a sample of RSS and CPU.
const SAMPLE: Duration = Duration::from_secs(5);
/// Opens per burst, one burst a second: 2,000 events a second.
const OPENS_PER_SECOND: u32 = 2000;
/// Every this often: a reload, and a replay from the oldest event.
const RELOAD: Duration = Duration::from_secs(10);
/// The journal's cap: pruned many times over within a few minutes.
const JOURNAL_MAX_BYTES: u64 = 32 * 1024 * 1024;

#[derive(clap::Args)]
pub struct Args {
    /// Minutes to run, warm-up included
    #[arg(long, default_value_t = 5)]
    minutes: u64,
    /// Largest growth of the daemon's RSS over its value after warm-up, MiB
    #[arg(long, default_value_t = 64)]
    max_growth_mib: u64,
}

struct Sample {
    at: Duration,
    rss_kib: u64,
    cpu: Duration,
}

pub fn soak(args: &Args) -> Result<()> {
    setup::ensure(setup::Scope::Kernel, setup::Report::Changes)?;
    workspace::build_vigil()?;
    cmd::run(cmd::new("cargo").args(["build", "-p", "vigil-tests", "--bin", "vigil-workload"]))?;
    let meta = workspace::Metadata::load()?;
    let bins = Binaries::in_dir(&meta.target_dir()?.join("debug"))?;

    let (dir, layout) = Layout::temp("vigil-soak-", &names::unique("vigil-soak"))?;
    let config = |n: u64| {
        layout.config_text(
            "open_repeat_ms = 0",
            Events::Off,
            &format!("# reload {n}\n{AGENT_CONFIG}\n[journal]\nmax_bytes = {JOURNAL_MAX_BYTES}\n"),
        )
    };
    let mut daemon = vigil_harness::Daemon::new(&bins.vigil, layout.clone());
    daemon.write_config(&config(0))?;
    daemon.spawn()?;
    daemon
        .wait_ready(START_TIMEOUT, every(Duration::from_millis(50)))
        .map_err(|e| anyhow!("{e:#}:\n{}", daemon.log()))?;
    let pid = daemon.pid().context("the daemon is not running")?;

    let run_for = Duration::from_mins(args.minutes.max(1));
    // A fifth of the run, at most two minutes: caches, the allocator's
    // arenas and redb's pages settle first.
    let warm_up = (run_for / 5).min(Duration::from_mins(2));
    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let worker = spawn_workload(
        &bins.vigil,
        &layout.socket,
        &bins,
        &stop,
        &opened,
        &failures,
    );
    let mut follower = watch(&daemon, &[]).context("starting the following subscriber")?;

    let start = Instant::now();
    let mut samples: Vec<Sample> = Vec::new();
    let mut reloads = 0;
    let mut next_reload = start + RELOAD;
    let mut replays = 0;
    while start.elapsed() < run_for {
        std::thread::sleep(SAMPLE.min(run_for.saturating_sub(start.elapsed())));
        if !daemon.alive() {
            stop.store(true, Ordering::Relaxed);
            bail!("soak: the daemon died:\n{}", daemon.log());
        }
        if Instant::now() >= next_reload {
            reloads += 1;
            let tmp = layout.config.with_extension("toml.new");
            std::fs::write(&tmp, config(reloads)).context("writing the config")?;
            std::fs::rename(&tmp, &layout.config).context("replacing the config")?;
            let replay = watch(&daemon, &["--oldest", "--count", "5000"])?.wait_with_output()?;
            if replay.status.success() {
                replays += 1;
            } else {
                failures.fetch_add(1, Ordering::Relaxed);
            }
            next_reload += RELOAD;
        }
        let sample = Sample {
            at: start.elapsed(),
            rss_kib: rss_kib(pid)?,
            cpu: vigil_harness::cpu::time(pid)?,
        };
        let cpu = samples.last().map_or(0.0, |p| {
            sample.cpu.saturating_sub(p.cpu).as_secs_f64()
                / sample.at.saturating_sub(p.at).as_secs_f64().max(1e-9)
                * 100.0
        });
        println!(
            "soak: {:>5.0} s  rss {:>7.1} MiB  cpu {cpu:>5.1} %  events {}",
            sample.at.as_secs_f64(),
            sample.rss_kib as f64 / 1024.0,
            opened.load(Ordering::Relaxed)
        );
        samples.push(sample);
    }
    stop.store(true, Ordering::Relaxed);
    let _ = worker.join();
    let _ = follower.kill();
    let _ = follower.wait();
    let log = daemon.log();
    drop(daemon);
    drop(dir);

    let after: Vec<&Sample> = samples.iter().filter(|s| s.at >= warm_up).collect();
    let base = after.first().context("no sample after the warm-up")?;
    let peak = after
        .iter()
        .map(|s| s.rss_kib)
        .max()
        .unwrap_or(base.rss_kib);
    let last = after.last().map_or(base.rss_kib, |s| s.rss_kib);
    let cpu_total = samples.last().map_or(Duration::ZERO, |s| s.cpu);
    let growth = peak.saturating_sub(base.rss_kib);
    println!(
        "soak: {} min, {} events opened, {reloads} reloads, {replays} replays; \
         RSS after warm-up {:.1} MiB, peak {:.1} MiB, last {:.1} MiB (growth {:.1} MiB, bound {} MiB); \
         daemon CPU {:.1} s ({:.1} % of one core)",
        args.minutes,
        opened.load(Ordering::Relaxed),
        base.rss_kib as f64 / 1024.0,
        peak as f64 / 1024.0,
        last as f64 / 1024.0,
        growth as f64 / 1024.0,
        args.max_growth_mib,
        cpu_total.as_secs_f64(),
        cpu_total.as_secs_f64() / run_for.as_secs_f64() * 100.0
    );
    let failed = failures.load(Ordering::Relaxed);
    if failed > 0 {
        bail!("soak: {failed} workload steps failed; daemon log:\n{log}");
    }
    if growth > args.max_growth_mib * 1024 {
        bail!(
            "soak: RSS grew by {:.1} MiB after the warm-up, more than {} MiB",
            growth as f64 / 1024.0,
            args.max_growth_mib
        );
    }
    Ok(())
}

/// A session a second, each opening [`OPENS_PER_SECOND`] files; stops with
/// `stop`.
fn spawn_workload(
    vigil: &Path,
    socket: &Path,
    bins: &Binaries,
    stop: &Arc<AtomicBool>,
    opened: &Arc<AtomicU64>,
    failures: &Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    let (vigil, socket, workload) = (vigil.to_owned(), socket.to_owned(), bins.workload.clone());
    let (stop, opened, failures) = (Arc::clone(stop), Arc::clone(opened), Arc::clone(failures));
    std::thread::spawn(move || {
        let mut next = Instant::now();
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let status = std::process::Command::new(&vigil)
                .env("VIGIL_SOCKET", &socket)
                .args([
                    "exec",
                    "--agent",
                    AGENT,
                    "--session",
                    &format!("soak-{n}"),
                    "--",
                ])
                .arg(&workload)
                .args(["flood-open", "/dev/null", &OPENS_PER_SECOND.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if status.is_ok_and(|s| s.success()) {
                opened.fetch_add(u64::from(OPENS_PER_SECOND), Ordering::Relaxed);
            } else {
                failures.fetch_add(1, Ordering::Relaxed);
            }
            next += Duration::from_secs(1);
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
    })
}

/// `vigil watch --json ARGS` against the daemon, its output discarded.
fn watch(daemon: &vigil_harness::Daemon, args: &[&str]) -> Result<Child> {
    daemon
        .client()
        .args(["watch", "--json"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting `vigil watch`")
}

/// The resident set of `pid`, from `/proc/PID/status`.
fn rss_kib(pid: u32) -> Result<u64> {
    let path = Path::new("/proc").join(pid.to_string()).join("status");
    let status =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no VmRSS in {}", path.display()))
}
