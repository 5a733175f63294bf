//! The hub between the daemon and the event subscribers.
//!
//! [`Hub::publish`] journals a batch first and only then announces it, so a
//! subscriber never sees an event that a crash could take back. Live batches
//! go out on a `tokio` broadcast channel whose capacity bounds how far a
//! subscriber may fall behind; publishing never waits for anyone. A subscriber
//! that lags (or notices a hole in the sequence) reads what it missed from
//! the journal, and only when those events were already pruned does it get a
//! `gap` event naming the missing range. Every subscriber therefore receives
//! every retained event after its start exactly once, in sequence order.
//!
//! Events travel as [`Encoded`]: the bytes the journal stored, shared by
//! every subscriber and filtered on fields found once per event, so adding
//! a subscriber costs no decode, clone or re-encode of any event.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use futures_util::{Stream, StreamExt as _};
use tokio::sync::broadcast;

use crate::event::Event;
use crate::journal::encoded::Encoded;
use crate::journal::filter::Filter;
use crate::journal::store::{
    self, Journal, JournalError, JournalReader, JournalStats, Pruned, Retention,
};
use crate::wire::pb;

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("after_sequence {requested} is beyond the newest journaled sequence {newest}")]
    AheadOfJournal { requested: u64, newest: u64 },
    #[error("start.{0} must be true when it is set")]
    InvalidStart(&'static str),
    #[error("journal worker thread failed: {0}")]
    Worker(#[from] tokio::task::JoinError),
}

/// Where a subscription starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// Every retained event with a greater sequence (resume).
    AfterSequence(u64),
    /// The oldest retained event, without a gap for what was pruned before.
    Oldest,
    /// Only events journaled after the subscription.
    Now,
}

impl TryFrom<Option<pb::subscribe_request::Start>> for Start {
    type Error = HubError;

    /// An unset start means `Now`.
    fn try_from(start: Option<pb::subscribe_request::Start>) -> Result<Self, HubError> {
        use pb::subscribe_request::Start as S;
        match start {
            Some(S::AfterSequence(n)) => Ok(Self::AfterSequence(n)),
            Some(S::Oldest(true)) => Ok(Self::Oldest),
            Some(S::Oldest(false)) => Err(HubError::InvalidStart("oldest")),
            Some(S::Now(true)) | None => Ok(Self::Now),
            Some(S::Now(false)) => Err(HubError::InvalidStart("now")),
        }
    }
}

/// Sizes of the hub's buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HubConfig {
    /// Published batches a subscriber may fall behind before it has to catch
    /// up from the journal.
    pub live_batches: usize,
    /// Events read from the journal per catch-up step.
    pub catch_up_chunk: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            live_batches: 256,
            catch_up_chunk: 1024,
        }
    }
}

/// Counters for `NodeService.Status` and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HubStats {
    pub subscribers: usize,
    pub gaps_sent: u64,
    pub journal: JournalStats,
    /// Events the journal refused (a write failed) since the daemon started.
    pub unjournaled: u64,
    /// Whether the journal's last write succeeded (or none was tried).
    pub journal_writable: bool,
}

/// Events the journal could not store, not yet reported by a `loss` event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JournalLoss {
    /// Since the previous report.
    pub lost: u64,
    /// Since the daemon started.
    pub total: u64,
}

type Batch = Arc<Vec<Encoded>>;

/// How often a subscriber catching up looks again at a journal that a
/// failed write closed.
const REOPEN_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// The hub's side. Subscriptions do not hold it, so dropping the last `Hub`
/// drops the live sender and ends every stream.
struct Inner {
    journal: Mutex<Journal>,
    live: broadcast::Sender<Batch>,
    /// Newest committed sequence; read by `subscribe` without the journal lock.
    last_seq: AtomicU64,
    /// Copy of the journal's counters, so `stats` never waits for a commit.
    journal_stats: Mutex<JournalStats>,
    /// Events the journal refused, in all and since the last `loss` report.
    unjournaled: AtomicU64,
    unreported: AtomicU64,
    writable: AtomicBool,
    common: Arc<Common>,
}

