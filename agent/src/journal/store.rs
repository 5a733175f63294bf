//! The durable event store: a redb database of encoded `vigil.v1.Event`
//! messages keyed by their per-node sequence.
//!
//! redb is pure Rust, transactional (a crash leaves the last committed state,
//! checked by checksums) and lets readers run against a snapshot while the
//! writer commits, so catching subscribers up never blocks ingestion.
//!
//! The sequence counter, the byte count and the pruning counter live in a
//! metadata table written in the same transaction as the events, so they are
//! exactly as durable as the events and survive a journal pruned to empty.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use prost::Message as _;
use redb::{
    Database, ReadTransaction, ReadableDatabase as _, ReadableTable as _, TableDefinition,
    WriteTransaction,
};

use crate::event::Event;
use crate::journal::encoded::{Encoded, EncodedError};
use crate::wire::pb;

pub(super) const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

pub(super) const META_LAST_SEQ: &str = "last_seq";
pub(super) const META_BYTES: &str = "bytes";
pub(super) const META_PRUNED: &str = "pruned";

/// Bytes an entry counts for: its encoded event plus its key.
pub(super) const KEY_BYTES: u64 = 8;

/// redb's default cache is 1 GiB. The journal is written and read mostly at
/// its tail; a replay from further back reads through the kernel's page
/// cache, which is not the daemon's memory.
const CACHE_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path}: {op}: {source}")]
    Database {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: Box<redb::Error>,
    },
    #[error("journal {path}: creating its directory: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("journal {path}: entry {seq} cannot be decoded: {source}")]
    Decode {
        path: PathBuf,
        seq: u64,
        #[source]
        source: EncodedError,
    },
    #[error(
        "journal {path}: cannot be opened: {source}; `vigil journal check {path}` reports what is damaged, `vigil journal repair {path}` moves the file aside and recovers every readable event into a fresh one"
    )]
    Damaged {
        path: PathBuf,
        #[source]
        source: Box<redb::Error>,
    },
    #[error("journal {path}: closed after a write failed ({cause}); it reopens at the next write")]
    Closed { path: PathBuf, cause: String },
}

/// How much history the journal keeps; `None` means no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    /// Bytes of encoded events (plus 8 per key) to keep at most.
    pub max_bytes: Option<u64>,
    /// Events older than this (by their `time`) are pruned.
    pub max_age: Option<Duration>,
}

/// A consistent view of the journal's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JournalStats {
    /// Bytes of retained event data (encoded events plus keys).
    pub size_bytes: u64,
    /// Oldest retained sequence; `None` when the journal is empty.
    pub oldest_seq: Option<u64>,
    /// Newest sequence ever assigned (retained or pruned); 0 before the first event.
    pub last_seq: u64,
    /// Events pruned since the journal was created.
    pub pruned_events: u64,
}

/// What one `prune` call removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub by_size: u64,
    pub by_age: u64,
}

impl Pruned {
    #[must_use]
    pub const fn total(&self) -> u64 {
        self.by_size + self.by_age
    }
}

/// Events read in one snapshot, with the bounds of the journal at that moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Page {
    /// As stored: subscribers get these bytes without a decode.
    pub events: Vec<Encoded>,
    /// Oldest retained sequence in the snapshot; `None` when it was empty.
    pub oldest_seq: Option<u64>,
    /// Newest sequence ever assigned, in the snapshot.
    pub last_seq: u64,
}

struct Shared {
    /// `None` between closing the database after a failed write and
    /// opening it again. redb latches an I/O error (a full disk) and fails
    /// every later operation until the database is reopened, so the writer
    /// closes and reopens it; readers take their transactions under this
    /// lock, so the file is never open twice.
    db: RwLock<Option<Database>>,
    path: PathBuf,
    /// Why the database is closed, while it is.
    closed: RwLock<Option<String>>,
}

