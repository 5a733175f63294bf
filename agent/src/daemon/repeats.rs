//! Repeated file opens. The kernel counts an open identical to one the same
//! process reported less than `daemon.open_repeat_ms` ago (same path as
//! passed, base directory, flags and result) in its `OPEN_SEEN` map instead
//! of reporting it. This turns those counts into `repeats` on the next
//! report of the open, and into `repeat_summary` reports for counts that no
//! report would carry: the process stopped repeating the open, or exited.
//!
//! The kernel's count per key only grows, so a report carries the
//! difference to what was already accounted for, and nothing is counted
//! twice whichever of the kernel and the sweep sees a count first.
//!
//! The daemon's keys are bounded by the kernel's: a key the kernel's LRU
//! evicted counts nothing more, so once more keys are tracked than the
//! kernel map holds, the sweep forgets those the kernel no longer has
//! ([`Repeats::sweep`]). A long-lived process opening ever new files does
//! not grow the daemon.

use std::{
    os::fd::AsFd as _,
    sync::Arc,
    time::{Duration, Instant},
};

use aya::maps::{HashMap, IterableMap as _, MapData, MapError};
// Keyed by what the kernel reports; foldhash is seeded per process.
use foldhash::{HashMap as StdHashMap, HashMapExt as _};
use vigil_common::{OPEN_SEEN_ENTRIES, OpenKey, OpenRecord, OpenSeen};

use crate::event::{Event, FileOpen, Identity, Payload, Process};
use crate::sensors::batch;

/// Daemon-side state of one kernel key.
struct Known {
    /// Kernel count already carried by reports.
    accounted: u64,
    /// When the last report was read: the kernel counts repeats into the key
    /// until one window after it wrote that report, which was earlier.
    reported: Instant,
    /// The last report, kept until the key is swept: the template of a
    /// summary. Boxed: a process opening thousands of files has as many
    /// keys, and the table grows (and is copied) by its entries' size.
    last: Option<Box<Template>>,
}

/// A report as a summary copies it: its open, and who made it. The second
/// is shared by consecutive reports of a process while it stays the same,
/// so a process opening thousands of files keeps one copy of it, not one
/// per file.
struct Template {
    open: FileOpen,
    by: Arc<By>,
}

#[derive(PartialEq)]
struct By {
    identity: Identity,
    process: Option<Process>,
}

impl Template {
    fn event(self) -> Event {
        Event {
            seq: 0,
            time: std::time::SystemTime::now(),
            // Made by the daemon, not read from the kernel.
            kernel_ts_ns: 0,
            identity: self.by.identity.clone(),
            process: self.by.process.clone(),
            payload: Payload::FileOpen(self.open),
        }
    }
}

/// Keys to look up from which the whole kernel map is read in a few calls
/// ([`batch::lookup_all`]) instead of one call per key: reading all of its
/// entries costs about as much as this many single lookups.
const BATCH_FROM: usize = 256;

/// The kernel's counters, as the lookups of a sweep or an exit read them.
enum Counts {
    /// One lookup per key.
    Each,
    /// The whole map, read at once.
    All(StdHashMap<OpenKey, OpenSeen>),
}

impl Counts {
    /// Reads the whole map when `wanted` keys are to be looked up, if the
    /// kernel allows it.
    fn read(map: &HashMap<MapData, OpenKey, OpenSeen>, wanted: usize) -> Self {
        if wanted < BATCH_FROM {
            return Self::Each;
        }
        match batch::lookup_all(map.map().fd().as_fd()) {
            Ok(all) => Self::All(all.into_iter().collect()),
            Err(e) => {
                tracing::debug!("reading repeat counters one at a time: {e}");
                Self::Each
            }
        }
    }

    /// The key's counter: `Ok(None)` when the kernel has no such key,
    /// `Err(())` when the lookup failed otherwise.
    fn get(
        &self,
        map: &HashMap<MapData, OpenKey, OpenSeen>,
        key: &OpenKey,
    ) -> Result<Option<OpenSeen>, ()> {
        match self {
            Self::All(all) => Ok(all.get(key).copied()),
            Self::Each => match map.get(key, 0) {
                Ok(seen) => Ok(Some(seen)),
                Err(MapError::KeyNotFound) => Ok(None),
                Err(_) => Err(()),
            },
        }
    }
}