/// What hub and subscriptions share.
struct Common {
    reader: JournalReader,
    node: String,
    subscribers: AtomicUsize,
    gaps_sent: AtomicU64,
    catch_up_chunk: usize,
}

/// Journals published events and streams them to subscribers. Cheap to clone.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("node", &self.inner.common.node)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Hub {
    #[must_use]
    pub fn new(journal: Journal, config: HubConfig) -> Self {
        let (live, _) = broadcast::channel(config.live_batches.max(1));
        let stats = journal.stats();
        Self {
            inner: Arc::new(Inner {
                common: Arc::new(Common {
                    reader: journal.reader(),
                    node: journal.node().to_owned(),
                    subscribers: AtomicUsize::new(0),
                    gaps_sent: AtomicU64::new(0),
                    catch_up_chunk: config.catch_up_chunk.max(1),
                }),
                journal: Mutex::new(journal),
                live,
                last_seq: AtomicU64::new(stats.last_seq),
                journal_stats: Mutex::new(stats),
                unjournaled: AtomicU64::new(0),
                unreported: AtomicU64::new(0),
                writable: AtomicBool::new(true),
            }),
        }
    }

    /// Journals `events` durably, then sends them to subscribers; returns
    /// them with their sequences. Applies retention afterwards.
    pub async fn publish(&self, events: Vec<Event>) -> Result<Vec<Event>, HubError> {
        let hub = self.clone();
        tokio::task::spawn_blocking(move || hub.publish_blocking(events)).await?
    }

    /// `publish` for callers on a plain thread; blocks for the commit.
    pub fn publish_blocking(&self, events: Vec<Event>) -> Result<Vec<Event>, HubError> {
        self.publish_or_return(events).map_err(|(e, _)| e)
    }

    /// Like [`Hub::publish_blocking`], but hands the events back when they
    /// could not be journaled, so the caller can still deliver them elsewhere.
    pub fn publish_or_return(
        &self,
        events: Vec<Event>,
    ) -> Result<Vec<Event>, (HubError, Vec<Event>)> {
        match self.publish_wire_blocking(store::to_wire(&events)) {
            Ok(stored) => Ok(store::with_sequences(events, &stored)),
            Err(e) => Err((e, events)),
        }
    }

    /// Journals and sends events already in wire form (sequences and node
    /// are assigned here); returns the batch as sent.
    pub fn publish_wire_blocking(&self, events: Vec<pb::Event>) -> Result<Batch, HubError> {
        let inner = &self.inner;
        let mut journal = inner.journal.lock().unwrap_or_else(PoisonError::into_inner);
        let appended = journal.append_wire(events);
        inner.writable.store(appended.is_ok(), Ordering::Relaxed);
        let batch = Arc::new(appended?);
        if batch.is_empty() {
            return Ok(batch);
        }
        inner.last_seq.store(journal.last_seq(), Ordering::Release);
        // Sent under the journal lock so batches go out in sequence order.
        // No receivers is not an error: the journal has the events.
        let _ = inner.live.send(Arc::clone(&batch));
        if let Err(e) = journal.prune(SystemTime::now()) {
            // The batch is durable and sent; pruning is retried on the next publish.
            tracing::warn!("journal retention: {e}");
        }
        *inner
            .journal_stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = journal.stats();
        Ok(batch)
    }

    /// Counts `n` events that could not be journaled, for the next
    /// [`Hub::journal_loss`] report and the metrics.
    pub fn count_unjournaled(&self, n: u64) {
        self.inner.unjournaled.fetch_add(n, Ordering::Relaxed);
        self.inner.unreported.fetch_add(n, Ordering::Relaxed);
    }

    /// Events not journaled since the last report, if any.
    #[must_use]
    pub fn journal_loss(&self) -> Option<JournalLoss> {
        let lost = self.inner.unreported.load(Ordering::Relaxed);
        (lost > 0).then(|| JournalLoss {
            lost,
            total: self.inner.unjournaled.load(Ordering::Relaxed),
        })
    }

    /// A `loss` event for `loss` was journaled.
    pub fn journal_loss_reported(&self, loss: JournalLoss) {
        self.inner
            .unreported
            .fetch_sub(loss.lost, Ordering::Relaxed);
    }

    /// Applies retention now; the daemon calls it periodically so age limits
    /// hold while nothing is published.
    pub async fn prune(&self) -> Result<Pruned, HubError> {
        let hub = self.clone();
        tokio::task::spawn_blocking(move || {
            let inner = &hub.inner;
            let mut journal = inner.journal.lock().unwrap_or_else(PoisonError::into_inner);
            let pruned = journal.prune(SystemTime::now())?;
            *inner
                .journal_stats
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = journal.stats();
            Ok(pruned)
        })
        .await?
    }

    /// Changes retention (config reload); applied at the next publish or prune.
    pub fn set_retention(&self, retention: Retention) {
        self.inner
            .journal
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .set_retention(retention);
    }

    #[must_use]
    pub fn stats(&self) -> HubStats {
        HubStats {
            subscribers: self.inner.common.subscribers.load(Ordering::Relaxed),
            gaps_sent: self.inner.common.gaps_sent.load(Ordering::Relaxed),
            unjournaled: self.inner.unjournaled.load(Ordering::Relaxed),
            journal_writable: self.inner.writable.load(Ordering::Relaxed),
            journal: *self
                .inner
                .journal_stats
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        }
    }

    /// Newest journaled sequence.
    #[must_use]
    pub fn last_seq(&self) -> u64 {
        self.inner.last_seq.load(Ordering::Acquire)
    }

    #[must_use]
    pub fn reader(&self) -> JournalReader {
        self.inner.common.reader.clone()
    }

    /// Starts a subscription. It replays the journal from `start`, then
    /// follows live events; `filter` is applied to both.
    pub fn subscribe(&self, start: Start, filter: Filter) -> Result<Subscription, HubError> {
        // Subscribe before reading the position, so no batch falls between.
        let live = self.inner.live.subscribe();
        let newest = self.last_seq();
        let (pos, from_oldest) = match start {
            Start::AfterSequence(n) if n > newest => {
                return Err(HubError::AheadOfJournal {
                    requested: n,
                    newest,
                });
            }
            Start::AfterSequence(n) => (n, false),
            Start::Oldest => (0, true),
            Start::Now => (newest, false),
        };
        self.inner
            .common
            .subscribers
            .fetch_add(1, Ordering::Relaxed);
        Ok(Subscription {
            common: Arc::clone(&self.inner.common),
            live,
            filter,
            pos,
            from_oldest,
            catching_up: true,
            ready: VecDeque::new(),
            done: false,
        })
    }
}

