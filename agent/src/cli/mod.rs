//! The `vigil` command line: the daemon (`run`) and its clients.
//!
//! One file per family of subcommands; every client command takes its own
//! arguments and the one set of [`Connection`] options ([`Client`]).

mod connection;
mod governance;
mod journal;
mod local;
mod node;
mod session;
mod watch;

use clap::{Parser, Subcommand};

pub use connection::{Client, Connection};
pub use governance::{AgentArgs, ApproveArgs, EndTaskArgs, RestoreArgs, RevokeArgs};
pub use journal::{JournalArgs, JournalCommand};
pub use local::{CheckConfigArgs, RunArgs};
pub use session::ExecArgs;
pub use watch::{SeverityArg, WatchArgs, WatchFormat};

#[derive(Debug, Parser)]
#[command(name = "vigil", version, about = "Runtime governance for AI agents")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: load the sensors, attribute and check activity, serve the API.
    Run(RunArgs),
    /// Validate a node config file without running.
    CheckConfig(CheckConfigArgs),
    /// Check or repair the journal file (the daemon must not be running
    /// for a repair).
    #[command(subcommand)]
    Journal(JournalCommand),
    /// Run a command as an agent session: it and all its descendants are
    /// watched and attributed to the agent.
    Exec(Client<ExecArgs>),
    /// Follow the event stream: one line per event, or JSON lines.
    Watch(Client<WatchArgs>),
    /// List the governed agents: state, sessions, counters.
    Agents(Connection),
    /// Show one agent: declared scope, state, counters, sessions.
    Agent(Client<AgentArgs>),
    /// Revoke an agent, or one of its sessions.
    Revoke(Client<RevokeArgs>),
    /// Lift a revocation of an agent, or of one of its sessions.
    Restore(Client<RestoreArgs>),
    /// Approve a task: an agent with `require_approval = true` may act
    /// until the approval expires (enforced in the kernel).
    Approve(Client<ApproveArgs>),
    /// End a task approval before its expiry.
    EndTask(Client<EndTaskArgs>),
    /// Show the daemon's status: sensors, loss, coverage, config, journal.
    Status(Connection),
}

/// Runs a parsed command line.
pub async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(args) => local::run(args).await,
        Command::CheckConfig(args) => local::check_config(&args),
        Command::Journal(command) => journal::journal(&command),
        Command::Exec(c) => session::exec(c.args, &c.connection).await,
        Command::Watch(c) => watch::watch(&c.args, &c.connection).await,
        Command::Agents(connection) => governance::agents(&connection).await,
        Command::Agent(c) => governance::agent(&c.args, &c.connection).await,
        Command::Revoke(c) => governance::revoke(c.args, &c.connection).await,
        Command::Restore(c) => governance::restore(c.args, &c.connection).await,
        Command::Approve(c) => governance::approve(c.args, &c.connection).await,
        Command::EndTask(c) => governance::end_task(c.args, &c.connection).await,
        Command::Status(connection) => node::status(&connection).await,
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::api::{
        client::{ClientFiles, Target},
        pb,
    };

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("vigil").chain(args.iter().copied()))
    }

    #[test]
    fn cli_definition_is_consistent() {
        <Cli as clap::CommandFactory>::command().debug_assert();
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
        let Command::Watch(Client { args, .. }) = cli.command else {
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
        let Command::Watch(Client { args, .. }) = cli.command else {
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
        let Command::Agents(connection) = cli.command else {
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
        let Command::Status(connection) = cli.command else {
            panic!("not status");
        };
        assert!(connection.target().is_err());
    }
}