impl Shared {
    fn err<E: Into<redb::Error>>(&self, op: &'static str) -> impl FnOnce(E) -> JournalError + '_ {
        move |e| JournalError::Database {
            path: self.path.clone(),
            op,
            source: Box::new(e.into()),
        }
    }

    fn decode_err(&self, seq: u64) -> impl FnOnce(EncodedError) -> JournalError + '_ {
        move |source| JournalError::Decode {
            path: self.path.clone(),
            seq,
            source,
        }
    }

    fn closed(&self) -> JournalError {
        JournalError::Closed {
            path: self.path.clone(),
            cause: self
                .closed
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
                .unwrap_or_default(),
        }
    }

    /// Runs `read` on a read transaction, holding the lock until it is
    /// done: a writer closing the database after a failed write waits for
    /// it, instead of failing its transaction mid-read (redb ends every
    /// live transaction of a closed database with "database has been
    /// closed").
    fn with_read<T>(
        &self,
        read: impl FnOnce(&ReadTransaction) -> Result<T, JournalError>,
    ) -> Result<T, JournalError> {
        let db = self.db.read().unwrap_or_else(PoisonError::into_inner);
        let db = db.as_ref().ok_or_else(|| self.closed())?;
        let txn = db.begin_read().map_err(self.err("beginning a read"))?;
        read(&txn)
    }
}

/// A failure to open that says the file itself is bad (not, say, that
/// another daemon holds it), told with what to do about it.
fn damaged(e: JournalError) -> JournalError {
    match e {
        JournalError::Database { path, source, .. }
            if matches!(
                *source,
                redb::Error::Corrupted(_)
                    | redb::Error::Io(_)
                    | redb::Error::RepairAborted
                    | redb::Error::UpgradeRequired(_)
                    | redb::Error::TableTypeMismatch { .. }
            ) =>
        {
            JournalError::Damaged { path, source }
        }
        other => other,
    }
}

thread_local! {
    /// Set while this thread runs a [`survive_redb`] read.
    static EXPECTING_PANIC: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `read` of a file that may be damaged, a panic in it becoming
/// `Err(message)`. redb reads pages it was not told to verify as they are,
/// and on some broken structures panics (`unreachable!`) instead of
/// returning an error; for a damaged journal that is one more unreadable
/// page, reported as such, so the panic is not printed. Panics of other
/// threads meanwhile still are: the hook stays silent only for this one.
pub(crate) fn survive_redb<T>(read: impl FnOnce() -> T) -> Result<T, String> {
    static QUIET_HOOK: std::sync::Once = std::sync::Once::new();
    QUIET_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !EXPECTING_PANIC.with(std::cell::Cell::get) {
                previous(info);
            }
        }));
    });
    let was = EXPECTING_PANIC.with(|e| e.replace(true));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(read));
    EXPECTING_PANIC.with(|e| e.set(was));
    outcome.map_err(|panic| {
        panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default()
    })
}

/// Opens (or creates) the database. With `verify`, redb checks the
/// checksum of every committed page first (it reads the whole file), so a
/// file damaged since it was written is refused at start instead of
/// failing, or worse, being trusted, when the damaged part is read.
fn open_database(path: &Path, verify: bool) -> Result<Database, JournalError> {
    Database::builder()
        .set_cache_size(CACHE_BYTES)
        .set_check_integrity_on_open(verify)
        .create(path)
        .map_err(|e| JournalError::Database {
            path: path.to_owned(),
            op: "opening",
            source: Box::new(e.into()),
        })
}

