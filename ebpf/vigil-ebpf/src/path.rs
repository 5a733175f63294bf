//! Resolving kernel paths (`struct path`) to text in the kernel, where the
//! objects still exist: a relative open's base directory and an exec's real
//! executable are gone or changed by the time userspace could read `/proc`.
//!
//! The walk follows `d_parent` up to the mount root, then crosses to the
//! parent mount's mountpoint, and stops at the task's root (so a container
//! process gets the path as it sees it). Components are written leaf first,
//! each NUL-terminated; userspace reverses them.

use aya_ebpf::{
    helpers::generated::{
        bpf_get_current_task_btf, bpf_probe_read_kernel, bpf_probe_read_kernel_str,
    },
    macros::map,
    maps::PerCpuArray,
};
use vigil_common::{DIR_LEN, KernelConfig, NAME_READ, PathComponents, SPAN_MAX, Span, path_flags};

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

/// The members of one [`Span`] of a kernel object, read with one helper
/// call; with an empty span (a layout the daemon found no single read
/// for), each member is read on its own. The offsets are the read-only
/// configuration's, constants to the verifier, so the unused branch is
/// removed at load.
///
/// The words go to a per-CPU map, not the stack: the verifier tracks
/// nothing about map contents, so a walk's loop states stay alike and
/// prune, where stack buffers in every inlined copy made the program too
/// large to verify. An unreadable object reads as zeros (the helper
/// clears its output on failure); callers test a member that is never 0.
struct Words {
    base: u64,
    span: &'static Span,
    w: *const [u64; SPAN_WORDS],
}

const SPAN_WORDS: usize = SPAN_MAX as usize / 8;

#[map]
static SPAN_SCRATCH: PerCpuArray<[u64; SPAN_WORDS]> = PerCpuArray::with_max_entries(1, 0);

impl Words {
    #[inline(always)]
    fn read(base: u64, span: &'static Span) -> Self {
        let mut w: *const [u64; SPAN_WORDS] = core::ptr::null();
        if span.len != 0
            && let Some(buf) = SPAN_SCRATCH.get_ptr_mut(0)
        {
            // SAFETY: the helper faults safely (clearing the buffer) and
            // writes at most SPAN_MAX bytes into this CPU's scratch.
            unsafe {
                bpf_probe_read_kernel(
                    buf.cast(),
                    span.len.min(SPAN_MAX),
                    (base + u64::from(span.start)) as *const core::ffi::c_void,
                );
            }
            w = buf;
        }
        Self { base, span, w }
    }

    /// The word at byte `off` of the object (a narrower member in its low
    /// bits); 0 if unreadable.
    #[inline(always)]
    fn word(&self, off: u32) -> u64 {
        if self.span.len == 0 {
            return read_field::<u64>(self.base as *const u8, off).unwrap_or(0);
        }
        if self.w.is_null() {
            return 0;
        }
        let rel = off.wrapping_sub(self.span.start);
        // SAFETY: an index masked into this CPU's scratch.
        let v = unsafe {
            core::ptr::read_volatile(
                self.w
                    .cast::<u64>()
                    .wrapping_add((rel as usize / 8) & (SPAN_WORDS - 1)),
            )
        };
        v >> ((rel % 8) * 8)
    }
}

/// Reads the `struct path` at `at`.
#[inline(always)]
pub fn read_path(cfg: &'static KernelConfig, at: *const u8) -> Option<KPath> {
    let off = &cfg.offsets;
    if at.is_null() {
        return None;
    }
    // `mnt` is the first member: offset 0 is real here, not "unknown".
    let (mnt, dentry) = if off.path_span.len == 0 {
        (read_raw(at, off.path_mnt)?, read_raw(at, off.path_dentry)?)
    } else {
        let p = Words::read(at as u64, &off.path_span);
        (p.word(off.path_mnt), p.word(off.path_dentry))
    };
    if dentry == 0 {
        return None;
    }
    Some(KPath {
        mnt: mnt as *const u8,
        dentry: dentry as *const u8,
    })
}

/// The current task as a typed (BTF) pointer. Its members, and members of
/// the structs they point to, are read by plain loads that the verifier
/// checks against the kernel's BTF and turns into fault-safe loads (a
/// nanosecond or two, where a probe-read helper call costs tens). The
/// offsets must be verifier constants: the read-only configuration's.
#[inline(always)]
fn task_btf() -> *const u8 {
    // SAFETY: helper without arguments.
    unsafe { bpf_get_current_task_btf() as *const u8 }
}

/// The pointer member at `off` of a typed kernel object (see [`task_btf`]);
/// null when the object is null (the load is fault-safe).
#[inline(always)]
fn load(obj: *const u8, off: u32) -> *const u8 {
    load_as(obj, off)
}

