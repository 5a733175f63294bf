//! The typed event model: what the daemon derives from kernel records and
//! hands to the scope engine, the journal and every output.
//!
//! Field names here are the JSON-lines schema documented in `docs/events.md`;
//! renaming one is a breaking change for consumers.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

mod time;

pub use time::format_time;
use time::rfc3339;

/// One attributed runtime action (or a daemon-side record such as an anomaly).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Per-node sequence number; 0 until the journal assigns one.
    #[serde(default)]
    pub seq: u64,
    /// Wall-clock time; RFC 3339 with nanoseconds in JSON, a timestamp on
    /// the wire, formatted only where it is written out.
    #[serde(with = "rfc3339")]
    pub time: SystemTime,
    /// Kernel timestamp (`CLOCK_BOOTTIME`, ns); 0 for daemon-made events.
    #[serde(default)]
    pub kernel_ts_ns: u64,
    /// Who acted: agent, session, task and workload.
    pub identity: Identity,
    /// The acting process; absent for events with no process (config changes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<Process>,
    /// What happened.
    #[serde(flatten)]
    pub payload: Payload,
}

/// The identity an event is attributed to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The governed agent, when attribution succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The agent session (`vigil exec`), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The approved task the action belongs to, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// cgroup v2 id of the acting task.
    #[serde(default)]
    pub cgroup_id: u64,
    /// cgroup v2 path relative to the mount (`/kubepods.slice/...`), when resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// Container and pod, when the cgroup belongs to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<Workload>,
}

/// Container/pod identity derived from the cgroup path (and later the API server).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workload {
    /// Container runtime (`containerd`, `crio`, `docker`).
    pub runtime: String,
    /// Full 64-hex container id.
    pub container_id: String,
    /// Pod UID in its canonical dashed form, when the path carries it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The pod's service account, once pod metadata is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    /// `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spiffe_id: Option<String>,
    /// The container's name in the pod spec, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
    /// The pod's labels, once known.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// The process that acted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    /// Process id (thread-group id); 0 where the hook runs in no task (accept).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Parent process id; 0 where unknown.
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub comm: String,
    /// Executable path, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    /// Command line, when known (from the last exec seen, or `/proc`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub argv: Vec<String>,
    /// pids from this process up to the session root (or as far as known).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lineage: Vec<u32>,
}

/// The kind-specific part of an event; `kind` in JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Payload {
    Exec(Exec),
    Fork(Fork),
    Exit(Exit),
    Connect(Connect),
    Accept(Accept),
    FileOpen(FileOpen),
    /// A new name for a file: a hard link, a symbolic link or a rename.
    FileLink(FileLink),
    DnsAnswer(DnsAnswer),
    /// A DNS query a watched socket sent to port 53.
    DnsQuery(DnsQuery),
    Anomaly(Anomaly),
    /// Records the kernel could not deliver (ring buffer full), per sensor.
    Loss(Loss),
    /// A session started by `vigil exec`.
    SessionStart(SessionStart),
    /// An agent or session was revoked.
    Revocation(Revocation),
    /// A revocation was lifted.
    Restore(Restore),
    /// A task approval was granted.
    TaskApproved(TaskApproved),
    /// A task approval ended, early or by expiry.
    TaskEnded(TaskEnded),
    /// The configuration was (re)loaded, or a reload was rejected.
    ConfigChange(ConfigChange),
    /// Events a subscriber needed were pruned; made per subscriber, never journaled.
    Gap(Gap),
    /// A pin of the daemon was removed or replaced, or a link detached.
    SensorTampered(SensorTampered),
    /// io_uring activity other than file opens (a ring set up, a connect).
    IoUring(IoUring),
    /// A socket of an unusual family or type (raw, packet, netlink, …).
    Socket(Socket),
    /// A connect or datagram send to a unix socket address.
    UnixConnect(UnixConnect),
    /// A watched process moved out of its session's cgroup.
    SessionEscape(SessionEscape),
    /// A watched process reached for the daemon (a signal, `ptrace`, its
    /// memory, a pidfd of it) or called `bpf()`.
    TamperAttempt(TamperAttempt),
}