/// The journal's writer. One per database file: redb locks the file, so a
/// second daemon on the same journal fails to open it.
pub struct Journal {
    shared: Arc<Shared>,
    node: String,
    retention: Retention,
    stats: JournalStats,
    /// `time` of the oldest retained event, so `prune` can skip the write
    /// transaction when nothing is due.
    oldest_time: Option<SystemTime>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("path", &self.shared.path)
            .field("node", &self.node)
            .field("retention", &self.retention)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// Only the `time` field of an event, so age pruning decodes 1 field, not all.
#[derive(Clone, PartialEq, prost::Message)]
struct TimeOnly {
    #[prost(message, optional, tag = "3")]
    time: Option<prost_types::Timestamp>,
}

/// `events` in wire form.
pub(crate) fn to_wire(events: &[Event]) -> Vec<pb::Event> {
    events.iter().map(pb::Event::from).collect()
}

/// `events` with the sequences the journal gave them (`stored`, in order).
pub(crate) fn with_sequences(events: Vec<Event>, stored: &[Encoded]) -> Vec<Event> {
    events
        .into_iter()
        .zip(stored)
        .map(|(mut e, w)| {
            e.seq = w.sequence();
            e
        })
        .collect()
}

fn event_time(bytes: &[u8]) -> Option<SystemTime> {
    let t = TimeOnly::decode(bytes).ok()?.time?;
    SystemTime::try_from(t).ok()
}

fn meta_get(table: &impl redb::ReadableTable<&'static str, u64>, key: &str) -> redb::Result<u64> {
    Ok(table.get(key)?.map_or(0, |v| v.value()))
}

impl Journal {
    /// Opens (or creates) the journal at `path`, stamping `node` on every
    /// event it stores. After a crash redb recovers the last committed
    /// transaction; the sequence continues from it.
    pub fn open(path: &Path, node: &str, retention: Retention) -> Result<Self, JournalError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| JournalError::CreateDir {
                path: path.to_owned(),
                source,
            })?;
        }
        // redb may panic on a page whose structure is broken; at start that
        // is one more damaged file, to be told as such.
        let db = survive_redb(|| open_database(path, true))
            .unwrap_or_else(|panic| {
                Err(JournalError::Damaged {
                    path: path.to_owned(),
                    source: Box::new(redb::Error::Corrupted(format!(
                        "redb failed on a damaged page: {panic}"
                    ))),
                })
            })
            .map_err(damaged)?;
        let shared = Arc::new(Shared {
            db: RwLock::new(Some(db)),
            path: path.to_owned(),
            closed: RwLock::new(None),
        });
        let mut journal = Self {
            shared,
            node: node.to_owned(),
            retention,
            stats: JournalStats::default(),
            oldest_time: None,
        };
        journal.load().map_err(damaged)?;
        Ok(journal)
    }

    fn load(&mut self) -> Result<(), JournalError> {
        let shared = Arc::clone(&self.shared);
        let txn = self.begin_write()?;
        // Creates both tables on first open, so readers never miss them.
        txn.open_table(EVENTS)
            .map_err(shared.err("opening events"))?;
        txn.open_table(META).map_err(shared.err("opening meta"))?;
        txn.commit().map_err(shared.err("committing"))?;
        (self.stats, self.oldest_time) = self.reader().stats()?;
        Ok(())
    }

    fn begin_write(&self) -> Result<WriteTransaction, JournalError> {
        let db = self
            .shared
            .db
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let db = db.as_ref().ok_or_else(|| self.shared.closed())?;
        let mut txn = db
            .begin_write()
            .map_err(self.shared.err("beginning a write"))?;
        // A restart after kill -9 then reopens at once instead of walking the whole file.
        txn.set_quick_repair(true);
        Ok(txn)
    }

    /// A handle for reading from other threads while this writer appends.
    #[must_use]
    pub fn reader(&self) -> JournalReader {
        JournalReader {
            shared: Arc::clone(&self.shared),
        }
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    #[must_use]
    pub fn node(&self) -> &str {
        &self.node
    }

    #[must_use]
    pub const fn retention(&self) -> Retention {
        self.retention
    }

    /// Changes retention (config reload); takes effect at the next `prune`.
    pub const fn set_retention(&mut self, retention: Retention) {
        self.retention = retention;
    }

    #[must_use]
    pub const fn stats(&self) -> JournalStats {
        self.stats
    }

    /// Oldest retained sequence; `None` when the journal is empty.
    #[must_use]
    pub const fn oldest_seq(&self) -> Option<u64> {
        self.stats.oldest_seq
    }

    /// Newest sequence ever assigned; 0 before the first event.
    #[must_use]
    pub const fn last_seq(&self) -> u64 {
        self.stats.last_seq
    }

    /// Bytes of retained event data (encoded events plus keys).
    #[must_use]
    pub const fn size_bytes(&self) -> u64 {
        self.stats.size_bytes
    }

    /// Events pruned since the journal was created.
    #[must_use]
    pub const fn pruned_events(&self) -> u64 {
        self.stats.pruned_events
    }

    /// Journals a batch in one durable transaction and returns it with its
    /// sequences assigned. Nothing is stored when any event fails to convert.
    pub fn append(&mut self, events: Vec<Event>) -> Result<Vec<Event>, JournalError> {
        let stored = self.append_wire(to_wire(&events))?;
        Ok(with_sequences(events, &stored))
    }

    /// Journals wire events in one durable transaction, assigning their
    /// sequences and node name (whatever they carried), and returns them
    /// encoded, as stored: the one encoding subscribers are sent.
    ///
    /// A write that fails (a full disk) stores nothing of the batch and
    /// closes the database, which is then reopened at its last commit, at
    /// once for the readers if it can be and else at the next call.
    pub fn append_wire(&mut self, events: Vec<pb::Event>) -> Result<Vec<Encoded>, JournalError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        self.reopen_if_closed()?;
        let appended = self.try_append_wire(events);
        if let Err(e) = &appended {
            self.failed(e);
        }
        appended
    }

    /// Whether the database is open: `false` after a write failed and
    /// until it could be reopened.
    #[must_use]
    pub fn is_open(&self) -> bool {
        self.shared
            .db
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// After a failed write: closes the database, whose I/O error redb
    /// keeps failing every later operation with, and tries to reopen it.
    fn failed(&mut self, e: &JournalError) {
        if !matches!(e, JournalError::Database { .. }) {
            return;
        }
        let old = self
            .shared
            .db
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        *self
            .shared
            .closed
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(e.to_string());
        if let Some(db) = old
            && let Err(close) = db.close()
        {
            // The file is closed either way; the next open recovers it.
            tracing::debug!("closing journal {}: {close}", self.shared.path.display());
        }
        if let Err(reopen) = self.reopen_if_closed() {
            tracing::warn!("{reopen}");
        }
    }

    /// Opens the database again if a failed write closed it, and reloads
    /// the counters from its last commit.
    fn reopen_if_closed(&mut self) -> Result<(), JournalError> {
        let mut slot = self
            .shared
            .db
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if slot.is_some() {
            return Ok(());
        }
        let path = &self.shared.path;
        // Not verified: this process wrote the file, and the check commits,
        // which a disk that is still full refuses.
        let db = open_database(path, false).map_err(|e| JournalError::Closed {
            path: path.clone(),
            cause: e.to_string(),
        })?;
        *slot = Some(db);
        drop(slot);
        *self
            .shared
            .closed
            .write()
            .unwrap_or_else(PoisonError::into_inner) = None;
        let (stats, oldest_time) = self.reader().stats()?;
        self.stats = stats;
        self.oldest_time = oldest_time;
        tracing::info!("journal {} reopened", path.display());
        Ok(())
    }

    fn try_append_wire(
        &mut self,
        mut events: Vec<pb::Event>,
    ) -> Result<Vec<Encoded>, JournalError> {
        let mut encoded = Vec::with_capacity(events.len());
        let shared = Arc::clone(&self.shared);
        let mut seq = self.stats.last_seq;
        let mut added = 0;
        let txn = self.begin_write()?;
        {
            let mut table = txn
                .open_table(EVENTS)
                .map_err(shared.err("opening events"))?;
            for e in &mut events {
                seq += 1;
                e.sequence = seq;
                e.node.clone_from(&self.node);
                let event = Encoded::encode(e).map_err(shared.decode_err(seq))?;
                table
                    .insert(seq, &event.bytes()[..])
                    .map_err(shared.err("inserting"))?;
                added += event.bytes().len() as u64 + KEY_BYTES;
                encoded.push(event);
            }
            let mut meta = txn.open_table(META).map_err(shared.err("opening meta"))?;
            meta.insert(META_LAST_SEQ, seq)
                .map_err(shared.err("writing meta"))?;
            meta.insert(META_BYTES, self.stats.size_bytes + added)
                .map_err(shared.err("writing meta"))?;
        }
        txn.commit().map_err(shared.err("committing"))?;
        if self.stats.oldest_seq.is_none() {
            self.stats.oldest_seq = Some(events[0].sequence);
            self.oldest_time = events[0].time.and_then(|t| SystemTime::try_from(t).ok());
        }
        self.stats.last_seq = seq;
        self.stats.size_bytes += added;
        Ok(encoded)
    }

    /// Removes the oldest events until the journal fits `max_bytes`, and every
    /// event whose `time` is older than `now - max_age`, in one transaction.
    /// Cheap when nothing is due: no transaction is started.
    pub fn prune(&mut self, now: SystemTime) -> Result<Pruned, JournalError> {
        self.reopen_if_closed()?;
        let pruned = self.try_prune(now);
        if let Err(e) = &pruned {
            self.failed(e);
        }
        pruned
    }

    fn try_prune(&mut self, now: SystemTime) -> Result<Pruned, JournalError> {
        let cutoff = self.retention.max_age.and_then(|age| now.checked_sub(age));
        let over_size = self
            .retention
            .max_bytes
            .is_some_and(|max| self.stats.size_bytes > max);
        let too_old = cutoff
            .zip(self.oldest_time)
            .is_some_and(|(cutoff, oldest)| oldest < cutoff);
        if self.stats.oldest_seq.is_none() || !(over_size || too_old) {
            return Ok(Pruned::default());
        }

        let shared = Arc::clone(&self.shared);
        let max_bytes = self.retention.max_bytes.unwrap_or(u64::MAX);
        let mut pruned = Pruned::default();
        let mut bytes = self.stats.size_bytes;
        let txn = self.begin_write()?;
        let (oldest_seq, oldest_time) = {
            let mut table = txn
                .open_table(EVENTS)
                .map_err(shared.err("opening events"))?;
            loop {
                let Some((size, old)) =
                    table
                        .first()
                        .map_err(shared.err("reading oldest"))?
                        .map(|(_, value)| {
                            let value = value.value();
                            // An event whose time is unreadable cannot show it is young.
                            let old =
                                cutoff.is_some_and(|c| event_time(value).is_none_or(|t| t < c));
                            (value.len() as u64 + KEY_BYTES, old)
                        })
                else {
                    break;
                };
                if bytes > max_bytes {
                    pruned.by_size += 1;
                } else if old {
                    pruned.by_age += 1;
                } else {
                    break;
                }
                bytes = bytes.saturating_sub(size);
                table.pop_first().map_err(shared.err("pruning"))?;
            }
            let first = table.first().map_err(shared.err("reading oldest"))?;
            (
                first.as_ref().map(|(k, _)| k.value()),
                first.and_then(|(_, v)| event_time(v.value())),
            )
        };
        let pruned_events = self.stats.pruned_events + pruned.total();
        {
            let mut meta = txn.open_table(META).map_err(shared.err("opening meta"))?;
            meta.insert(META_BYTES, bytes)
                .map_err(shared.err("writing meta"))?;
            meta.insert(META_PRUNED, pruned_events)
                .map_err(shared.err("writing meta"))?;
        }
        txn.commit().map_err(shared.err("committing"))?;
        self.stats.size_bytes = bytes;
        self.stats.oldest_seq = oldest_seq;
        self.stats.pruned_events = pruned_events;
        self.oldest_time = oldest_time;
        Ok(pruned)
    }

    /// Up to `limit` events with a sequence greater than `seq`, oldest
    /// first, decoded.
    pub fn read_after(&self, seq: u64, limit: usize) -> Result<Vec<pb::Event>, JournalError> {
        self.reader().read_after(seq, limit)
    }
}

