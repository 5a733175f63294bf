//! What watching costs the watched, and what the daemon costs everyone else.
//!
//! Four loops (exec, connect, one file opened again and again, many files
//! opened once each) run under three conditions: with no daemon on the machine
//! (the baseline), inside a watched session with the daemon running
//! (`vigil exec --agent bench`), and as an ordinary unwatched process while
//! the daemon runs. The loops time themselves, so process start-up and
//! `vigil exec` are not part of the figures.
//!
//! The targets are on wall-clock time: what the watched program notices,
//! including the daemon competing with it for the CPU. The loops also report
//! their CPU time (threads and children), which other work on the machine
//! stretches far less, as a steadier view of what the hooks cost.
//!
//! The machine is small and shared, so each round starts a fresh daemon,
//! alternates the order of the daemon and no-daemon phases and of the watched
//! and unwatched runs, repeats each run, and lets the daemon finish the
//! previous run's events before the next starts. Each figure is a ratio of
//! medians.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail};

use vigil_harness::Binaries;
use vigil_harness::stats::median;

use super::daemon::{self, Daemon};
use super::{Figure, Target};
use crate::cmd;

const ROUNDS: usize = 5;
/// Runs of each loop per condition within one phase of a round.
const REPEATS: usize = 3;
const WATCHED_MAX: f64 = 1.10;
const UNWATCHED_MAX: f64 = 1.02;

/// Files of the distinct-file loop.
const DISTINCT_FILES: u64 = 20_000;

/// One timed loop of the workload binary.
pub struct Loop {
    pub name: &'static str,
    /// What one iteration is, for the per-operation figure.
    pub op: &'static str,
    pub iterations: u64,
    pub args: Vec<String>,
}