/// One subscriber's stream. Dropping it ends the subscription.
pub struct Subscription {
    common: Arc<Common>,
    live: broadcast::Receiver<Batch>,
    filter: Filter,
    /// Every sequence up to here was delivered, filtered out or reported missing.
    pos: u64,
    /// Started at `Oldest`: what was pruned before the first read is no gap.
    from_oldest: bool,
    /// Reading from the journal rather than from the live channel.
    catching_up: bool,
    ready: VecDeque<Encoded>,
    done: bool,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.common.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("pos", &self.pos)
            .field("catching_up", &self.catching_up)
            .field("filter", &self.filter)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// The sequence every event up to which has been handled; a client that
    /// reconnects with `after_sequence` set to it misses nothing.
    #[must_use]
    pub const fn position(&self) -> u64 {
        self.pos
    }

    /// The next matching event (or gap). `None` once every `Hub` handle is
    /// gone and what was journaled is delivered, or after an error.
    pub async fn next(&mut self) -> Option<Result<Encoded, HubError>> {
        match self.wait_ready().await {
            Ok(true) => self.ready.pop_front().map(Ok),
            Ok(false) => None,
            Err(e) => Some(Err(e)),
        }
    }

    /// Every event ready now (at least one), in order; `None` as for
    /// [`Subscription::next`].
    pub async fn next_batch(&mut self) -> Option<Result<VecDeque<Encoded>, HubError>> {
        match self.wait_ready().await {
            Ok(true) => Some(Ok(std::mem::take(&mut self.ready))),
            Ok(false) => None,
            Err(e) => Some(Err(e)),
        }
    }

