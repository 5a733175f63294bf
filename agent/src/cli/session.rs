//! `vigil exec`: run a command as an agent session.

use std::os::unix::process::CommandExt as _;

use anyhow::{Context as _, bail};

use super::connection::Connection;
use crate::wire::pb;

/// `vigil exec` arguments.
#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// The agent (declared in the node config with `match.sessions = true`).
    #[arg(long)]
    pub agent: String,
    /// Session id; the daemon picks one when omitted.
    #[arg(long)]
    pub session: Option<String>,
    /// The command and its arguments.
    #[arg(required = true, last = true)]
    pub command: Vec<String>,
}

/// Joins a session, then becomes the command.
pub(super) async fn exec(args: ExecArgs, connection: &Connection) -> anyhow::Result<()> {
    if connection.endpoint.is_some() {
        bail!(
            "vigil exec places this process in a session on this node: it uses the local socket, not --endpoint"
        );
    }
    let ExecArgs {
        agent,
        session,
        command,
    } = args;
    let channel = crate::api::client::connect_unix(&connection.socket).await?;
    let mut client = pb::governance_service_client::GovernanceServiceClient::new(channel);
    let resp = client
        .start_session(pb::StartSessionRequest {
            agent: agent.clone(),
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
        .env("VIGIL_AGENT", &agent)
        .env("VIGIL_SESSION", &resp.session)
        .exec();
    bail!("running {program:?}: {err}")
}
