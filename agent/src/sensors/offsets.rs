//! Offsets the programs need, found on the running kernel at load time:
//! tracepoint fields from tracefs `format` files, struct members from
//! `/sys/kernel/btf/vmlinux`. Nothing is a constant that fits one kernel.

use std::path::{Path, PathBuf};

use btf_rs::{Btf, Type};
use vigil_common::{Offsets, Span, TypeIds};

use crate::paths;

#[derive(Debug, thiserror::Error)]
pub enum OffsetError {
    #[error(
        "tracefs is not mounted (tried {tried}); mount it with `mount -t tracefs tracefs /sys/kernel/tracing`"
    )]
    NoTracefs { tried: String },
    #[error("reading tracepoint format {path}: {source}")]
    ReadFormat {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("tracepoint {tracepoint} has no field `{field}` in its format file")]
    MissingField { tracepoint: String, field: String },
    #[error("tracepoint {tracepoint}: field `{field}` offset {offset} is out of range")]
    FieldOutOfRange {
        tracepoint: String,
        field: String,
        offset: usize,
    },
    #[error(
        "tracepoints {a} and {b}: field `{field}` is at offsets {a_at} and {b_at}; one program reads both"
    )]
    Mismatch {
        a: &'static str,
        b: &'static str,
        field: &'static str,
        a_at: u16,
        b_at: u16,
    },
    #[error("reading kernel BTF {path}: {message}")]
    Btf { path: String, message: String },
    #[error("kernel BTF has no struct `{0}`")]
    MissingStruct(String),
    #[error("kernel BTF: struct `{strukt}` has no member `{member}`")]
    MissingMember { strukt: String, member: String },
}

/// A field of a tracepoint `format` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FormatField {
    pub name: String,
    pub offset: usize,
    pub size: usize,
}

/// Parses the `field:` lines of a tracefs `format` file.
///
/// A line looks like `field:__data_loc char[] filename;\toffset:8;\tsize:4;\tsigned:0;`;
/// the name is the last word of the declaration, without any array suffix.
pub fn parse_format(text: &str) -> Vec<FormatField> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            let decl = line.strip_prefix("field:")?;
            let mut parts = decl.split(';').map(str::trim);
            let declaration = parts.next()?;
            let mut offset = None;
            let mut size = None;
            for p in parts {
                if let Some(v) = p.strip_prefix("offset:") {
                    offset = v.parse().ok();
                } else if let Some(v) = p.strip_prefix("size:") {
                    size = v.parse().ok();
                }
            }
            let last = declaration.split_whitespace().last()?;
            let name = last.split('[').next()?.trim_start_matches('*').to_owned();
            Some(FormatField {
                name,
                offset: offset?,
                size: size?,
            })
        })
        .collect()
}

/// Finds the mounted tracefs.
pub fn tracefs() -> Result<PathBuf, OffsetError> {
    paths::TRACEFS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("events").is_dir())
        .ok_or_else(|| OffsetError::NoTracefs {
            tried: paths::TRACEFS.join(", "),
        })
}

struct Formats<'a> {
    tracefs: &'a Path,
}

impl Formats<'_> {
    fn fields(&self, tracepoint: &str) -> Result<Vec<FormatField>, OffsetError> {
        let path = self.tracefs.join("events").join(tracepoint).join("format");
        let text = std::fs::read_to_string(&path)
            .map_err(|source| OffsetError::ReadFormat { path, source })?;
        Ok(parse_format(&text))
    }

    fn offset(&self, tracepoint: &str, field: &str) -> Result<u16, OffsetError> {
        self.optional(tracepoint, field)?
            .ok_or_else(|| OffsetError::MissingField {
                tracepoint: tracepoint.to_owned(),
                field: field.to_owned(),
            })
    }

    fn optional(&self, tracepoint: &str, field: &str) -> Result<Option<u16>, OffsetError> {
        let Some(f) = self
            .fields(tracepoint)?
            .into_iter()
            .find(|f| f.name == field)
        else {
            return Ok(None);
        };
        // The programs mask record offsets with 0xff so the verifier sees a bound.
        if f.offset > 0xff {
            return Err(OffsetError::FieldOutOfRange {
                tracepoint: tracepoint.to_owned(),
                field: field.to_owned(),
                offset: f.offset,
            });
        }
        Ok(Some(f.offset as u16))
    }
}

