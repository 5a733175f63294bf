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
use vigil_common::{
    CAST_MARKER, DIR_LEN, KernelConfig, NAME_READ, PathComponents, SPAN_MAX, Span, path_flags,
};

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
///
/// With a BTF type id (see [`vigil_common::TypeIds`]) nothing is read up
/// front: each member is a typed load from the object cast to its type.
struct Words {
    base: u64,
    span: &'static Span,
    w: *const [u64; SPAN_WORDS],
    typed: *const u8,
}

const SPAN_WORDS: usize = SPAN_MAX as usize / 8;

#[map]
static SPAN_SCRATCH: PerCpuArray<[u64; SPAN_WORDS]> = PerCpuArray::with_max_entries(1, 0);

impl Words {
    #[inline(always)]
    fn read(base: u64, span: &'static Span, type_id: u32) -> Self {
        let mut w: *const [u64; SPAN_WORDS] = core::ptr::null();
        if type_id != 0 {
            return Self {
                base,
                span,
                w,
                typed: cast(base, type_id),
            };
        }
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
        Self {
            base,
            span,
            w,
            typed: core::ptr::null(),
        }
    }

    /// The 8-byte member at byte `off` of the object; 0 if unreadable.
    #[inline(always)]
    fn word(&self, off: u32) -> u64 {
        if !self.typed.is_null() {
            return load_as(self.typed, off);
        }
        self.raw(off)
    }

    /// The 4-byte member at byte `off`; 0 if unreadable.
    #[inline(always)]
    fn half(&self, off: u32) -> u32 {
        if !self.typed.is_null() {
            return load_as(self.typed, off);
        }
        self.raw(off) as u32
    }

