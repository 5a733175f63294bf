//! `vigil watch`: follow the event stream.

use anyhow::{Context as _, bail};
use clap::ValueEnum;

use super::connection::{Connection, call_error};
use crate::api::render;
use crate::wire::{kind_from_name, pb};

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
    pub(super) fn output_format(&self) -> WatchFormat {
        if self.json {
            WatchFormat::Json
        } else {
            self.format.unwrap_or_default()
        }
    }

    pub(super) fn request(&self) -> pb::SubscribeRequest {
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

/// Writes a line to stdout; false when the reader went away (`| head`).
fn emit(out: &mut impl std::io::Write, line: &str) -> anyhow::Result<bool> {
    match writeln!(out, "{line}").and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e).context("writing to stdout"),
    }
}

pub(super) async fn watch(args: &WatchArgs, connection: &Connection) -> anyhow::Result<()> {
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
