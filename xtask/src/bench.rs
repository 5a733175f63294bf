//! `cargo xtask bench`: run named benchmarks and judge each figure against
//! its target.
//!
//! A benchmark is one function in [`BENCHES`] returning [`Figure`]s. Cargo
//! bench targets report figures by printing lines in the [`Figure::parse`]
//! format; benchmarks measured by xtask itself build them directly.

mod daemon;
mod overhead;
mod peers;
mod programs;

use std::ffi::OsStr;
use std::fmt;
use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};

use crate::{cmd, setup, workspace};

#[derive(clap::Args)]
pub struct Args {
    /// Benchmarks to run (all when none is named)
    names: Vec<String>,
    /// List the benchmarks and exit
    #[arg(long)]
    list: bool,
}

/// A named benchmark.
struct Bench {
    name: &'static str,
    about: &'static str,
    /// Needs root and the kernel filesystems (it starts the daemon).
    kernel: bool,
    run: fn(&Context) -> Result<Vec<Figure>>,
}

/// Every benchmark, in the order they run. Add one here.
const BENCHES: &[Bench] = &[
    Bench {
        name: "overhead",
        about: "exec, connect and open loops: watched and unwatched vs no daemon (xtask/src/bench/overhead.rs)",
        kernel: true,
        run: overhead,
    },
    Bench {
        name: "peers",
        about: "the overhead loops, a distinct-file loop and a scripted coding session under auditd, bpftrace and Vigil vs no monitor (xtask/src/bench/peers.rs)",
        kernel: true,
        run: peers,
    },
    Bench {
        name: "programs",
        about: "the kernel programs' own run time per watched operation of each overhead loop, as the kernel counts it (xtask/src/bench/programs.rs)",
        kernel: true,
        run: programs,
    },
    Bench {
        name: "decode",
        about: "ring-buffer record decoding on one core (agent/benches/decode.rs)",
        kernel: false,
        run: decode,
    },
    Bench {
        name: "scope",
        about: "scope evaluations on one core (agent/benches/scope.rs)",
        kernel: false,
        run: scope,
    },
    Bench {
        name: "revocation",
        about: "automatic revocation latency and syscalls after Revoke returns (tests/src/bin/vigil-bench-revocation.rs)",
        kernel: true,
        run: revocation,
    },
    Bench {
        name: "e2e",
        about: "kernel record to gRPC subscriber: events/s and latency (agent/benches/e2e.rs)",
        kernel: true,
        run: e2e,
    },
    Bench {
        name: "export",
        about: "kernel record to an OTLP collector, with OCSF output and bodies: events/s and loss (agent/benches/e2e.rs)",
        kernel: true,
        run: export,
    },
];

fn overhead(ctx: &Context) -> Result<Vec<Figure>> {
    overhead::run(&ctx.meta.target_dir()?)
}

fn peers(ctx: &Context) -> Result<Vec<Figure>> {
    peers::run(&ctx.meta.target_dir()?)
}

fn programs(ctx: &Context) -> Result<Vec<Figure>> {
    programs::run(&ctx.meta.target_dir()?)
}

fn decode(ctx: &Context) -> Result<Vec<Figure>> {
    ctx.cargo_bench("vigil", "decode")
}

fn scope(ctx: &Context) -> Result<Vec<Figure>> {
    ctx.cargo_bench("vigil", "scope")
}

/// The e2e bench binary is the subscriber and drives the workload; xtask
/// owns the daemon, as it does for `overhead`.
fn e2e(ctx: &Context) -> Result<Vec<Figure>> {
    // VIGIL_BENCH_OUTPUT=json|ocsf has the daemon also write every event to
    // a file in that format, to measure what an output format costs.
    let format = std::env::var("VIGIL_BENCH_OUTPUT").ok();
    e2e_with(ctx, format.as_deref(), "", &[])
}

