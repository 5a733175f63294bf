//! `vigil journal check` and `vigil journal repair`: what to do with a
//! journal file the daemon cannot open (damaged disk, truncated copy).
//!
//! [`check`] opens the file read-only, walks every entry and compares the
//! metadata with what it found; it changes nothing. [`repair`] never works
//! on the only copy: it moves the damaged file aside as
//! `<name>.corrupt-<unix seconds>`, lets redb recover a copy of it (redb's
//! own repair: the last committed state, checked by checksums), and copies
//! every entry it can read, under its sequence, into a fresh journal at the
//! original path. The sequence counter continues after the newest sequence
//! either file knew of, so a resuming client sees a `gap` for what could not
//! be recovered rather than reused sequence numbers.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use redb::{Database, ReadableDatabase as _, ReadableTable as _};

use super::encoded::Encoded;
use super::store::{EVENTS, KEY_BYTES, META, META_BYTES, META_LAST_SEQ, META_PRUNED, survive_redb};

#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    #[error("journal {path}: no such file")]
    Missing { path: PathBuf },
    #[error("journal {path}: in use by another process (stop the daemon first)")]
    Locked { path: PathBuf },
    #[error("journal {path}: {op}: {source}")]
    Database {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: Box<redb::Error>,
    },
    #[error("journal {path}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "journal {path}: redb cannot recover the file ({source}); it is left as it was: move it away to start a new journal, whose sequences start again at 1"
    )]
    Unrecoverable {
        path: PathBuf,
        #[source]
        source: Box<redb::Error>,
    },
}

/// What [`check`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Entries read.
    pub events: u64,
    pub oldest_seq: Option<u64>,
    pub newest_seq: Option<u64>,
    /// The metadata: newest sequence ever assigned, bytes, events pruned.
    pub last_seq: u64,
    pub bytes: u64,
    pub pruned: u64,
    /// Entries that are not well-formed events, by sequence.
    pub undecodable: Vec<u64>,
    /// Disagreements between the metadata and the entries.
    pub problems: Vec<String>,
}

impl Report {
    /// Whether the file is sound: every entry decodes and the metadata
    /// agrees with them.
    #[must_use]
    pub fn is_ok(&self) -> bool {
        self.undecodable.is_empty() && self.problems.is_empty()
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let range = match (self.oldest_seq, self.newest_seq) {
            (Some(a), Some(b)) => format!("sequences {a}..={b}"),
            _ => "no events".to_owned(),
        };
        write!(
            f,
            "{} events ({range}), newest sequence assigned {}, {} bytes, {} pruned",
            self.events, self.last_seq, self.bytes, self.pruned
        )?;
        if !self.undecodable.is_empty() {
            write!(f, "; {} entries do not decode", self.undecodable.len())?;
        }
        for p in &self.problems {
            write!(f, "; {p}")?;
        }
        Ok(())
    }
}

/// What [`repair`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Repaired {
    /// Where the damaged file now is.
    pub kept: PathBuf,
    /// Events copied into the fresh journal.
    pub recovered: u64,
    /// Entries redb could read that were not well-formed events (not copied).
    pub dropped: u64,
    /// The fresh journal's counters.
    pub report: Report,
}

fn db_err<E: Into<redb::Error>>(path: &Path, op: &'static str) -> impl FnOnce(E) -> RepairError {
    let path = path.to_owned();
    move |e| RepairError::Database {
        path,
        op,
        source: Box::new(e.into()),
    }
}

fn io_err(path: &Path, op: &'static str) -> impl FnOnce(std::io::Error) -> RepairError {
    let path = path.to_owned();
    move |source| RepairError::Io { path, op, source }
}

fn meta_get(
    table: &impl redb::ReadableTable<&'static str, u64>,
    key: &str,
) -> Result<u64, redb::StorageError> {
    Ok(table.get(key)?.map_or(0, |v| v.value()))
}