impl Loop {
    /// The loops, with the files they open written into `scratch`.
    pub fn all(scratch: &Path) -> Result<Vec<Self>> {
        let file = scratch.join("open-target.txt");
        std::fs::write(&file, b"vigil bench\n").context("writing the open loop's file")?;
        let file = file.to_string_lossy().into_owned();
        // Many files of one directory, each opened once per run, as a build
        // or an agent reading a repository does: no open repeats another.
        let tree = scratch.join("distinct");
        std::fs::create_dir_all(&tree).context("creating the distinct-file loop's directory")?;
        let body = "x".repeat(100);
        for i in 0..DISTINCT_FILES {
            std::fs::write(tree.join(i.to_string()), &body)
                .context("writing the distinct-file loop's files")?;
        }
        let tree = tree.to_string_lossy().into_owned();
        let exec = 2_000;
        let connect = 20_000;
        let open = 200_000;
        Ok(vec![
            Self {
                name: "exec",
                op: "fork+exec+wait of /bin/true",
                iterations: exec,
                args: vec!["bench-exec".into(), exec.to_string()],
            },
            Self {
                name: "connect",
                op: "TCP connect to a loopback listener",
                iterations: connect,
                args: vec!["bench-connect".into(), connect.to_string()],
            },
            Self {
                name: "open",
                op: "open+close of a file",
                iterations: open,
                args: vec!["bench-open".into(), file, open.to_string()],
            },
            Self {
                name: "open_distinct",
                op: "open+read+close of a file not opened before",
                iterations: DISTINCT_FILES,
                args: vec![
                    "bench-open-distinct".into(),
                    tree,
                    DISTINCT_FILES.to_string(),
                ],
            },
        ])
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Condition {
    NoDaemon,
    Watched,
    Unwatched,
}

/// What one run of a loop reported.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub wall_ns: f64,
    pub cpu_ns: f64,
}

/// Every run, by loop and condition.
type Samples = BTreeMap<(&'static str, Condition), Vec<Sample>>;

pub fn run(target_dir: &Path) -> Result<Vec<Figure>> {
    let bins = crate::workspace::build_release(target_dir)?;
    daemon::note_machine();
    let scratch = tempfile::tempdir().context("creating a scratch directory")?;
    let loops = Loop::all(scratch.path())?;

    let mut samples = Samples::new();
    let mut lost = 0;
    for round in 0..ROUNDS {
        let daemon_first = !round.is_multiple_of(2);
        for daemon_phase in [daemon_first, !daemon_first] {
            if daemon_phase {
                lost += daemon_phase_runs(&bins, &loops, round, &mut samples)?;
            } else {
                for _ in 0..REPEATS {
                    for l in &loops {
                        let sample = time(&mut Command::new(&bins.workload), l)?;
                        record(&mut samples, l, Condition::NoDaemon, sample, round);
                    }
                }
            }
        }
    }
    daemon::note_machine();
    Ok(figures(&loops, &samples, lost))
}

/// Starts a daemon, runs every loop watched and unwatched, stops it.
/// Returns the records the kernel could not deliver meanwhile.
fn daemon_phase_runs(
    bins: &Binaries,
    loops: &[Loop],
    round: usize,
    samples: &mut Samples,
) -> Result<u64> {
    let daemon = Daemon::start(&bins.vigil)?;
    let lost_before = daemon.lost()?;
    for repeat in 0..REPEATS {
        let order = if (round + repeat).is_multiple_of(2) {
            [Condition::Watched, Condition::Unwatched]
        } else {
            [Condition::Unwatched, Condition::Watched]
        };
        for l in loops {
            for condition in order {
                daemon.wait_idle()?;
                let mut command = if condition == Condition::Watched {
                    let session = format!("overhead-{round}-{repeat}-{}", l.name);
                    daemon.exec(&session, &bins.workload)
                } else {
                    Command::new(&bins.workload)
                };
                let sample = time(&mut command, l)
                    .with_context(|| format!("{condition:?} {} loop", l.name))?;
                record(samples, l, condition, sample, round);
            }
        }
    }
    daemon.wait_idle()?;
    let lost = daemon.lost()?.saturating_sub(lost_before);
    daemon.stop()?;
    Ok(lost)
}

/// Runs one loop and returns what it reported (`WALL_NS CPU_NS`).
pub fn time(command: &mut Command, l: &Loop) -> Result<Sample> {
    // `cargo xtask` runs with cargo's LD_LIBRARY_PATH (four toolchain and
    // target directories). With it, the dynamic loader of every `/bin/true`
    // the exec loop starts looks for libc in each of them and their
    // `glibc-hwcaps` subdirectories first: a dozen failed opens per exec,
    // each a file event in a watched session, which no real workload has.
    command
        .args(&l.args)
        .env_remove("LD_LIBRARY_PATH")
        .stdin(Stdio::null());
    let out = command
        .output()
        .with_context(|| format!("running `{}`", cmd::display(command)))?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            cmd::display(command),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    parse_sample(&stdout).with_context(|| {
        format!(
            "`{}` printed no `WALL_NS CPU_NS` line: {stdout:?}",
            cmd::display(command)
        )
    })
}

fn parse_sample(stdout: &str) -> Option<Sample> {
    let line = stdout.lines().last()?;
    let mut fields = line.split_whitespace().map(str::parse::<f64>);
    match (fields.next(), fields.next(), fields.next()) {
        (Some(Ok(wall_ns)), Some(Ok(cpu_ns)), None) => Some(Sample { wall_ns, cpu_ns }),
        _ => None,
    }
}

fn record(samples: &mut Samples, l: &Loop, condition: Condition, sample: Sample, round: usize) {
    let per_op = |ns: f64| ns / 1e3 / l.iterations as f64;
    eprintln!(
        "bench: round {round}: {:<7} {:<9} {:>9.3} µs/op wall {:>9.3} µs/op CPU",
        l.name,
        format!("{condition:?}"),
        per_op(sample.wall_ns),
        per_op(sample.cpu_ns),
    );
    samples.entry((l.name, condition)).or_default().push(sample);
}

fn figures(loops: &[Loop], samples: &Samples, lost: u64) -> Vec<Figure> {
    let med = |name, c, of: fn(&Sample) -> f64| {
        let values: Vec<f64> = samples
            .get(&(name, c))
            .map(|v| v.iter().map(of).collect())
            .unwrap_or_default();
        median(&values)
    };
    let wall = |s: &Sample| s.wall_ns;
    let cpu = |s: &Sample| s.cpu_ns;
    let ratio = |name: String, value: f64, target| Figure {
        name,
        value,
        unit: "ratio".into(),
        target,
    };
    let mut out = Vec::new();
    for l in loops {
        eprintln!("bench: {}: {} iterations of {}", l.name, l.iterations, l.op);
        let base = med(l.name, Condition::NoDaemon, wall);
        let base_cpu = med(l.name, Condition::NoDaemon, cpu);
        out.push(Figure {
            name: format!("overhead.{}.base", l.name),
            value: base / 1e3 / l.iterations as f64,
            unit: "µs/op".into(),
            target: Target::None,
        });
        out.push(ratio(
            format!("overhead.{}.watched", l.name),
            med(l.name, Condition::Watched, wall) / base,
            Target::AtMost(WATCHED_MAX),
        ));
        out.push(ratio(
            format!("overhead.{}.unwatched", l.name),
            med(l.name, Condition::Unwatched, wall) / base,
            Target::AtMost(UNWATCHED_MAX),
        ));
        out.push(ratio(
            format!("overhead.{}.watched_cpu", l.name),
            med(l.name, Condition::Watched, cpu) / base_cpu,
            Target::None,
        ));
        out.push(ratio(
            format!("overhead.{}.unwatched_cpu", l.name),
            med(l.name, Condition::Unwatched, cpu) / base_cpu,
            Target::None,
        ));
    }
    out.push(Figure {
        name: "overhead.kernel_lost".into(),
        value: lost as f64,
        unit: "records".into(),
        target: Target::None,
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_wall_and_cpu_nanoseconds() {
        let s = parse_sample("1500000000 1200000000\n").unwrap();
        assert!((s.wall_ns - 1.5e9).abs() < 1.0 && (s.cpu_ns - 1.2e9).abs() < 1.0);
        assert!(parse_sample("1500000000\n").is_none());
        assert!(parse_sample("1 2 3\n").is_none());
        assert!(parse_sample("").is_none());
    }

    #[test]
    fn ratios_divide_by_the_no_daemon_median() {
        let loops = vec![Loop {
            name: "open",
            op: "open",
            iterations: 1_000,
            args: Vec::new(),
        }];
        let s = |wall_ns, cpu_ns| Sample { wall_ns, cpu_ns };
        let mut samples = Samples::new();
        samples.insert(
            ("open", Condition::NoDaemon),
            vec![s(1e6, 5e5), s(1e6, 5e5), s(9e6, 9e6)],
        );
        samples.insert(
            ("open", Condition::Watched),
            vec![s(1.2e6, 1e6), s(1.1e6, 1e6), s(1.0e6, 1e6)],
        );
        samples.insert(
            ("open", Condition::Unwatched),
            vec![s(1e6, 5e5), s(1e6, 5e5), s(1e6, 5e5)],
        );
        let f = figures(&loops, &samples, 7);
        let get = |n: &str| f.iter().find(|x| x.name == n).unwrap().value;
        assert!((get("overhead.open.base") - 1.0).abs() < 1e-9);
        assert!((get("overhead.open.watched") - 1.1).abs() < 1e-9);
        assert!((get("overhead.open.unwatched") - 1.0).abs() < 1e-9);
        assert!((get("overhead.open.watched_cpu") - 2.0).abs() < 1e-9);
        assert!((get("overhead.open.unwatched_cpu") - 1.0).abs() < 1e-9);
        assert!((get("overhead.kernel_lost") - 7.0).abs() < f64::EPSILON);
    }
}
