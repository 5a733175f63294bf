//! File sensor: `open`, `openat` and `openat2`, reported at syscall exit
//! with their result.
//!
//! One program on the `syscalls/sys_exit_open*` tracepoints. The kernel
//! runs it for those syscalls only: any other syscall on the node costs the
//! syscall tracepoints' bitmap test, where a program on the raw `sys_exit`
//! tracepoint ran (and cost about 145 ns) for every syscall of every
//! process. An unwatched open costs the kernel's tracepoint record and the
//! cgroup check. The arguments are read from the opener's saved registers
//! (`bpf_task_pt_regs`, a typed pointer the program loads from directly, at
//! slots from BTF), so nothing is stored between entry and exit, and the
//! path string is read when the kernel has faulted its page in.
//!
//! The opener of a revoked (or unapproved) session is killed here, at exit.
//! A kill at entry would not stop the open either (it completes in the
//! kernel whatever signal is pending; only an LSM hook can refuse it). The
//! process dies on its way back to user space, before it can use the
//! descriptor.

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_probe_read_user,
        generated::{bpf_probe_read_user_str, bpf_send_signal, bpf_task_pt_regs},
    },
    macros::{map, tracepoint},
    maps::{LruHashMap, PerCpuArray},
    programs::TracePointContext,
};
use core::intrinsics::{AtomicOrdering, atomic_xadd};
use core::mem::size_of;

use aya_ebpf::helpers::generated::bpf_ktime_get_boot_ns;
use vigil_common::{
    KernelConfig, OPEN_PATH_TRUNCATED, OPEN_RESOLVED_FILE, OPEN_SEEN_ENTRIES, OpenKey, OpenRecord,
    OpenSeen, PATH_LEN, RecordKind, Sensor, open_syscall, verdict,
};

use crate::{
    abi::SIGKILL,
    enforce::{self, current_policy},
    maps::{EVENTS, config, count_loss, wake_flags},
    path,
    task::{fill_header, watched_current},
};

/// Bytes of an [`OpenRecord`] before the text of its resolved path.
const OPEN_FIXED: usize = core::mem::offset_of!(OpenRecord, resolved) + 8;

/// `AT_FDCWD`: plain `open` resolves relative to the working directory.
const AT_FDCWD: i32 = -100;

/// The record is built here (too large for the BPF stack), then copied out.
#[map]
static OPEN_SCRATCH: PerCpuArray<OpenRecord> = PerCpuArray::with_max_entries(1, 0);

/// Repeat counters of recently reported opens (see `OpenSeen`). LRU:
/// watched processes opening ever new files evict the oldest counters. The
/// daemon summarises a counter one repeat window after its report, so a
/// count is lost only if more distinct opens than the map holds come within
/// that window; the daemon forgets evicted keys too (`daemon::repeats`).
#[map]
pub static OPEN_SEEN: LruHashMap<OpenKey, OpenSeen> =
    LruHashMap::with_max_entries(OPEN_SEEN_ENTRIES, 0);

enum Repeat {
    /// Counted in its key's `OpenSeen`: no record.
    Counted,
    /// To be reported, with the key's repeat count so far.
    Report(u64),
}

/// Counts an open reported less than `open_repeat_ns` ago, else marks it
/// reported now.
#[inline(always)]
fn repeat(cfg: &KernelConfig, key: &OpenKey) -> Repeat {
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let Some(seen) = OPEN_SEEN.get_ptr_mut(key) else {
        let _ = OPEN_SEEN.insert(
            key,
            OpenSeen {
                reported_ns: now,
                repeats: 0,
            },
            0,
        );
        return Repeat::Report(0);
    };
    // SAFETY: a live map value; concurrent opens of the same key on other
    // CPUs only add to `repeats`, atomically.
    let seen = unsafe { &mut *seen };
    if now.wrapping_sub(seen.reported_ns) < cfg.open_repeat_ns {
        // An atomic add (BPF_XADD): core's AtomicU64 has no fetch_add on
        // the BPF target.
        // SAFETY: an aligned u64 inside a live map value.
        unsafe {
            atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut seen.repeats, 1);
        }
        Repeat::Counted
    } else {
        seen.reported_ns = now;
        // SAFETY: as above.
        Repeat::Report(unsafe { core::ptr::read_volatile(&raw const seen.repeats) })
    }
}