/// The e2e bench binary in its `export` mode is the OTLP collector of an
/// `[[export]]` sink with OCSF bodies, while the daemon also writes OCSF to
/// its output file: both of the SIEM formats on one event stream.
fn export(ctx: &Context) -> Result<Vec<Figure>> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("finding a free port for the collector")?
        .port();
    // The collector starts after the daemon: the sink connects on retry.
    let sink = format!(
        "[[export]]\nname = \"bench\"\ntype = \"otlp\"\nendpoint = \"http://127.0.0.1:{port}\"\n\
         format = \"ocsf\"\nretry_max = \"200ms\"\n"
    );
    let port = port.to_string();
    e2e_with(
        ctx,
        Some("ocsf"),
        &sink,
        &[("VIGIL_BENCH_OTLP_PORT", OsStr::new(&port))],
    )
}

fn e2e_with(
    ctx: &Context,
    format: Option<&str>,
    config: &str,
    env: &[(&str, &OsStr)],
) -> Result<Vec<Figure>> {
    let bins = crate::workspace::build_release(&ctx.meta.target_dir()?)?;
    // Built before the daemon starts, so the compiler does not compete
    // with it for the CPU.
    cmd::run(cmd::new("cargo").args(["bench", "-p", "vigil", "--bench", "e2e", "--no-run"]))?;
    daemon::note_machine();
    // Each open of the workload is to be an event of its own: repeat
    // counting would fold the identical opens the workload makes.
    let daemon =
        daemon::Daemon::start_with_config(&bins.vigil, "open_repeat_ms = 0", format, config)?;
    let agent = PathBuf::from(daemon::AGENT);
    let pid = PathBuf::from(
        daemon
            .pid()
            .context("the daemon is not running")?
            .to_string(),
    );
    let mut vars = vec![
        ("VIGIL_BENCH_SOCKET", daemon.socket().as_os_str()),
        ("VIGIL_BENCH_AGENT", agent.as_os_str()),
        ("VIGIL_BENCH_VIGIL", bins.vigil.as_os_str()),
        ("VIGIL_BENCH_WORKLOAD", bins.workload.as_os_str()),
        ("VIGIL_BENCH_DAEMON_PID", pid.as_os_str()),
    ];
    vars.extend_from_slice(env);
    let figures = ctx.cargo_bench_with("vigil", "e2e", &vars);
    if figures.is_err() || std::env::var_os("VIGIL_BENCH_LOG").is_some() {
        eprintln!("bench: e2e: daemon log:\n{}", daemon.log());
    }
    daemon.stop()?;
    figures
}

/// Automatic revocation latency (offending kernel event → map update) over
/// 1,000 trials, and syscalls that got through after `Revoke` returned. The
/// bench binary drives its own daemon through the integration harness.
fn revocation(ctx: &Context) -> Result<Vec<Figure>> {
    let bins = crate::workspace::build_release(&ctx.meta.target_dir()?)?;
    crate::workspace::build_release_bin("vigil-tests", "vigil-bench-revocation")?;
    let bench = ctx
        .meta
        .target_dir()?
        .join("release/vigil-bench-revocation");
    let mut run = cmd::new(&bench);
    run.env("VIGIL_BIN", &bins.vigil)
        .env("VIGIL_WORKLOAD", &bins.workload)
        .env("VIGIL_REQUIRE_KERNEL", "1");
    let mut figures = Vec::new();
    let mut bad = Vec::new();
    let status = cmd::stream(&mut run, |line| match Figure::parse(line) {
        Some(Ok(f)) => figures.push(f),
        Some(Err(e)) => bad.push(format!("{line:?}: {e:#}")),
        None => {}
    })?;
    if !status.success() {
        bail!("`{}` failed: {status}", cmd::display(&run));
    }
    if !bad.is_empty() {
        bail!("malformed BENCH lines: {}", bad.join("; "));
    }
    if figures.is_empty() {
        bail!("the revocation bench printed no figures");
    }
    Ok(figures)
}

/// What benchmarks get to work with.
pub struct Context {
    meta: workspace::Metadata,
}