impl Payload {
    /// The `kind` string of this payload, as in JSON.
    #[must_use]
    pub const fn kind(&self) -> &'static str {
        match self {
            Self::Exec(_) => "exec",
            Self::Fork(_) => "fork",
            Self::Exit(_) => "exit",
            Self::Connect(_) => "connect",
            Self::Accept(_) => "accept",
            Self::FileOpen(_) => "file_open",
            Self::FileLink(_) => "file_link",
            Self::DnsAnswer(_) => "dns_answer",
            Self::DnsQuery(_) => "dns_query",
            Self::Anomaly(_) => "anomaly",
            Self::Loss(_) => "loss",
            Self::SessionStart(_) => "session_start",
            Self::Revocation(_) => "revocation",
            Self::Restore(_) => "restore",
            Self::TaskApproved(_) => "task_approved",
            Self::TaskEnded(_) => "task_ended",
            Self::ConfigChange(_) => "config_change",
            Self::Gap(_) => "gap",
            Self::SensorTampered(_) => "sensor_tampered",
            Self::IoUring(_) => "io_uring",
            Self::Socket(_) => "socket",
            Self::UnixConnect(_) => "unix_connect",
            Self::SessionEscape(_) => "session_escape",
            Self::TamperAttempt(_) => "tamper_attempt",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exec {
    /// Path the program was executed as (`bprm->filename`).
    pub filename: String,
    pub argv: Vec<String>,
    /// True when arguments were cut to fit the kernel record.
    #[serde(default)]
    pub argv_truncated: bool,
    /// True when the kernel killed the caller at exec entry (revoked, or no
    /// active task approval): the new program never ran.
    #[serde(default)]
    pub blocked: bool,
    /// True when the program has no name on any file system (a memfd, or a
    /// file deleted before the exec and run through its descriptor).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub from_memory: bool,
    /// The program's identity (`mm->exe_file`, read in the kernel): the same
    /// under any name it was run by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inode: Option<FileInode>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fork {
    pub child_pid: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    /// Exit status when the process exited normally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    /// Signal number when a signal ended it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
}

/// Transport protocol of a network event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    Other,
}

impl Protocol {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Other => "other",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connect {
    pub protocol: Protocol,
    pub address: IpAddr,
    pub port: u16,
    /// `connect` or `sendmsg` (an unconnected datagram send).
    pub op: String,
    /// True when the kernel refused the call (enforcement).
    #[serde(default)]
    pub blocked: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accept {
    pub local_address: IpAddr,
    pub local_port: u16,
    pub remote_address: IpAddr,
    pub remote_port: u16,
}

/// How a file was opened, from its flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    Read,
    Write,
    ReadWrite,
}

impl Access {
    /// From `open(2)` flags: the access mode, and `O_CREAT`/`O_TRUNC` count as writes.
    #[must_use]
    pub const fn from_flags(flags: u32) -> Self {
        let mode = flags & (libc::O_ACCMODE as u32);
        let writes_data = flags & ((libc::O_CREAT | libc::O_TRUNC) as u32) != 0;
        if mode == libc::O_RDWR as u32 {
            Self::ReadWrite
        } else if mode == libc::O_WRONLY as u32 {
            Self::Write
        } else if writes_data {
            Self::ReadWrite
        } else {
            Self::Read
        }
    }

    #[must_use]
    pub const fn reads(self) -> bool {
        matches!(self, Self::Read | Self::ReadWrite)
    }