/// Why a guarded read stopped.
enum Stop {
    Storage(redb::StorageError),
    Copy(RepairError),
    Panic(String),
}

impl From<redb::StorageError> for Stop {
    fn from(e: redb::StorageError) -> Self {
        Self::Storage(e)
    }
}

impl From<redb::TableError> for Stop {
    fn from(e: redb::TableError) -> Self {
        Self::Storage(match e {
            redb::TableError::Storage(e) => e,
            other => redb::StorageError::Corrupted(other.to_string()),
        })
    }
}

impl From<RepairError> for Stop {
    fn from(e: RepairError) -> Self {
        Self::Copy(e)
    }
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Storage(e) => e.fmt(f),
            Self::Copy(e) => e.fmt(f),
            Self::Panic(m) => write!(f, "redb failed on a damaged page: {m}"),
        }
    }
}

/// Runs a read of possibly damaged pages, a panic in redb becoming an error.
fn guarded(read: impl FnOnce() -> Result<(), Stop>) -> Result<(), Stop> {
    survive_redb(read).unwrap_or_else(|panic| Err(Stop::Panic(panic)))
}

/// Reads every entry of an open database into a report, handing each
/// well-formed one to `each`.
fn walk(
    path: &Path,
    txn: &redb::ReadTransaction,
    mut each: impl FnMut(u64, &[u8]) -> Result<(), RepairError>,
) -> Result<Report, RepairError> {
    // The tables and the metadata first: without the newest sequence
    // assigned, a repaired journal could hand out sequences again.
    let mut opened = None;
    let found = guarded(|| {
        let events = txn.open_table(EVENTS)?;
        let meta = txn.open_table(META)?;
        let report = Report {
            last_seq: meta_get(&meta, META_LAST_SEQ)?,
            bytes: meta_get(&meta, META_BYTES)?,
            pruned: meta_get(&meta, META_PRUNED)?,
            ..Report::default()
        };
        opened = Some((events, report));
        Ok(())
    });
    let (events, mut report) = match (found, opened) {
        (Ok(()), Some(opened)) => opened,
        (Err(Stop::Copy(e)), _) => return Err(e),
        (Err(e), _) => {
            return Err(RepairError::Database {
                path: path.to_owned(),
                op: "reading its tables",
                source: Box::new(redb::Error::Corrupted(e.to_string())),
            });
        }
        (Ok(()), None) => unreachable!("the guarded read ran"),
    };
    let mut bytes = 0;
    let mut take = |report: &mut Report, seq: u64, value: &[u8]| match Encoded::new(
        Bytes::copy_from_slice(value),
    ) {
        Ok(e) if e.sequence() == seq => {
            report.events += 1;
            report.oldest_seq = Some(report.oldest_seq.map_or(seq, |o| o.min(seq)));
            report.newest_seq = Some(report.newest_seq.map_or(seq, |n| n.max(seq)));
            bytes += value.len() as u64 + KEY_BYTES;
            each(seq, value)
        }
        Ok(_) | Err(_) => {
            report.undecodable.push(seq);
            Ok(())
        }
    };
    // Forwards until the end or a page that cannot be read; then, past
    // such a page, backwards from the newest entry to it, so the entries
    // on both sides of a damaged part are found.
    let mut forward_end = None;
    let mut damaged = false;
    // redb reads pages it was not told to verify as they are, and panics on
    // one whose structure is broken; for a walk over a damaged file that
    // is one more way for a page to be unreadable.
    let forward = guarded(|| {
        for entry in events.iter()? {
            let (k, v) = entry?;
            take(&mut report, k.value(), v.value())?;
            forward_end = Some(k.value());
        }
        Ok(())
    });
    if let Err(Stop::Copy(e)) = forward {
        return Err(e);
    } else if let Err(e) = forward {
        report.problems.push(format!(
            "entries after {} cannot be read: {e}",
            forward_end.map_or_else(|| "the start".to_owned(), |s| s.to_string())
        ));
        damaged = true;
    }
    if damaged {
        let from = forward_end.map_or(0, |s| s + 1);
        // Whatever stops the backward walk was reported by the forward one.
        let backward = guarded(|| {
            for entry in events.range(from..)?.rev() {
                let (k, v) = entry?;
                take(&mut report, k.value(), v.value())?;
            }
            Ok(())
        });
        if let Err(Stop::Copy(e)) = backward {
            return Err(e);
        }
    }
    report.undecodable.sort_unstable();
    if let Some(newest) = report.newest_seq
        && newest > report.last_seq
    {
        report.problems.push(format!(
            "entry {newest} is newer than the newest sequence assigned ({})",
            report.last_seq
        ));
    }
    if !damaged && report.undecodable.is_empty() && bytes != report.bytes {
        report.problems.push(format!(
            "the entries hold {bytes} bytes, the metadata says {}",
            report.bytes
        ));
    }
    Ok(report)
}

