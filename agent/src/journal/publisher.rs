//! The publisher: the one place events leave the daemon. It journals them
//! through the [`Hub`](crate::journal::Hub) (which assigns their sequences
//! and feeds the subscribers), then writes them, sequenced, to the JSON-lines
//! output and counts them per agent.
//!
//! The sensor reader thread hands it one batch per drain over a bounded queue
//! and waits only when the queue is full, so a slow disk slows the loop
//! instead of losing events, while a commit never runs on the loop itself.
//! Queued batches are merged into one journal commit, and commits start at
//! most every [`COMMIT_INTERVAL`], longer under a heavy flow
//! ([`commit_interval`]): each one costs a sync and wakes every subscriber,
//! whatever its size.
//!
//! It runs on a thread of its own, `vigil-journal` ([`spawn`]), with a
//! single-threaded runtime, and commits right there: a round costs this
//! thread one wake-up. On the runtime's workers, each round woke a worker
//! for the batch, a blocking-pool thread for the commit and the worker
//! again for its end, and the idle workers woke each other to look for
//! work: about a dozen thread wake-ups per round, every 2 ms under a steady
//! flow. Each can preempt or move a watched process (see
//! `docs/performance.md`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::counters::AgentCounters;
use super::{Hub, JournalLoss};
use crate::event::{Event, Identity, Loss, Payload};
use crate::metrics::Metrics;
use crate::output::{JsonLines, OutputError};

/// Batches waiting for the publisher before the sensor reader waits.
pub const QUEUE_BATCHES: usize = 64;
/// Most events merged into one journal commit. Subscribers hold up to
/// [`LIVE_BATCHES`] published batches in memory, so this also bounds what a
/// stalled subscriber can pin before it is moved to catching up from the
/// journal.
pub const MAX_COMMIT_EVENTS: usize = 2048;
/// Published batches a subscriber may fall behind before it catches up
/// from the journal instead.
pub const LIVE_BATCHES: usize = 32;
/// Shortest time from one commit's start to the next. Under a steady flow
/// the daemon would otherwise commit as fast as the disk syncs (about 2,000
/// small commits a second on the benchmark VM), paying each commit's fixed
/// cost (sync, page flush, one wake-up and socket write per subscriber)
/// for a few dozen events. A quiet daemon still commits at once: the wait
/// only applies right after a commit.
pub const COMMIT_INTERVAL: Duration = Duration::from_millis(2);
/// Under a heavy flow the interval grows, up to this many times
/// [`COMMIT_INTERVAL`], so a commit's fixed cost is shared by more events;
/// a light flow (the latency that subscribers notice) keeps the shortest.
pub const MAX_INTERVAL_FACTOR: u32 = 4;
/// Events per commit from which the interval starts to grow: 100 events in
/// 2 ms is 50,000 events a second.
pub const HEAVY_COMMIT_EVENTS: usize = 100;

/// The wait after a commit of `events` events before the next one starts.
#[must_use]
pub fn commit_interval(events: usize) -> Duration {
    let factor = (events / HEAVY_COMMIT_EVENTS).clamp(1, MAX_INTERVAL_FACTOR as usize);
    COMMIT_INTERVAL * factor as u32
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("the journal refused the events: {0}")]
    Journal(String),
    #[error("the daemon is shutting down")]
    Stopped,
}

type Reply = oneshot::Sender<Result<Vec<Event>, PublishError>>;

enum Request {
    /// Events from the ring buffer or the daemon; nobody waits for them.
    Batch(Vec<Event>),
    /// Events whose sequences the caller needs (governance calls).
    Wait(Vec<Event>, Reply),
    /// Publish what is queued, flush, and stop.
    Stop(oneshot::Sender<()>),
}

/// The handle to the publisher queue. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Publisher {
    tx: mpsc::Sender<Request>,
    side: mpsc::UnboundedSender<Event>,
}

/// The publisher's end of the queue, for [`run`].
pub struct Queue {
    rx: mpsc::Receiver<Request>,
    side: mpsc::UnboundedReceiver<Event>,
}