    #[must_use]
    pub const fn writes(self) -> bool {
        matches!(self, Self::Write | Self::ReadWrite)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileOpen {
    /// Absolute path when it could be resolved, else as passed to the syscall.
    pub path: String,
    /// Path as passed to the syscall, when it differs from `path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_path: Option<String>,
    pub flags: u32,
    pub access: Access,
    /// `open`, `openat` or `openat2`.
    pub syscall: String,
    /// The file descriptor on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fd: Option<i32>,
    /// The errno name on failure (`ENOENT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// True when the path was cut to fit the kernel record.
    #[serde(default)]
    pub path_truncated: bool,
    /// True when the kernel killed the opener at entry: it never used the file.
    #[serde(default)]
    pub blocked: bool,
    /// Identical opens by the same process (same path, base directory, flags
    /// and result) since the previous report of this one, counted in the
    /// kernel instead of reported one by one (`daemon.open_repeat_ms`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub repeats: u64,
    /// True for a report of repeats alone: no new open, only the `repeats`
    /// counted after the last report before the process stopped repeating.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub repeat_summary: bool,
    /// The opened file's identity, from the new descriptor in the kernel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inode: Option<FileInode>,
}

/// A new name for a file, at the return of the syscall that made it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileLink {
    /// `hardlink`, `symlink` or `rename`.
    pub op: String,
    /// `link`, `linkat`, `symlink`, `symlinkat`, `rename`, `renameat` or
    /// `renameat2`.
    pub syscall: String,
    /// The file the new name reaches, absolute when it could be resolved:
    /// the existing file of a hard link or rename, the text of a symbolic
    /// link resolved against the link's directory.
    pub target: String,
    /// The first path as passed (a symbolic link's text), when it differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_target: Option<String>,
    /// The new name, absolute when it could be resolved.
    pub path: String,
    /// The new name as passed, when it differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_path: Option<String>,
    /// The identity of the file the new name reaches, looked up by the
    /// daemon after the call (absent when the call failed or the name was
    /// gone by then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inode: Option<FileInode>,
    /// The errno name on failure (`EEXIST`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// True when a path was cut to fit the kernel record.
    #[serde(default)]
    pub path_truncated: bool,
    /// True when the kernel killed the caller (revoked, or no task approval).
    #[serde(default)]
    pub blocked: bool,
}

/// Which file a descriptor is: the same under any name (hard links,
/// symlinks, renames).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileInode {
    /// Device, encoded as `stat(2)` gives it (`st_dev`).
    pub dev: u64,
    pub ino: u64,
    /// Link count at the open; 0 for a file no directory links any more.
    pub nlink: u32,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if signature
const fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsAnswer {
    /// Source of the answer: the server.
    pub server: IpAddr,
    #[serde(default)]
    pub server_port: u16,
    /// Destination of the answer: the receiving socket.
    #[serde(default = "unspecified")]
    pub client: IpAddr,
    #[serde(default)]
    pub client_port: u16,
    /// The message id.
    #[serde(default)]
    pub id: u16,
    /// The question name.
    pub name: String,
    /// Addresses from A/AAAA answers.
    pub addresses: Vec<IpAddr>,
    /// Smallest TTL of those answers, seconds.
    pub ttl: u32,
}

/// A query as it left the sending socket: the name asked is itself data
/// that reaches the resolver (and the servers of the name's domain).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsQuery {
    /// Destination of the query: the resolver.
    pub server: IpAddr,
    pub server_port: u16,
    /// Source of the query: the sending socket.
    pub client: IpAddr,
    pub client_port: u16,
    /// The message id.
    pub id: u16,
    /// The question name, lower-case, no trailing dot; bytes outside
    /// printable ASCII written `\DDD`.
    pub name: String,
    /// The question type (1 A, 28 AAAA, 12 PTR, 16 TXT, ...); 0 when unknown.
    #[serde(default)]
    pub qtype: u16,
}

const fn unspecified() -> IpAddr {
    IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
}

/// Kinds of scope violation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyKind {
    UnapprovedSystem,
    UnapprovedTool,
    DataOutsideScope,
    IdentityOutsideScope,
    /// Activity from a watched process that no agent matches.
    Unattributed,
    /// Activity without an active task approval from an agent that requires one.
    UnapprovedTask,
    /// Attempts blocked because the agent or session is revoked (aggregated).
    RevokedActivity,
    /// A DNS answer not believed (not from a resolver in `systems`, or not
    /// answering a query its socket sent): its addresses allow nothing.
    DnsAnswerRejected,
    /// A watched process set up an io_uring: its requests pass no syscall
    /// the other sensors see.
    IoUringUsed,
    /// A DNS query whose name looks like encoded data (a label too long, or
    /// of too high entropy): a tunnel or exfiltration through a resolver.
    DnsExfiltrationSuspected,
    /// A hard link, symbolic link or rename that gives a credential or
    /// data outside the agent's scope a new name.
    LinkToProtected,
    /// A watched process created a socket of a class outside the agent's
    /// `socket_families` (raw, packet, netlink other than routing, …).
    UnusualSocket,
    /// A watched process moved itself or another one out of its session
    /// cgroup (`cgroup.procs`), out of the subtree the sensors watch.
    SessionEscape,
    /// A watched process reached for the daemon or its state: a signal,
    /// `ptrace`, its memory, `bpf()`, or a write under its pins, state
    /// directory, config file or session cgroups.
    TamperAttempt,
    /// A program that no file system names was run (a memfd, or a deleted
    /// file run through its descriptor) by an agent whose scope does not
    /// allow it (`exec_from_memory`).
    ExecFromMemory,
}

impl AnomalyKind {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::UnapprovedSystem => "unapproved_system",
            Self::UnapprovedTool => "unapproved_tool",
            Self::DataOutsideScope => "data_outside_scope",
            Self::IdentityOutsideScope => "identity_outside_scope",
            Self::Unattributed => "unattributed",
            Self::UnapprovedTask => "unapproved_task",
            Self::RevokedActivity => "revoked_activity",
            Self::DnsAnswerRejected => "dns_answer_rejected",
            Self::IoUringUsed => "io_uring_used",
            Self::DnsExfiltrationSuspected => "dns_exfiltration_suspected",
            Self::LinkToProtected => "link_to_protected",
            Self::UnusualSocket => "unusual_socket",
            Self::SessionEscape => "session_escape",
            Self::TamperAttempt => "tamper_attempt",
            Self::ExecFromMemory => "exec_from_memory",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    /// The severity as in JSON (`medium`).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
}

/// A step outside an agent's declared boundary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Anomaly {
    pub anomaly: AnomalyKind,
    pub severity: Severity,
    /// The rule broken, in words.
    pub reason: String,
    /// The identity touched, for `identity_outside_scope`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_name: Option<String>,
    /// Identical anomalies folded into this one (1 for the first report).
    pub count: u64,
    /// What the kernel or daemon did: `observed`, `killed`, `blocked`, `revoked`.
    pub action: String,
    /// The event that broke the rule.
    pub offending: Box<Event>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Loss {
    pub sensor: String,
    /// Records lost since the previous loss event for this sensor.
    pub lost: u64,
    /// Records lost since the daemon started.
    pub total: u64,
}

/// Someone removed or replaced one of the daemon's pins, or detached one
/// of its links, while it ran. Who did it is not known.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SensorTampered {
    /// `process`, `network`, `file`, or `maps` for a pinned map.
    pub sensor: String,
    /// The program, or the map's name.
    pub object: String,
    /// `pin_removed`, `pin_replaced` or `link_detached`.
    pub tamper: String,
    pub path: String,
    /// `re-pinned`, `re-attached as link N`, or what failed.
    pub action: String,
    /// Whether the object is back in place.
    pub repaired: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionStart {
    /// cgroup path of the session.
    pub cgroup: String,
    /// Peer process that asked for the session.
    pub requested_by_pid: u32,
}

/// An agent, or one of its sessions, lost its access.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    pub agent: String,
    /// The session revoked; `None` when the whole agent was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    pub reason: String,
    /// Who or what revoked: the API caller, or `on_violation` with the anomaly.
    pub by: String,
    /// From the offending kernel event to the kernel map update, when measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ns: Option<u64>,
}

