//! The governance commands: agents and their state, revocation, task
//! approvals.

use super::connection::{Connection, call_error};
use crate::wire::pb;

type Governance = pb::governance_service_client::GovernanceServiceClient<tonic::transport::Channel>;

async fn client(connection: &Connection) -> anyhow::Result<Governance> {
    Ok(Governance::new(connection.channel().await?))
}

/// `vigil agent` arguments.
#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// The agent's name.
    pub name: String,
}

/// `vigil revoke` arguments.
#[derive(Debug, clap::Args)]
pub struct RevokeArgs {
    /// The agent.
    pub agent: String,
    /// Revoke only this session.
    #[arg(long)]
    pub session: Option<String>,
    /// Why; recorded in the journaled revocation event.
    #[arg(long)]
    pub reason: String,
}

/// `vigil restore` arguments.
#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// The agent.
    pub agent: String,
    /// Restore only this session.
    #[arg(long)]
    pub session: Option<String>,
    /// Why; recorded in the journaled restore event.
    #[arg(long)]
    pub reason: String,
}

/// `vigil approve` arguments.
#[derive(Debug, clap::Args)]
pub struct ApproveArgs {
    /// The agent.
    pub agent: String,
    /// Task id, carried by every event of the task.
    #[arg(long)]
    pub task: String,
    /// Why the task is approved.
    #[arg(long)]
    pub purpose: String,
    /// How long the approval lasts (`90s`, `15m`, `2h`).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub ttl: std::time::Duration,
    /// Narrow the task to these systems (repeatable).
    #[arg(long = "system")]
    pub systems: Vec<String>,
    /// Narrow the task to these tools (repeatable).
    #[arg(long = "tool")]
    pub tools: Vec<String>,
    /// Narrow the task to these data classes (repeatable).
    #[arg(long = "data")]
    pub data: Vec<String>,
}

impl ApproveArgs {
    fn request(self) -> pb::ApproveTaskRequest {
        let Self {
            agent,
            task,
            purpose,
            ttl,
            systems,
            tools,
            data,
        } = self;
        // No narrowing flag: the task may use the agent's whole scope.
        let scope = (!(systems.is_empty() && tools.is_empty() && data.is_empty())).then_some(
            pb::TaskScope {
                systems,
                tools,
                data,
            },
        );
        pb::ApproveTaskRequest {
            agent,
            task,
            purpose,
            ttl: prost_types::Duration::try_from(ttl).ok(),
            scope,
        }
    }
}

/// `vigil end-task` arguments.
#[derive(Debug, clap::Args)]
pub struct EndTaskArgs {
    /// The agent.
    pub agent: String,
    /// The task to end (the active one when omitted).
    #[arg(long, default_value = "")]
    pub task: String,
}

fn state_name(state: i32) -> &'static str {
    match pb::AgentState::try_from(state) {
        Ok(pb::AgentState::Active) => "active",
        Ok(pb::AgentState::Revoked) => "REVOKED",
        Ok(pb::AgentState::AwaitingApproval) => "awaiting approval",
        _ => "unknown",
    }
}

fn violation_name(action: i32) -> &'static str {
    match pb::ViolationAction::try_from(action) {
        Ok(pb::ViolationAction::Observe) => "alert",
        Ok(pb::ViolationAction::Revoke) => "revoke",
        Ok(pb::ViolationAction::Kill) => "kill",
        _ => "other",
    }
}

pub(super) async fn agents(connection: &Connection) -> anyhow::Result<()> {
    let list = client(connection)
        .await?
        .list_agents(pb::ListAgentsRequest {})
        .await
        .map_err(|s| call_error("listing agents", &s))?
        .into_inner();
    if list.agents.is_empty() {
        println!("no agents: the node config declares none");
        return Ok(());
    }
    println!(
        "{:<24} {:<10} {:>8} {:>10} {:>10} {:>8}  ON VIOLATION",
        "NAME", "STATE", "SESSIONS", "EVENTS", "ANOMALIES", "BLOCKED"
    );
    for a in &list.agents {
        let c = a.counters.unwrap_or_default();
        println!(
            "{:<24} {:<10} {:>8} {:>10} {:>10} {:>8}  {}",
            a.name,
            state_name(a.state),
            a.sessions.len(),
            c.events,
            c.anomalies,
            c.blocked,
            violation_name(a.scope.as_ref().map_or(0, |s| s.on_violation)),
        );
    }
    Ok(())
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "(none)".into()
    } else {
        items.join(", ")
    }
}