/// Where published events go besides the journal's subscribers.
pub struct Sinks {
    pub hub: Hub,
    pub counters: Arc<AgentCounters>,
    pub metrics: Arc<Metrics>,
    pub output: JsonLines,
}

impl Publisher {
    /// A queue of at most `batches` batches from the sensor reader, and an
    /// unbounded one for the few events the daemon makes itself.
    #[must_use]
    pub fn channel(batches: usize) -> (Self, Queue) {
        let (tx, rx) = mpsc::channel(batches.max(1));
        let (side_tx, side_rx) = mpsc::unbounded_channel();
        (Self { tx, side: side_tx }, Queue { rx, side: side_rx })
    }

    /// Hands a daemon-made event (session start, tampering, …) to the
    /// publisher; it is journaled with the next batch. Nobody waits for it.
    pub fn emit(&self, event: Event) {
        let _ = self.side.send(event);
    }

    /// Queues a batch from the sensor reader thread; blocks while the queue
    /// is full, never drops. Must not be called from async code.
    pub fn batch_blocking(&self, events: Vec<Event>) -> Result<(), PublishError> {
        if events.is_empty() {
            return Ok(());
        }
        self.tx
            .blocking_send(Request::Batch(events))
            .map_err(|_| PublishError::Stopped)
    }

    /// Journals `events` and returns them with their sequences.
    pub async fn publish(&self, events: Vec<Event>) -> Result<Vec<Event>, PublishError> {
        let (reply, done) = oneshot::channel();
        self.tx
            .send(Request::Wait(events, reply))
            .await
            .map_err(|_| PublishError::Stopped)?;
        done.await.map_err(|_| PublishError::Stopped)?
    }

    /// Publishes everything queued before this call, then ends [`run`].
    pub async fn stop(&self) {
        let (reply, done) = oneshot::channel();
        if self.tx.send(Request::Stop(reply)).await.is_ok() {
            let _ = done.await;
        }
    }
}

/// One commit's worth of work.
#[derive(Default)]
struct Round {
    events: Vec<Event>,
    /// Waiters and the range of `events` that is theirs.
    replies: Vec<(std::ops::Range<usize>, Reply)>,
    stop: Option<oneshot::Sender<()>>,
}

impl Round {
    fn add(&mut self, request: Request) {
        match request {
            Request::Batch(mut events) => self.events.append(&mut events),
            Request::Wait(mut events, reply) => {
                let start = self.events.len();
                self.events.append(&mut events);
                self.replies.push((start..self.events.len(), reply));
            }
            Request::Stop(done) => self.stop = Some(done),
        }
    }
}

/// Publishes until [`Publisher::stop`]. Returns the output's error if
/// writing it fails, which stops the daemon.
pub async fn run(queue: Queue, sinks: Sinks) -> Result<(), OutputError> {
    let Queue { mut rx, mut side } = queue;
    let Sinks {
        hub,
        counters,
        metrics,
        mut output,
    } = sinks;
    let mut next_commit = Instant::now();
    loop {
        let mut round = Round::default();
        tokio::select! {
            Some(r) = rx.recv() => round.add(r),
            Some(e) = side.recv() => round.events.push(e),
            else => return Ok(()),
        }
        while round.stop.is_none() && round.events.len() < MAX_COMMIT_EVENTS {
            if let Ok(r) = rx.try_recv() {
                round.add(r);
            } else if let Ok(e) = side.try_recv() {
                round.events.push(e);
            } else if Instant::now() < next_commit {
                // Too soon after the last commit: gather what comes meanwhile.
                tokio::select! {
                    Some(r) = rx.recv() => round.add(r),
                    Some(e) = side.recv() => round.events.push(e),
                    () = tokio::time::sleep_until(next_commit) => break,
                }
            } else {
                break;
            }
        }
        next_commit = Instant::now() + commit_interval(round.events.len());
        if round.stop.is_some() {
            while let Ok(e) = side.try_recv() {
                round.events.push(e);
            }
        }
        let Round {
            events,
            replies,
            stop,
        } = round;
        // Blocking here is what this thread is for.
        let (out, written) = commit(&hub, &counters, &metrics, output, events, replies);
        output = out;
        written?;
        if let Some(done) = stop {
            let _ = done.send(());
            return Ok(());
        }
    }
}