/// Kernel struct member offsets from BTF.
pub struct KernelBtf {
    btf: Btf,
}

impl KernelBtf {
    pub fn load(path: &Path) -> Result<Self, OffsetError> {
        let btf = Btf::from_file(path).map_err(|e| OffsetError::Btf {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Ok(Self { btf })
    }

    /// Byte offset of `member` in `struct strukt`, looking through anonymous
    /// structs and unions (as `task_struct` has).
    pub fn member_offset(&self, strukt: &str, member: &str) -> Result<u32, OffsetError> {
        let types = self
            .btf
            .resolve_types_by_name(strukt)
            .map_err(|_| OffsetError::MissingStruct(strukt.to_owned()))?;
        let s = types
            .into_iter()
            .find_map(|t| match t {
                Type::Struct(s) if !s.members.is_empty() => Some(s),
                _ => None,
            })
            .ok_or_else(|| OffsetError::MissingStruct(strukt.to_owned()))?;
        self.find_in(&s, member, 0)
            .ok_or_else(|| OffsetError::MissingMember {
                strukt: strukt.to_owned(),
                member: member.to_owned(),
            })
    }

    /// The BTF id of the definition of `struct name` (not a declaration).
    pub fn struct_id(&self, name: &str) -> Option<u32> {
        self.btf.resolve_ids_by_name(name).ok()?.into_iter().find(|&id| {
            matches!(self.btf.resolve_type_by_id(id), Ok(Type::Struct(s)) if !s.members.is_empty())
        })
    }

    /// The BTF id of the kernel function (or kfunc) `name`.
    pub fn func_id(&self, name: &str) -> Option<u32> {
        self.btf
            .resolve_ids_by_name(name)
            .ok()?
            .into_iter()
            .find(|&id| matches!(self.btf.resolve_type_by_id(id), Ok(Type::Func(_))))
    }

    /// Whether `enum name` has a value named `value`.
    pub fn enum_has(&self, name: &str, value: &str) -> bool {
        let Ok(types) = self.btf.resolve_types_by_name(name) else {
            return false;
        };
        types.iter().any(|t| match t {
            Type::Enum(e) => e
                .members
                .iter()
                .any(|m| self.btf.resolve_name(m).is_ok_and(|n| n == value)),
            _ => false,
        })
    }

    fn find_in(&self, s: &btf_rs::Struct, member: &str, base_bits: u32) -> Option<u32> {
        for m in &s.members {
            let name = self.btf.resolve_name(m).unwrap_or_default();
            let bits = base_bits + m.bit_offset();
            if name == member {
                return Some(bits / 8);
            }
            if name.is_empty()
                && let Ok(Type::Struct(inner) | Type::Union(inner)) =
                    self.btf.resolve_chained_type(m)
                && let Some(off) = self.find_in(&inner, member, bits)
            {
                return Some(off);
            }
        }
        None
    }
}

/// What the programs are loaded with, from the running kernel.
#[derive(Clone, Copy, Debug)]
pub struct KernelLayout {
    pub offsets: Offsets,
    /// `bpf_rdonly_cast`'s BTF id where typed reads are used
    /// ([`TypeIds`]); `None`: the programs read with helpers.
    pub rdonly_cast: Option<u32>,
}

/// The typed reads of a resolved-path read, where the kernel has what they
/// need: the `bpf_rdonly_cast` kfunc (Linux 6.2) and loads from untrusted
/// memory of any type through it (`BPF_FEAT_RDONLY_CAST_TO_VOID`, Linux
/// 6.17), and a BTF id for every struct walked.
fn typed_reads(btf: &KernelBtf) -> Option<(u32, TypeIds)> {
    let kfunc = btf.func_id("bpf_rdonly_cast")?;
    if !btf.enum_has("bpf_features", "BPF_FEAT_RDONLY_CAST_TO_VOID") {
        return None;
    }
    let types = TypeIds {
        file: btf.struct_id("file")?,
        dentry: btf.struct_id("dentry")?,
        inode: btf.struct_id("inode")?,
        super_block: btf.struct_id("super_block")?,
        mount: btf.struct_id("mount")?,
        kiocb: btf.struct_id("kiocb")?,
    };
    Some((kfunc, types))
}

/// All offsets the programs use, from the running kernel, and whether they
/// read by typed loads.
pub fn discover(tracefs: &Path, btf_path: &Path) -> Result<KernelLayout, OffsetError> {
    let f = Formats { tracefs };
    let btf = KernelBtf::load(btf_path)?;
    let sk_cgrp_data = btf.member_offset("sock", "sk_cgrp_data")?;
    let data_cgroup = btf.member_offset("sock_cgroup_data", "cgroup")?;
    let regs = SyscallRegs::discover(&btf)?;
    let iou = IoUring::discover(&f, &btf)?;
    let process_vm_pid = {
        const READ: &str = "syscalls/sys_enter_process_vm_readv";
        const WRITE: &str = "syscalls/sys_enter_process_vm_writev";
        let (r, w) = (f.offset(READ, "pid")?, f.offset(WRITE, "pid")?);
        if r != w {
            return Err(OffsetError::Mismatch {
                a: READ,
                b: WRITE,
                field: "pid",
                a_at: r,
                b_at: w,
            });
        }
        r
    };
    let mut o = Offsets {
        exec_filename: f.offset("sched/sched_process_exec", "filename")?,
        exec_old_pid: f.offset("sched/sched_process_exec", "old_pid")?,
        exit_group_dead: f
            .optional("sched/sched_process_exit", "group_dead")?
            .unwrap_or(0),
        sys_exit_nr: f.offset("syscalls/sys_exit_openat", "__syscall_nr")?,
        sys_exit_ret: f.offset("syscalls/sys_exit_openat", "ret")?,
        iou_create_fd: iou.create_fd,
        iou_create_sq: iou.create_sq,
        iou_create_cq: iou.create_cq,
        iou_create_flags: iou.create_flags,
        iou_submit_req: iou.submit_req,
        iou_submit_opcode: iou.submit_opcode,
        iou_known: u16::from(iou.members.is_some()),
        sock_family: f.offset("syscalls/sys_enter_socket", "family")?,
        sock_type: f.offset("syscalls/sys_enter_socket", "type")?,
        sock_protocol: f.offset("syscalls/sys_enter_socket", "protocol")?,
        ptrace_request: f.offset("syscalls/sys_enter_ptrace", "request")?,
        ptrace_pid: f.offset("syscalls/sys_enter_ptrace", "pid")?,
        process_vm_pid,
        pidfd_open_pid: f.offset("syscalls/sys_enter_pidfd_open", "pid")?,
        bpf_cmd: f.offset("syscalls/sys_enter_bpf", "cmd")?,
        task_real_parent: btf.member_offset("task_struct", "real_parent")?,
        task_tgid: btf.member_offset("task_struct", "tgid")?,
        task_pid: btf.member_offset("task_struct", "pid")?,
        task_exit_code: btf.member_offset("task_struct", "exit_code")?,
        sock_cgroup: sk_cgrp_data + data_cgroup,
        cgroup_kn: btf.member_offset("cgroup", "kn")?,
        cgroup_level: btf.member_offset("cgroup", "level")?,
        cgroup_ancestors: btf.member_offset("cgroup", "ancestors")?,
        kernfs_node_id: btf.member_offset("kernfs_node", "id")?,
        task_fs: btf.member_offset("task_struct", "fs")?,
        task_files: btf.member_offset("task_struct", "files")?,
        task_mm: btf.member_offset("task_struct", "mm")?,
        fs_pwd: btf.member_offset("fs_struct", "pwd")?,
        fs_root: btf.member_offset("fs_struct", "root")?,
        path_mnt: btf.member_offset("path", "mnt")?,
        path_dentry: btf.member_offset("path", "dentry")?,
        dentry_parent: btf.member_offset("dentry", "d_parent")?,
        dentry_name: btf.member_offset("dentry", "d_name")? + btf.member_offset("qstr", "name")?,
        vfsmount_root: btf.member_offset("vfsmount", "mnt_root")?,
        mount_mnt: btf.member_offset("mount", "mnt")?,
        mount_parent: btf.member_offset("mount", "mnt_parent")?,
        mount_mountpoint: btf.member_offset("mount", "mnt_mountpoint")?,
        files_fdt: btf.member_offset("files_struct", "fdt")?,
        fdtable_fd: btf.member_offset("fdtable", "fd")?,
        fdtable_max_fds: btf.member_offset("fdtable", "max_fds")?,
        file_path: btf.member_offset("file", "f_path")?,
        file_inode: btf.member_offset("file", "f_inode")?,
        mm_exe_file: btf.member_offset("mm_struct", "exe_file")?,
        dentry_inode: btf.member_offset("dentry", "d_inode")?,
        inode_nlink: btf.member_offset("inode", "i_nlink")?,
        inode_ino: btf.member_offset("inode", "i_ino")?,
        inode_sb: btf.member_offset("inode", "i_sb")?,
        sb_dev: btf.member_offset("super_block", "s_dev")?,
        mm_arg_start: btf.member_offset("mm_struct", "arg_start")?,
        mm_arg_end: btf.member_offset("mm_struct", "arg_end")?,
        kiocb_cmd: iou.members.map_or(0, |m| m.kiocb_cmd),
        io_open_filename: iou.members.map_or(0, |m| m.io_open_filename),
        io_open_flags: iou.members.map_or(0, |m| m.io_open_flags),
        filename_name: iou.members.map_or(0, |m| m.filename_name),
        // Both from Linux 6.7, with the unix hooks; 0 before.
        sa_kern_uaddr: btf
            .member_offset("bpf_sock_addr_kern", "uaddr")
            .unwrap_or(0),
        cgroup_root: btf.member_offset("cgroup", "root")?,
        task_cgroups: btf.member_offset("task_struct", "cgroups")?,
        css_set_dfl_cgrp: btf.member_offset("css_set", "dfl_cgrp")?,
        root_hierarchy_id: btf.member_offset("cgroup_root", "hierarchy_id")?,
        sa_kern_uaddrlen: btf
            .member_offset("bpf_sock_addr_kern", "uaddrlen")
            .unwrap_or(0),
        regs_args: regs.args,
        ..Offsets::zeroed()
    };
    set_spans(
        &mut o,
        btf.member_offset("mount", "mnt")? + btf.member_offset("vfsmount", "mnt_root")?,
    );
    let typed = typed_reads(&btf).and_then(|(kfunc, types)| {
        o.dentry_name_len =
            btf.member_offset("dentry", "d_name").ok()? + btf.member_offset("qstr", "len").ok()?;
        o.kiocb_filp = btf.member_offset("kiocb", "ki_filp").ok()?;
        // Last, after every `?`: the ids are all set or none is.
        o.types = types;
        Some(kfunc)
    });
    Ok(KernelLayout {
        offsets: o,
        rdonly_cast: typed,
    })
}

/// The programs' one-read member groups ([`Span`]), from the member
/// offsets already found: a layout where a group does not fit one read
/// falls back to reading member by member, never to a wrong word.
fn set_spans(o: &mut Offsets, mount_root: u32) {
    const P: u32 = 8;
    o.file_span = Span::covering(
        &[
            (o.file_inode, P),
            (o.file_path + o.path_mnt, P),
            (o.file_path + o.path_dentry, P),
        ],
        false,
    );
    o.inode_span = Span::covering(
        &[(o.inode_sb, P), (o.inode_ino, P), (o.inode_nlink, 4)],
        false,
    );
    o.dentry_span = Span::covering(&[(o.dentry_parent, P), (o.dentry_name, P)], false);
    o.mount_span = Span::covering(
        &[
            (o.mount_parent, P),
            (o.mount_mountpoint, P),
            (mount_root, P),
        ],
        false,
    );
    o.path_span = Span::covering(&[(o.path_mnt, P), (o.path_dentry, P)], true);
}

/// io_uring's tracepoint fields and the members its openat requests are
/// read through; all zero (and no members) on a kernel without io_uring.
struct IoUring {
    create_fd: u16,
    create_sq: u16,
    create_cq: u16,
    create_flags: u16,
    submit_req: u16,
    submit_opcode: u16,
    members: Option<IoUringMembers>,
}

#[derive(Clone, Copy)]
struct IoUringMembers {
    kiocb_cmd: u32,
    io_open_filename: u32,
    io_open_flags: u32,
    filename_name: u32,
}

impl IoUring {
    fn discover(f: &Formats<'_>, btf: &KernelBtf) -> Result<Self, OffsetError> {
        const CREATE: &str = "io_uring/io_uring_create";
        const SUBMIT: &str = "io_uring/io_uring_submit_req";
        let field = |event: &str, name: &str| -> Result<u16, OffsetError> {
            if !f.tracefs.join("events").join(event).exists() {
                return Ok(0);
            }
            Ok(f.optional(event, name)?.unwrap_or(0))
        };
        let members = (|| {
            Some(IoUringMembers {
                kiocb_cmd: btf.member_offset("io_kiocb", "cmd").ok()?,
                io_open_filename: btf.member_offset("io_open", "filename").ok()?,
                io_open_flags: btf.member_offset("io_open", "how").ok()?
                    + btf.member_offset("open_how", "flags").ok()?,
                filename_name: btf.member_offset("filename", "name").ok()?,
            })
        })();
        Ok(Self {
            create_fd: field(CREATE, "fd")?,
            create_sq: field(CREATE, "sq_entries")?,
            create_cq: field(CREATE, "cq_entries")?,
            create_flags: field(CREATE, "flags")?,
            submit_req: field(SUBMIT, "req")?,
            submit_opcode: field(SUBMIT, "opcode")?,
            members,
        })
    }
}

/// Where the syscall number and arguments sit in `struct pt_regs` at
/// syscall exit.
struct SyscallRegs {
    args: [u32; 4],
}

impl SyscallRegs {
    #[cfg(target_arch = "x86_64")]
    fn discover(btf: &KernelBtf) -> Result<Self, OffsetError> {
        let slot = |m: &str| btf.member_offset("pt_regs", m);
        Ok(Self {
            args: [slot("di")?, slot("si")?, slot("dx")?, slot("r10")?],
        })
    }

    /// arm64: `regs[0]` holds the return value at exit; the first argument
    /// survives in `orig_x0`.
    #[cfg(target_arch = "aarch64")]
    fn discover(btf: &KernelBtf) -> Result<Self, OffsetError> {
        let regs = btf.member_offset("pt_regs", "regs")?;
        Ok(Self {
            args: [
                btf.member_offset("pt_regs", "orig_x0")?,
                regs + 8,
                regs + 16,
                regs + 24,
            ],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXEC_FORMAT: &str = "name: sched_process_exec\nID: 312\nformat:\n\
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\
\tfield:__data_loc char[] filename;\toffset:8;\tsize:4;\tsigned:0;\n\
\tfield:pid_t pid;\toffset:12;\tsize:4;\tsigned:1;\n\
\tfield:pid_t old_pid;\toffset:16;\tsize:4;\tsigned:1;\n\n\
print fmt: \"filename=%s pid=%d old_pid=%d\", __get_str(filename), REC->pid, REC->old_pid\n";

    #[test]
    fn parses_format_fields() {
        let fields = parse_format(EXEC_FORMAT);
        let get = |n: &str| fields.iter().find(|f| f.name == n).cloned();
        assert_eq!(get("filename").map(|f| (f.offset, f.size)), Some((8, 4)));
        assert_eq!(get("old_pid").map(|f| f.offset), Some(16));
        assert_eq!(get("common_pid").map(|f| f.offset), Some(4));
    }

    #[test]
    fn parses_arrays_and_pointers() {
        let text = "\tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\
\tfield:const char * filename;\toffset:24;\tsize:8;\tsigned:0;\n\
\tfield:garbage\n";
        let fields = parse_format(text);
        assert_eq!(fields.len(), 2);
        assert_eq!(fields[0].name, "comm");
        assert_eq!(fields[1].name, "filename");
        assert_eq!(fields[1].offset, 24);
    }

    /// The one-read groups of Linux 6.18's layout, and member-by-member
    /// reads for a layout whose members are too far apart.
    #[test]
    fn spans_cover_the_members_read_together() {
        let mut o = Offsets {
            file_inode: 32,
            file_path: 64,
            path_mnt: 0,
            path_dentry: 8,
            inode_sb: 40,
            inode_ino: 64,
            inode_nlink: 72,
            dentry_parent: 24,
            dentry_name: 40,
            mount_parent: 16,
            mount_mountpoint: 24,
            ..Offsets::zeroed()
        };
        set_spans(&mut o, 32);
        assert_eq!(o.file_span, Span { start: 32, len: 48 });
        assert_eq!(o.inode_span, Span { start: 40, len: 36 });
        assert_eq!(o.dentry_span, Span { start: 24, len: 24 });
        assert_eq!(o.mount_span, Span { start: 16, len: 24 });
        assert_eq!(o.path_span, Span { start: 0, len: 16 });
        o.inode_nlink = 400;
        set_spans(&mut o, 32);
        assert_eq!(o.inode_span, Span::NONE);
    }

    /// The running kernel's BTF has every member the programs read.
    #[test]
    fn typed_reads_find_every_type_in_the_kernel_btf() {
        // The development and CI kernel (6.18) has the kfunc and
        // untrusted-memory loads.
        let btf = KernelBtf::load(Path::new(paths::KERNEL_BTF)).unwrap();
        let (kfunc, types) = typed_reads(&btf).expect("typed reads on this kernel");
        assert!(kfunc > 0);
        assert!(types.complete(), "{types:?}");
        assert_ne!(types.file, types.dentry);
        assert!(btf.struct_id("no_such_struct_here").is_none());
        assert!(btf.func_id("no_such_kfunc_here").is_none());
        assert!(!btf.enum_has("bpf_features", "NO_SUCH_FEATURE"));
    }

    #[test]
    fn kernel_btf_has_the_members() {
        let btf = KernelBtf::load(Path::new(paths::KERNEL_BTF)).unwrap();
        let tgid = btf.member_offset("task_struct", "tgid").unwrap();
        let pid = btf.member_offset("task_struct", "pid").unwrap();
        assert_eq!(tgid, pid + 4, "pid and tgid are adjacent pid_t fields");
        assert!(btf.member_offset("kernfs_node", "id").is_ok());
        assert!(matches!(
            btf.member_offset("task_struct", "no_such_member"),
            Err(OffsetError::MissingMember { .. })
        ));
    }
}