/// A revocation was lifted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restore {
    pub agent: String,
    /// The session restored; `None` when the whole agent was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    pub reason: String,
    pub by: String,
}

/// The narrower scope of one task; empty lists keep the agent's declared scope.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskScope {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub systems: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskApproved {
    pub agent: String,
    pub task: String,
    pub purpose: String,
    /// When the approval expires, RFC 3339 like `time`.
    #[serde(with = "rfc3339")]
    pub expires: SystemTime,
    /// `None` when the task uses the agent's whole scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<TaskScope>,
    pub by: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskEnded {
    pub agent: String,
    pub task: String,
    /// `ended` (`EndTask`) or `expired`.
    pub reason: String,
    pub by: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigChange {
    /// The configuration version in force after the change.
    pub version: String,
    /// False when the new configuration was rejected and the previous one kept.
    pub applied: bool,
    /// What was wrong, one entry per problem.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// io_uring activity of a watched process that is not a file open (those
/// are `file_open` events with `syscall` `io_uring`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoUring {
    /// `setup` (a ring was created), `connect` or `socket` (a request).
    pub op: String,
    /// The ring's descriptor, for `setup`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fd: Option<i32>,
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub sq_entries: u32,
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub cq_entries: u32,
    /// `io_uring_setup` flags.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub flags: u32,
    /// True when the kernel killed the process (`io_uring = "deny"`, or revoked).
    #[serde(default)]
    pub blocked: bool,
}

/// A watched process creating a socket of an unusual class: one that
/// reaches below the connect hooks (forged or sniffed packets, the kernel's
/// netlink interfaces, the hypervisor). Ordinary IPv4/IPv6 stream and
/// datagram sockets, unix sockets and `NETLINK_ROUTE` are not reported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Socket {
    /// The class as `socket_families` names it: `raw`, `packet`,
    /// `netlink`, `alg`, `vsock`, `xdp` or `other`.
    pub class: String,
    /// The address family (`AF_*` number).
    pub family: u32,
    /// Its name (`AF_PACKET`), or the number for a family without one here.
    pub family_name: String,
    /// The socket type (`SOCK_RAW` is 3), without `SOCK_NONBLOCK`/`SOCK_CLOEXEC`.
    pub sock_type: u32,
    pub protocol: u32,
    /// True when the kernel refused it: `socket(2)` failed with `EPERM`
    /// (IPv4 and IPv6, `cgroup/sock_create`), or the caller was killed
    /// before it returned (other families, seen at the syscall's entry).
    #[serde(default)]
    pub blocked: bool,
}