    /// The word at byte `off` as read by helper (a narrower member in its
    /// low bits).
    #[inline(always)]
    fn raw(&self, off: u32) -> u64 {
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
        let p = Words::read(at as u64, &off.path_span, 0);
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
///
/// Got once per program run and handed down: `bpf_get_current_task_btf`
/// is itself a helper call.
#[derive(Clone, Copy)]
pub struct Task(*const u8);

impl Task {
    #[inline(always)]
    pub fn current() -> Self {
        // SAFETY: helper without arguments.
        Self(unsafe { bpf_get_current_task_btf() as *const u8 })
    }

    /// The typed `struct task_struct *`.
    #[inline(always)]
    pub const fn as_ptr(self) -> *const u8 {
        self.0
    }
}

/// The pointer member at `off` of a typed kernel object (see [`Task`]);
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

/// `p` as a pointer to the kernel struct of BTF id `type_id`
/// (`bpf_rdonly_cast`), whose members are then typed loads: fault-safe, no
/// helper call. With `type_id` 0, the kernel's "untrusted memory": bytes
/// read by fault-safe loads at any offset (Linux 6.17). The type id must be
/// a verifier constant (the read-only configuration's).
///
/// aya 0.14 resolves no kfuncs, so the call is written as its raw
/// instruction with a marker immediate that the loader replaces with the
/// kfunc's id ([`vigil_common::CAST_MARKER`]).
#[inline(always)]
fn cast(p: u64, type_id: u32) -> *const u8 {
    let out: u64;
    // SAFETY: a kfunc call by the BPF calling convention: arguments in r1
    // and r2, the result in r0, r1-r5 clobbered. The cast reads nothing.
    unsafe {
        core::arch::asm!(
            ".quad {marker}",
            marker = const CAST_MARKER,
            inout("r1") p => _,
            inout("r2") u64::from(type_id) => _,
            lateout("r0") out,
            lateout("r3") _,
            lateout("r4") _,
            lateout("r5") _,
            options(nostack, nomem, preserves_flags),
        );
    }
    out as *const u8
}

/// The `struct path` member at `off` of the current task's `fs_struct`.
#[inline(always)]
fn fs_path(cfg: &'static KernelConfig, task: Task, off: u32) -> Option<KPath> {
    let o = &cfg.offsets;
    let fs = load(task.0, o.task_fs);
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
fn task_root(cfg: &'static KernelConfig, task: Task) -> Option<KPath> {
    fs_path(cfg, task, cfg.offsets.fs_root)
}

/// The current task's working directory.
#[inline(always)]
pub fn cwd(cfg: &'static KernelConfig, task: Task) -> Option<KPath> {
    fs_path(cfg, task, cfg.offsets.fs_pwd)
}

/// The path of the current task's executable (`current->mm->exe_file`).
#[inline(always)]
pub fn exe_path(cfg: &'static KernelConfig, task: Task) -> Option<KPath> {
    let off = &cfg.offsets;
    if off.types.file != 0 {
        let file = load(load(task.0, off.task_mm), off.mm_exe_file);
        let dentry = load(file, off.file_path + off.path_dentry);
        if dentry.is_null() {
            return None;
        }
        return Some(KPath {
            mnt: load(file, off.file_path + off.path_mnt),
            dentry,
        });
    }
    let mm: *const u8 = read_field(current_task(), off.task_mm)?;
    let file: *const u8 = read_field(mm, off.mm_exe_file)?;
    read_path(cfg, file.wrapping_add(off.file_path as usize))
}

/// The identity of a dentry's file: (device, inode number, link count);
/// zeros and `u32::MAX` links when unreadable.
#[inline(always)]
pub fn file_id(cfg: &'static KernelConfig, dentry: *const u8) -> (u32, u64, u32) {
    let off = &cfg.offsets;
    if off.types.dentry != 0 {
        let inode: u64 = load_as(cast(dentry as u64, off.types.dentry), off.dentry_inode);
        return inode_id(cfg, inode);
    }
    match read_field::<u64>(dentry, off.dentry_inode) {
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
    let i = Words::read(inode, &off.inode_span, off.types.inode);
    let sb = i.word(off.inode_sb);
    if sb == 0 {
        // Unreadable: every inode has a superblock.
        return (0, 0, u32::MAX);
    }
    let ino = i.word(off.inode_ino);
    let nlink = i.half(off.inode_nlink);
    let dev = if off.types.super_block != 0 {
        load_as::<u32>(cast(sb, off.types.super_block), off.sb_dev)
    } else {
        read_field::<u32>(sb as *const u8, off.sb_dev).unwrap_or(0)
    };
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
pub fn fd_file(cfg: &'static KernelConfig, task: Task, fd: i32) -> Option<OpenFile> {
    let off = &cfg.offsets;
    if fd < 0 {
        return None;
    }
    let fdt = load(load(task.0, off.task_files), off.files_fdt);
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
    let slot = fds + u64::from(fd as u32) * 8;
    let file: *const u8 = if off.types.kiocb != 0 {
        // The slot read as the `ki_filp` of a `struct kiocb` placed over
        // it: a typed `struct file *`, with no helper call.
        let kiocb = cast(slot - u64::from(off.kiocb_filp), off.types.kiocb);
        let file: u64 = load_as(kiocb, off.kiocb_filp);
        file as *const u8
    } else {
        // SAFETY: bounded by max_fds; the helper faults safely.
        unsafe { aya_ebpf::helpers::bpf_probe_read_kernel(slot as *const *const u8) }.ok()?
    };
    if file.is_null() {
        return None;
    }
    let at = off.file_path;
    let (mnt, dentry, inode) = if off.file_span.len == 0 && off.types.file == 0 {
        let p = read_path(cfg, file.wrapping_add(at as usize))?;
        let inode = read_field::<u64>(file, off.file_inode).unwrap_or(0);
        (p.mnt as u64, p.dentry as u64, inode)
    } else {
        let f = Words::read(file as u64, &off.file_span, off.types.file);
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
pub fn fd_path(cfg: &'static KernelConfig, task: Task, fd: i32) -> Option<KPath> {
    fd_file(cfg, task, fd).map(|f| f.path)
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
    /// Their lengths (`d_name.len`), where names are read by typed loads.
    lens: [u64; MAX_NAMES],
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
    let m = Words::read(mount, &off.mount_span, off.types.mount);
    set!(w.mount = mount);
    let vfsmnt = mount + u64::from(off.mount_mnt);
    set!(w.vfsmnt = vfsmnt);
    set!(w.mnt_root = m.word(off.mount_mnt + off.vfsmount_root));
    set!(w.mnt_parent = m.word(off.mount_parent));
    set!(w.mountpoint = m.word(off.mount_mountpoint));
}

/// Queues the name of the dentry read in `d` to be read.
#[inline(always)]
fn push_name(cfg: &'static KernelConfig, w: *mut Walk, d: &Words) -> bool {
    let off = &cfg.offsets;
    let count = get!(w.count);
    if count >= MAX_NAMES as u64 {
        return false;
    }
    let i = (count as usize) & (MAX_NAMES - 1);
    let len = if off.types.dentry != 0 {
        d.half(off.dentry_name_len)
    } else {
        0
    };
    // SAFETY: index masked into the arrays.
    unsafe {
        core::ptr::write_volatile(&raw mut (*w).slots[i], d.word(off.dentry_name));
        core::ptr::write_volatile(&raw mut (*w).lens[i], u64::from(len));
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
        let d = Words::read(dentry, &off.dentry_span, off.types.dentry);
        let parent = d.word(off.dentry_parent);
        if parent == dentry {
            // Its own parent but not its mount's root: a file of no
            // directory (memfd, anonymous inode). Crossing to the mount's
            // parent would give it a path it does not have; its one name
            // is what it is.
            push_name(cfg, w, &d);
            set!(w.flags = u64::from(path_flags::DETACHED));
            return;
        }
        if parent != 0 {
            if !push_name(cfg, w, &d) {
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

/// Copies the name of `len` bytes at `name` (kernel memory) to `dst` as a
/// NUL-terminated component, a word at a time by fault-safe loads, cut at
/// [`NAME_READ`] bytes with its terminator; the bytes written.
///
/// Whole words are copied: the last may carry bytes past the name, which
/// the next component or the terminator overwrites, or which lie past the
/// path's length and are never sent.
#[inline(always)]
// Names are word-aligned: inline in the dentry (a member of `unsigned
// long` words) or the array of a kmalloc'd `external_name`.
#[allow(clippy::cast_ptr_alignment)]
fn copy_name(name: u64, len: u64, dst: *mut u8) -> u64 {
    const WORDS: usize = NAME_READ / 8;
    let n = len.min(NAME_READ as u64 - 1);
    let src = cast(name, 0).cast::<u64>();
    for j in 0..WORDS {
        if (j as u64) * 8 > n {
            break;
        }
        // SAFETY: a fault-safe load from untrusted kernel memory, and a
        // store within `dst`'s NAME_READ bytes of room (j < WORDS).
        unsafe {
            let v = core::ptr::read_volatile(src.wrapping_add(j));
            core::ptr::write_unaligned(dst.wrapping_add(j * 8).cast::<u64>(), v);
        }
    }
    // SAFETY: n < NAME_READ.
    unsafe { core::ptr::write_volatile(dst.wrapping_add(n as usize & (NAME_READ - 1)), 0) };
    n + 1
}

/// Writes `path`'s components into `out`, leaf first.
///
/// Two loops: the first walks dentries and mounts and collects the dentries
/// to name, the second reads the names.
#[inline(always)]
pub fn resolve(cfg: &'static KernelConfig, task: Task, path: KPath, out: &mut PathComponents) {
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
        task_root(cfg, task).map_or((0, 0), |r| (r.dentry as u64, r.mnt as u64));
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
        if off.types.dentry != 0 {
            // SAFETY: as above.
            let n = unsafe { core::ptr::read_volatile(&raw const (*w).lens[i]) };
            if name == 0 || n == 0 {
                set!(w.flags = u64::from(path_flags::TRUNCATED));
                break;
            }
            let n = copy_name(name, n, dst);
            set!(w.len = len + n);
            continue;
        }
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
