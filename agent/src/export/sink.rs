//! One sink's delivery loop: a journal subscription from the sink's cursor,
//! sent a request at a time, each retried until the collector takes it.
//!
//! The cursor moves only past what the collector acknowledged, and is
//! saved after every acknowledgement, so a collector that is down, or a
//! daemon that restarts, resumes where delivery stopped: within one run
//! every event is sent once; across a crash or a timed-out request that the
//! collector did take, a few may be sent twice (`vigil.sequence` tells
//! them apart), none is skipped.

use std::sync::Arc;

use futures_util::StreamExt as _;
use futures_util::stream::FuturesOrdered;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use crate::config::{ExportConfig, ExportStart};
use crate::export::SinkState;
use crate::export::cursor::Cursor;
use crate::export::otlp::{self, Client};
use crate::journal::{Filter, Hub, HubError, Start};
use crate::wire::kind_from_name;

/// First wait after a failed request; it doubles up to `retry_max`.
const FIRST_RETRY: Duration = Duration::from_millis(100);

/// What a sink reads and writes besides its config.
pub struct Parts {
    pub hub: Hub,
    pub node: String,
    pub cursor: Cursor,
    pub state: Arc<SinkState>,
    /// The journal's newest sequence when the sink was configured: where a
    /// sink with `start = "now"` and no cursor begins.
    pub configured_at: u64,
}

fn filter(config: &ExportConfig) -> Filter {
    let mut f = Filter::all();
    if !config.kinds.is_empty() {
        // Validated with the config.
        f = f.kinds(config.kinds.iter().filter_map(|k| kind_from_name(k)));
    }
    if !config.agents.is_empty() {
        f = f.agents(config.agents.iter().cloned());
    }
    f
}

/// Where delivery starts: the cursor, else `start`.
fn start(config: &ExportConfig, parts: &Parts) -> Start {
    match parts.cursor.load() {
        Ok(Some(seq)) => Start::AfterSequence(seq),
        Ok(None) => match config.start {
            ExportStart::Now => {
                // Saved at once: a restart before the first acknowledgement
                // must not move "now" past what was journaled meanwhile.
                if let Err(e) = parts.cursor.save(parts.configured_at) {
                    parts.state.fail(format!("saving the cursor: {e}"));
                }
                Start::AfterSequence(parts.configured_at)
            }
            ExportStart::Oldest => Start::Oldest,
        },
        Err(e) => {
            // Every retained event again rather than any skipped.
            parts
                .state
                .warn(format!("{e}; delivering from the oldest journaled event"));
            Start::Oldest
        }
    }
}

/// Requests converted ahead of the one in flight: conversion of the next
/// overlaps the collector's handling of the current one.
const AHEAD: usize = 2;

/// Requests at the collector at once: a collector a round trip away is
/// kept busy, instead of idle while each answer travels back.
const IN_FLIGHT: usize = 4;

/// What the converting side hands the sending side, in journal order.
enum Work {
    /// A request of `records` records, the last of them at `last`.
    Send {
        request: otlp::EncodedRequest,
        records: u64,
        last: u64,
    },
    /// Everything up to here is handled (the filter skipped the rest).
    Ack(u64),
}

/// Runs the sink until its task is aborted.
pub async fn run(config: ExportConfig, parts: Parts) {
    let client = loop {
        match Client::new(&config) {
            Ok(c) => break c,
            Err(e) => {
                // A certificate file may appear later (a secret mounted late).
                parts.state.fail(e.to_string());
                tokio::time::sleep(config.retry_max.0).await;
            }
        }
    };
    let mut from = start(&config, &parts);
    loop {
        let sub = match parts.hub.subscribe(from, filter(&config)) {
            Ok(sub) => sub,
            Err(HubError::AheadOfJournal { requested, newest }) => {
                // The journal was replaced: everything in it is new here.
                parts.state.warn(format!(
                    "cursor {requested} is past the journal's newest sequence {newest} (a new journal?); delivering from its oldest event"
                ));
                from = Start::Oldest;
                continue;
            }
            Err(e) => {
                parts.state.fail(format!("reading the journal: {e}"));
                tokio::time::sleep(config.retry_max.0).await;
                continue;
            }
        };
        if let Start::AfterSequence(seq) = from {
            parts.state.acked.store(seq, Ordering::Relaxed);
        }
        // Both sides in this task, so stopping the sink stops both; the
        // converting side runs while the sending side waits on the collector.
        let (tx, rx) = tokio::sync::mpsc::channel(AHEAD);
        let convert = async {
            let tx = tx;
            convert_all(&config, &parts, sub, &tx).await
        };
        let (read, ()) = tokio::join!(convert, send_all(&config, &parts, &client, rx));
        match read {
            // Every Hub handle is gone: the daemon is stopping.
            Ok(()) => return,
            Err(e) => {
                parts.state.fail(format!("reading the journal: {e}"));
                tokio::time::sleep(config.retry_max.0).await;
                from = Start::AfterSequence(parts.state.acked.load(Ordering::Relaxed));
            }
        }
    }
}