/// A connect (stream or datagram) or datagram send of a watched process to
/// a unix socket address: how a process asks a local daemon (Docker,
/// containerd, systemd) to act for it. The node's resolver and system-log
/// sockets are not reported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnixConnect {
    /// The address as the caller passed it: a path (relative ones are
    /// relative to the caller's working directory), or `@NAME` for an
    /// abstract address (each NUL in it shown as `@`).
    pub path: String,
    /// `connect`, or `sendmsg` for a datagram sent to an address.
    pub op: String,
    /// `stream`, `dgram`, `seqpacket`, or the type number.
    pub sock_type: String,
    /// True when the kernel refused it with EPERM (outside the enforced
    /// `systems`, or revoked).
    #[serde(default)]
    pub blocked: bool,
}

/// A watched process moved out of its session cgroup by a write to a
/// `cgroup.procs` file, by itself or by another watched process (the
/// event's `process`). Its identity is the session it left; the cgroup it
/// reached stays watched, as part of that session, until it exits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionEscape {
    /// The process that was moved.
    pub moved_pid: u32,
    /// Whether it moved itself.
    pub self_move: bool,
    /// Whether its parent (the event's process) created it there
    /// (`clone3` with `CLONE_INTO_CGROUP`) rather than moving it.
    #[serde(default)]
    pub created_there: bool,
    /// The cgroup v2 id it moved into, and its path when known.
    pub to_cgroup_id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_cgroup: Option<String>,
    /// True when it was killed (the agent is enforced): in the kernel when
    /// it moved itself, else by the daemon (and the writer in the kernel).
    #[serde(default)]
    pub blocked: bool,
}

