//! `vigil journal check` and `vigil journal repair`: the journal file
//! itself, without a daemon (see `journal::repair`).

use std::path::PathBuf;

use anyhow::bail;

use crate::journal::repair;

#[derive(Debug, clap::Subcommand)]
pub enum JournalCommand {
    /// Open the journal read-only, read every event and compare the
    /// metadata with them; exits non-zero if anything is wrong.
    Check(JournalArgs),
    /// Move a damaged journal aside as `<file>.corrupt-<unix seconds>` and
    /// write a fresh one with every event that can be read from it. Stop
    /// the daemon first.
    Repair(JournalArgs),
}

#[derive(Debug, clap::Args)]
pub struct JournalArgs {
    /// The journal file; without it, the one the config names.
    pub file: Option<PathBuf>,
    /// Node config file naming the journal; without it the embedded default.
    #[arg(long, conflicts_with = "file")]
    pub config: Option<PathBuf>,
}

impl JournalArgs {
    fn path(&self) -> anyhow::Result<PathBuf> {
        if let Some(file) = &self.file {
            return Ok(file.clone());
        }
        let cfg = match &self.config {
            Some(p) => crate::config::Config::load(p)?,
            None => crate::config::Config::embedded()?,
        };
        Ok(cfg.journal.path_in(&cfg.daemon.state_dir))
    }
}

pub(super) fn journal(command: &JournalCommand) -> anyhow::Result<()> {
    match command {
        JournalCommand::Check(args) => {
            let path = args.path()?;
            let report = repair::check(&path)?;
            println!("{}: {report}", path.display());
            if !report.is_ok() {
                bail!(
                    "journal {} is damaged; `vigil journal repair {}` recovers what it can",
                    path.display(),
                    path.display()
                );
            }
            Ok(())
        }
        JournalCommand::Repair(args) => {
            let path = args.path()?;
            let done = repair::repair(&path)?;
            // Sequences between the oldest and newest recovered that are not
            // there: the events on pages that could not be read.
            let missing = match (done.report.oldest_seq, done.report.newest_seq) {
                (Some(a), Some(b)) => (b - a + 1).saturating_sub(done.report.events),
                _ => 0,
            };
            println!(
                "{}: {} events recovered, {missing} missing between the oldest and the newest recovered, {} unreadable entries left out; the damaged file is kept as {}",
                path.display(),
                done.recovered,
                done.dropped,
                done.kept.display()
            );
            println!("{}: {}", path.display(), done.report);
            Ok(())
        }
    }
}
