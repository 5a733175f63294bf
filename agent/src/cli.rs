//! The `vigil` command line: the daemon (`run`) and its clients.

use std::{os::unix::process::CommandExt as _, path::PathBuf};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand, ValueEnum};
use tonic::transport::Channel;

use crate::api::{
    client::{ClientFiles, Target},
    render,
};
use crate::paths;
use crate::wire::{kind_from_name, pb};

#[derive(Debug, Parser)]
#[command(name = "vigil", version, about = "Runtime governance for AI agents")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Where the clients find the daemon.
#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    /// The daemon's local socket.
    #[arg(long, env = "VIGIL_SOCKET", default_value = paths::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// A daemon's TCP listener instead of the local socket:
    /// `https://HOST:PORT` (with --cert, --key and --ca), or `http://` for an
    /// insecure loopback listener.
    #[arg(long, env = "VIGIL_ENDPOINT")]
    pub endpoint: Option<String>,
    /// Client certificate (PEM) for --endpoint.
    #[arg(long, requires = "endpoint")]
    pub cert: Option<PathBuf>,
    /// Client private key (PEM) for --endpoint.
    #[arg(long, requires = "endpoint")]
    pub key: Option<PathBuf>,
    /// CA certificate (PEM) that signed the daemon's certificate.
    #[arg(long, requires = "endpoint")]
    pub ca: Option<PathBuf>,
}

impl Connection {
    /// Where to connect, from the flags.
    pub fn target(&self) -> anyhow::Result<Target> {
        let Some(endpoint) = &self.endpoint else {
            return Ok(Target::Unix(self.socket.clone()));
        };
        let tls = match (&self.cert, &self.key, &self.ca) {
            (Some(cert), Some(key), Some(ca)) => Some(ClientFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: ca.clone(),
            }),
            (None, None, None) => None,
            _ => bail!("--cert, --key and --ca go together"),
        };
        Ok(Target::Remote {
            endpoint: endpoint.clone(),
            tls,
        })
    }

    async fn channel(&self) -> anyhow::Result<Channel> {
        Ok(crate::api::client::connect(&self.target()?).await?)
    }
}

/// What `vigil watch` prints for each event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum WatchFormat {
    /// One readable line.
    #[default]
    Text,
    /// The daemon's JSON-lines schema, with `seq` (`docs/events.md`).
    Json,
    /// One OCSF record per line (`docs/integrations.md`).
    Ocsf,
}

/// Severities for `--min-severity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SeverityArg {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl From<SeverityArg> for pb::Severity {
    fn from(s: SeverityArg) -> Self {
        match s {
            SeverityArg::Info => Self::Info,
            SeverityArg::Low => Self::Low,
            SeverityArg::Medium => Self::Medium,
            SeverityArg::High => Self::High,
            SeverityArg::Critical => Self::Critical,
        }
    }
}

fn parse_kind(s: &str) -> Result<pb::EventKind, String> {
    kind_from_name(s).ok_or_else(|| {
        let known: Vec<String> = (1..)
            .map_while(|v| pb::EventKind::try_from(v).ok())
            .map(crate::wire::kind_name)
            .collect();
        format!("unknown event kind {s:?}; one of: {}", known.join(", "))
    })
}

/// `vigil watch` options.
#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// Only events of this agent (repeatable).
    #[arg(long = "agent")]
    pub agents: Vec<String>,
    /// Only events of this session (repeatable).
    #[arg(long = "session")]
    pub sessions: Vec<String>,
    /// Only events of this kind, as in the JSON output: `exec`, `connect`,
    /// `file_open`, `anomaly`, … (repeatable).
    #[arg(long = "kind", value_parser = parse_kind)]
    pub kinds: Vec<pb::EventKind>,
    /// Only events at least this severe (every event but an anomaly is info).
    #[arg(long, value_enum)]
    pub min_severity: Option<SeverityArg>,
    /// Only anomalies.
    #[arg(long)]
    pub anomalies_only: bool,
    /// Resume: every retained event after this sequence, then new ones.
    #[arg(long, value_name = "SEQ", conflicts_with = "oldest")]
    pub after: Option<u64>,
    /// Start at the oldest retained event.
    #[arg(long)]
    pub oldest: bool,
    /// Print JSON lines (the daemon's event schema, with `seq`) instead of
    /// one readable line per event.
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
    /// Output format: `text`, `json` (as `--json`) or `ocsf`.
    #[arg(long, value_enum)]
    pub format: Option<WatchFormat>,
    /// Stop after this many events.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
}

impl WatchArgs {
    fn output_format(&self) -> WatchFormat {
        if self.json {
            WatchFormat::Json
        } else {
            self.format.unwrap_or_default()
        }
    }