/// Opens a copy of `path` at `copy`: verified by redb's integrity check
/// when it passes, else as redb's own recovery leaves it (the problem is
/// returned), so the entries it can still read are found.
fn open_copy(
    path: &Path,
    copy: &Path,
    report_as: &Path,
) -> Result<(Database, Option<String>), RepairError> {
    std::fs::copy(path, copy).map_err(io_err(copy, "copying the journal"))?;
    let mut verified = None;
    let checked = guarded(|| {
        verified = Some(
            redb::Builder::new()
                .set_check_integrity_on_open(true)
                .create(copy),
        );
        Ok(())
    });
    let why = match (checked, verified) {
        (Ok(()), Some(Ok(db))) => return Ok((db, None)),
        (Ok(()), Some(Err(e))) => e.to_string(),
        (Err(e), _) => e.to_string(),
        (Ok(()), None) => unreachable!("the guarded open ran"),
    };
    // A file cut short is refused outright (its header records a longer
    // layout): the copy is extended with zeros, which read as damaged
    // pages, so the entries before the cut are found.
    let len = std::fs::metadata(path)
        .map_err(io_err(path, "reading the journal's length"))?
        .len();
    let mut first = None;
    for extend in [1, 2, 4, 8, 16] {
        std::fs::copy(path, copy).map_err(io_err(copy, "copying the journal"))?;
        if extend > 1 {
            std::fs::OpenOptions::new()
                .write(true)
                .open(copy)
                .and_then(|f| f.set_len(len * extend))
                .map_err(io_err(copy, "extending the copy"))?;
        }
        let mut opened = None;
        let attempt = guarded(|| {
            opened = Some(Database::open(copy));
            Ok(())
        });
        let error = match (attempt, opened) {
            (Ok(()), Some(Ok(db))) => return Ok((db, Some(why))),
            (Ok(()), Some(Err(e))) => redb::Error::from(e),
            (Err(e), _) => redb::Error::Corrupted(e.to_string()),
            (Ok(()), None) => unreachable!("the guarded open ran"),
        };
        first.get_or_insert(error);
    }
    Err(RepairError::Unrecoverable {
        path: report_as.to_owned(),
        source: Box::new(first.unwrap_or_else(|| redb::Error::Corrupted(why))),
    })
}

/// Checks the journal at `path`: redb's integrity check, then every entry
/// and the metadata. Works on a copy next to it (`<path>.check`), so it
/// changes nothing and also reads a file a crash left for redb to recover.
pub fn check(path: &Path) -> Result<Report, RepairError> {
    if !path.exists() {
        return Err(RepairError::Missing {
            path: path.to_owned(),
        });
    }
    let copy = PathBuf::from(format!("{}.check", path.display()));
    let opened = open_copy(path, &copy, path).map_err(|e| match e {
        // Nothing was moved: the file is only unreadable.
        RepairError::Unrecoverable { path, source, .. } => RepairError::Database {
            path,
            op: "reading (redb cannot recover it)",
            source,
        },
        other => other,
    });
    let result = opened.and_then(|(db, why)| {
        let report = db
            .begin_read()
            .map_err(db_err(path, "beginning a read"))
            .and_then(|txn| walk(path, &txn, |_, _| Ok(())));
        discard(db);
        let mut report = report?;
        if let Some(why) = why {
            report
                .problems
                .insert(0, format!("redb's integrity check fails: {why}"));
        }
        Ok(report)
    });
    let _ = std::fs::remove_file(&copy);
    result
}

