//! `cargo xtask soak --minutes N`: a daemon under a steady mixed workload
//! for N minutes, its memory and CPU sampled, failing when its resident set
//! grows past a bound after the warm-up.
//!
//! The workload, each part on its own thread: sessions opening files at a
//! steady rate (each open an event), one subscriber that follows the stream
//! for the whole run and one that replays the journal from the oldest event
//! every few seconds, and a config reload (a new file renamed over the old)
//! every few seconds. The journal is capped small enough that retention
//! prunes all along, so its size is no excuse for growth. The daemon is the
//! release build, as a node runs it.

use std::io::BufRead as _;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use vigil_harness::{Binaries, Events, Layout, START_TIMEOUT, every, names};

use crate::setup;

const AGENT: &str = "soak";
const AGENT_CONFIG: &str =
    vigil_harness::permissive_agent!("soak", "soak@localhost", "cargo xtask soak workloads");
/// Every this often: a sample of RSS and CPU.
const SAMPLE: Duration = Duration::from_secs(5);
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
    /// Events a second: a session a second opens this many files
    #[arg(long, default_value_t = 10_000)]
    rate: u32,
    /// Fail when the daemon's RSS ever exceeds this, MiB
    #[arg(long)]
    max_rss_mib: Option<u64>,
}

struct Sample {
    at: Duration,
    rss: Rss,
    cpu: Duration,
}

/// The daemon's resident set, KiB, and its parts as `/proc/PID/status`
/// splits them: the heap and stacks (anonymous), the binary's pages
/// (file), and shared mappings (shmem: the ring buffers' data pages,
/// mapped from the kernel).
#[derive(Clone, Copy, Default)]
struct Rss {
    total: u64,
    anon: u64,
    file: u64,
    shmem: u64,
}

impl Rss {
    fn of(pid: u32) -> Result<Self> {
        let path = Path::new("/proc").join(pid.to_string()).join("status");
        let status = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .with_context(|| format!("no {name} in {}", path.display()))
        };
        Ok(Self {
            total: field("VmRSS:")?,
            anon: field("RssAnon:")?,
            file: field("RssFile:")?,
            shmem: field("RssShmem:")?,
        })
    }
}

impl std::fmt::Display for Rss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = |k: u64| k as f64 / 1024.0;
        write!(
            f,
            "{:.1} MiB (anon {:.1}, file {:.1}, shmem {:.1})",
            mib(self.total),
            mib(self.anon),
            mib(self.file),
            mib(self.shmem)
        )
    }
}