/// A watched process (the event's `process`) reached for the daemon: a
/// signal to one of its threads, `ptrace`, `process_vm_readv`/`writev` of
/// its memory, `pidfd_open` of it; or called `bpf()`, through which the
/// pinned maps that hold revocations and scopes could be rewritten.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TamperAttempt {
    /// `signal`, `ptrace`, `process_vm_readv`, `process_vm_writev`,
    /// `pidfd_open` or `bpf`.
    pub method: String,
    /// The signal (`SIGTERM`), `ptrace` request (`PTRACE_SEIZE`) or `bpf`
    /// command (`BPF_MAP_UPDATE_ELEM`); empty for the others.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// The daemon thread it was aimed at (none for `bpf`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_tid: Option<u32>,
    /// True when the kernel killed the caller (the agent is enforced or
    /// revoked): the call it made was its last.
    #[serde(default)]
    pub blocked: bool,
}

impl Socket {
    /// Whether a refusal failed `socket(2)` with `EPERM` (IPv4 and IPv6,
    /// which `cgroup/sock_create` sees) rather than killing the caller.
    #[must_use]
    pub const fn refused_with_eperm(&self) -> bool {
        self.family == vigil_common::socket_class::AF_INET as u32
            || self.family == vigil_common::socket_class::AF_INET6 as u32
    }
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if signature
const fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

/// The sequences `first_missing..=last_missing` were pruned before a
/// subscriber could read them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    pub first_missing: u64,
    pub last_missing: u64,
}

impl Event {
    /// True for scope violations (the `anomaly` kind).
    #[must_use]
    pub const fn is_anomaly(&self) -> bool {
        matches!(self.payload, Payload::Anomaly(_))
    }

    /// An event the daemon makes itself (session start, loss, audit
    /// records): the current time and no process.
    #[must_use]
    pub fn daemon(identity: Identity, payload: Payload) -> Self {
        Self {
            seq: 0,
            time: SystemTime::now(),
            kernel_ts_ns: 0,
            identity,
            process: None,
            payload,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Event {
        Event {
            seq: 7,
            time: humantime::parse_rfc3339("2026-11-28T21:00:00.000000001Z").unwrap(),
            kernel_ts_ns: 42,
            identity: Identity {
                agent: Some("code-assistant".into()),
                session: Some("s1".into()),
                ..Identity::default()
            },
            process: Some(Process {
                pid: 10,
                tid: 10,
                ppid: 1,
                comm: "git".into(),
                ..Process::default()
            }),
            payload: Payload::Exec(Exec {
                filename: "/usr/bin/git".into(),
                argv: vec!["git".into(), "status".into()],
                argv_truncated: false,
                blocked: false,
                from_memory: false,
                inode: None,
            }),
        }
    }

    #[test]
    fn json_has_stable_flat_shape() {
        let v = serde_json::to_value(sample()).unwrap();
        assert_eq!(v["kind"], "exec");
        assert_eq!(v["seq"], 7);
        assert_eq!(v["identity"]["agent"], "code-assistant");
        assert_eq!(v["process"]["pid"], 10);
        assert_eq!(v["argv"][1], "status");
        assert_eq!(v["filename"], "/usr/bin/git");
    }

    #[test]
    fn json_round_trips() {
        let e = sample();
        let s = serde_json::to_string(&e).unwrap();
        let back: Event = serde_json::from_str(&s).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn access_from_flags() {
        assert_eq!(Access::from_flags(libc::O_RDONLY as u32), Access::Read);
        assert_eq!(Access::from_flags(libc::O_WRONLY as u32), Access::Write);
        assert_eq!(Access::from_flags(libc::O_RDWR as u32), Access::ReadWrite);
        assert_eq!(
            Access::from_flags((libc::O_RDONLY | libc::O_CREAT) as u32),
            Access::ReadWrite
        );
        assert!(Access::from_flags((libc::O_WRONLY | libc::O_TRUNC) as u32).writes());
    }
}
