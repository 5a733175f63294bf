//! The `vigil` command line: the daemon (`run`) and its clients.

use std::{os::unix::process::CommandExt as _, path::PathBuf};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

use crate::{api::pb, paths};

#[derive(Debug, Parser)]
#[command(name = "vigil", version, about = "Runtime governance for AI agents")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Where the clients find the daemon.
#[derive(Debug, clap::Args)]
pub struct Connection {
    /// The daemon's local socket.
    #[arg(long, env = "VIGIL_SOCKET", default_value = paths::DEFAULT_SOCKET)]
    pub socket: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: load the sensors, attribute and check activity, serve the API.
    Run {
        /// Node config file; without it the embedded default config is used.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Validate a node config file without running.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
    /// Run a command as an agent session: it and all its descendants are
    /// watched and attributed to the agent.
    Exec {
        /// The agent (declared in the node config with `match.sessions = true`).
        #[arg(long)]
        agent: String,
        /// Session id; the daemon picks one when omitted.
        #[arg(long)]
        session: Option<String>,
        #[command(flatten)]
        connection: Connection,
        /// The command and its arguments.
        #[arg(required = true, last = true)]
        command: Vec<String>,
    },
    /// Show the daemon's status: sensors, loss, coverage, config.
    Status {
        #[command(flatten)]
        connection: Connection,
    },
}

/// Runs a parsed command line.
pub async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run { config } => Ok(crate::daemon::run(config).await?),
        Command::CheckConfig { file } => {
            let summary = crate::config::check_file(&file)?;
            println!("{summary}");
            Ok(())
        }
        Command::Exec {
            agent,
            session,
            connection,
            command,
        } => exec(&agent, session, &connection, &command).await,
        Command::Status { connection } => status(&connection).await,
    }
}

/// `vigil exec`: join a session, then become the command.
async fn exec(
    agent: &str,
    session: Option<String>,
    connection: &Connection,
    command: &[String],
) -> anyhow::Result<()> {
    let channel = crate::api::client::connect_unix(&connection.socket).await?;
    let mut client = pb::governance_service_client::GovernanceServiceClient::new(channel);
    let resp = client
        .start_session(pb::StartSessionRequest {
            agent: agent.to_owned(),
            session: session.unwrap_or_default(),
            pid: std::process::id(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("starting a session for agent {agent:?}: {}", s.message()))?
        .into_inner();
    eprintln!(
        "vigil: session {} of agent {agent} ({})",
        resp.session, resp.cgroup_path
    );
    let (program, args) = command.split_first().context("no command given")?;
    // Only returns on failure: on success this process becomes the command,
    // already inside the session's cgroup.
    let err = std::process::Command::new(program)
        .args(args)
        .env("VIGIL_AGENT", agent)
        .env("VIGIL_SESSION", &resp.session)
        .exec();
    bail!("running {program:?}: {err}")
}

async fn status(connection: &Connection) -> anyhow::Result<()> {
    let channel = crate::api::client::connect_unix(&connection.socket).await?;
    let mut client = pb::node_service_client::NodeServiceClient::new(channel);
    let s = client
        .status(pb::StatusRequest {})
        .await
        .map_err(|s| anyhow::anyhow!("status: {}", s.message()))?
        .into_inner();
    println!("node      {} (vigil {})", s.node, s.version);
    if let Some(c) = &s.config {
        println!(
            "config    version {} from {} ({} reloads, {} failed)",
            c.version, c.path, c.reloads, c.reload_failures
        );
        for e in &c.load_errors {
            println!("          last load error: {e}");
        }
    }
    for sensor in &s.sensors {
        println!(
            "sensor    {:<8} {:<12} lost {}",
            sensor.name,
            if sensor.attached { "attached" } else { "NOT ATTACHED" },
            sensor.lost
        );
    }
    if let Some(a) = &s.attribution {
        let total = a.attributed + a.unattributed;
        let pct = if total == 0 {
            100.0
        } else {
            a.attributed as f64 * 100.0 / total as f64
        };
        println!(
            "coverage  {pct:.1}% ({} attributed, {} unattributed)",
            a.attributed, a.unattributed
        );
    }
    if let Some(j) = &s.journal {
        println!(
            "journal   {} bytes, sequences {}..{}",
            j.size_bytes, j.oldest_sequence, j.newest_sequence
        );
    }
    println!("clients   {} subscribers", s.subscribers);
    for w in &s.warnings {
        println!("warning   {w}");
    }
    Ok(())
}
