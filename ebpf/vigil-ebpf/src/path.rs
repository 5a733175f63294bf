//! Resolving kernel paths (`struct path`) to text in the kernel, where the
//! objects still exist: a relative open's base directory and an exec's real
//! executable are gone or changed by the time userspace could read `/proc`.
//!
//! The walk follows `d_parent` up to the mount root, then crosses to the
//! parent mount's mountpoint, and stops at the task's root (so a container
//! process gets the path as it sees it). Components are written leaf first,
//! each NUL-terminated; userspace reverses them.

use aya_ebpf::{
    helpers::generated::{bpf_probe_read_kernel, bpf_probe_read_kernel_str},
    macros::map,
    maps::PerCpuArray,
};
use vigil_common::{DIR_LEN, KernelConfig, NAME_READ, PathComponents, path_flags};

use crate::task::{current_task, read_field, read_raw};

/// Dentries and mount crossings visited at most.
const MAX_STEPS: usize = 24;
/// Path components named at most (a power of two, for masking).
const MAX_NAMES: usize = 16;

/// A `struct path`: the mount and dentry.
#[derive(Clone, Copy)]
pub struct KPath {
    pub mnt: *const u8,
    pub dentry: *const u8,
}

/// Reads the `struct path` at `at`.
#[inline(always)]
pub fn read_path(cfg: &KernelConfig, at: *const u8) -> Option<KPath> {
    let off = &cfg.offsets;
    if at.is_null() {
        return None;
    }
    // `mnt` is the first member (offset 0): read without the unknown-offset test.
    Some(KPath {
        mnt: read_raw(at, off.path_mnt)?,
        dentry: read_raw(at, off.path_dentry)?,
    })
}

/// The current task's root (`current->fs->root`).
#[inline(always)]
fn task_root(cfg: &KernelConfig) -> Option<KPath> {
    let fs: *const u8 = read_field(current_task(), cfg.offsets.task_fs)?;
    read_path(cfg, fs.wrapping_add(cfg.offsets.fs_root as usize))
}

/// The current task's working directory.
#[inline(always)]
pub fn cwd(cfg: &KernelConfig) -> Option<KPath> {
    let fs: *const u8 = read_field(current_task(), cfg.offsets.task_fs)?;
    read_path(cfg, fs.wrapping_add(cfg.offsets.fs_pwd as usize))
}

/// The path of the current task's executable (`current->mm->exe_file`).
#[inline(always)]
pub fn exe_path(cfg: &KernelConfig) -> Option<KPath> {
    let off = &cfg.offsets;
    let mm: *const u8 = read_field(current_task(), off.task_mm)?;
    let file: *const u8 = read_field(mm, off.mm_exe_file)?;
    read_path(cfg, file.wrapping_add(off.file_path as usize))
}

/// The identity of a dentry's file: (device, inode number, link count);
/// zeros and `u32::MAX` links when unreadable.
#[inline(always)]
pub fn file_id(cfg: &KernelConfig, dentry: *const u8) -> (u32, u64, u32) {
    let off = &cfg.offsets;
    let Some(inode) = read_field::<*const u8>(dentry, off.dentry_inode) else {
        return (0, 0, u32::MAX);
    };
    let ino = read_field::<u64>(inode, off.inode_ino).unwrap_or(0);
    let nlink = read_field::<u32>(inode, off.inode_nlink).unwrap_or(u32::MAX);
    let dev = read_field::<*const u8>(inode, off.inode_sb)
        .and_then(|sb| read_field::<u32>(sb, off.sb_dev))
        .unwrap_or(0);
    (dev, ino, nlink)
}

/// The path of the current task's open file `fd`.
#[inline(always)]
pub fn fd_path(cfg: &KernelConfig, fd: i32) -> Option<KPath> {
    let off = &cfg.offsets;
    if fd < 0 {
        return None;
    }
    let files: *const u8 = read_field(current_task(), off.task_files)?;
    let fdt: *const u8 = read_field(files, off.files_fdt)?;
    // `max_fds` is the first member of `struct fdtable`: offset 0 is its
    // real offset here, not "unknown" (discovery fails without it).
    let max: u32 = read_raw(fdt, off.fdtable_max_fds)?;
    if fd as u32 >= max {
        return None;
    }
    let fds: *const *const u8 = read_field(fdt, off.fdtable_fd)?;
    // SAFETY: bounded by max_fds; the helper faults safely.
    let file: *const u8 =
        unsafe { aya_ebpf::helpers::bpf_probe_read_kernel(fds.wrapping_add(fd as usize)) }.ok()?;
    if file.is_null() {
        return None;
    }
    read_path(cfg, file.wrapping_add(off.file_path as usize))
}

/// Reads a kernel word; 0 when unreadable (the helper zeroes its output on
/// failure, so no branch is needed: branches multiply verifier states).
#[inline(always)]
fn rd(addr: u64) -> u64 {
    let mut v: u64 = 0;
    // SAFETY: the helper faults safely and writes 8 bytes to our stack slot.
    unsafe {
        bpf_probe_read_kernel((&raw mut v).cast(), 8, addr as *const core::ffi::c_void);
    }
    v
}

/// State of one walk, kept in a per-CPU map rather than in registers: every
/// value is reloaded from memory at each step, so the verifier holds no
/// ranges or equalities about it across iterations and the loop-head states
/// stay identical (otherwise they never prune and the program is "too large").
#[repr(C)]
pub struct Walk {
    dentry: u64,
    vfsmnt: u64,
    mount: u64,
    mnt_root: u64,
    root_dentry: u64,
    root_mnt: u64,
    count: u64,
    len: u64,
    flags: u64,
    slots: [u64; MAX_NAMES],
}

