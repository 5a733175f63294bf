//! `cargo xtask fuzz [TARGET] [--time S]`: the libFuzzer targets of
//! `agent/fuzz/`, one after the other, each for S seconds.
//!
//! The fuzz crate is a workspace of its own (it builds on nightly with
//! sanitizer flags) with its own `Cargo.lock`; its build goes to
//! `target/fuzz` and skips the eBPF object (`AYA_BUILD_SKIP=1`: no target
//! loads programs). Each run starts from the committed seeds
//! (`agent/fuzz/seeds/TARGET`, written by the crate's `seeds` program from
//! real records, configs and requests) and keeps what it finds in
//! `target/fuzz/corpus/TARGET`, so later runs go on from there. A crash is
//! saved under `target/fuzz/artifacts/TARGET/` and fails the command.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::{cmd, workspace};

/// The pinned cargo-fuzz, installed with `cargo install --locked`.
const CARGO_FUZZ_VERSION: &str = "0.13.1";
/// Where the fuzz crate is, from the workspace root.
const FUZZ_DIR: &str = "agent/fuzz";
/// Every target of the fuzz crate.
pub const TARGETS: &[&str] = &[
    "ring_record",
    "dns_response",
    "dns_query",
    "config",
    "subscribe_request",
    "governance_request",
    "wire_event",
];

#[derive(clap::Args)]
pub struct Args {
    /// Run only this target (default: all of them, one after the other)
    target: Option<String>,
    /// Seconds per target
    #[arg(long, default_value_t = 60)]
    time: u64,
}

/// What one target's run did, from libFuzzer's final statistics.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Run {
    pub target: String,
    pub execs: u64,
    pub execs_per_sec: u64,
    pub elapsed: Duration,
    /// Where the crashing input was saved, when there was one.
    pub crash: Option<String>,
    pub success: bool,
}

pub fn fuzz(args: &Args) -> Result<()> {
    let targets: Vec<&str> = match &args.target {
        Some(t) if TARGETS.contains(&t.as_str()) => vec![t.as_str()],
        Some(t) => bail!(
            "fuzz: no target {t:?}; the targets are {}",
            TARGETS.join(", ")
        ),
        None => TARGETS.to_vec(),
    };
    let runs = run(&targets, Duration::from_secs(args.time))?;
    print_summary(&runs);
    if runs.iter().any(|r| !r.success) {
        bail!("fuzz: a target crashed or failed (see above)");
    }
    Ok(())
}

/// Builds the targets and runs each for `time`; the runs in order.
pub fn run(targets: &[&str], time: Duration) -> Result<Vec<Run>> {
    ensure_cargo_fuzz()?;
    let root = workspace::root();
    let target_dir = root.join("target/fuzz");
    let mut build = fuzz_command(&target_dir);
    build.args(["build", "--fuzz-dir", FUZZ_DIR]);
    cmd::run(&mut build)?;
    targets
        .iter()
        .map(|t| run_one(t, time, &target_dir))
        .collect()
}

/// `cargo fuzz` on nightly, building into `target_dir` without the eBPF object.
fn fuzz_command(target_dir: &Path) -> std::process::Command {
    let mut c = cmd::nightly("cargo");
    c.arg("fuzz")
        .env("AYA_BUILD_SKIP", "1")
        .env("CARGO_TARGET_DIR", target_dir);
    c
}

fn ensure_cargo_fuzz() -> Result<()> {
    let mut version = cmd::nightly("cargo");
    version.args(["fuzz", "--version"]);
    if let Ok(out) = cmd::probe(&mut version)
        && out.split_whitespace().nth(1) == Some(CARGO_FUZZ_VERSION)
    {
        return Ok(());
    }
    cmd::run(cmd::new("cargo").args([
        "install",
        "--locked",
        &format!("cargo-fuzz@{CARGO_FUZZ_VERSION}"),
    ]))
}

