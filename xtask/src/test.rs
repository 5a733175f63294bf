//! `cargo xtask test`: every unit and integration test, kernel tests included.

use std::ffi::OsStr;
use std::fmt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::{cmd, setup, workspace};

/// Integration tests start real daemons; more than two at once on the 2-core
/// CI machines makes them time out rather than fail for a reason.
const INTEGRATION_THREADS: &str = "--test-threads=2";
/// Each fuzz target's share of a test run: six of them stay under three
/// minutes, enough to catch a parser that breaks on its seeds' neighbours.
/// The long runs are `cargo xtask fuzz` (docs/reliability.md).
const FUZZ_TIME: Duration = Duration::from_secs(25);

#[derive(clap::Args)]
pub struct Args {
    /// Skip root and the kernel filesystems: kernel tests skip themselves
    /// (unless CI is set, where they must run and so fail)
    #[arg(long)]
    no_kernel: bool,
    /// Skip the short fuzzing phase
    #[arg(long)]
    no_fuzz: bool,
    /// Run only tests whose name contains FILTER (and no fuzzing)
    filter: Option<String>,
}

pub fn test(args: &Args) -> Result<()> {
    let require_kernel = kernel_required(std::env::var_os("CI").as_deref(), args.no_kernel);
    let scope = if args.no_kernel {
        setup::Scope::Toolchain
    } else {
        setup::Scope::Kernel
    };
    setup::ensure(scope, setup::Report::Changes)?;
    if args.no_kernel && require_kernel {
        println!("test: CI is set, so kernel tests are required even with --no-kernel");
    }

    workspace::build_vigil()?;
    let vigil_bin = workspace::vigil_debug_bin(&workspace::Metadata::load()?)?;

    let mut unit = cmd::new("cargo");
    // --no-fail-fast: one failing test binary must not hide the others' results.
    unit.args([
        "test",
        "--no-fail-fast",
        "--workspace",
        "--exclude",
        "vigil-ebpf",
        "--exclude",
        "vigil-tests",
    ]);
    let mut integration = cmd::new("cargo");
    integration.args(["test", "--no-fail-fast", "-p", "vigil-tests"]);
    let phases = [
        ("unit", unit, None),
        ("integration", integration, Some(INTEGRATION_THREADS)),
    ];

    let mut results = Vec::new();
    for (name, mut cargo, harness_arg) in phases {
        cargo.env("VIGIL_BIN", &vigil_bin);
        if require_kernel {
            cargo.env("VIGIL_REQUIRE_KERNEL", "1");
        }
        cargo.args(args.filter.as_deref());
        if let Some(arg) = harness_arg {
            cargo.args(["--", arg]);
        }
        results.push(run_phase(name, &mut cargo)?);
    }

    if !args.no_fuzz && args.filter.is_none() {
        results.push(fuzz_phase()?);
    }

    print_summary(&results, require_kernel, &vigil_bin);
    let failed: Vec<&str> = results
        .iter()
        .filter(|r| !r.passed())
        .map(|r| r.name)
        .collect();
    if !failed.is_empty() {
        bail!("test: failed: {}", failed.join(", "));
    }
    Ok(())
}

/// Kernel tests fail instead of skipping in CI, and whenever the caller did
/// not opt out with `--no-kernel`: a green run must mean they ran.
fn kernel_required(ci: Option<&OsStr>, no_kernel: bool) -> bool {
    let ci = ci.is_some_and(|v| !v.is_empty() && v != "0" && v != "false");
    ci || !no_kernel
}

/// Every fuzz target for [`FUZZ_TIME`]; a crash fails the phase.
fn fuzz_phase() -> Result<Phase> {
    println!("test: fuzz");
    let start = Instant::now();
    let runs = crate::fuzz::run(crate::fuzz::TARGETS, FUZZ_TIME)?;
    crate::fuzz::print_summary(&runs);
    let passed = runs.iter().filter(|r| r.success).count() as u64;
    Ok(Phase {
        name: "fuzz",
        success: passed == runs.len() as u64,
        counts: Counts {
            binaries: runs.len() as u32,
            passed,
            failed: runs.len() as u64 - passed,
            ignored: 0,
        },
        elapsed: start.elapsed(),
    })
}

struct Phase {
    name: &'static str,
    success: bool,
    counts: Counts,
    elapsed: Duration,
}

impl Phase {
    fn passed(&self) -> bool {
        self.success && self.counts.failed == 0
    }
}

fn run_phase(name: &'static str, cargo: &mut Command) -> Result<Phase> {
    println!("test: {name}");
    let start = Instant::now();
    let mut counts = Counts::default();
    let status = cmd::stream(cargo, |line| counts.add(line))?;
    Ok(Phase {
        name,
        success: status.success(),
        counts,
        elapsed: start.elapsed(),
    })
}

/// Totals over every `test result:` line libtest prints (one per test binary).
#[derive(Default, Debug, PartialEq, Eq)]
struct Counts {
    binaries: u32,
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Counts {
    fn add(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        self.binaries += 1;
        // "ok. 3 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s"
        let rest = rest.split_once(". ").map_or(rest, |(_, r)| r);
        for part in rest.split(';') {
            let mut words = part.split_whitespace();
            let (Some(n), Some(what)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match what {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} passed, {} failed, {} ignored in {} test binaries",
            self.passed, self.failed, self.ignored, self.binaries
        )
    }
}

fn print_summary(results: &[Phase], require_kernel: bool, vigil_bin: &Path) {
    println!();
    println!("test summary (VIGIL_BIN={})", vigil_bin.display());
    for phase in results {
        let verdict = if phase.passed() { "ok" } else { "FAIL" };
        let detail = if !phase.success && phase.counts.binaries == 0 {
            "cargo failed before any test ran (see above)".to_owned()
        } else {
            phase.counts.to_string()
        };
        println!(
            "  {:<12} {:<5} {detail}  ({:.1} s)",
            phase.name,
            verdict,
            phase.elapsed.as_secs_f64()
        );
    }
    if require_kernel {
        println!("  kernel tests were required (VIGIL_REQUIRE_KERNEL=1): none skipped");
    } else {
        println!("  kernel tests were optional (--no-kernel): they may have skipped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ci_or_no_opt_out_requires_the_kernel() {
        assert!(kernel_required(None, false));
        assert!(!kernel_required(None, true));
        assert!(kernel_required(Some(OsStr::new("true")), true));
        assert!(!kernel_required(Some(OsStr::new("")), true));
        assert!(!kernel_required(Some(OsStr::new("false")), true));
    }

    #[test]
    fn counts_add_up_over_binaries_and_ignore_other_lines() {
        let mut counts = Counts::default();
        counts.add(
            "test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 2 filtered out; finished in 0.01s",
        );
        counts.add("test result: FAILED. 4 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.50s");
        counts.add("test decode::truncated ... ok");
        counts.add("running 6 tests");
        assert_eq!(
            counts,
            Counts {
                binaries: 2,
                passed: 7,
                failed: 2,
                ignored: 1,
            }
        );
    }
}