/// Keyed hash of the first `len` bytes of `path`, a word at a time.
#[inline(always)]
fn hash_path(path: &[u8; PATH_LEN], len: usize, key: u64) -> u64 {
    const M: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h = key ^ (len as u64).wrapping_mul(M);
    for i in 0..PATH_LEN / 8 {
        let at = i * 8;
        if at >= len {
            break;
        }
        let mut w = u64::from_le_bytes([
            path[at],
            path[at + 1],
            path[at + 2],
            path[at + 3],
            path[at + 4],
            path[at + 5],
            path[at + 6],
            path[at + 7],
        ]);
        let rest = len - at;
        if rest < 8 {
            // Bytes past the string are left over from earlier records.
            w &= (1u64 << (rest * 8)) - 1;
        }
        h = (h ^ w).wrapping_mul(M);
        h ^= h >> 29;
    }
    h
}

/// Which open syscall `nr` is, if any.
#[inline(always)]
fn open_kind(nrs: [u32; 3], nr: u64) -> Option<u8> {
    // openat first: it is what libc uses.
    if nr == u64::from(nrs[1]) {
        Some(open_syscall::OPENAT)
    } else if nr == u64::from(nrs[0]) {
        Some(open_syscall::OPEN)
    } else if nr == u64::from(nrs[2]) {
        Some(open_syscall::OPENAT2)
    } else {
        None
    }
}

/// The register at byte `slot` of a task's saved `pt_regs` (every register
/// is a word, so `slot` is a multiple of 8). `slot` must be a constant to
/// the verifier (a field of the read-only configuration, set from BTF at
/// load): it checks the load against the struct's layout, and a typed
/// kernel pointer is read without a helper.
#[inline(always)]
fn reg(regs: *const u64, slot: u32) -> u64 {
    // SAFETY: the verifier checks the access against `struct pt_regs` and
    // turns it into a load that cannot fault.
    unsafe { core::ptr::read(regs.wrapping_add(slot as usize / 8)) }
}

#[tracepoint]
pub fn vigil_open_exit(ctx: TracePointContext) -> i32 {
    let _ = try_exit(&ctx);
    0
}