fn run_one(target: &str, time: Duration, target_dir: &Path) -> Result<Run> {
    let root = workspace::root();
    let corpus = target_dir.join("corpus").join(target);
    let artifacts = target_dir.join("artifacts").join(target);
    for dir in [&corpus, &artifacts] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let seeds: PathBuf = root.join(FUZZ_DIR).join("seeds").join(target);
    let mut c = fuzz_command(target_dir);
    c.args(["run", "--fuzz-dir", FUZZ_DIR, target])
        .arg(&corpus)
        .arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={}", time.as_secs()))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg("-print_final_stats=1")
        // One input at most 64 KiB: larger than any record, packet, request
        // or config the daemon takes in one piece from an untrusted source.
        .arg("-max_len=65536")
        .stderr(Stdio::piped());
    eprintln!("$ {}", cmd::display(&c));
    let start = Instant::now();
    let mut child = c.spawn().with_context(|| format!("starting {target}"))?;
    let stderr = child
        .stderr
        .take()
        .context("fuzzer stderr was not captured")?;
    let mut out = Run {
        target: target.to_owned(),
        ..Run::default()
    };
    for line in BufReader::new(stderr).lines() {
        let line = line.context("reading the fuzzer's output")?;
        parse_line(&line, &mut out);
        // libFuzzer reports every new coverage point; the summary lines and
        // anything that is not a progress line (a crash report) are shown.
        if !line.starts_with('#') || line.contains("DONE") {
            eprintln!("{target}: {line}");
        }
    }
    let status = child.wait().context("waiting for the fuzzer")?;
    out.elapsed = start.elapsed();
    out.success = status.success() && out.crash.is_none();
    Ok(out)
}

/// Picks libFuzzer's final statistics and any saved crash out of a line.
fn parse_line(line: &str, run: &mut Run) {
    let number = |rest: &str| rest.trim().parse::<u64>().ok();
    if let Some(n) = line
        .strip_prefix("stat::number_of_executed_units:")
        .and_then(number)
    {
        run.execs = n;
    } else if let Some(n) = line
        .strip_prefix("stat::average_exec_per_sec:")
        .and_then(number)
    {
        run.execs_per_sec = n;
    } else if let Some(rest) = line.split_once("Test unit written to ") {
        run.crash = Some(rest.1.trim().to_owned());
    }
}

pub fn print_summary(runs: &[Run]) {
    println!();
    println!(
        "{:<20} {:>14} {:>10} {:>8}  result",
        "target", "executions", "execs/s", "seconds"
    );
    for r in runs {
        let result = match (&r.crash, r.success) {
            (Some(path), _) => format!("CRASH {path}"),
            (None, true) => "ok".to_owned(),
            (None, false) => "FAIL".to_owned(),
        };
        println!(
            "{:<20} {:>14} {:>10} {:>8.0}  {result}",
            r.target,
            r.execs,
            r.execs_per_sec,
            r.elapsed.as_secs_f64()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_statistics_and_crashes_are_read_from_libfuzzer_lines() {
        let mut run = Run::default();
        for line in [
            "#1048576\tpulse  cov: 812 ft: 2301 corp: 311/41Kb exec/s: 52428 rss: 88Mb",
            "Done 3145728 runs in 61 second(s)",
            "stat::number_of_executed_units: 3145728",
            "stat::average_exec_per_sec:     51569",
            "stat::new_units_added:          12",
        ] {
            parse_line(line, &mut run);
        }
        assert_eq!(
            (run.execs, run.execs_per_sec, run.crash.clone()),
            (3_145_728, 51_569, None)
        );
        parse_line(
            "artifact_prefix='a/'; Test unit written to a/crash-0123abcd",
            &mut run,
        );
        assert_eq!(run.crash.as_deref(), Some("a/crash-0123abcd"));
    }

    #[test]
    fn every_target_is_declared_in_the_fuzz_crate() {
        let manifest =
            std::fs::read_to_string(workspace::root().join(FUZZ_DIR).join("Cargo.toml")).unwrap();
        for t in TARGETS {
            assert!(manifest.contains(&format!("name = \"{t}\"")), "{t}");
            assert!(
                workspace::root()
                    .join(FUZZ_DIR)
                    .join("seeds")
                    .join(t)
                    .is_dir(),
                "{t} has no seeds"
            );
        }
    }
}
