//! The commands that work on this node without a running daemon's API:
//! the daemon itself, config checks and removing what it pinned.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// `vigil run` arguments.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Node config file; without it the embedded default config is used.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Remove everything pinned under the config's `pin_dir` (programs
    /// detach, revocations end) and exit.
    #[arg(long)]
    pub cleanup: bool,
}

/// `vigil check-config` arguments.
#[derive(Debug, clap::Args)]
pub struct CheckConfigArgs {
    /// The file to check.
    pub file: PathBuf,
}

pub(super) async fn run(args: RunArgs) -> anyhow::Result<()> {
    if args.cleanup {
        cleanup(args.config.as_deref())
    } else {
        Ok(crate::daemon::run(args.config).await?)
    }
}

pub(super) fn check_config(args: &CheckConfigArgs) -> anyhow::Result<()> {
    let summary = crate::live::check_file(&args.file)?;
    println!("{summary}");
    Ok(())
}

/// `vigil run --cleanup`: unpin programs and maps.
fn cleanup(config: Option<&Path>) -> anyhow::Result<()> {
    let cfg = match config {
        Some(p) => crate::config::Config::load(p)?,
        None => crate::config::Config::embedded()?,
    };
    let dir = &cfg.daemon.pin_dir;
    if crate::sensors::cleanup(dir).with_context(|| format!("removing {}", dir.display()))? {
        println!(
            "removed {} (programs detached, revocations and approvals cleared)",
            dir.display()
        );
    } else {
        println!("nothing pinned at {}", dir.display());
    }
    Ok(())
}