pub fn soak(args: &Args) -> Result<()> {
    setup::ensure(setup::Scope::Kernel, setup::Report::Changes)?;
    let meta = crate::workspace::Metadata::load()?;
    let bins = crate::workspace::build_release(&meta.target_dir()?)?;

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
    let worker = spawn_workload(&bins, &layout.socket, args.rate, &stop, &opened, &failures);
    let (mut follower, followed) = follow(&daemon)?;

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
            let replay = watch(&daemon, &["--oldest", "--count", "5000"])?.wait()?;
            if replay.success() {
                replays += 1;
            } else {
                failures.fetch_add(1, Ordering::Relaxed);
            }
            next_reload += RELOAD;
        }
        let sample = Sample {
            at: start.elapsed(),
            rss: Rss::of(pid)?,
            cpu: vigil_harness::cpu::time(pid)?,
        };
        let cpu = samples.last().map_or(0.0, |p| {
            sample.cpu.saturating_sub(p.cpu).as_secs_f64()
                / sample.at.saturating_sub(p.at).as_secs_f64().max(1e-9)
                * 100.0
        });
        println!(
            "soak: {:>5.0} s  rss {}  cpu {cpu:>5.1} %  events {}",
            sample.at.as_secs_f64(),
            sample.rss,
            opened.load(Ordering::Relaxed)
        );
        samples.push(sample);
    }
    stop.store(true, Ordering::Relaxed);
    let _ = worker.join();
    let lost_in_kernel = kernel_losses(&daemon)?;
    let _ = follower.kill();
    let _ = follower.wait();
    let followed = followed
        .join()
        .map_err(|_| anyhow!("the follower's reader panicked"))?;
    let log = daemon.log();
    drop(daemon);
    drop(dir);

    let after: Vec<&Sample> = samples.iter().filter(|s| s.at >= warm_up).collect();
    let base = after.first().context("no sample after the warm-up")?.rss;
    let peak = after
        .iter()
        .map(|s| s.rss)
        .max_by_key(|r| r.total)
        .unwrap_or(base);
    let last = after.last().map_or(base, |s| s.rss);
    let cpu_total = samples.last().map_or(Duration::ZERO, |s| s.cpu);
    let growth = peak.total.saturating_sub(base.total);
    let events = opened.load(Ordering::Relaxed);
    println!(
        "soak: {} min at {} events/s: {events} events opened, {} events followed, \
         {} loss events, {lost_in_kernel} records lost in the kernel; {reloads} reloads, {replays} replays",
        args.minutes, args.rate, followed.events, followed.losses,
    );
    println!(
        "soak: RSS after warm-up {base}; peak {peak}; last {last}; growth {:.1} MiB (bound {} MiB)",
        growth as f64 / 1024.0,
        args.max_growth_mib,
    );
    println!(
        "soak: daemon CPU {:.1} s ({:.1} % of one core, {:.2} µs per event)",
        cpu_total.as_secs_f64(),
        cpu_total.as_secs_f64() / run_for.as_secs_f64() * 100.0,
        cpu_total.as_secs_f64() * 1e6 / events.max(1) as f64,
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
    if let Some(max) = args.max_rss_mib
        && peak.total > max * 1024
    {
        bail!("soak: RSS reached {peak}, more than {max} MiB");
    }
    if lost_in_kernel > 0 || followed.losses > 0 {
        bail!(
            "soak: {lost_in_kernel} records lost in the kernel, {} loss events; daemon log:\n{log}",
            followed.losses
        );
    }
    Ok(())
}

/// A session a second, each opening `rate` files; stops with `stop`.
fn spawn_workload(
    bins: &Binaries,
    socket: &Path,
    rate: u32,
    stop: &Arc<AtomicBool>,
    opened: &Arc<AtomicU64>,
    failures: &Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    let (vigil, socket, workload) = (bins.vigil.clone(), socket.to_owned(), bins.workload.clone());
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
                .args(["flood-open", "/dev/null", &rate.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if status.is_ok_and(|s| s.success()) {
                opened.fetch_add(u64::from(rate), Ordering::Relaxed);
            } else {
                failures.fetch_add(1, Ordering::Relaxed);
            }
            next += Duration::from_secs(1);
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
    })
}

/// What the following subscriber saw.
struct Followed {
    events: u64,
    losses: u64,
}

/// `vigil watch --json` for the whole run, every event counted and the
/// `loss` events apart: a loss anywhere on the node (ring, journal) is one.
fn follow(daemon: &vigil_harness::Daemon) -> Result<(Child, std::thread::JoinHandle<Followed>)> {
    let mut child = daemon
        .client()
        .args(["watch", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the following subscriber")?;
    let out = child.stdout.take().context("the follower's stdout")?;
    let reader = std::thread::spawn(move || {
        let mut seen = Followed {
            events: 0,
            losses: 0,
        };
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            seen.events += 1;
            if serde_json::from_str::<serde_json::Value>(&line).is_ok_and(|v| v["kind"] == "loss") {
                seen.losses += 1;
            }
        }
        seen
    });
    Ok((child, reader))
}

/// Records the kernel could not deliver, summed over the sensors that
/// `vigil status` lists.
fn kernel_losses(daemon: &vigil_harness::Daemon) -> Result<u64> {
    let out = daemon
        .client()
        .arg("status")
        .output()
        .context("running `vigil status`")?;
    if !out.status.success() {
        bail!("vigil status: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lost = 0;
    for line in text.lines().filter(|l| l.starts_with("sensor ")) {
        let n = line
            .rsplit_once(" lost ")
            .and_then(|(_, n)| n.trim().parse::<u64>().ok())
            .with_context(|| format!("no loss count in `{line}`"))?;
        lost += n;
    }
    Ok(lost)
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