impl Context {
    /// Runs `cargo bench -p PACKAGE --bench TARGET` and collects the figures
    /// it prints. A missing target, a failed run or a run without figures is
    /// an error: a benchmark that measured nothing must not pass.
    fn cargo_bench(&self, package: &str, target: &str) -> Result<Vec<Figure>> {
        self.cargo_bench_with(package, target, &[])
    }

    /// [`Context::cargo_bench`] with extra environment variables.
    fn cargo_bench_with(
        &self,
        package: &str,
        target: &str,
        env: &[(&str, &OsStr)],
    ) -> Result<Vec<Figure>> {
        if !self.meta.has_target(package, "bench", target) {
            bail!("bench target `{target}` of package `{package}` is missing");
        }
        let mut figures = Vec::new();
        let mut bad_lines = Vec::new();
        let mut cargo = cmd::new("cargo");
        cargo
            .args(["bench", "-p", package, "--bench", target])
            .envs(env.iter().copied());
        let status = cmd::stream(&mut cargo, |line| match Figure::parse(line) {
            Some(Ok(figure)) => figures.push(figure),
            Some(Err(e)) => bad_lines.push(format!("{line:?}: {e:#}")),
            None => {}
        })?;
        if !status.success() {
            bail!("`{}` failed: {status}", cmd::display(&cargo));
        }
        if !bad_lines.is_empty() {
            bail!("malformed BENCH lines: {}", bad_lines.join("; "));
        }
        if figures.is_empty() {
            bail!("`{target}` printed no `BENCH name value unit target` lines");
        }
        Ok(figures)
    }
}

/// One measured value and the bound it must respect.
#[derive(Debug, PartialEq)]
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: String,
    pub target: Target,
}

#[derive(Debug, PartialEq)]
pub enum Target {
    AtMost(f64),
    AtLeast(f64),
    /// Reported for information only.
    None,
}

impl Figure {
    /// Parses `BENCH <name> <value> <unit> <target>`, where target is
    /// `<=N`, `>=N` or `-`. Lines not starting with `BENCH ` are not figures
    /// (`None`); the rest must parse.
    fn parse(line: &str) -> Option<Result<Self>> {
        let rest = line.strip_prefix("BENCH ")?;
        Some(Self::parse_fields(rest))
    }

    fn parse_fields(fields: &str) -> Result<Self> {
        let fields: Vec<&str> = fields.split_whitespace().collect();
        let [name, value, unit, target] = fields[..] else {
            bail!(
                "expected 4 fields (name value unit target), got {}",
                fields.len()
            );
        };
        let value = value
            .parse()
            .with_context(|| format!("value {value:?} is not a number"))?;
        let target = if target == "-" {
            Target::None
        } else if let Some(n) = target.strip_prefix("<=") {
            Target::AtMost(
                n.parse()
                    .with_context(|| format!("bad target {target:?}"))?,
            )
        } else if let Some(n) = target.strip_prefix(">=") {
            Target::AtLeast(
                n.parse()
                    .with_context(|| format!("bad target {target:?}"))?,
            )
        } else {
            bail!("target {target:?} is not <=N, >=N or -");
        };
        Ok(Self {
            name: name.to_owned(),
            value,
            unit: unit.to_owned(),
            target,
        })
    }

    fn ok(&self) -> bool {
        match self.target {
            Target::AtMost(max) => self.value <= max,
            Target::AtLeast(min) => self.value >= min,
            Target::None => true,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::AtMost(n) => write!(f, "<= {}", number(*n)),
            Target::AtLeast(n) => write!(f, ">= {}", number(*n)),
            Target::None => f.write_str("-"),
        }
    }
}

fn number(n: f64) -> String {
    if n.abs() >= 1000.0 {
        format!("{n:.0}")
    } else {
        format!("{n:.3}")
    }
}

/// One table row: a figure, or a benchmark that produced none.
struct Row {
    name: String,
    value: String,
    target: String,
    ok: bool,
}