pub struct Repeats {
    /// `None` when the kernel counts nothing (`open_repeat_ms = 0`).
    map: Option<HashMap<MapData, OpenKey, OpenSeen>>,
    window: Duration,
    keys: StdHashMap<OpenKey, Known>,
    by_tgid: StdHashMap<u32, Vec<OpenKey>>,
    /// Who made each process's latest report (see [`Template`]).
    by: StdHashMap<u32, Arc<By>>,
    /// Processes with keys that were gone at the last sweep.
    gone: std::collections::HashSet<u32>,
    /// Tracked keys above which the sweep forgets the keys the kernel no
    /// longer has (see [`Repeats::sweep`]).
    prune_above: usize,
    /// Keys tracked at the previous sweep, and whether the sweep pruned
    /// since the count last changed.
    last_len: usize,
    pruned_quiet: bool,
}

/// Tracked keys from which the sweep checks them against the kernel map:
/// its capacity, with room for the keys reported since its last sweep.
pub const PRUNE_ABOVE: usize = OPEN_SEEN_ENTRIES as usize + OPEN_SEEN_ENTRIES as usize / 4;

/// The kernel key of an open record.
#[must_use]
pub fn key_of(r: &OpenRecord) -> OpenKey {
    OpenKey {
        cgroup_id: r.header.cgroup_id,
        tgid: r.header.tgid,
        flags: r.flags,
        result: if r.ret >= 0 { 0 } else { r.ret as i32 },
        path_len: u32::from(r.path_len),
        base_mnt: r.base_mnt,
        base_dentry: r.base_dentry,
        path_hash: r.path_hash,
    }
}

impl Repeats {
    /// Tracks the kernel's counters in `map`; `window` is the configured
    /// `open_repeat_ms` (zero: nothing is counted, nothing tracked).
    #[must_use]
    pub fn new(map: Option<HashMap<MapData, OpenKey, OpenSeen>>, window: Duration) -> Self {
        Self {
            map: map.filter(|_| !window.is_zero()),
            window,
            keys: StdHashMap::new(),
            by_tgid: StdHashMap::new(),
            by: StdHashMap::new(),
            gone: std::collections::HashSet::new(),
            prune_above: PRUNE_ABOVE,
            last_len: 0,
            pruned_quiet: false,
        }
    }

    /// Puts on a report (`event`, from `record`) the repeats counted since
    /// the previous report of the same open, and remembers it.
    pub fn on_report(&mut self, record: &OpenRecord, event: &mut Event) {
        if self.map.is_none() {
            return;
        }
        let key = key_of(record);
        let known = self.keys.entry(key).or_insert_with(|| {
            self.by_tgid.entry(key.tgid).or_default().push(key);
            Known {
                accounted: 0,
                reported: Instant::now(),
                last: None,
            }
        });
        let delta = new_repeats(record.repeats, known.accounted);
        known.accounted = record.repeats;
        known.reported = Instant::now();
        let Payload::FileOpen(open) = &mut event.payload else {
            return;
        };
        open.repeats = delta;
        let same = |b: &By| b.identity == event.identity && b.process == event.process;
        let by = match self.by.get(&key.tgid) {
            Some(b) if same(b) => Arc::clone(b),
            _ => {
                let b = Arc::new(By {
                    identity: event.identity.clone(),
                    process: event.process.clone(),
                });
                self.by.insert(key.tgid, Arc::clone(&b));
                b
            }
        };
        known.last = Some(Box::new(Template {
            open: open.clone(),
            by,
        }));
    }