/// The member of type `T` at `off` of a typed kernel object.
#[inline(always)]
// BTF offsets of members are aligned for the members' types.
#[allow(clippy::cast_ptr_alignment)]
fn load_as<T>(obj: *const u8, off: u32) -> T {
    // SAFETY: the verifier checks the load against the object's BTF type
    // and makes it fault-safe.
    unsafe { core::ptr::read_volatile(obj.wrapping_add(off as usize).cast::<T>()) }
}

/// `v` as a number the verifier knows nothing of (a pointer stored in a map
/// value and loaded back is a scalar), so arithmetic on it is allowed.
#[inline(always)]
fn launder(v: u64) -> u64 {
    let Some(slot) = SPAN_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    let slot = slot.cast::<u64>();
    // SAFETY: this CPU's scratch, a volatile store and load so that the
    // compiler does not forward the value in a register.
    unsafe {
        core::ptr::write_volatile(slot, v);
        core::ptr::read_volatile(slot)
    }
}

/// The `struct path` member at `off` of the current task's `fs_struct`.
#[inline(always)]
fn fs_path(cfg: &'static KernelConfig, off: u32) -> Option<KPath> {
    let o = &cfg.offsets;
    let fs = load(task_btf(), o.task_fs);
    let dentry = load(fs, off + o.path_dentry);
    if dentry.is_null() {
        return None;
    }
    Some(KPath {
        mnt: load(fs, off + o.path_mnt),
        dentry,
    })
}

/// The current task's root (`current->fs->root`).
#[inline(always)]
fn task_root(cfg: &'static KernelConfig) -> Option<KPath> {
    fs_path(cfg, cfg.offsets.fs_root)
}

/// The current task's working directory.
#[inline(always)]
pub fn cwd(cfg: &'static KernelConfig) -> Option<KPath> {
    fs_path(cfg, cfg.offsets.fs_pwd)
}

/// The path of the current task's executable (`current->mm->exe_file`).
#[inline(always)]
pub fn exe_path(cfg: &'static KernelConfig) -> Option<KPath> {
    let off = &cfg.offsets;
    let mm: *const u8 = read_field(current_task(), off.task_mm)?;
    let file: *const u8 = read_field(mm, off.mm_exe_file)?;
    read_path(cfg, file.wrapping_add(off.file_path as usize))
}

/// The identity of a dentry's file: (device, inode number, link count);
/// zeros and `u32::MAX` links when unreadable.
#[inline(always)]
pub fn file_id(cfg: &'static KernelConfig, dentry: *const u8) -> (u32, u64, u32) {
    match read_field::<u64>(dentry, cfg.offsets.dentry_inode) {
        Some(inode) => inode_id(cfg, inode),
        None => (0, 0, u32::MAX),
    }
}

/// As [`file_id`], from the inode.
#[inline(always)]
pub fn inode_id(cfg: &'static KernelConfig, inode: u64) -> (u32, u64, u32) {
    let off = &cfg.offsets;
    if inode == 0 {
        return (0, 0, u32::MAX);
    }
    let i = Words::read(inode, &off.inode_span);
    let sb = i.word(off.inode_sb);
    if sb == 0 {
        // Unreadable: every inode has a superblock.
        return (0, 0, u32::MAX);
    }
    let ino = i.word(off.inode_ino);
    let nlink = i.word(off.inode_nlink) as u32;
    let dev = read_field::<u32>(sb as *const u8, off.sb_dev).unwrap_or(0);
    (dev, ino, nlink)
}

/// An open file of the current task: its path and inode.
#[derive(Clone, Copy)]
pub struct OpenFile {
    pub path: KPath,
    pub inode: u64,
}

/// The current task's open file `fd`.
#[inline(always)]
pub fn fd_file(cfg: &'static KernelConfig, fd: i32) -> Option<OpenFile> {
    let off = &cfg.offsets;
    if fd < 0 {
        return None;
    }
    let fdt = load(load(task_btf(), off.task_files), off.files_fdt);
    if fdt.is_null() {
        return None;
    }
    // `max_fds` is the first member: offset 0 is real here.
    let max: u32 = load_as(fdt, off.fdtable_max_fds);
    // The array is a pointer to pointers, which the verifier lets a
    // program load but not index: through the per-CPU scratch it becomes a
    // plain number the probe read below takes.
    let fds = launder(load(fdt, off.fdtable_fd) as u64);
    if fd as u32 >= max {
        return None;
    }
    let fds = fds as *const *const u8;
    // SAFETY: bounded by max_fds; the helper faults safely.
    let file: *const u8 =
        unsafe { aya_ebpf::helpers::bpf_probe_read_kernel(fds.wrapping_add(fd as usize)) }.ok()?;
    if file.is_null() {
        return None;
    }
    let at = off.file_path;
    let (mnt, dentry, inode) = if off.file_span.len == 0 {
        let p = read_path(cfg, file.wrapping_add(at as usize))?;
        let inode = read_field::<u64>(file, off.file_inode).unwrap_or(0);
        (p.mnt as u64, p.dentry as u64, inode)
    } else {
        let f = Words::read(file as u64, &off.file_span);
        (
            f.word(at + off.path_mnt),
            f.word(at + off.path_dentry),
            f.word(off.file_inode),
        )
    };
    if dentry == 0 {
        return None;
    }
    Some(OpenFile {
        path: KPath {
            mnt: mnt as *const u8,
            dentry: dentry as *const u8,
        },
        inode,
    })
}