/// A read handle that shares the database with its [`Journal`]; reads run on
/// a snapshot and never wait for the writer.
#[derive(Clone)]
pub struct JournalReader {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for JournalReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalReader")
            .field("path", &self.shared.path)
            .finish_non_exhaustive()
    }
}

impl JournalReader {
    /// Up to `limit` events with a sequence greater than `seq`, oldest
    /// first, decoded.
    pub fn read_after(&self, seq: u64, limit: usize) -> Result<Vec<pb::Event>, JournalError> {
        self.read_page(seq, limit)?
            .events
            .iter()
            .map(|e| e.decode().map_err(self.shared.decode_err(e.sequence())))
            .collect()
    }

    /// Like `read_after`, with the journal's bounds from the same snapshot,
    /// so a caller can tell events not yet written from events pruned.
    pub fn read_page(&self, seq: u64, limit: usize) -> Result<Page, JournalError> {
        let shared = &self.shared;
        shared.with_read(|txn| {
            let events = txn
                .open_table(EVENTS)
                .map_err(shared.err("opening events"))?;
            let meta = txn.open_table(META).map_err(shared.err("opening meta"))?;
            let last_seq = meta_get(&meta, META_LAST_SEQ).map_err(shared.err("reading meta"))?;
            let oldest_seq = events
                .first()
                .map_err(shared.err("reading oldest"))?
                .map(|(k, _)| k.value());
            let mut out = Vec::new();
            if let Some(from) = seq.checked_add(1) {
                for entry in events
                    .range(from..)
                    .map_err(shared.err("reading events"))?
                    .take(limit)
                {
                    let (k, v) = entry.map_err(shared.err("reading events"))?;
                    // One copy out of the database page; checked and scanned for
                    // the filter's fields, not decoded.
                    let event = Encoded::new(Bytes::copy_from_slice(v.value()))
                        .map_err(shared.decode_err(k.value()))?;
                    out.push(event);
                }
            }
            Ok(Page {
                events: out,
                oldest_seq,
                last_seq,
            })
        })
    }