    /// Summaries of the repeats counted after reports whose window has
    /// passed (each report is swept once: after its window the kernel
    /// reports the next identical open instead of counting it). Processes
    /// that are gone without an exit record (it was lost) are finished here,
    /// so their keys do not stay forever.
    pub fn sweep(&mut self) -> Vec<Event> {
        if self.map.is_none() {
            return Vec::new();
        }
        // Gone at two sweeps in a row: every record it wrote has been read.
        let gone: std::collections::HashSet<u32> = self
            .by_tgid
            .keys()
            .copied()
            .filter(|tgid| !std::path::Path::new(&format!("/proc/{tgid}")).exists())
            .collect();
        let finished: Vec<u32> = gone.intersection(&self.gone).copied().collect();
        self.gone = gone;
        let mut out: Vec<Event> = finished.into_iter().flat_map(|t| self.on_exit(t)).collect();
        let Some(map) = &self.map else {
            return out;
        };
        // Also once when reports stop with more keys than the kernel map
        // holds: the doubled threshold may never be reached again, and the
        // keys the kernel evicted would stay forever.
        let len = self.keys.len();
        let quiet = len == self.last_len;
        if !quiet {
            self.pruned_quiet = false;
        }
        let settle = quiet && !self.pruned_quiet && len > OPEN_SEEN_ENTRIES as usize;
        let prune_now = len > self.prune_above || settle;
        let now = Instant::now();
        let due: Vec<OpenKey> = self
            .keys
            .iter()
            .filter(|(_, k)| k.last.is_some() && now.duration_since(k.reported) >= self.window)
            .map(|(key, _)| *key)
            .collect();
        let counts = Counts::read(map, due.len() + if prune_now { len } else { 0 });
        if prune_now {
            // Unsure: keep the key.
            let pruned = prune(&mut self.keys, &mut self.by_tgid, |key| {
                counts.get(map, key).ok().map(|seen| seen.is_some())
            });
            self.by.retain(|tgid, _| self.by_tgid.contains_key(tgid));
            tracing::debug!(
                pruned,
                tracked = self.keys.len(),
                "repeat keys the kernel evicted forgotten"
            );
            // Twice what is left: if most keys are still in the kernel map
            // (more opens per sweep than it holds), the next check waits
            // until as many new keys came, so the checks stay linear.
            self.prune_above = PRUNE_ABOVE.max(2 * self.keys.len());
            self.pruned_quiet = quiet;
        }
        self.last_len = self.keys.len();
        for key in &due {
            if let Some(known) = self.keys.get_mut(key)
                && let Some(last) = known.last.take()
                && let Some(e) = summary(counts.get(map, key), known, *last)
            {
                out.push(e);
            }
        }
        out
    }

    /// The process exited: summaries of what its opens still count; its
    /// keys are forgotten here and in the kernel.
    pub fn on_exit(&mut self, tgid: u32) -> Vec<Event> {
        self.by.remove(&tgid);
        let Some(keys) = self.by_tgid.remove(&tgid) else {
            return Vec::new();
        };
        let Some(map) = &mut self.map else {
            for key in &keys {
                self.keys.remove(key);
            }
            return Vec::new();
        };
        let counts = Counts::read(map, keys.len());
        let mut out = Vec::new();
        for key in &keys {
            let Some(mut known) = self.keys.remove(key) else {
                continue;
            };
            if let Some(last) = known.last.take()
                && let Some(e) = summary(counts.get(map, key), &mut known, *last)
            {
                out.push(e);
            }
        }
        match counts {
            Counts::All(all) => {
                // Only what the kernel still holds: the LRU evicted the rest.
                let held: Vec<OpenKey> = keys.into_iter().filter(|k| all.contains_key(k)).collect();
                if let Err(e) = batch::delete(map.map().fd().as_fd(), &held) {
                    tracing::debug!("deleting repeat counters one at a time: {e}");
                    for key in &held {
                        let _ = map.remove(key);
                    }
                }
            }
            Counts::Each => {
                for key in &keys {
                    // Gone already when the LRU evicted it.
                    let _ = map.remove(key);
                }
            }
        }
        out
    }

    /// Opens tracked (for tests and status).
    #[must_use]
    pub fn tracked(&self) -> usize {
        self.keys.len()
    }
}

/// Forgets the keys `in_kernel` says the kernel map no longer has (`None`:
/// unknown, kept). A forgotten key counts nothing more, and its pending
/// summary would read nothing: the kernel's count went with the entry. If
/// the kernel makes the key again, its count starts from zero, which is
/// what a key tracked afresh expects. Returns how many were forgotten.
fn prune(
    keys: &mut StdHashMap<OpenKey, Known>,
    by_tgid: &mut StdHashMap<u32, Vec<OpenKey>>,
    in_kernel: impl Fn(&OpenKey) -> Option<bool>,
) -> usize {
    let before = keys.len();
    keys.retain(|key, _| in_kernel(key) != Some(false));
    by_tgid.retain(|_, list| {
        list.retain(|key| keys.contains_key(key));
        !list.is_empty()
    });
    before - keys.len()
}