pub fn bench(args: &Args) -> Result<()> {
    if args.list {
        for b in BENCHES {
            println!("{:<16} {}", b.name, b.about);
        }
        return Ok(());
    }
    let selected = select(&args.names)?;
    let scope = if selected.iter().any(|b| b.kernel) {
        setup::Scope::Kernel
    } else {
        setup::Scope::Toolchain
    };
    setup::ensure(scope, setup::Report::Changes)?;
    if scope == setup::Scope::Kernel {
        daemon::refuse_stale_programs()?;
    }
    let ctx = Context {
        meta: workspace::Metadata::load()?,
    };

    let mut rows = Vec::new();
    for b in selected {
        println!("bench: {}", b.name);
        match (b.run)(&ctx) {
            Ok(figures) => rows.extend(figures.into_iter().map(|f| Row {
                ok: f.ok(),
                value: format!("{} {}", number(f.value), f.unit),
                target: f.target.to_string(),
                name: f.name,
            })),
            Err(e) => {
                eprintln!("bench: {}: {e:#}", b.name);
                rows.push(Row {
                    name: b.name.to_owned(),
                    value: "error (above)".into(),
                    target: "-".into(),
                    ok: false,
                });
            }
        }
    }
    print_table(&rows);
    let failed = rows.iter().filter(|r| !r.ok).count();
    if failed > 0 {
        bail!("bench: {failed} of {} rows failed", rows.len());
    }
    Ok(())
}

fn select(names: &[String]) -> Result<Vec<&'static Bench>> {
    if names.is_empty() {
        return Ok(BENCHES.iter().collect());
    }
    names
        .iter()
        .map(|name| {
            BENCHES.iter().find(|b| b.name == name).with_context(|| {
                let known: Vec<&str> = BENCHES.iter().map(|b| b.name).collect();
                format!("no benchmark named {name:?} (known: {})", known.join(", "))
            })
        })
        .collect()
}

fn print_table(rows: &[Row]) {
    let width = |f: fn(&Row) -> &str, header: &str| {
        rows.iter()
            .map(|r| f(r).len())
            .chain([header.len()])
            .max()
            .unwrap_or_default()
    };
    let name_w = width(|r| &r.name, "name");
    let value_w = width(|r| &r.value, "value");
    let target_w = width(|r| &r.target, "target");
    println!();
    println!(
        "{:<name_w$}  {:>value_w$}  {:<target_w$}  result",
        "name", "value", "target"
    );
    for r in rows {
        let verdict = if r.ok { "ok" } else { "FAIL" };
        println!(
            "{:<name_w$}  {:>value_w$}  {:<target_w$}  {verdict}",
            r.name, r.value, r.target
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figure_lines_parse_with_every_target_kind() {
        assert!(Figure::parse("running 3 tests").is_none());
        let f = Figure::parse("BENCH scope.decide 2.5e6 decisions/s >=1000000")
            .unwrap()
            .unwrap();
        assert_eq!(f.name, "scope.decide");
        assert_eq!(f.target, Target::AtLeast(1_000_000.0));
        assert!(f.ok());
        let f = Figure::parse("BENCH exec.watched 1.2 ratio <=1.10")
            .unwrap()
            .unwrap();
        assert!(!f.ok());
        let f = Figure::parse("BENCH rss 12.5 MiB -").unwrap().unwrap();
        assert_eq!(f.target, Target::None);
        assert!(f.ok());
    }

    #[test]
    fn malformed_figure_lines_are_errors() {
        for line in [
            "BENCH name 1.0 unit",
            "BENCH name fast unit <=1",
            "BENCH name 1.0 unit <1",
            "BENCH name 1.0 unit <=x",
        ] {
            assert!(Figure::parse(line).unwrap().is_err(), "{line}");
        }
    }

    #[test]
    fn unknown_bench_names_are_rejected() {
        assert!(select(&["nope".into()]).is_err());
        assert_eq!(select(&[]).unwrap().len(), BENCHES.len());
    }
}
