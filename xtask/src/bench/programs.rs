//! `cargo xtask bench programs`: what Vigil's kernel programs cost per
//! operation of each overhead loop run in a watched session, as the kernel
//! itself counts it (`kernel.bpf_stats_enabled`, read from the `cost` lines
//! of `vigil status`).
//!
//! The loops' wall-clock ratios (`overhead`) carry the machine's noise and
//! everything the daemon does; this is the in-kernel part alone, summed over
//! every Vigil program that ran during the loop (the open program for an
//! open, the fork, exec and exit programs for an exec). Counting adds two
//! clock reads to every program run, so it is never on while `overhead`
//! measures.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result, bail};
use vigil_harness::{bpf_stats::Counting, stats::median};

use super::daemon::{self, Daemon};
use super::overhead::{Loop, time};
use super::{Figure, Target};

/// Runs of each loop, the first dropped (a cold start).
const ROUNDS: usize = 6;

/// Run time so far (ns) of each program, from `vigil status`.
fn costs(daemon: &Daemon) -> Result<BTreeMap<String, f64>> {
    let status = daemon.status()?;
    parse_costs(&status)
}

/// `cost      NAME RUNS runs NS ns/run TOTAL ms` lines.
fn parse_costs(status: &str) -> Result<BTreeMap<String, f64>> {
    let mut out = BTreeMap::new();
    for line in status.lines().filter_map(|l| l.strip_prefix("cost ")) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields[..] {
            [name, _, "runs", _, "ns/run", ms, "ms"] => {
                let ms: f64 = ms
                    .parse()
                    .with_context(|| format!("total {ms:?} in `vigil status` line {line:?}"))?;
                out.insert(name.to_owned(), ms * 1e6);
            }
            ["not", "counted", ..] => bail!("the kernel does not count program run time: {line}"),
            _ => bail!("unexpected `vigil status` cost line {line:?}"),
        }
    }
    Ok(out)
}

/// How the daemon reads the kernel objects behind a resolved path: its
/// default (typed loads where the kernel allows them) and helper calls.
const READS: [(&str, &str); 2] = [("typed", ""), ("helpers", "typed_reads = false\n")];

/// Daemons started per read mode, alternated (typed, helpers, typed,
/// helpers) so that drift of the machine falls on both alike.
const PASSES: usize = 2;

/// Kernel ns per operation of each loop, every measured round, and the
/// same per program.
#[derive(Default)]
struct Costs {
    per_op: Vec<f64>,
    by_program: BTreeMap<String, Vec<f64>>,
}

fn measure(
    bins: &vigil_harness::Binaries,
    loops: &[Loop],
    settings: &str,
    tag: &str,
    into: &mut BTreeMap<String, Costs>,
) -> Result<()> {
    let daemon = Daemon::start_with(&bins.vigil, settings)?;
    for l in loops {
        let costs_of = into.entry(l.name.to_owned()).or_default();
        for round in 0..ROUNDS {
            daemon.wait_idle()?;
            let before = costs(&daemon)?;
            let mut command = daemon.exec(
                &format!("programs-{tag}-{round}-{}", l.name),
                &bins.workload,
            );
            time(&mut command, l).with_context(|| format!("watched {} loop", l.name))?;
            let after = costs(&daemon)?;
            if round == 0 {
                continue;
            }
            let mut total = 0.0;
            // The status queries that read the figures make a `bpf()` call
            // per program on the node, which the bpf() tamper program sees:
            // the measurement's own cost, not the loop's.
            for (name, ns) in after.iter().filter(|(name, _)| *name != "vigil_bpf_enter") {
                let spent = ns - before.get(name).copied().unwrap_or(0.0);
                total += spent;
                costs_of
                    .by_program
                    .entry(name.clone())
                    .or_default()
                    .push(spent / l.iterations as f64);
            }
            costs_of.per_op.push(total / l.iterations as f64);
        }
    }
    daemon.stop()
}

pub fn run(target_dir: &std::path::Path) -> Result<Vec<Figure>> {
    let bins = crate::workspace::build_release(target_dir)?;
    daemon::note_machine();
    let scratch = tempfile::tempdir().context("creating a scratch directory")?;
    let loops = Loop::all(scratch.path())?;
    let _counting = Counting::set(true).context("counting program run time")?;
    let mut by_reads: BTreeMap<&str, BTreeMap<String, Costs>> = BTreeMap::new();
    for pass in 0..PASSES {
        for (reads, settings) in READS {
            let into = by_reads.entry(reads).or_default();
            measure(&bins, &loops, settings, &format!("{reads}{pass}"), into)?;
        }
    }
    let mut figures = Vec::new();
    for l in &loops {
        let mut medians = BTreeMap::new();
        for (reads, _) in READS {
            let c = &by_reads[reads][l.name];
            for (name, values) in &c.by_program {
                let m = median(values);
                if m >= 1.0 {
                    eprintln!(
                        "bench: programs: {:<13} {reads:<7} {name:<24} {m:>9.0} ns/op",
                        l.name
                    );
                }
            }
            medians.insert(reads, median(&c.per_op));
        }
        let (typed, helpers) = (medians["typed"], medians["helpers"]);
        figures.push(Figure {
            name: format!("programs.{}.kernel", l.name),
            value: typed,
            unit: "ns/op".into(),
            target: Target::None,
        });
        figures.push(Figure {
            name: format!("programs.{}.kernel_helper_reads", l.name),
            value: helpers,
            unit: "ns/op".into(),
            target: Target::None,
        });
        figures.push(Figure {
            name: format!("programs.{}.typed_saves", l.name),
            value: helpers - typed,
            unit: "ns/op".into(),
            target: Target::None,
        });
    }
    daemon::note_machine();
    Ok(figures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_lines_parse_and_counting_off_is_an_error() {
        let status = "node      n (vigil 0.1.0)\n\
            cost      vigil_open_exit                 21400 runs      392 ns/run        8.389 ms\n\
            cost      vigil_exec                          3 runs     9000 ns/run        0.027 ms\n\
            journal   x\n";
        let c = parse_costs(status).unwrap();
        assert_eq!(c.len(), 2);
        assert!((c["vigil_open_exit"] - 8_389_000.0).abs() < 1.0);
        let off = "cost      not counted (sysctl kernel.bpf_stats_enabled=1 has the kernel time each program)\n";
        assert!(
            parse_costs(off)
                .unwrap_err()
                .to_string()
                .contains("does not count")
        );
        assert!(parse_costs("cost      vigil_x 3 runs\n").is_err());
    }
}