/// Reads the subscription and converts it into requests of at most
/// `batch` records.
async fn convert_all(
    config: &ExportConfig,
    parts: &Parts,
    mut sub: crate::journal::Subscription,
    tx: &tokio::sync::mpsc::Sender<Work>,
) -> Result<(), HubError> {
    while let Some(batch) = sub.next_batch_up_to(config.batch).await {
        let batch = batch?;
        let mut records = Vec::with_capacity(batch.len().min(config.batch));
        let mut last = 0;
        let observed = SystemTime::now();
        for encoded in &batch {
            last = encoded.sequence();
            match otlp::journaled(encoded, &parts.node, config.format, observed) {
                Ok(r) => records.push(r),
                Err(e) => {
                    // The journal holds it, so a subscriber can still read
                    // it; this sink cannot, and says so.
                    parts.state.skipped.fetch_add(1, Ordering::Relaxed);
                    parts
                        .state
                        .warn(format!("event {}: {e}", encoded.sequence()));
                }
            }
            if records.len() == config.batch {
                let work = request(&parts.node, std::mem::take(&mut records), last);
                if tx.send(work).await.is_err() {
                    return Ok(());
                }
            }
        }
        if !records.is_empty() && tx.send(request(&parts.node, records, last)).await.is_err() {
            return Ok(());
        }
        // Past everything the filter skipped too.
        if tx.send(Work::Ack(sub.position().max(last))).await.is_err() {
            return Ok(());
        }
    }
    Ok(())
}

fn request(
    node: &str,
    records: Vec<opentelemetry_proto::tonic::logs::v1::LogRecord>,
    last: u64,
) -> Work {
    Work::Send {
        records: records.len() as u64,
        request: otlp::EncodedRequest::new(&otlp::request(node, records)),
        last,
    }
}

/// Sends the work with up to [`IN_FLIGHT`] requests at the collector at
/// once, and acknowledges each part in journal order once it and all before
/// it are taken, until the converting side is done. A request that fails is
/// retried on its own; the cursor waits for it.
async fn send_all(
    config: &ExportConfig,
    parts: &Parts,
    client: &Client,
    mut rx: tokio::sync::mpsc::Receiver<Work>,
) {
    type Pending<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = u64> + Send + 'a>>;
    let mut in_flight: FuturesOrdered<Pending<'_>> = FuturesOrdered::new();
    let mut open = true;
    loop {
        tokio::select! {
            biased;
            Some(seq) = in_flight.next(), if !in_flight.is_empty() => acknowledge(parts, seq),
            work = rx.recv(), if open && in_flight.len() < IN_FLIGHT => match work {
                Some(Work::Send { request, records, last }) => {
                    // Clones share the connection: each is one more stream on it.
                    let mut client = client.clone();
                    in_flight.push_back(Box::pin(async move {
                        send(config, parts, &mut client, request, records).await;
                        last
                    }));
                }
                Some(Work::Ack(seq)) => in_flight.push_back(Box::pin(std::future::ready(seq))),
                None => open = false,
            },
            else => return,
        }
    }
}

fn acknowledge(parts: &Parts, seq: u64) {
    if parts.state.acked.fetch_max(seq, Ordering::Relaxed) >= seq {
        return;
    }
    if let Err(e) = parts.cursor.save(seq) {
        parts.state.fail(format!("saving the cursor: {e}"));
    }
}

/// Sends one request until the collector answers it. A collector that
/// refuses the content itself (`INVALID_ARGUMENT`) would refuse it forever:
/// those records are counted as rejected and delivery goes on; any other
/// failure is retried, so an outage or bad credentials stall the sink
/// (visible as lag) instead of losing events.
async fn send(
    config: &ExportConfig,
    parts: &Parts,
    client: &mut Client,
    request: otlp::EncodedRequest,
    n: u64,
) {
    let mut wait = FIRST_RETRY;
    loop {
        match client.export(request.clone()).await {
            Ok(response) => {
                let rejected = response
                    .partial_success
                    .filter(|p| p.rejected_log_records > 0);
                let rejected_n = rejected
                    .as_ref()
                    .map_or(0, |p| u64::try_from(p.rejected_log_records).unwrap_or(0))
                    .min(n);
                parts
                    .state
                    .exported
                    .fetch_add(n - rejected_n, Ordering::Relaxed);
                parts.state.succeeded();
                if let Some(p) = rejected {
                    parts
                        .state
                        .rejected
                        .fetch_add(rejected_n, Ordering::Relaxed);
                    parts.state.warn(format!(
                        "the collector rejected {} records: {}",
                        p.rejected_log_records, p.error_message
                    ));
                }
                return;
            }
            Err(status) if status.code() == tonic::Code::InvalidArgument => {
                parts.state.rejected.fetch_add(n, Ordering::Relaxed);
                parts.state.warn(format!(
                    "the collector refused {n} records: {}",
                    status.message()
                ));
                return;
            }
            Err(status) => {
                parts.state.retries.fetch_add(1, Ordering::Relaxed);
                parts.state.fail(describe(&status));
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(config.retry_max.0);
            }
        }
    }
}

/// A failed request in words, with the transport's own cause.
fn describe(status: &tonic::Status) -> String {
    use std::error::Error as _;
    let mut s = format!("{:?}: {}", status.code(), status.message());
    let mut source = status.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = e.source();
    }
    s
}