    /// Like [`Subscription::next_batch`], and also takes the live batches
    /// already published, without waiting, until `max` events are ready: a
    /// consumer that sends each batch on (an export sink) then pays its
    /// round trip per `max` events rather than per published batch.
    pub async fn next_batch_up_to(
        &mut self,
        max: usize,
    ) -> Option<Result<VecDeque<Encoded>, HubError>> {
        match self.wait_ready().await {
            Ok(true) => {
                while self.ready.len() < max && !self.catching_up && !self.done {
                    match self.live.try_recv() {
                        Ok(batch) => self.take_live(&batch),
                        Err(broadcast::error::TryRecvError::Empty) => break,
                        Err(broadcast::error::TryRecvError::Lagged(_)) => self.catching_up = true,
                        Err(broadcast::error::TryRecvError::Closed) => self.done = true,
                    }
                }
                Some(Ok(std::mem::take(&mut self.ready)))
            }
            Ok(false) => None,
            Err(e) => Some(Err(e)),
        }
    }

    /// Waits until an event is ready; `false` once the stream has ended.
    async fn wait_ready(&mut self) -> Result<bool, HubError> {
        loop {
            if !self.ready.is_empty() {
                return Ok(true);
            }
            if self.done {
                return Ok(false);
            }
            if self.catching_up {
                if let Err(e) = self.catch_up().await {
                    self.done = true;
                    return Err(e);
                }
                continue;
            }
            match self.live.recv().await {
                Ok(batch) => self.take_live(&batch),
                Err(broadcast::error::RecvError::Lagged(_)) => self.catching_up = true,
                Err(broadcast::error::RecvError::Closed) => self.done = true,
            }
        }
    }

    /// The subscription as a `Stream`, for a tonic response. It takes what
    /// is ready a batch at a time, so the async machinery runs (and the
    /// subscription moves in and out of its future) once per batch, while
    /// tonic takes the events one by one.
    pub fn into_stream(self) -> impl Stream<Item = Result<Encoded, HubError>> + Send + 'static {
        futures_util::stream::unfold(self, |mut sub| async move {
            sub.next_batch().await.map(|batch| (batch, sub))
        })
        .flat_map(|batch| {
            let (events, error) = match batch {
                Ok(events) => (events, None),
                Err(e) => (VecDeque::new(), Some(e)),
            };
            futures_util::stream::iter(events.into_iter().map(Ok).chain(error.map(Err)))
        })
    }

    async fn catch_up(&mut self) -> Result<(), HubError> {
        let (pos, limit) = (self.pos, self.common.catch_up_chunk);
        let page = loop {
            let reader = self.common.reader.clone();
            match tokio::task::spawn_blocking(move || reader.read_page(pos, limit)).await? {
                // Closed after a failed write (a full disk) until the writer
                // reopens it, at its next write or prune: the subscriber
                // waits for that instead of ending.
                Err(JournalError::Closed { .. }) => tokio::time::sleep(REOPEN_POLL).await,
                page => break page?,
            }
        };
        // In one snapshot: the next sequence the journal can give, or, when it
        // has nothing after `pos`, the one after the newest ever written.
        let next = page
            .events
            .first()
            .map_or(page.last_seq.saturating_add(1), Encoded::sequence);
        if next > self.pos + 1 {
            if !self.from_oldest {
                self.ready
                    .push_back(Encoded::gap(&self.common.node, self.pos + 1, next - 1));
                self.common.gaps_sent.fetch_add(1, Ordering::Relaxed);
            }
            self.pos = next - 1;
        }
        self.from_oldest = false;
        if page.events.is_empty() {
            self.catching_up = false;
        }
        for e in page.events {
            self.pos = e.sequence();
            if self.filter.matches_fields(&e.fields()) {
                self.ready.push_back(e);
            }
        }
        Ok(())
    }

    fn take_live(&mut self, batch: &[Encoded]) {
        for e in batch {
            let seq = e.sequence();
            if seq <= self.pos {
                continue;
            }
            if seq != self.pos + 1 {
                // Something between was missed (lag, or a batch sent before
                // this subscription existed): the journal has it.
                self.catching_up = true;
                return;
            }
            self.pos = seq;
            // The clone shares the bytes: one reference count, no copy.
            if self.filter.matches_fields(&e.fields()) {
                self.ready.push_back(e.clone());
            }
        }
    }
}