#[map]
static WALK: PerCpuArray<Walk> = PerCpuArray::with_max_entries(1, 0);

macro_rules! get {
    ($w:ident . $f:ident) => {
        // SAFETY: field of our per-CPU scratch.
        unsafe { core::ptr::read_volatile(&raw const (*$w).$f) }
    };
}
macro_rules! set {
    ($w:ident . $f:ident = $v:expr) => {
        // SAFETY: field of our per-CPU scratch.
        unsafe { core::ptr::write_volatile(&raw mut (*$w).$f, $v) }
    };
}

/// One step up the tree: to the parent dentry, or across a mount.
#[inline(always)]
fn step(cfg: &KernelConfig, w: *mut Walk) {
    let off = &cfg.offsets;
    let dentry = get!(w.dentry);
    if dentry == get!(w.root_dentry) && get!(w.vfsmnt) == get!(w.root_mnt) {
        set!(w.flags = u64::from(path_flags::COMPLETE));
        return;
    }
    let parent = rd(dentry + u64::from(off.dentry_parent));
    if parent == dentry && dentry != get!(w.mnt_root) {
        // Its own parent but not its mount's root: a file of no directory
        // (memfd, anonymous inode). Crossing to the mount's parent would
        // give it a path it does not have; its one name is what it is.
        let count = get!(w.count);
        if count < MAX_NAMES as u64 {
            // SAFETY: index masked into the array.
            unsafe {
                core::ptr::write_volatile(
                    &raw mut (*w).slots[(count as usize) & (MAX_NAMES - 1)],
                    dentry,
                );
            }
            set!(w.count = count + 1);
        }
        set!(w.flags = u64::from(path_flags::DETACHED));
        return;
    }
    if dentry == get!(w.mnt_root) || parent == dentry || parent == 0 {
        let mount = get!(w.mount);
        let mnt_parent = rd(mount + u64::from(off.mount_parent));
        if mnt_parent == mount || mnt_parent == 0 {
            // The top of the mount tree: the global root.
            set!(w.flags = u64::from(path_flags::COMPLETE));
            return;
        }
        set!(w.dentry = rd(mount + u64::from(off.mount_mountpoint)));
        set!(w.mount = mnt_parent);
        let vfsmnt = mnt_parent + u64::from(off.mount_mnt);
        set!(w.vfsmnt = vfsmnt);
        set!(w.mnt_root = rd(vfsmnt + u64::from(off.vfsmount_root)));
        return;
    }
    let count = get!(w.count);
    if count >= MAX_NAMES as u64 {
        set!(w.flags = u64::from(path_flags::TRUNCATED));
        return;
    }
    // SAFETY: index masked into the array.
    unsafe {
        core::ptr::write_volatile(
            &raw mut (*w).slots[(count as usize) & (MAX_NAMES - 1)],
            dentry,
        );
    }
    set!(w.count = count + 1);
    set!(w.dentry = parent);
}

/// Writes `path`'s components into `out`, leaf first.
///
/// Two loops: the first walks dentries and mounts and collects the dentries
/// to name, the second reads the names.
#[inline(always)]
pub fn resolve(cfg: &KernelConfig, path: KPath, out: &mut PathComponents) {
    out.len = 0;
    out.flags = 0;
    out._pad = 0;
    let off = &cfg.offsets;
    if off.dentry_parent == 0 || off.dentry_name == 0 || off.mount_parent == 0 {
        return;
    }
    let Some(w) = WALK.get_ptr_mut(0) else {
        return;
    };
    let (root_dentry, root_mnt) =
        task_root(cfg).map_or((0, 0), |r| (r.dentry as u64, r.mnt as u64));
    let vfsmnt = path.mnt as u64;
    set!(w.dentry = path.dentry as u64);
    set!(w.vfsmnt = vfsmnt);
    set!(w.mount = vfsmnt.wrapping_sub(u64::from(off.mount_mnt)));
    set!(w.mnt_root = rd(vfsmnt + u64::from(off.vfsmount_root)));
    set!(w.root_dentry = root_dentry);
    set!(w.root_mnt = root_mnt);
    set!(w.count = 0);
    set!(w.len = 0);
    set!(w.flags = 0);
    for _ in 0..MAX_STEPS {
        if get!(w.flags) != 0 {
            break;
        }
        step(cfg, w);
    }
    if get!(w.flags) == 0 {
        set!(w.flags = u64::from(path_flags::TRUNCATED));
    }
    for i in 0..MAX_NAMES {
        if i as u64 >= get!(w.count) {
            break;
        }
        let len = get!(w.len);
        if len >= DIR_LEN as u64 {
            set!(w.flags = u64::from(path_flags::TRUNCATED));
            break;
        }
        // SAFETY: i < MAX_NAMES.
        let d = unsafe { core::ptr::read_volatile(&raw const (*w).slots[i]) };
        let name = rd(d + u64::from(off.dentry_name));
        let dst = out
            .buf
            .as_mut_ptr()
            .wrapping_add((len as usize) & (DIR_LEN - 1));
        // SAFETY: dst has NAME_READ bytes of room (buf is DIR_LEN + NAME_READ).
        let n = unsafe {
            bpf_probe_read_kernel_str(
                dst.cast(),
                NAME_READ as u32,
                name as *const core::ffi::c_void,
            )
        };
        if n <= 0 {
            set!(w.flags = u64::from(path_flags::TRUNCATED));
            break;
        }
        set!(w.len = len + n as u64);
    }
    out.flags = get!(w.flags) as u16;
    out.len = get!(w.len).min(DIR_LEN as u64) as u16;
}
