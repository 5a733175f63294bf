//! What watching costs the watched, and what the daemon costs everyone else.
//!
//! Three loops run under three conditions: with no daemon on the machine
//! (the baseline), inside a watched session with the daemon running
//! (`vigil exec --agent bench`), and as an ordinary unwatched process while
//! the daemon runs. The loops time themselves, so process start-up and
//! `vigil exec` are not part of the figures.
//!
//! The machine is small and shared, so rounds alternate the order of the
//! daemon and no-daemon phases (and of the watched and unwatched runs), the
//! daemon is given time to finish the previous run's events before the next
//! one starts, and each figure is a ratio of medians.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail};

use super::daemon::{Binaries, Daemon};
use super::{Figure, Target};
use crate::cmd;

const ROUNDS: usize = 5;
const WATCHED_MAX: f64 = 1.10;
const UNWATCHED_MAX: f64 = 1.02;

/// One timed loop of the workload binary.
struct Loop {
    name: &'static str,
    /// What one iteration is, for the per-operation figure.
    op: &'static str,
    iterations: u64,
    args: Vec<String>,
}

impl Loop {
    fn all(scratch: &Path) -> Vec<Self> {
        let file = scratch
            .join("open-target.txt")
            .to_string_lossy()
            .into_owned();
        let exec = 2_000;
        let connect = 20_000;
        let open = 200_000;
        vec![
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
        ]
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Condition {
    NoDaemon,
    Watched,
    Unwatched,
}

/// Nanoseconds per run, by loop and condition.
type Samples = BTreeMap<(&'static str, Condition), Vec<f64>>;

pub fn run(target_dir: &Path) -> Result<Vec<Figure>> {
    let bins = Binaries::build(target_dir)?;
    super::daemon::note_machine();
    let scratch = tempfile::tempdir().context("creating a scratch directory")?;
    let loops = Loop::all(scratch.path());
    std::fs::write(scratch.path().join("open-target.txt"), b"vigil bench\n")
        .context("writing the open loop's file")?;

    let mut samples = Samples::new();
    let mut lost = 0;
    for round in 0..ROUNDS {
        let daemon_first = !round.is_multiple_of(2);
        for daemon_phase in [daemon_first, !daemon_first] {
            if daemon_phase {
                lost += daemon_phase_runs(&bins, &loops, round, &mut samples)?;
            } else {
                for l in &loops {
                    let ns = time(&mut Command::new(&bins.workload), l)?;
                    record(&mut samples, l, Condition::NoDaemon, ns, round);
                }
            }
        }
    }
    super::daemon::note_machine();
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
    let order = if round.is_multiple_of(2) {
        [Condition::Watched, Condition::Unwatched]
    } else {
        [Condition::Unwatched, Condition::Watched]
    };
    for l in loops {
        for condition in order {
            daemon.wait_idle()?;
            let mut command = match condition {
                Condition::Watched => {
                    daemon.exec(&format!("overhead-{round}-{}", l.name), &bins.workload)
                }
                _ => Command::new(&bins.workload),
            };
            let ns = time(&mut command, l)
                .with_context(|| format!("{:?} {} loop", condition, l.name))?;
            record(samples, l, condition, ns, round);
        }
    }
    daemon.wait_idle()?;
    let lost = daemon.lost()?.saturating_sub(lost_before);
    daemon.stop()?;
    Ok(lost)
}

/// Runs one loop and returns the nanoseconds it reported.
fn time(command: &mut Command, l: &Loop) -> Result<f64> {
    command.args(&l.args).stdin(Stdio::null());
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
    stdout
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .with_context(|| {
            format!(
                "`{}` printed no loop time: {stdout:?}",
                cmd::display(command)
            )
        })
}

fn record(samples: &mut Samples, l: &Loop, condition: Condition, ns: f64, round: usize) {
    eprintln!(
        "bench: round {round}: {:<7} {:<9} {:>9.3} µs/op",
        l.name,
        format!("{condition:?}"),
        ns / 1e3 / l.iterations as f64
    );
    samples.entry((l.name, condition)).or_default().push(ns);
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => f64::midpoint(v[n / 2 - 1], v[n / 2]),
    }
}

fn figures(loops: &[Loop], samples: &Samples, lost: u64) -> Vec<Figure> {
    let med = |name, c| median(samples.get(&(name, c)).map_or(&[][..], Vec::as_slice));
    let mut out = Vec::new();
    for l in loops {
        let base = med(l.name, Condition::NoDaemon);
        eprintln!("bench: {}: {} iterations of {}", l.name, l.iterations, l.op);
        out.push(Figure {
            name: format!("overhead.{}.base", l.name),
            value: base / 1e3 / l.iterations as f64,
            unit: "µs/op".into(),
            target: Target::None,
        });
        out.push(Figure {
            name: format!("overhead.{}.watched", l.name),
            value: med(l.name, Condition::Watched) / base,
            unit: "ratio".into(),
            target: Target::AtMost(WATCHED_MAX),
        });
        out.push(Figure {
            name: format!("overhead.{}.unwatched", l.name),
            value: med(l.name, Condition::Unwatched) / base,
            unit: "ratio".into(),
            target: Target::AtMost(UNWATCHED_MAX),
        });
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
    fn medians_of_odd_and_even_samples() {
        assert!((median(&[3.0, 1.0, 2.0]) - 2.0).abs() < f64::EPSILON);
        assert!((median(&[4.0, 1.0, 3.0, 2.0]) - 2.5).abs() < f64::EPSILON);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn ratios_divide_by_the_no_daemon_median() {
        let loops = vec![Loop {
            name: "open",
            op: "open",
            iterations: 1_000,
            args: Vec::new(),
        }];
        let mut s = Samples::new();
        s.insert(("open", Condition::NoDaemon), vec![1e6, 1e6, 9e6]);
        s.insert(("open", Condition::Watched), vec![1.2e6, 1.1e6, 1.0e6]);
        s.insert(("open", Condition::Unwatched), vec![1e6, 1e6, 1e6]);
        let f = figures(&loops, &s, 7);
        let get = |n: &str| f.iter().find(|x| x.name == n).unwrap();
        assert!((get("overhead.open.base").value - 1.0).abs() < 1e-9);
        assert!((get("overhead.open.watched").value - 1.1).abs() < 1e-9);
        assert!((get("overhead.open.unwatched").value - 1.0).abs() < 1e-9);
        assert!((get("overhead.kernel_lost").value - 7.0).abs() < f64::EPSILON);
    }
}