impl prometheus_client::collector::Collector for Hub {
    fn encode(&self, mut enc: prometheus_client::encoding::DescriptorEncoder) -> std::fmt::Result {
        use crate::metrics::{counter, gauge, gauge_with_unit};
        let stats = self.stats();
        gauge_with_unit(
            &mut enc,
            "journal_size",
            "Size of the journal file",
            &prometheus_client::registry::Unit::Bytes,
            stats.journal.size_bytes,
        )?;
        gauge(
            &mut enc,
            "journal_newest_sequence",
            "Sequence of the newest journaled event",
            stats.journal.last_seq,
        )?;
        counter(
            &mut enc,
            "journal_pruned_events",
            "Events removed by journal retention",
            stats.journal.pruned_events,
        )?;
        counter(
            &mut enc,
            "journal_unjournaled_events",
            "Events the journal could not store (a write failed, such as on a full disk)",
            stats.unjournaled,
        )?;
        gauge(
            &mut enc,
            "journal_writable",
            "1 while the journal's writes succeed, 0 after one failed and until one succeeds",
            u64::from(stats.journal_writable),
        )?;
        gauge(
            &mut enc,
            "subscribers",
            "Event stream subscribers connected",
            stats.subscribers as u64,
        )?;
        counter(
            &mut enc,
            "subscriber_gaps",
            "Gap events sent to subscribers that fell behind retention",
            stats.gaps_sent,
        )
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures_util::StreamExt as _;
    use tokio::time::timeout;

    use super::*;
    use crate::event::Severity;
    use crate::journal::testing::{anomaly, exec, fork};

    const WAIT: Duration = Duration::from_secs(30);

    fn hub_with(dir: &tempfile::TempDir, retention: Retention, config: HubConfig) -> Hub {
        let journal = Journal::open(&dir.path().join("j.redb"), "node-1", retention).unwrap();
        Hub::new(journal, config)
    }

    fn hub(dir: &tempfile::TempDir) -> Hub {
        hub_with(dir, Retention::default(), HubConfig::default())
    }

    async fn publish_forks(hub: &Hub, n: u32, per_batch: u32) {
        let now = SystemTime::now();
        let mut i = 0;
        while i < n {
            let k = per_batch.min(n - i);
            hub.publish((i..i + k).map(|j| fork(j, now)).collect())
                .await
                .unwrap();
            i += k;
        }
    }

    async fn next(sub: &mut Subscription) -> pb::Event {
        timeout(WAIT, sub.next())
            .await
            .expect("no event within the wait")
            .expect("stream ended")
            .unwrap()
            .decode()
            .unwrap()
    }

    async fn take(sub: &mut Subscription, n: usize) -> Vec<u64> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(next(sub).await.sequence);
        }
        out
    }

    /// Nothing more arrives for a moment.
    async fn assert_quiet(sub: &mut Subscription) {
        if let Ok(item) = timeout(Duration::from_millis(200), sub.next()).await {
            panic!("unexpected item {item:?}");
        }
    }

    fn gap_of(e: &pb::Event) -> Option<(u64, u64)> {
        match e.payload {
            Some(pb::event::Payload::Gap(g)) => Some((g.first_missing, g.last_missing)),
            _ => None,
        }
    }

    #[test]
    fn events_not_journaled_are_reported_once_and_counted_for_good() {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub_with(&dir, Retention::default(), HubConfig::default());
        assert_eq!(hub.journal_loss(), None);
        hub.count_unjournaled(5);
        let first = hub.journal_loss().unwrap();
        assert_eq!(first, JournalLoss { lost: 5, total: 5 });
        // Refused again before the first report made it: both in one.
        hub.count_unjournaled(3);
        assert_eq!(hub.journal_loss(), Some(JournalLoss { lost: 8, total: 8 }));
        hub.journal_loss_reported(first);
        assert_eq!(hub.journal_loss(), Some(JournalLoss { lost: 3, total: 8 }));
        hub.journal_loss_reported(JournalLoss { lost: 3, total: 8 });
        assert_eq!(hub.journal_loss(), None);
        assert_eq!(hub.stats().unjournaled, 8);
        // A successful publish says the journal is writable.
        hub.publish_blocking(vec![fork(1, SystemTime::now())])
            .unwrap();
        assert!(hub.stats().journal_writable);
    }

    #[tokio::test]
    async fn resume_after_n_gets_exactly_the_missed_events() {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub(&dir);
        publish_forks(&hub, 100, 7).await;

        let mut sub = hub
            .subscribe(Start::AfterSequence(40), Filter::all())
            .unwrap();
        assert_eq!(take(&mut sub, 60).await, (41..=100).collect::<Vec<_>>());
        assert_quiet(&mut sub).await;
        assert_eq!(sub.position(), 100);

        publish_forks(&hub, 50, 10).await;
        assert_eq!(take(&mut sub, 50).await, (101..=150).collect::<Vec<_>>());
        assert_quiet(&mut sub).await;

        // A reconnect at the last sequence seen gets nothing twice.
        drop(sub);
        let mut again = hub
            .subscribe(Start::AfterSequence(150), Filter::all())
            .unwrap();
        assert_quiet(&mut again).await;
        publish_forks(&hub, 1, 1).await;
        assert_eq!(take(&mut again, 1).await, [151]);
        assert_eq!(hub.stats().gaps_sent, 0);
    }

    #[tokio::test]
    async fn a_batch_up_to_takes_every_published_batch_ready_and_no_more() {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub(&dir);
        let mut sub = hub.subscribe(Start::Now, Filter::all()).unwrap();
        // Caught up first: what follows arrives live, seven batches of 10.
        assert_quiet(&mut sub).await;
        publish_forks(&hub, 70, 10).await;
        let seqs = |b: VecDeque<Encoded>| b.iter().map(Encoded::sequence).collect::<Vec<_>>();
        let first = timeout(WAIT, sub.next_batch_up_to(25))
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        // Whole published batches, stopping once the bound is reached.
        assert_eq!(seqs(first), (1..=30).collect::<Vec<_>>());
        let rest = timeout(WAIT, sub.next_batch_up_to(1000))
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(seqs(rest), (31..=70).collect::<Vec<_>>());
        assert_eq!(sub.position(), 70);
        assert_quiet(&mut sub).await;
    }

    #[tokio::test]
    async fn resume_survives_a_restart_of_the_hub() {
        let dir = tempfile::tempdir().unwrap();
        {
            let hub = hub(&dir);
            publish_forks(&hub, 30, 30).await;
        }
        let hub = hub(&dir);
        publish_forks(&hub, 5, 5).await;
        let mut sub = hub
            .subscribe(Start::AfterSequence(25), Filter::all())
            .unwrap();
        assert_eq!(take(&mut sub, 10).await, (26..=35).collect::<Vec<_>>());
        assert_quiet(&mut sub).await;
    }

    #[tokio::test]
    async fn start_positions() {
        use pb::subscribe_request::Start as S;

        let dir = tempfile::tempdir().unwrap();
        let hub = hub(&dir);
        publish_forks(&hub, 10, 10).await;

        let err = hub
            .subscribe(Start::AfterSequence(11), Filter::all())
            .unwrap_err();
        assert!(matches!(
            err,
            HubError::AheadOfJournal {
                requested: 11,
                newest: 10
            }
        ));

        let mut now = hub.subscribe(Start::Now, Filter::all()).unwrap();
        let mut oldest = hub.subscribe(Start::Oldest, Filter::all()).unwrap();
        assert_eq!(take(&mut oldest, 10).await, (1..=10).collect::<Vec<_>>());
        assert_quiet(&mut now).await;
        publish_forks(&hub, 2, 2).await;
        assert_eq!(take(&mut now, 2).await, [11, 12]);
        assert_eq!(take(&mut oldest, 2).await, [11, 12]);

        assert_eq!(Start::try_from(None).unwrap(), Start::Now);
        assert_eq!(
            Start::try_from(Some(S::Oldest(true))).unwrap(),
            Start::Oldest
        );
        assert_eq!(
            Start::try_from(Some(S::AfterSequence(3))).unwrap(),
            Start::AfterSequence(3)
        );
        assert!(matches!(
            Start::try_from(Some(S::Oldest(false))),
            Err(HubError::InvalidStart("oldest"))
        ));
    }

    #[tokio::test]
    async fn oldest_after_pruning_starts_at_the_oldest_retained_without_a_gap() {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub_with(
            &dir,
            Retention {
                max_bytes: Some(2000),
                max_age: None,
            },
            HubConfig::default(),
        );
        publish_forks(&hub, 500, 50).await;
        let oldest = hub.stats().journal.oldest_seq.unwrap();
        assert!(oldest > 1);
        let mut sub = hub.subscribe(Start::Oldest, Filter::all()).unwrap();
        let want: Vec<u64> = (oldest..=500).collect();
        assert_eq!(take(&mut sub, want.len()).await, want);
        assert_quiet(&mut sub).await;
        assert_eq!(hub.stats().gaps_sent, 0);
    }

    /// Checks a received stream: every event follows the previous one or a
    /// gap, gaps start right after the previous event, and it ends at `last`.
    fn check_order(received: &[pb::Event], start_after: u64, last: u64) -> Vec<(u64, u64)> {
        let mut pos = start_after;
        let mut gaps = Vec::new();
        for e in received {
            if let Some((first, end)) = gap_of(e) {
                assert_eq!(first, pos + 1, "gap must start right after {pos}");
                assert!(end >= first);
                gaps.push((first, end));
                pos = end;
            } else {
                assert_eq!(e.sequence, pos + 1, "event after {pos}");
                pos = e.sequence;
            }
        }
        assert_eq!(pos, last);
        gaps
    }

    #[tokio::test]
    async fn a_slow_subscriber_gets_a_correct_gap_for_pruned_events() {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub_with(
            &dir,
            Retention {
                max_bytes: Some(4000),
                max_age: None,
            },
            HubConfig {
                live_batches: 2,
                catch_up_chunk: 16,
            },
        );
        let mut slow = hub
            .subscribe(Start::AfterSequence(0), Filter::all())
            .unwrap();
        publish_forks(&hub, 10, 10).await;
        // It reads a little, then stalls while far more than retention flows.
        let first = take(&mut slow, 3).await;
        assert_eq!(first, [1, 2, 3]);
        publish_forks(&hub, 5000, 25).await;
        let oldest = hub.stats().journal.oldest_seq.unwrap();
        assert!(
            oldest > 11,
            "retention must have pruned, oldest is {oldest}"
        );

        let mut received = Vec::new();
        while let Ok(Some(item)) = timeout(Duration::from_millis(300), slow.next()).await {
            received.push(item.unwrap().decode().unwrap());
        }
        let gaps = check_order(&received, 3, 5010);
        assert_eq!(gaps.len(), 1, "{gaps:?}");
        let (first_missing, last_missing) = gaps[0];
        // What was missing was really gone: everything before the oldest retained.
        assert!(first_missing > 3);
        assert!(last_missing < oldest, "{last_missing} is still retained");
        assert_eq!(hub.stats().gaps_sent, 1);
        assert!(hub.stats().journal.pruned_events >= oldest - 1);

        // It goes on live after the gap.
        publish_forks(&hub, 3, 3).await;
        assert_eq!(take(&mut slow, 3).await, [5011, 5012, 5013]);
    }

    #[tokio::test]
    async fn resuming_before_the_oldest_retained_starts_with_a_gap() {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub_with(
            &dir,
            Retention {
                max_bytes: Some(1500),
                max_age: None,
            },
            HubConfig::default(),
        );
        publish_forks(&hub, 300, 30).await;
        let oldest = hub.stats().journal.oldest_seq.unwrap();
        let mut sub = hub
            .subscribe(Start::AfterSequence(5), Filter::all())
            .unwrap();
        let gap = next(&mut sub).await;
        assert_eq!(gap_of(&gap), Some((6, oldest - 1)));
        assert_eq!(gap.sequence, oldest - 1);
        assert_eq!(next(&mut sub).await.sequence, oldest);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ten_subscribers_receive_everything_in_order_while_one_stalls() {
        const TOTAL: u64 = 100_000;
        let dir = tempfile::tempdir().unwrap();
        let hub = hub_with(
            &dir,
            Retention::default(),
            HubConfig {
                live_batches: 16,
                catch_up_chunk: 1024,
            },
        );
        let readers: Vec<_> = (0..10)
            .map(|_| {
                let mut sub = hub.subscribe(Start::Now, Filter::all()).unwrap();
                tokio::spawn(async move {
                    let mut expected = 1;
                    while expected <= TOTAL {
                        let e = timeout(WAIT, sub.next()).await.unwrap().unwrap().unwrap();
                        assert_eq!(e.sequence(), expected, "out of order or duplicate");
                        expected += 1;
                    }
                    expected - 1
                })
            })
            .collect();
        // Never polled while publishing: it must not hold anyone up.
        let stalled = hub.subscribe(Start::Now, Filter::all()).unwrap();
        assert_eq!(hub.stats().subscribers, 11);

        timeout(
            Duration::from_mins(2),
            publish_forks(&hub, TOTAL as u32, 1000),
        )
        .await
        .expect("publishing was held up");
        for r in readers {
            assert_eq!(r.await.unwrap(), TOTAL);
        }
        assert_eq!(hub.stats().subscribers, 1);

        // The stalled one catches up from the journal, losslessly.
        let mut stream = Box::pin(stalled.into_stream());
        let mut expected = 1;
        while expected <= TOTAL {
            let e = timeout(WAIT, stream.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert_eq!(e.sequence(), expected);
            expected += 1;
        }
        assert_eq!(hub.stats().gaps_sent, 0);
        drop(stream);
        assert_eq!(hub.stats().subscribers, 0);
    }

    #[tokio::test]
    async fn filters_apply_to_replay_and_live() {
        let mixed = || {
            vec![
                exec("a", "s1"),
                exec("b", "s2"),
                anomaly("a", Severity::Low),
                anomaly("b", Severity::Critical),
                exec("a", "s2"),
                anomaly("a", Severity::High),
            ]
        };
        let cases: Vec<(Filter, Vec<u64>)> = vec![
            (Filter::all().agents(["a"]), vec![1, 3, 5, 6]),
            (Filter::all().sessions(["s2"]), vec![2, 5]),
            (Filter::all().kinds([pb::EventKind::Exec]), vec![1, 2, 5]),
            (Filter::all().anomalies_only(true), vec![3, 4, 6]),
            (Filter::all().min_severity(pb::Severity::High), vec![4, 6]),
            (
                Filter::all().agents(["a"]).min_severity(pb::Severity::Low),
                vec![3, 6],
            ),
        ];
        for (filter, want) in cases {
            let dir = tempfile::tempdir().unwrap();
            let hub = hub(&dir);
            hub.publish(mixed()).await.unwrap();
            let mut sub = hub.subscribe(Start::Oldest, filter.clone()).unwrap();
            assert_eq!(take(&mut sub, want.len()).await, want, "{filter:?} replay");
            assert_quiet(&mut sub).await;
            // Filtered-out events still move the position.
            assert_eq!(sub.position(), 6);
            let mut live = hub.subscribe(Start::Now, filter.clone()).unwrap();
            hub.publish(mixed()).await.unwrap();
            let want_live: Vec<u64> = want.iter().map(|s| s + 6).collect();
            assert_eq!(
                take(&mut sub, want.len()).await,
                want_live,
                "{filter:?} follow"
            );
            assert_eq!(
                take(&mut live, want_live.len()).await,
                want_live,
                "{filter:?} live"
            );
            assert_quiet(&mut live).await;
        }
    }

    #[tokio::test]
    async fn the_stream_ends_when_the_hub_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub(&dir);
        publish_forks(&hub, 2, 2).await;
        let mut sub = hub.subscribe(Start::Oldest, Filter::all()).unwrap();
        assert_eq!(take(&mut sub, 2).await, [1, 2]);
        drop(hub);
        assert!(timeout(WAIT, sub.next()).await.unwrap().is_none());
    }
}
