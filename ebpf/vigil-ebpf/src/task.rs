//! The acting task: is it watched, and the common record header.

use aya_ebpf::helpers::{
    bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid, bpf_probe_read_kernel,
    generated::{
        bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_get_current_task,
        bpf_ktime_get_boot_ns,
    },
};
use vigil_common::{Header, KernelConfig};

use crate::maps::WATCHED;

/// The current task's cgroup id when its activity is to be reported.
///
/// Unwatched tasks cost one map lookup: the session-parent test is a helper
/// call, and the `WATCHED` lookup comes last.
#[inline(always)]
pub fn watched_current(cfg: &KernelConfig) -> Option<u64> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if tgid == cfg.daemon_tgid {
        return None;
    }
    // SAFETY: helpers without arguments that touch no memory of ours.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    if cfg.watch_all != 0 {
        return Some(cgroup_id);
    }
    if cfg.session_parent_level != 0 {
        // SAFETY: as above; an out-of-range level returns 0.
        let ancestor =
            unsafe { bpf_get_current_ancestor_cgroup_id(cfg.session_parent_level as i32) };
        if ancestor == cfg.session_parent_id {
            return Some(cgroup_id);
        }
    }
    // SAFETY: the value is only tested for presence.
    if unsafe { WATCHED.get(cgroup_id) }.is_some() {
        Some(cgroup_id)
    } else {
        None
    }
}

/// Whether a cgroup (given as a kernel `struct cgroup *`) is watched; used
/// where the hook runs in no task's context (accepted sockets).
#[inline(always)]
pub fn watched_cgroup(cfg: &KernelConfig, cgrp: *const u8) -> Option<u64> {
    let off = &cfg.offsets;
    let id = cgroup_id(cfg, cgrp)?;
    if cfg.watch_all != 0 {
        return Some(id);
    }
    if cfg.session_parent_level != 0 && off.cgroup_level != 0 && off.cgroup_ancestors != 0 {
        // SAFETY: kernel reads through offsets from BTF; failures are handled.
        let level: i32 =
            unsafe { bpf_probe_read_kernel(cgrp.add(off.cgroup_level as usize).cast()) }.ok()?;
        let parent_level = cfg.session_parent_level as i32;
        if level >= parent_level {
            let slot = off.cgroup_ancestors as usize + (parent_level as usize & 0xff) * 8;
            // SAFETY: as above.
            let ancestor: *const u8 =
                unsafe { bpf_probe_read_kernel(cgrp.add(slot).cast()) }.ok()?;
            if cgroup_id(cfg, ancestor) == Some(cfg.session_parent_id) {
                return Some(id);
            }
        }
    }
    // SAFETY: the value is only tested for presence.
    if unsafe { WATCHED.get(id) }.is_some() {
        Some(id)
    } else {
        None
    }
}

/// The id of `cgrp`'s ancestor at `level` (itself at its own level);
/// `None` above its level or when unreadable.
#[inline(always)]
pub fn ancestor_id(cfg: &KernelConfig, cgrp: *const u8, level: u32) -> Option<u64> {
    let off = &cfg.offsets;
    if off.cgroup_level == 0 || off.cgroup_ancestors == 0 {
        return None;
    }
    let own: i32 = read_field(cgrp, off.cgroup_level)?;
    if (own as u32) < level {
        return None;
    }
    let slot = off.cgroup_ancestors as usize + (level as usize & 0xff) * 8;
    // SAFETY: kernel read through offsets from BTF; failures are handled.
    let ancestor: *const u8 =
        unsafe { bpf_probe_read_kernel(cgrp.wrapping_add(slot).cast()) }.ok()?;
    cgroup_id(cfg, ancestor)
}

/// `cgrp->kn->id`.
#[inline(always)]
pub fn cgroup_id(cfg: &KernelConfig, cgrp: *const u8) -> Option<u64> {
    let off = &cfg.offsets;
    if cgrp.is_null() || off.kernfs_node_id == 0 || off.cgroup_kn == 0 {
        return None;
    }
    // SAFETY: kernel reads through offsets from BTF; failures are handled.
    unsafe {
        let kn: *const u8 = bpf_probe_read_kernel(cgrp.add(off.cgroup_kn as usize).cast()).ok()?;
        bpf_probe_read_kernel(kn.add(off.kernfs_node_id as usize).cast()).ok()
    }
}

/// Fills the header of a record written in the acting task's context.
#[inline(always)]
pub fn fill_header(h: &mut Header, kind: u16, cgroup_id: u64, cfg: &KernelConfig) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    h.kind = kind;
    h.flags = 0;
    h.verdict = 0;
    // SAFETY: helper without memory arguments.
    h.ts_ns = unsafe { bpf_ktime_get_boot_ns() };
    h.cgroup_id = cgroup_id;
    h.pid = pid_tgid as u32;
    h.tgid = (pid_tgid >> 32) as u32;
    h.ppid = current_ppid(cfg);
    h.uid = uid_gid as u32;
    h.gid = (uid_gid >> 32) as u32;
    h._pad = 0;
    h.comm = bpf_get_current_comm().unwrap_or([0; 16]);
}

/// Fills the header of a record written in no task's context.
#[inline(always)]
pub fn fill_header_no_task(h: &mut Header, kind: u16, cgroup_id: u64) {
    h.kind = kind;
    h.flags = 0;
    h.verdict = 0;
    // SAFETY: helper without memory arguments.
    h.ts_ns = unsafe { bpf_ktime_get_boot_ns() };
    h.cgroup_id = cgroup_id;
    h.pid = 0;
    h.tgid = 0;
    h.ppid = 0;
    h.uid = 0;
    h.gid = 0;
    h._pad = 0;
    h.comm = [0; 16];
}

/// The current task as a byte pointer for offset reads.
#[inline(always)]
pub fn current_task() -> *const u8 {
    // SAFETY: helper without memory arguments.
    unsafe { bpf_get_current_task() as *const u8 }
}

/// Reads a field of a kernel struct at a BTF offset; `None` if unknown or unreadable.
#[inline(always)]
pub fn read_field<T>(base: *const u8, offset: u32) -> Option<T> {
    if offset == 0 || base.is_null() {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel faults safely on a bad address.
    unsafe { bpf_probe_read_kernel(base.add(offset as usize).cast::<T>()) }.ok()
}

/// Reads a field at a known offset (which may be 0); `None` if unreadable.
#[inline(always)]
pub fn read_raw<T>(base: *const u8, offset: u32) -> Option<T> {
    if base.is_null() {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel faults safely on a bad address.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset as usize).cast::<T>()) }.ok()
}

/// `current->real_parent->tgid`, 0 when the offsets are unknown.
#[inline(always)]
fn current_ppid(cfg: &KernelConfig) -> u32 {
    let off = &cfg.offsets;
    read_field::<*const u8>(current_task(), off.task_real_parent)
        .and_then(|parent| read_field::<u32>(parent, off.task_tgid))
        .unwrap_or(0)
}