pub(super) async fn agent(args: &AgentArgs, connection: &Connection) -> anyhow::Result<()> {
    let name = &args.name;
    let a = client(connection)
        .await?
        .get_agent(pb::GetAgentRequest { name: name.clone() })
        .await
        .map_err(|s| call_error(&format!("agent {name:?}"), &s))?
        .into_inner()
        .agent
        .unwrap_or_default();
    println!("agent         {}", a.name);
    print!("state         {}", state_name(a.state));
    if a.revoked_reason.is_empty() {
        println!();
    } else {
        println!(" ({})", a.revoked_reason);
    }
    if let Some(s) = &a.scope {
        println!("on violation  {}", violation_name(s.on_violation));
        println!("systems       {}", list(&s.systems));
        println!("tools         {}", list(&s.tools));
        println!("data          {}", list(&s.data));
        println!("identities    {}", list(&s.identities));
        println!("sockets       {}", list(&s.socket_families));
    }
    let c = a.counters.unwrap_or_default();
    println!(
        "counters      {} events, {} anomalies, {} blocked, {} revocations, {} sessions started",
        c.events, c.anomalies, c.blocked, c.revocations, c.sessions_started
    );
    if a.sessions.is_empty() {
        println!("sessions      (none active)");
    }
    for s in &a.sessions {
        println!(
            "session       {} {} processes in {}{}",
            s.id,
            s.process_count,
            s.cgroup_path,
            if s.revoked { " REVOKED" } else { "" }
        );
    }
    Ok(())
}

fn target_name(agent: &str, session: Option<&str>) -> String {
    session.map_or_else(
        || format!("agent {agent}"),
        |s| format!("session {s} of agent {agent}"),
    )
}

pub(super) async fn revoke(args: RevokeArgs, connection: &Connection) -> anyhow::Result<()> {
    let RevokeArgs {
        agent,
        session,
        reason,
    } = args;
    let what = target_name(&agent, session.as_deref());
    let r = client(connection)
        .await?
        .revoke(pb::RevokeRequest {
            agent,
            session: session.unwrap_or_default(),
            reason,
        })
        .await
        .map_err(|s| call_error(&format!("revoking {what}"), &s))?
        .into_inner();
    println!("revoked {what} (event {})", r.sequence);
    Ok(())
}

pub(super) async fn restore(args: RestoreArgs, connection: &Connection) -> anyhow::Result<()> {
    let RestoreArgs {
        agent,
        session,
        reason,
    } = args;
    let what = target_name(&agent, session.as_deref());
    let r = client(connection)
        .await?
        .restore(pb::RestoreRequest {
            agent,
            session: session.unwrap_or_default(),
            reason,
        })
        .await
        .map_err(|s| call_error(&format!("restoring {what}"), &s))?
        .into_inner();
    println!("restored {what} (event {})", r.sequence);
    Ok(())
}

pub(super) async fn approve(args: ApproveArgs, connection: &Connection) -> anyhow::Result<()> {
    let req = args.request();
    let what = format!("task {:?} of agent {:?}", req.task, req.agent);
    let r = client(connection)
        .await?
        .approve_task(req)
        .await
        .map_err(|s| call_error(&format!("approving {what}"), &s))?
        .into_inner();
    let g = r.grant.unwrap_or_default();
    let expires = g
        .expires_at
        .and_then(|t| std::time::SystemTime::try_from(t).ok())
        .map_or_else(|| "?".to_owned(), crate::event::format_time);
    println!(
        "approved task {} of agent {} until {expires} (event {})",
        g.task, g.agent, r.sequence
    );
    Ok(())
}

pub(super) async fn end_task(args: EndTaskArgs, connection: &Connection) -> anyhow::Result<()> {
    let EndTaskArgs { agent, task } = args;
    let what = format!("the task of agent {agent:?}");
    let r = client(connection)
        .await?
        .end_task(pb::EndTaskRequest { agent, task })
        .await
        .map_err(|s| call_error(&format!("ending {what}"), &s))?
        .into_inner();
    println!("ended {what} (event {})", r.sequence);
    Ok(())
}