/// The publisher's outcome: what [`run`] returned, or `None` if its
/// thread ended without returning (it panicked).
pub type Outcome = Option<Result<(), OutputError>>;

/// Starts [`run`] on the `vigil-journal` thread; the future resolves when
/// it ends.
///
/// # Errors
/// The thread or its runtime could not be created.
pub fn spawn(queue: Queue, sinks: Sinks) -> std::io::Result<impl Future<Output = Outcome>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    let (done, ended) = oneshot::channel();
    std::thread::Builder::new()
        .name("vigil-journal".into())
        .spawn(move || {
            let outcome = runtime.block_on(run(queue, sinks));
            let _ = done.send(outcome);
        })?;
    Ok(async move { ended.await.ok() })
}

/// Journals, writes and counts one round; answers its waiters.
fn commit(
    hub: &Hub,
    counters: &AgentCounters,
    metrics: &Metrics,
    mut output: JsonLines,
    events: Vec<Event>,
    replies: Vec<(std::ops::Range<usize>, Reply)>,
) -> (JsonLines, Result<(), OutputError>) {
    if events.is_empty() {
        let flushed = output.flush();
        return (output, flushed);
    }
    let count = events.len();
    // What earlier rounds could not journal is reported first, in the
    // same commit, so the record says where it has a hole.
    let loss = hub.journal_loss();
    let mut events = events;
    if let Some(loss) = loss {
        events.insert(0, journal_loss_event(loss));
    }
    let offset = usize::from(loss.is_some());
    let events = match hub.publish_or_return(events) {
        Ok(sequenced) => {
            if let Some(loss) = loss {
                tracing::warn!(
                    "the journal is writable again; {} events since the last report were not journaled ({} since start)",
                    loss.lost,
                    loss.total
                );
                hub.journal_loss_reported(loss);
            }
            sequenced
        }
        Err((e, mut events)) => {
            // Subscribers cannot get them (they read the journal), but the
            // JSON output still does, without sequence numbers.
            tracing::error!(
                "journaling {count} events failed; they go to the JSON output only (seq 0): {e}"
            );
            hub.count_unjournaled(count as u64);
            events.drain(..offset);
            let refused = PublishError::Journal(e.to_string());
            for (_, reply) in replies {
                let _ = reply.send(Err(refused.clone()));
            }
            let written = events
                .iter()
                .try_for_each(|ev| output.write(ev))
                .and_then(|()| output.flush());
            return (output, written);
        }
    };
    counters.count(&events);
    metrics.observe_published(&events);
    let written = events
        .iter()
        .try_for_each(|e| output.write(e))
        .and_then(|()| output.flush());
    for (range, reply) in replies {
        let range = range.start + offset..range.end + offset;
        let _ = reply.send(Ok(events[range].to_vec()));
    }
    (output, written)
}

/// The `loss` event for events the journal could not store: sensor
/// `journal`, as the kernel's are named by the sensor that lost them.
fn journal_loss_event(loss: JournalLoss) -> Event {
    Event::daemon(
        Identity::default(),
        Payload::Loss(Loss {
            sensor: JOURNAL_LOSS.to_owned(),
            lost: loss.lost,
            total: loss.total,
        }),
    )
}

/// The `sensor` of `loss` events for events the journal could not store.
pub const JOURNAL_LOSS: &str = "journal";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commit_interval_grows_with_the_flow_and_is_capped() {
        assert_eq!(commit_interval(0), COMMIT_INTERVAL);
        assert_eq!(commit_interval(20), COMMIT_INTERVAL, "10,000 events/s");
        assert_eq!(commit_interval(200), COMMIT_INTERVAL * 2);
        assert_eq!(
            commit_interval(MAX_COMMIT_EVENTS),
            COMMIT_INTERVAL * MAX_INTERVAL_FACTOR
        );
    }
}