/// The path of the current task's open file `fd`.
#[inline(always)]
pub fn fd_path(cfg: &'static KernelConfig, fd: i32) -> Option<KPath> {
    fd_file(cfg, fd).map(|f| f.path)
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
    /// The current mount's parent and the dentry it is mounted on, read
    /// with its root on entering it: a crossing then reads one span.
    mnt_parent: u64,
    mountpoint: u64,
    root_dentry: u64,
    root_mnt: u64,
    count: u64,
    len: u64,
    flags: u64,
    /// The names (`d_name.name`) to read, leaf first.
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

/// Makes `mount` the walk's current mount.
#[inline(always)]
fn enter_mount(cfg: &'static KernelConfig, w: *mut Walk, mount: u64) {
    let off = &cfg.offsets;
    let m = Words::read(mount, &off.mount_span);
    set!(w.mount = mount);
    let vfsmnt = mount + u64::from(off.mount_mnt);
    set!(w.vfsmnt = vfsmnt);
    set!(w.mnt_root = m.word(off.mount_mnt + off.vfsmount_root));
    set!(w.mnt_parent = m.word(off.mount_parent));
    set!(w.mountpoint = m.word(off.mount_mountpoint));
}

/// Queues the name at `name` to be read.
#[inline(always)]
fn push_name(w: *mut Walk, name: u64) -> bool {
    let count = get!(w.count);
    if count >= MAX_NAMES as u64 {
        return false;
    }
    // SAFETY: index masked into the array.
    unsafe {
        core::ptr::write_volatile(
            &raw mut (*w).slots[(count as usize) & (MAX_NAMES - 1)],
            name,
        );
    }
    set!(w.count = count + 1);
    true
}

/// One step up the tree: to the parent dentry, or across a mount.
#[inline(always)]
fn step(cfg: &'static KernelConfig, w: *mut Walk) {
    let off = &cfg.offsets;
    let dentry = get!(w.dentry);
    if dentry == get!(w.root_dentry) && get!(w.vfsmnt) == get!(w.root_mnt) {
        set!(w.flags = u64::from(path_flags::COMPLETE));
        return;
    }
    // A mount's root is left by crossing, which needs nothing of the dentry.
    if dentry != get!(w.mnt_root) {
        let d = Words::read(dentry, &off.dentry_span);
        let parent = d.word(off.dentry_parent);
        if parent == dentry {
            // Its own parent but not its mount's root: a file of no
            // directory (memfd, anonymous inode). Crossing to the mount's
            // parent would give it a path it does not have; its one name
            // is what it is.
            push_name(w, d.word(off.dentry_name));
            set!(w.flags = u64::from(path_flags::DETACHED));
            return;
        }
        if parent != 0 {
            if !push_name(w, d.word(off.dentry_name)) {
                set!(w.flags = u64::from(path_flags::TRUNCATED));
                return;
            }
            set!(w.dentry = parent);
            return;
        }
    }
    let mount = get!(w.mount);
    let mnt_parent = get!(w.mnt_parent);
    if mnt_parent == mount || mnt_parent == 0 {
        // The top of the mount tree: the global root.
        set!(w.flags = u64::from(path_flags::COMPLETE));
        return;
    }
    let mountpoint = get!(w.mountpoint);
    set!(w.dentry = mountpoint);
    enter_mount(cfg, w, mnt_parent);
}

/// Writes `path`'s components into `out`, leaf first.
///
/// Two loops: the first walks dentries and mounts and collects the dentries
/// to name, the second reads the names.
#[inline(always)]
pub fn resolve(cfg: &'static KernelConfig, path: KPath, out: &mut PathComponents) {
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
    set!(w.dentry = path.dentry as u64);
    enter_mount(
        cfg,
        w,
        (path.mnt as u64).wrapping_sub(u64::from(off.mount_mnt)),
    );
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
        let name = unsafe { core::ptr::read_volatile(&raw const (*w).slots[i]) };
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