/// Closes a database opened on a copy that is thrown away. redb's close
/// walks its trees to record the allocator state, which on a damaged copy
/// fails or panics; neither matters for a file about to be deleted.
fn discard(db: Database) {
    let _ = survive_redb(|| db.close());
}

/// `<path>.corrupt-<unix seconds>`, or with a counter when that is taken.
fn aside(path: &Path) -> PathBuf {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let base = format!("{}.corrupt-{secs}", path.display());
    let mut candidate = PathBuf::from(&base);
    let mut n = 1;
    while candidate.exists() {
        candidate = PathBuf::from(format!("{base}.{n}"));
        n += 1;
    }
    candidate
}

/// Moves the journal at `path` aside and writes a fresh one in its place
/// with every event that can be read from it. The daemon must not be
/// running (redb's lock refuses a second writer, and repair opens a copy).
pub fn repair(path: &Path) -> Result<Repaired, RepairError> {
    if !path.exists() {
        return Err(RepairError::Missing {
            path: path.to_owned(),
        });
    }
    // A running daemon holds the file's lock: refuse before moving anything.
    // Read-only, so a damaged file is not touched by redb's repair; redb
    // takes the lock before it reads a page, so a panic on a damaged one
    // means the file is not in use.
    if let Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen)) =
        survive_redb(|| redb::Builder::new().open_read_only(path).map(drop))
    {
        return Err(RepairError::Locked {
            path: path.to_owned(),
        });
    }
    let kept = aside(path);
    std::fs::rename(path, &kept).map_err(io_err(path, "moving the damaged file aside"))?;
    let salvage = PathBuf::from(format!("{}.salvage", kept.display()));
    let result = open_copy(&kept, &salvage, path).and_then(|(old, _)| {
        let copied = copy_out(path, &kept, &old);
        discard(old);
        copied
    });
    let _ = std::fs::remove_file(&salvage);
    if result.is_err() {
        // Nothing usable was written: the file goes back where it was, so
        // the daemon keeps refusing it rather than start a journal that
        // would hand out its sequences again.
        let _ = std::fs::remove_file(path);
        std::fs::rename(&kept, path).map_err(io_err(&kept, "moving the file back"))?;
    }
    result
}