/// What a kernel count adds to what was accounted: a count below it means
/// the kernel's entry was evicted and started again from zero.
const fn new_repeats(count: u64, accounted: u64) -> u64 {
    if count >= accounted {
        count - accounted
    } else {
        count
    }
}

/// A `repeat_summary` report for the kernel count `seen` of a key beyond
/// what `known` accounted, if any.
fn summary(
    seen: Result<Option<OpenSeen>, ()>,
    known: &mut Known,
    mut last: Template,
) -> Option<Event> {
    let seen = seen.ok().flatten()?;
    let delta = new_repeats(seen.repeats, known.accounted);
    known.accounted = seen.repeats;
    if delta == 0 {
        return None;
    }
    last.open.repeats = delta;
    last.open.repeat_summary = true;
    Some(last.event())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_across_reports_and_evictions() {
        assert_eq!(new_repeats(0, 0), 0);
        assert_eq!(new_repeats(10, 0), 10);
        assert_eq!(new_repeats(25, 10), 15);
        // Evicted and recreated: counting restarted.
        assert_eq!(new_repeats(3, 25), 3);
    }

    #[test]
    fn the_key_is_what_the_kernel_keys_on() {
        // SAFETY: all-zero is a valid OpenRecord (plain integers and bytes).
        let mut r: OpenRecord = unsafe { std::mem::zeroed() };
        r.header.cgroup_id = 7;
        r.header.tgid = 42;
        r.flags = 0o2;
        r.ret = 3;
        r.path_len = 11;
        r.base_mnt = 1;
        r.base_dentry = 2;
        r.path_hash = 99;
        let k = key_of(&r);
        assert_eq!(
            k,
            OpenKey {
                cgroup_id: 7,
                tgid: 42,
                flags: 2,
                result: 0,
                path_len: 11,
                base_mnt: 1,
                base_dentry: 2,
                path_hash: 99,
            }
        );
        r.ret = -2;
        assert_eq!(key_of(&r).result, -2, "errors are told apart");
    }

    fn key(tgid: u32, path_hash: u64) -> OpenKey {
        OpenKey {
            tgid,
            path_hash,
            ..OpenKey::default()
        }
    }

    fn known() -> Known {
        Known {
            accounted: 3,
            reported: Instant::now(),
            last: None,
        }
    }

    #[test]
    fn pruning_forgets_exactly_the_keys_the_kernel_evicted() {
        let mut keys = StdHashMap::new();
        let mut by_tgid: StdHashMap<u32, Vec<OpenKey>> = StdHashMap::new();
        for (tgid, hash) in [(1, 10), (1, 11), (2, 20), (3, 30)] {
            keys.insert(key(tgid, hash), known());
            by_tgid.entry(tgid).or_default().push(key(tgid, hash));
        }
        // The kernel still has 1/10, evicted 1/11 and 2/20, and a lookup of
        // 3/30 failed otherwise.
        let pruned = prune(&mut keys, &mut by_tgid, |k| match k.path_hash {
            10 => Some(true),
            30 => None,
            _ => Some(false),
        });
        assert_eq!(pruned, 2);
        let mut left: Vec<_> = keys.keys().map(|k| (k.tgid, k.path_hash)).collect();
        left.sort_unstable();
        assert_eq!(left, [(1, 10), (3, 30)], "unsure lookups keep the key");
        assert_eq!(by_tgid[&1], [key(1, 10)]);
        assert!(
            !by_tgid.contains_key(&2),
            "a process without keys is not listed"
        );
        assert_eq!(by_tgid[&3], [key(3, 30)]);
        assert_eq!(keys[&key(1, 10)].accounted, 3, "kept keys keep their count");
    }

    #[test]
    fn disabled_tracking_leaves_reports_alone() {
        let mut t = Repeats::new(None, Duration::from_secs(1));
        assert!(t.sweep().is_empty());
        assert!(t.on_exit(1).is_empty());
        assert_eq!(t.tracked(), 0);
    }
}