fn try_exit(ctx: &TracePointContext) -> Option<()> {
    // Every open on the node gets here; unwatched processes stop here.
    let cfg = config();
    let cgroup_id = watched_current(cfg)?;
    let off = &cfg.offsets;
    // SAFETY: fields of the tracepoint record, offsets from its format file.
    let nr: i32 = unsafe { ctx.read_at(off.sys_exit_nr as usize & 0xff) }.ok()?;
    let syscall = open_kind(cfg.open_nrs, nr as u64)?;
    // SAFETY: as above.
    let ret: i64 = unsafe { ctx.read_at(off.sys_exit_ret as usize & 0xff) }.ok()?;
    // SAFETY: helpers on the current task, which is alive while it runs.
    let task = path::Task::current();
    // SAFETY: as above.
    let regs = unsafe { bpf_task_pt_regs(task.as_ptr() as *mut _) } as *const u64;
    let slots = off.regs_args;
    let arg = |i: usize| Some(reg(regs, slots[i]));
    let (dfd, path, flags, mode) = match syscall {
        open_syscall::OPEN => (AT_FDCWD, arg(0)?, arg(1)? as u32, arg(2)? as u32),
        open_syscall::OPENAT => (arg(0)? as i32, arg(1)?, arg(2)? as u32, arg(3)? as u32),
        _ => {
            // struct open_how { u64 flags; u64 mode; u64 resolve; }
            let how = arg(2)? as *const u64;
            // SAFETY: user memory read through the helper, which faults safely.
            let flags = unsafe { bpf_probe_read_user(how) }.unwrap_or(0);
            // SAFETY: as above.
            let mode = unsafe { bpf_probe_read_user(how.wrapping_add(1)) }.unwrap_or(0);
            (arg(0)? as i32, arg(1)?, flags as u32, mode as u32)
        }
    };
    let verdict = match current_policy(cfg, cgroup_id).and_then(|p| enforce::blocked(&p)) {
        Some(blocked) => {
            // SAFETY: helper without memory arguments.
            unsafe { bpf_send_signal(SIGKILL) };
            blocked
        }
        None => verdict::ALLOWED,
    };
    let rec = OPEN_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's scratch slot; every field is written below.
    let rec = unsafe { &mut *rec };
    // SAFETY: user string read through the helper, bounded by PATH_LEN.
    let n = unsafe {
        bpf_probe_read_user_str(
            rec.path.as_mut_ptr().cast(),
            PATH_LEN as u32,
            path as *const _,
        )
    };
    let path_len = if n > 0 { (n - 1) as usize } else { 0 };
    // A relative path means nothing once the opener has moved or exited:
    // its base directory is part of what the open is. Kept as two plain
    // words: an `Option` carried across would be copied with its
    // uninitialised payload, which the verifier refuses.
    let mut base_mnt = 0u64;
    let mut base_dentry = 0u64;
    if n > 0 && rec.path[0] != b'/' {
        let base = if dfd == AT_FDCWD {
            path::cwd(cfg, task)
        } else {
            path::fd_path(cfg, task, dfd)
        };
        if let Some(b) = base {
            base_mnt = b.mnt as u64;
            base_dentry = b.dentry as u64;
        }
    }
    let key = OpenKey {
        cgroup_id,
        tgid: (bpf_get_current_pid_tgid() >> 32) as u32,
        flags,
        result: if ret >= 0 { 0 } else { ret as i32 },
        path_len: path_len as u32,
        base_mnt,
        base_dentry,
        path_hash: hash_path(&rec.path, path_len, cfg.hash_key),
    };
    let repeats = if cfg.open_repeat_ns != 0 && verdict == verdict::ALLOWED {
        match repeat(cfg, &key) {
            Repeat::Counted => return Some(()),
            Repeat::Report(n) => n,
        }
    } else {
        0
    };
    let urgent = verdict != verdict::ALLOWED || enforce::prompt(cfg, cgroup_id);
    fill_header(&mut rec.header, RecordKind::Open as u16, cgroup_id, cfg);
    rec.header.verdict = verdict;
    rec.ret = ret;
    rec.flags = flags;
    rec.mode = mode;
    rec.dfd = dfd;
    rec.syscall = syscall;
    rec._pad = 0;
    rec.base_mnt = key.base_mnt;
    rec.base_dentry = key.base_dentry;
    rec.path_hash = key.path_hash;
    rec.repeats = repeats;
    if n > 0 {
        rec.path_len = path_len as u16;
        if n as usize == PATH_LEN {
            rec.header.flags |= OPEN_PATH_TRUNCATED;
        }
    } else {
        rec.path_len = 0;
        rec.path[0] = 0;
    }
    rec.resolved.len = 0;
    rec.resolved.flags = 0;
    rec.ino = 0;
    rec.dev = 0;
    rec.nlink = u32::MAX;
    // The file that was opened, whatever name reached it (symlinks, `..`,
    // hard links, `/proc/*/root`): scope is judged on it. Only a failed
    // open falls back to the directory a relative path was relative to.
    let opened = if ret >= 0 {
        path::fd_file(cfg, task, ret as i32)
    } else {
        None
    };
    let target = if let Some(file) = opened {
        rec.header.flags |= OPEN_RESOLVED_FILE;
        (rec.dev, rec.ino, rec.nlink) = path::inode_id(cfg, file.inode);
        Some(file.path)
    } else if base_dentry != 0 {
        Some(path::KPath {
            mnt: base_mnt as *const u8,
            dentry: base_dentry as *const u8,
        })
    } else {
        None
    };
    // One walk site: each is inlined, and the verifier pays for every copy.
    if let Some(target) = target {
        path::resolve(cfg, task, target, &mut rec.resolved);
    }
    // Only the bytes of the resolved path that were written go out: most
    // paths are far shorter than the buffer, and every byte is copied into
    // the ring and out of it again.
    let used = OPEN_FIXED + (usize::from(rec.resolved.len) & 1023);
    let size = if used < size_of::<OpenRecord>() {
        used
    } else {
        size_of::<OpenRecord>()
    };
    // SAFETY: `size` bytes of the scratch record, all written above.
    let bytes = unsafe { core::slice::from_raw_parts(core::ptr::from_ref(rec).cast::<u8>(), size) };
    if EVENTS
        .output::<[u8]>(bytes, wake_flags(cfg, urgent))
        .is_err()
    {
        count_loss(Sensor::File, cgroup_id);
    }
    Some(())
}