    fn request(&self) -> pb::SubscribeRequest {
        use pb::subscribe_request::Start;
        let start = match (self.after, self.oldest) {
            (Some(seq), _) => Some(Start::AfterSequence(seq)),
            (None, true) => Some(Start::Oldest(true)),
            (None, false) => Some(Start::Now(true)),
        };
        pb::SubscribeRequest {
            start,
            filter: Some(pb::EventFilter {
                agents: self.agents.clone(),
                sessions: self.sessions.clone(),
                kinds: self.kinds.iter().map(|k| i32::from(*k)).collect(),
                min_severity: self
                    .min_severity
                    .map_or(0, |s| i32::from(pb::Severity::from(s))),
                anomalies_only: self.anomalies_only,
            }),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: load the sensors, attribute and check activity, serve the API.
    Run {
        /// Node config file; without it the embedded default config is used.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Remove everything pinned under the config's `pin_dir` (programs
        /// detach, revocations end) and exit.
        #[arg(long)]
        cleanup: bool,
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
    /// Follow the event stream: one line per event, or JSON lines.
    Watch {
        #[command(flatten)]
        args: WatchArgs,
        #[command(flatten)]
        connection: Connection,
    },
    /// List the governed agents: state, sessions, counters.
    Agents {
        #[command(flatten)]
        connection: Connection,
    },
    /// Show one agent: declared scope, state, counters, sessions.
    Agent {
        /// The agent's name.
        name: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// Revoke an agent, or one of its sessions.
    Revoke {
        /// The agent.
        agent: String,
        /// Revoke only this session.
        #[arg(long)]
        session: Option<String>,
        /// Why; recorded in the journaled revocation event.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// Lift a revocation of an agent, or of one of its sessions.
    Restore {
        /// The agent.
        agent: String,
        /// Restore only this session.
        #[arg(long)]
        session: Option<String>,
        /// Why; recorded in the journaled restore event.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// Approve a task: an agent with `require_approval = true` may act
    /// until the approval expires (enforced in the kernel).
    Approve {
        /// The agent.
        agent: String,
        /// Task id, carried by every event of the task.
        #[arg(long)]
        task: String,
        /// Why the task is approved.
        #[arg(long)]
        purpose: String,
        /// How long the approval lasts (`90s`, `15m`, `2h`).
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
        /// Narrow the task to these systems (repeatable).
        #[arg(long = "system")]
        systems: Vec<String>,
        /// Narrow the task to these tools (repeatable).
        #[arg(long = "tool")]
        tools: Vec<String>,
        /// Narrow the task to these data classes (repeatable).
        #[arg(long = "data")]
        data: Vec<String>,
        #[command(flatten)]
        connection: Connection,
    },
    /// End a task approval before its expiry.
    EndTask {
        /// The agent.
        agent: String,
        /// The task to end (the active one when omitted).
        #[arg(long, default_value = "")]
        task: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// Show the daemon's status: sensors, loss, coverage, config, journal.
    Status {
        #[command(flatten)]
        connection: Connection,
    },
}

/// Runs a parsed command line.
pub async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run {
            config,
            cleanup: true,
        } => cleanup(config.as_deref()),
        Command::Run {
            config,
            cleanup: false,
        } => Ok(crate::daemon::run(config).await?),
        Command::Approve {
            agent,
            task,
            purpose,
            ttl,
            systems,
            tools,
            data,
            connection,
        } => {
            let scope = (!(systems.is_empty() && tools.is_empty() && data.is_empty())).then_some(
                pb::TaskScope {
                    systems,
                    tools,
                    data,
                },
            );
            approve(
                pb::ApproveTaskRequest {
                    agent,
                    task,
                    purpose,
                    ttl: prost_types::Duration::try_from(ttl).ok(),
                    scope,
                },
                &connection,
            )
            .await
        }
        Command::EndTask {
            agent,
            task,
            connection,
        } => end_task(agent, task, &connection).await,
        Command::CheckConfig { file } => {
            let summary = crate::live::check_file(&file)?;
            println!("{summary}");
            Ok(())
        }
        Command::Exec {
            agent,
            session,
            connection,
            command,
        } => exec(&agent, session, &connection, &command).await,
        Command::Watch { args, connection } => watch(&args, &connection).await,
        Command::Agents { connection } => agents(&connection).await,
        Command::Agent { name, connection } => agent(&name, &connection).await,
        Command::Revoke {
            agent,
            session,
            reason,
            connection,
        } => revoke(&agent, session, reason, &connection).await,
        Command::Restore {
            agent,
            session,
            reason,
            connection,
        } => restore(&agent, session, reason, &connection).await,
        Command::Status { connection } => status(&connection).await,
    }
}

/// A failed call, with the daemon's message and the status code's name.
fn call_error(what: &str, s: &tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{what}: {} ({:?})", s.message(), s.code())
}

/// `vigil exec`: join a session, then become the command.
async fn exec(
    agent: &str,
    session: Option<String>,
    connection: &Connection,
    command: &[String],
) -> anyhow::Result<()> {
    if connection.endpoint.is_some() {
        bail!(
            "vigil exec places this process in a session on this node: it uses the local socket, not --endpoint"
        );
    }
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

/// Writes a line to stdout; false when the reader went away (`| head`).
fn emit(out: &mut impl std::io::Write, line: &str) -> anyhow::Result<bool> {
    match writeln!(out, "{line}").and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e).context("writing to stdout"),
    }
}

async fn watch(args: &WatchArgs, connection: &Connection) -> anyhow::Result<()> {
    let mut client = pb::event_service_client::EventServiceClient::new(connection.channel().await?);
    let mut stream = client
        .subscribe(args.request())
        .await
        .map_err(|s| call_error("subscribing", &s))?
        .into_inner();
    let format = args.output_format();
    let mut out = std::io::stdout().lock();
    let mut seen = 0u64;
    let mut last = args.after;
    while args.count.is_none_or(|n| seen < n) {
        let event = match stream.message().await {
            Ok(Some(resp)) => resp.event.unwrap_or_default(),
            Ok(None) => break,
            Err(s) => {
                let resume =
                    last.map_or_else(String::new, |n| format!("; resume with --after {n}"));
                bail!("the stream ended: {} ({:?}){resume}", s.message(), s.code());
            }
        };
        last = Some(event.sequence);
        seen += 1;
        let line = match format {
            WatchFormat::Text => render::line(&event),
            WatchFormat::Json | WatchFormat::Ocsf => {
                match crate::event::Event::try_from(event.clone()) {
                    Ok(e) if format == WatchFormat::Json => serde_json::to_string(&e)?,
                    Ok(e) => serde_json::to_string(&crate::ocsf::to_ocsf(&e, &event.node))?,
                    Err(err) => {
                        eprintln!(
                            "vigil: event {} cannot be shown as JSON: {err}",
                            event.sequence
                        );
                        continue;
                    }
                }
            }
        };
        if !emit(&mut out, &line)? {
            return Ok(());
        }
    }
    if args.count.is_some_and(|n| seen >= n) {
        return Ok(());
    }
    let resume = last.map_or_else(String::new, |n| format!("; resume with --after {n}"));
    bail!("the daemon closed the stream{resume}")
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

async fn agents(connection: &Connection) -> anyhow::Result<()> {
    let mut client =
        pb::governance_service_client::GovernanceServiceClient::new(connection.channel().await?);
    let list = client
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

async fn agent(name: &str, connection: &Connection) -> anyhow::Result<()> {
    let mut client =
        pb::governance_service_client::GovernanceServiceClient::new(connection.channel().await?);
    let a = client
        .get_agent(pb::GetAgentRequest {
            name: name.to_owned(),
        })
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

async fn revoke(
    agent: &str,
    session: Option<String>,
    reason: String,
    connection: &Connection,
) -> anyhow::Result<()> {
    let mut client =
        pb::governance_service_client::GovernanceServiceClient::new(connection.channel().await?);
    let what = target_name(agent, session.as_deref());
    let r = client
        .revoke(pb::RevokeRequest {
            agent: agent.to_owned(),
            session: session.unwrap_or_default(),
            reason,
        })
        .await
        .map_err(|s| call_error(&format!("revoking {what}"), &s))?
        .into_inner();
    println!("revoked {what} (event {})", r.sequence);
    Ok(())
}

/// `vigil run --cleanup`: unpin programs and maps.
fn cleanup(config: Option<&std::path::Path>) -> anyhow::Result<()> {
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

async fn approve(req: pb::ApproveTaskRequest, connection: &Connection) -> anyhow::Result<()> {
    let mut client =
        pb::governance_service_client::GovernanceServiceClient::new(connection.channel().await?);
    let what = format!("task {:?} of agent {:?}", req.task, req.agent);
    let r = client
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

async fn end_task(agent: String, task: String, connection: &Connection) -> anyhow::Result<()> {
    let mut client =
        pb::governance_service_client::GovernanceServiceClient::new(connection.channel().await?);
    let what = format!("the task of agent {agent:?}");
    let r = client
        .end_task(pb::EndTaskRequest { agent, task })
        .await
        .map_err(|s| call_error(&format!("ending {what}"), &s))?
        .into_inner();
    println!("ended {what} (event {})", r.sequence);
    Ok(())
}

async fn restore(
    agent: &str,
    session: Option<String>,
    reason: String,
    connection: &Connection,
) -> anyhow::Result<()> {
    let mut client =
        pb::governance_service_client::GovernanceServiceClient::new(connection.channel().await?);
    let what = target_name(agent, session.as_deref());
    let r = client
        .restore(pb::RestoreRequest {
            agent: agent.to_owned(),
            session: session.unwrap_or_default(),
            reason,
        })
        .await
        .map_err(|s| call_error(&format!("restoring {what}"), &s))?
        .into_inner();
    println!("restored {what} (event {})", r.sequence);
    Ok(())
}

async fn status(connection: &Connection) -> anyhow::Result<()> {
    let mut client = pb::node_service_client::NodeServiceClient::new(connection.channel().await?);
    let s = client
        .status(pb::StatusRequest {})
        .await
        .map_err(|s| call_error("status", &s))?
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
            if sensor.attached {
                "attached"
            } else {
                "NOT ATTACHED"
            },
            sensor.lost
        );
        for p in sensor.programs.iter().filter(|p| !p.attached || !p.pinned) {
            println!(
                "          {} ({}) {}{}",
                p.program,
                p.hook,
                if p.attached { "attached" } else { "DETACHED" },
                if p.pinned { "" } else { ", pin missing" }
            );
        }
    }
    if s.sensor_tampers > 0 {
        println!(
            "tamper    {} pins removed or replaced, or links detached; last: {}",
            s.sensor_tampers, s.last_tamper
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
        let age = j
            .max_age
            .and_then(|d| std::time::Duration::try_from(d).ok())
            .map_or_else(
                || "no age limit".to_owned(),
                |d| humantime::format_duration(d).to_string(),
            );
        println!(
            "journal   {}: {} bytes, sequences {}..={}, {} pruned, {} gaps sent (keeps {} bytes, {age})",
            j.path,
            j.size_bytes,
            j.oldest_sequence,
            j.newest_sequence,
            j.pruned_events,
            j.gaps_sent,
            j.max_bytes
        );
    }
    println!("clients   {} subscribers", s.subscribers);
    for w in &s.warnings {
        println!("warning   {w}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("vigil").chain(args.iter().copied()))
    }

    #[test]
    fn watch_flags_become_a_request() {
        let cli = parse(&[
            "watch",
            "--agent",
            "coder",
            "--kind",
            "file_open",
            "--kind",
            "exec",
            "--min-severity",
            "high",
            "--after",
            "41",
            "--json",
        ])
        .unwrap();
        let Command::Watch { args, .. } = cli.command else {
            panic!("not watch");
        };
        let r = args.request();
        assert_eq!(
            r.start,
            Some(pb::subscribe_request::Start::AfterSequence(41))
        );
        let f = r.filter.unwrap();
        assert_eq!(f.agents, ["coder"]);
        assert_eq!(
            f.kinds,
            [
                i32::from(pb::EventKind::FileOpen),
                i32::from(pb::EventKind::Exec)
            ]
        );
        assert_eq!(f.min_severity, i32::from(pb::Severity::High));
        assert!(args.json);
        assert_eq!(args.output_format(), WatchFormat::Json);
    }

    #[test]
    fn watch_prints_ocsf_on_request() {
        let cli = parse(&["watch", "--format", "ocsf"]).unwrap();
        let Command::Watch { args, .. } = cli.command else {
            panic!("not watch");
        };
        assert_eq!(args.output_format(), WatchFormat::Ocsf);
        assert!(parse(&["watch", "--format", "ocsf", "--json"]).is_err());
        assert!(parse(&["watch", "--format", "cef"]).is_err());
    }

    #[test]
    fn bad_watch_flags_are_refused() {
        let e = parse(&["watch", "--kind", "opens"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown event kind \"opens\"") && e.contains("file_open"),
            "{e}"
        );
        assert!(parse(&["watch", "--after", "3", "--oldest"]).is_err());
        assert!(
            parse(&["watch", "--cert", "/c"]).is_err(),
            "--cert needs --endpoint"
        );
        assert!(parse(&["revoke", "coder"]).is_err(), "--reason is required");
    }

    #[test]
    fn endpoint_flags_pick_the_target() {
        let cli = parse(&[
            "agents",
            "--endpoint",
            "https://vigil:7443",
            "--cert",
            "/c",
            "--key",
            "/k",
            "--ca",
            "/ca",
        ])
        .unwrap();
        let Command::Agents { connection } = cli.command else {
            panic!("not agents");
        };
        assert_eq!(
            connection.target().unwrap(),
            Target::Remote {
                endpoint: "https://vigil:7443".into(),
                tls: Some(ClientFiles {
                    cert: "/c".into(),
                    key: "/k".into(),
                    ca: "/ca".into()
                })
            }
        );
        let cli = parse(&["status", "--endpoint", "https://x:1", "--cert", "/c"]).unwrap();
        let Command::Status { connection } = cli.command else {
            panic!("not status");
        };
        assert!(connection.target().is_err());
    }
}