    /// The counters of the last commit, and the `time` of the oldest event.
    fn stats(&self) -> Result<(JournalStats, Option<SystemTime>), JournalError> {
        let shared = &self.shared;
        shared.with_read(|txn| {
            let events = txn
                .open_table(EVENTS)
                .map_err(shared.err("opening events"))?;
            let meta = txn.open_table(META).map_err(shared.err("opening meta"))?;
            let first = events.first().map_err(shared.err("reading oldest"))?;
            let stats = JournalStats {
                size_bytes: meta_get(&meta, META_BYTES).map_err(shared.err("reading meta"))?,
                oldest_seq: first.as_ref().map(|(k, _)| k.value()),
                last_seq: meta_get(&meta, META_LAST_SEQ).map_err(shared.err("reading meta"))?,
                pruned_events: meta_get(&meta, META_PRUNED).map_err(shared.err("reading meta"))?,
            };
            Ok((stats, first.and_then(|(_, v)| event_time(v.value()))))
        })
    }

    /// Oldest retained sequence; `None` when the journal is empty.
    pub fn oldest_seq(&self) -> Result<Option<u64>, JournalError> {
        Ok(self.read_page(u64::MAX, 0)?.oldest_seq)
    }

    /// Newest sequence ever assigned; 0 before the first event.
    pub fn last_seq(&self) -> Result<u64, JournalError> {
        Ok(self.read_page(u64::MAX, 0)?.last_seq)
    }
}