fn copy_out(path: &Path, kept: &Path, old: &Database) -> Result<Repaired, RepairError> {
    let read = old.begin_read().map_err(db_err(path, "beginning a read"))?;
    let fresh = Database::create(path).map_err(db_err(path, "creating"))?;
    let write = fresh
        .begin_write()
        .map_err(db_err(path, "beginning a write"))?;
    let found = {
        let mut events = write
            .open_table(EVENTS)
            .map_err(db_err(path, "opening events"))?;
        walk(path, &read, |seq, value| {
            events
                .insert(seq, value)
                .map(drop)
                .map_err(db_err(path, "inserting"))
        })?
    };
    let bytes_copied = {
        let events = write
            .open_table(EVENTS)
            .map_err(db_err(path, "opening events"))?;
        let mut total = 0;
        for entry in events.iter().map_err(db_err(path, "reading events"))? {
            let (_, v) = entry.map_err(db_err(path, "reading events"))?;
            total += v.value().len() as u64 + KEY_BYTES;
        }
        total
    };
    {
        let mut meta = write
            .open_table(META)
            .map_err(db_err(path, "opening meta"))?;
        let last = found.last_seq.max(found.newest_seq.unwrap_or(0));
        meta.insert(META_LAST_SEQ, last)
            .map_err(db_err(path, "writing meta"))?;
        meta.insert(META_BYTES, bytes_copied)
            .map_err(db_err(path, "writing meta"))?;
        meta.insert(META_PRUNED, found.pruned)
            .map_err(db_err(path, "writing meta"))?;
    }
    write.commit().map_err(db_err(path, "committing"))?;
    fresh.close().map_err(|e| RepairError::Database {
        path: path.to_owned(),
        op: "closing",
        source: Box::new(e.into()),
    })?;
    let report = check(path)?;
    Ok(Repaired {
        kept: kept.to_owned(),
        recovered: found.events,
        dropped: found.undecodable.len() as u64,
        report,
    })
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::journal::store::{Journal, JournalError, Retention};
    use crate::journal::testing::fork;

    /// A journal of `n` events, closed.
    fn journal(path: &Path, n: u32) {
        let mut j = Journal::open(path, "n", Retention::default()).unwrap();
        let now = SystemTime::now();
        for chunk in (1..=n).collect::<Vec<_>>().chunks(50) {
            j.append(chunk.iter().map(|&i| fork(i, now)).collect())
                .unwrap();
        }
    }

    #[test]
    fn a_sound_journal_checks_and_repairs_to_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.redb");
        journal(&path, 500);
        let report = check(&path).unwrap();
        assert!(report.is_ok(), "{report}");
        assert_eq!(
            (
                report.events,
                report.oldest_seq,
                report.newest_seq,
                report.last_seq
            ),
            (500, Some(1), Some(500), 500)
        );

        let done = repair(&path).unwrap();
        assert_eq!((done.recovered, done.dropped), (500, 0));
        assert_eq!(done.report, report);
        assert!(done.kept.exists());
        let name = done
            .kept
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(name.starts_with("journal.redb.corrupt-"), "{name}");
        let mut j = Journal::open(&path, "n", Retention::default()).unwrap();
        assert_eq!(j.read_after(0, usize::MAX).unwrap().len(), 500);
        let next = j.append(vec![fork(0, SystemTime::now())]).unwrap();
        assert_eq!(next[0].seq, 501);
    }

    #[test]
    fn a_missing_journal_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.redb");
        let e = check(&path).unwrap_err().to_string();
        assert!(e.contains("nope.redb") && e.contains("no such file"), "{e}");
        assert!(repair(&path).is_err());
    }

    #[test]
    fn a_journal_in_use_is_not_repaired() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.redb");
        let _open = Journal::open(&path, "n", Retention::default()).unwrap();
        let e = repair(&path).unwrap_err().to_string();
        assert!(e.contains("in use"), "{e}");
        assert!(path.exists());
    }

    /// Cut or overwritten at any of these places, the daemon refuses the
    /// file with an error naming it and the commands, check does not pass
    /// it, and repair keeps the damaged file and writes a journal that
    /// opens, holds only events that were in the original, and continues
    /// the sequence after them.
    #[test]
    fn a_damaged_journal_is_refused_by_name_and_repaired_without_reusing_sequences() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.redb");
        journal(&good, 2000);
        let original = std::fs::read(&good).unwrap();
        let len = original.len();
        let damages: Vec<(&str, Vec<u8>)> = vec![
            ("truncated to a third", original[..len / 3].to_vec()),
            ("truncated to the header", original[..512.min(len)].to_vec()),
            ("header overwritten", {
                let mut b = original.clone();
                b[..64].fill(0xa5);
                b
            }),
            ("middle overwritten", {
                let mut b = original.clone();
                b[len / 2..len / 2 + 8192].fill(0x5a);
                b
            }),
        ];
        for (what, bytes) in damages {
            damaged_case(dir.path(), what, &bytes, 2000);
        }
    }

    /// `bytes` written as the journal in `dir`: the daemon refuses it with
    /// an error naming it and the commands (or, when redb recovers it by
    /// itself, every one of the `n` events is there), check does not pass a
    /// refused file, and repair either keeps the damaged file and writes a
    /// journal that opens, holds only events that were in the original and
    /// continues the sequence after them, or says why not by name and leaves
    /// the file as it was. Nothing panics.
    fn damaged_case(dir: &Path, what: &str, bytes: &[u8], n: u32) {
        let path = dir.join("journal.redb");
        std::fs::write(&path, bytes).unwrap();
        let opened = Journal::open(&path, "n", Retention::default());
        let refused = match opened {
            Ok(j) => {
                // redb recovered the last commit by itself: the file
                // was whole where it mattered; everything must be there.
                let events = j.read_after(0, usize::MAX);
                drop(j);
                assert!(
                    events
                        .as_ref()
                        .is_ok_and(|e| e.len() as u64 == u64::from(n)),
                    "{what}: opened, but {:?} events",
                    events.map(|e| e.len())
                );
                false
            }
            Err(e) => {
                let msg = e.to_string();
                assert!(matches!(e, JournalError::Damaged { .. }), "{what}: {msg}");
                assert!(msg.contains("journal.redb"), "{what}: {msg}");
                assert!(msg.contains("vigil journal repair"), "{what}: {msg}");
                true
            }
        };
        if refused {
            std::fs::write(&path, bytes).unwrap();
            assert!(
                !check(&path).is_ok_and(|r| r.is_ok()),
                "{what}: check passed a file the daemon refuses"
            );
        }
        std::fs::write(&path, bytes).unwrap();
        match repair(&path) {
            Ok(done) => {
                assert_eq!(std::fs::read(&done.kept).unwrap(), bytes, "{what}");
                let mut j = Journal::open(&path, "n", Retention::default())
                    .unwrap_or_else(|e| panic!("{what}: repaired journal: {e}"));
                let events = j.read_after(0, usize::MAX).unwrap();
                assert_eq!(events.len() as u64, done.recovered, "{what}");
                for e in &events {
                    assert!(
                        (1..=u64::from(n)).contains(&e.sequence),
                        "{what}: {}",
                        e.sequence
                    );
                }
                let newest = events.last().map_or(0, |e| e.sequence);
                let next = j.append(vec![fork(0, SystemTime::now())]).unwrap();
                assert!(
                    next[0].seq > newest,
                    "{what}: {} after {newest}",
                    next[0].seq
                );
                drop(j);
                std::fs::remove_file(&done.kept).unwrap();
            }
            Err(e @ (RepairError::Unrecoverable { .. } | RepairError::Database { .. })) => {
                let msg = e.to_string();
                assert_eq!(std::fs::read(&path).unwrap(), bytes, "{what}: {msg}");
                assert!(msg.contains("journal.redb"), "{what}: {msg}");
                let left: Vec<_> = std::fs::read_dir(dir)
                    .unwrap()
                    .map(|e| e.unwrap().file_name())
                    .filter(|n| n.to_string_lossy().starts_with("journal.redb."))
                    .collect();
                assert!(left.is_empty(), "{what}: left behind {left:?}");
            }
            Err(e) => panic!("{what}: {e}"),
        }
        let _ = std::fs::remove_file(&path);
    }

    /// Every page of a small journal overwritten in turn, with patterns that
    /// read as different broken structures: some of them make redb panic
    /// where it expects a page type, which must come out as a damaged file.
    #[test]
    fn any_one_page_overwritten_is_refused_or_repaired_without_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.redb");
        journal(&good, 20);
        let original = std::fs::read(&good).unwrap();
        let page = 4096;
        for p in 0..original.len() / page {
            for fill in [0x5a_u8, 0x00, 0xff] {
                let mut bytes = original.clone();
                bytes[p * page..(p + 1) * page].fill(fill);
                damaged_case(
                    dir.path(),
                    &format!("page {p} filled with {fill:#x}"),
                    &bytes,
                    20,
                );
            }
        }
    }
}
