//! Developer tasks for Vigil, run as `cargo xtask <command>` (the alias is in
//! `.cargo/config.toml`). DEVELOPERS.md describes each command.

mod bench;
mod cmd;
mod demo;
mod fuzz;
mod helm;
mod layers;
mod lint;
mod manifests;
mod run;
mod setup;
mod soak;
mod test;
mod workspace;

use std::ffi::OsString;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Developer tasks for Vigil"
)]
struct Cli {
    /// Also echo the read-only probes (version checks, listings) setup runs
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Make this machine ready: nightly rust-src, clippy and rustfmt; bpf-linker
    /// built against the nightly's LLVM; tracefs and bpffs mounted (idempotent)
    Setup,
    /// Build the daemon and run `vigil run ARGS` in the foreground (Ctrl-C
    /// stops it); without --config it runs on its embedded default config
    Run {
        /// Arguments for `vigil run`, after `--`
        #[arg(last = true)]
        args: Vec<OsString>,
    },
    /// Build and run every test: unit tests, then the kernel integration tests
    Test(test::Args),
    /// Run named benchmarks and check each figure against its target
    Bench(bench::Args),
    /// Tell the story of Vigil against a real daemon: an agent steps out of
    /// scope and is revoked in the kernel, a task approval runs out (root)
    Demo,
    /// rustfmt and clippy with -D warnings, for userspace and the eBPF crate
    Lint,
    /// Render the Helm chart into deploy/manifests (--check: compare only)
    Manifests(manifests::Args),
    /// Run the libFuzzer targets of agent/fuzz (cargo-fuzz on nightly), each
    /// for --time seconds
    Fuzz(fuzz::Args),
    /// Run a daemon under a steady mixed workload (events, subscribers,
    /// reloads) for --minutes, sampling RSS and CPU; fails on RSS growth
    Soak(soak::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cmd::set_verbose(cli.verbose);
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(task: Task) -> Result<ExitCode> {
    match task {
        Task::Setup => setup::ensure(setup::Scope::Kernel, setup::Report::Every)?,
        Task::Run { args } => return run::run(&args),
        Task::Test(args) => test::test(&args)?,
        Task::Bench(args) => bench::bench(&args)?,
        Task::Demo => demo::demo()?,
        Task::Lint => lint::lint()?,
        Task::Manifests(args) => manifests::manifests(&args)?,
        Task::Fuzz(args) => fuzz::fuzz(&args)?,
        Task::Soak(args) => soak::soak(&args)?,
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_passes_everything_after_the_separator_to_vigil() {
        let cli = Cli::try_parse_from(["xtask", "run", "--", "--config", "x.toml"]).unwrap();
        let Task::Run { args } = cli.command else {
            panic!("parsed as another task");
        };
        assert_eq!(args, ["--config", "x.toml"]);
        assert!(Cli::try_parse_from(["xtask", "run", "--config", "x.toml"]).is_err());
    }
}