#[cfg(test)]
mod tests {
    use std::io::BufRead as _;
    use std::time::Duration;

    use super::*;
    use crate::journal::testing::fork;

    fn batch(from: u32, n: u32, time: SystemTime) -> Vec<Event> {
        (from..from + n).map(|i| fork(i, time)).collect()
    }

    fn all(journal: &Journal) -> Vec<pb::Event> {
        journal.read_after(0, usize::MAX).unwrap()
    }

    fn payload_n(e: &pb::Event) -> u32 {
        match e.payload {
            Some(pb::event::Payload::Fork(ref f)) => f.child_pid,
            ref other => panic!("fork payload expected, got {other:?}"),
        }
    }

    fn assert_contiguous(events: &[pb::Event], first: u64, last: u64) {
        let seqs: Vec<u64> = events.iter().map(|e| e.sequence).collect();
        assert_eq!(seqs, (first..=last).collect::<Vec<_>>());
    }

    #[test]
    fn append_assigns_sequences_and_node_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut j =
            Journal::open(&dir.path().join("j.redb"), "node-1", Retention::default()).unwrap();
        assert_eq!((j.oldest_seq(), j.last_seq(), j.size_bytes()), (None, 0, 0));
        assert!(j.append(Vec::new()).unwrap().is_empty());

        let out = j.append(batch(1, 5, SystemTime::now())).unwrap();
        assert_eq!(
            out.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5]
        );
        assert_eq!((j.oldest_seq(), j.last_seq()), (Some(1), 5));
        assert!(j.size_bytes() > 5 * KEY_BYTES);

        let read = j.read_after(2, 2).unwrap();
        assert_contiguous(&read, 3, 4);
        assert!(read.iter().all(|e| e.node == "node-1"));
        let back = Event::try_from(read[0].clone()).unwrap();
        assert_eq!(back, out[2]);
        assert!(j.read_after(5, 10).unwrap().is_empty());
        assert!(j.read_after(u64::MAX, 10).unwrap().is_empty());
    }

    #[test]
    fn sequences_continue_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/dir/j.redb");
        let now = SystemTime::now();
        let size = {
            let mut j = Journal::open(&path, "n", Retention::default()).unwrap();
            j.append(batch(1, 3, now)).unwrap();
            j.append(batch(4, 2, now)).unwrap();
            j.size_bytes()
        };
        let mut j = Journal::open(&path, "n", Retention::default()).unwrap();
        assert_eq!(
            (j.oldest_seq(), j.last_seq(), j.size_bytes()),
            (Some(1), 5, size)
        );
        let out = j.append(batch(6, 2, now)).unwrap();
        assert_eq!(out.iter().map(|e| e.seq).collect::<Vec<_>>(), [6, 7]);
        let events = all(&j);
        assert_contiguous(&events, 1, 7);
        assert!(events.iter().all(|e| u64::from(payload_n(e)) == e.sequence));
    }

    #[test]
    fn retention_by_size_prunes_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.redb");
        let mut j = Journal::open(&path, "n", Retention::default()).unwrap();
        let now = SystemTime::now();
        j.append(batch(1, 100, now)).unwrap();
        let full = j.size_bytes();
        // Nothing is due without limits.
        assert_eq!(j.prune(now).unwrap(), Pruned::default());

        let max = full / 4;
        j.set_retention(Retention {
            max_bytes: Some(max),
            max_age: None,
        });
        let pruned = j.prune(now).unwrap();
        assert!(pruned.by_size > 0 && pruned.by_age == 0, "{pruned:?}");
        assert!(j.size_bytes() <= max, "{} > {max}", j.size_bytes());
        let oldest = j.oldest_seq().unwrap();
        assert_eq!(oldest, pruned.by_size + 1);
        assert_eq!(j.pruned_events(), pruned.by_size);
        assert_contiguous(&all(&j), oldest, 100);
        // Exactly the oldest were removed: one more would have fitted had it not.
        let entry = all(&j)[0].encode_to_vec().len() as u64 + KEY_BYTES;
        assert!(j.size_bytes() + entry > max);

        drop(j);
        let j = Journal::open(&path, "n", Retention::default()).unwrap();
        assert_eq!(j.oldest_seq(), Some(oldest));
        assert_eq!(j.last_seq(), 100);
        assert_eq!(j.pruned_events(), pruned.by_size);
        let recount: u64 = all(&j)
            .iter()
            .map(|e| e.encode_to_vec().len() as u64 + KEY_BYTES)
            .sum();
        assert_eq!(j.size_bytes(), recount);
    }

    #[test]
    fn retention_by_age_prunes_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(
            &dir.path().join("j.redb"),
            "n",
            Retention {
                max_bytes: None,
                max_age: Some(Duration::from_hours(1)),
            },
        )
        .unwrap();
        let now = SystemTime::now();
        j.append(batch(1, 10, now - Duration::from_hours(2)))
            .unwrap();
        j.append(batch(11, 5, now - Duration::from_mins(30)))
            .unwrap();
        j.append(batch(16, 5, now)).unwrap();

        // An hour earlier nothing was older than an hour before that.
        assert_eq!(j.prune(now - Duration::from_mins(90)).unwrap().total(), 0);
        let pruned = j.prune(now).unwrap();
        assert_eq!(
            pruned,
            Pruned {
                by_size: 0,
                by_age: 10
            }
        );
        assert_eq!(j.oldest_seq(), Some(11));
        assert_contiguous(&all(&j), 11, 20);
        // Nothing more is due now.
        assert_eq!(j.prune(now).unwrap().total(), 0);
        // Two hours later everything is.
        assert_eq!(j.prune(now + Duration::from_hours(2)).unwrap().by_age, 10);
        assert_eq!(
            (j.oldest_seq(), j.last_seq(), j.size_bytes()),
            (None, 20, 0)
        );
        assert_eq!(j.pruned_events(), 20);
    }

    #[test]
    fn a_journal_pruned_to_empty_keeps_its_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.redb");
        let now = SystemTime::now();
        {
            let mut j = Journal::open(
                &path,
                "n",
                Retention {
                    max_bytes: Some(1),
                    max_age: None,
                },
            )
            .unwrap();
            j.append(batch(1, 4, now)).unwrap();
            assert_eq!(j.prune(now).unwrap().by_size, 4);
            let page = j.reader().read_page(0, 10).unwrap();
            assert_eq!(
                (page.events.len(), page.oldest_seq, page.last_seq),
                (0, None, 4)
            );
        }
        let mut j = Journal::open(&path, "n", Retention::default()).unwrap();
        assert_eq!((j.oldest_seq(), j.last_seq()), (None, 4));
        assert_eq!(j.append(batch(5, 1, now)).unwrap()[0].seq, 5);
        assert_eq!(j.oldest_seq(), Some(5));
    }

    #[test]
    fn a_second_writer_on_the_same_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.redb");
        let _first = Journal::open(&path, "n", Retention::default()).unwrap();
        let err = Journal::open(&path, "n", Retention::default()).unwrap_err();
        assert!(err.to_string().contains("j.redb"), "{err}");
    }

    const CRASH_CHILD: &str = "VIGIL_TEST_JOURNAL_CRASH_CHILD";

    /// Appends forever, reporting each committed batch on stdout.
    fn crash_child(path: &Path) {
        let mut j = Journal::open(path, "n", Retention::default()).unwrap();
        let mut n = 0;
        loop {
            let events = batch(n + 1, 37, SystemTime::now());
            n += 37;
            let out = j.append(events).unwrap();
            println!("committed {}", out.last().unwrap().seq);
        }
    }

    #[test]
    fn survives_sigkill_while_appending() {
        if let Some(path) = std::env::var_os(CRASH_CHILD) {
            crash_child(Path::new(&path));
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.redb");
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "journal::store::tests::survives_sigkill_while_appending",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CRASH_CHILD, &path)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut committed = 0;
        for line in stdout.lines() {
            if let Some(n) = line.unwrap().strip_prefix("committed ") {
                committed = n.parse().unwrap();
                if committed >= 3000 {
                    break;
                }
            }
        }
        assert!(committed >= 3000, "child stopped early after {committed}");
        // SIGKILL, while the child is in the middle of its next commits.
        child.kill().unwrap();
        child.wait().unwrap();

        let mut j = Journal::open(&path, "n", Retention::default()).unwrap();
        let last = j.last_seq();
        assert!(
            last >= committed,
            "reported {committed} committed, journal has {last}"
        );
        let events = all(&j);
        assert_contiguous(&events, 1, last);
        assert!(events.iter().all(|e| u64::from(payload_n(e)) == e.sequence));
        let recount: u64 = events
            .iter()
            .map(|e| e.encode_to_vec().len() as u64 + KEY_BYTES)
            .sum();
        assert_eq!(j.size_bytes(), recount);
        let next = j.append(batch(0, 1, SystemTime::now())).unwrap();
        assert_eq!(next[0].seq, last + 1);
    }
}
