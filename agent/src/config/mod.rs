//! The node config: one TOML file describing the daemon, its outputs, and
//! every governed agent with its declared scope.
//!
//! Loading parses, deserializes (rejecting unknown fields) and then checks
//! cross references; every problem is reported with file, line, column and
//! field path (`vigil.toml:14:13: agent[1].scope.systems[2]: invalid CIDR
//! "10.0.0.0/33"`). Array indices in field paths start at 0.

pub mod catalog;
mod diag;
mod export;
mod kube;
mod server;
mod types;
mod validate;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use diag::{Diagnostic, FieldPath, Seg};
pub use export::{
    DEFAULT_EXPORT_BATCH, DEFAULT_EXPORT_RETRY_MAX, DEFAULT_EXPORT_TIMEOUT, ExportConfig,
    ExportFormat, ExportStart, ExportType, MAX_EXPORT_BATCH,
};
pub use kube::{DEFAULT_TRUST_DOMAIN, KubeEnabled, KubeSelector, KubernetesConfig, MetricsConfig};
pub use server::{
    ApiConfig, DEFAULT_JOURNAL_MAX_AGE, DEFAULT_JOURNAL_MAX_BYTES, HumanDuration, JOURNAL_FILE,
    JournalConfig, MIN_JOURNAL_MAX_BYTES, Role,
};
pub use types::{
    CgroupParent, EventsOutput, HostPattern, MAX_NAME_LEN, Name, OnViolation, OutputFormat,
    PathGlob, PortRange, SystemEntry, Target, build_glob, canonical_ip, check_name, normalize_host,
};

use crate::paths;

/// Source name of the embedded default config in messages.
pub const EMBEDDED_SOURCE: &str = "<embedded>";

/// Paths where a write is never out of scope unless
/// `scope.write_ignore_defaults = false`: terminals, the null devices, and a
/// process's own `/proc` entries, which every runtime writes to.
pub const DEFAULT_WRITE_IGNORE: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
    "/dev/ptmx",
    "/dev/pts/**",
    "/dev/stdout",
    "/dev/stderr",
    "/dev/fd/**",
    "/dev/shm/**",
    "/proc/self/**",
    "/proc/thread-self/**",
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read config: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", render(.0))]
    Invalid(Vec<Diagnostic>),
}

impl ConfigError {
    /// The located problems, empty for a read error.
    #[must_use]
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            Self::Invalid(d) => d,
            Self::Read { .. } => &[],
        }
    }
}

fn render(diags: &[Diagnostic]) -> String {
    let mut out = String::new();
    for (i, d) in diags.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let _ = write!(out, "{d}");
    }
    out
}

/// The whole node config. Every section is optional.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub daemon: DaemonConfig,
    #[serde(default)]
    pub output: OutputConfig,
    #[serde(default)]
    pub scope: ScopeConfig,
    /// `[journal]`: retention of the event journal.
    #[serde(default)]
    pub journal: JournalConfig,
    /// `[api]`: the optional TCP listener and its client roles.
    #[serde(default)]
    pub api: ApiConfig,
    /// `[kubernetes]`: pod identity from the API server.
    #[serde(default)]
    pub kubernetes: KubernetesConfig,
    /// `[metrics]`: the Prometheus endpoint.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// `[[export]]`: sinks fed from the journal.
    #[serde(default, rename = "export", skip_serializing_if = "Vec::is_empty")]
    pub exports: Vec<ExportConfig>,
    /// `[[agent]]` tables, in file order.
    #[serde(default, rename = "agent")]
    pub agents: Vec<AgentConfig>,
    /// `[data.NAME]` classes.
    #[serde(default)]
    pub data: BTreeMap<Name, DataClass>,
    /// `[identity.NAME]` credentials, in addition to the built-in catalog.
    #[serde(default, rename = "identity")]
    pub identities: BTreeMap<Name, IdentityConfig>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// Local gRPC socket.
    pub socket: PathBuf,
    /// Group owning the socket (mode 0660); root only (0600) when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket_group: Option<String>,
    /// Node name in events; the host name when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Directory under the cgroup v2 mount that holds `vigil exec` sessions.
    pub cgroup_parent: CgroupParent,
    /// Discovery mode: report every process, governed or not.
    pub watch_all: bool,
    /// Kernel ring buffer size: a power of two, at least 4096.
    pub ring_buffer_bytes: u64,
    /// Nice value of the thread that reads kernel records and decides
    /// verdicts (-20..=19): below 0 it preempts ordinary work when records
    /// arrive, which keeps automatic revocation prompt on a busy node.
    pub reader_nice: i8,
    /// How long ordinary records may wait in the kernel ring buffer before
    /// the reader collects them (0: each record wakes the reader). Records
    /// that need action now always wake it at once.
    pub reader_interval_ms: u16,
    /// An open identical to one the same process reported less than this
    /// long ago is counted in the kernel and reported as `repeats` (0:
    /// report every open).
    pub open_repeat_ms: u32,
    /// How often the daemon checks that its pins are in place and its links
    /// attached, putting back what was removed or detached.
    pub guard_interval_ms: u32,
    /// Where programs and maps are pinned (bpffs).
    pub pin_dir: PathBuf,
    /// Journal and other state.
    pub state_dir: PathBuf,
    /// Read the paths of opened files and programs by typed loads where
    /// the kernel allows them (no helper call per kernel word); false reads
    /// with helper calls everywhere.
    pub typed_reads: bool,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            socket: PathBuf::from(paths::DEFAULT_SOCKET),
            socket_group: None,
            node_name: None,
            cgroup_parent: CgroupParent::default_parent(),
            watch_all: false,
            ring_buffer_bytes: 8 << 20,
            reader_nice: DEFAULT_READER_NICE,
            reader_interval_ms: 2,
            open_repeat_ms: 1000,
            guard_interval_ms: 100,
            pin_dir: PathBuf::from(paths::DEFAULT_PIN_DIR),
            state_dir: PathBuf::from(paths::DEFAULT_STATE_DIR),
            typed_reads: true,
        }
    }
}

/// The reader thread's default nice value: well ahead of ordinary work, still
/// a time-shared (`SCHED_OTHER`) thread that cannot starve the node.
pub const DEFAULT_READER_NICE: i8 = -10;

impl CgroupParent {
    fn default_parent() -> Self {
        paths::DEFAULT_CGROUP_PARENT
            .parse()
            .unwrap_or_else(|_| unreachable!("DEFAULT_CGROUP_PARENT is a safe name"))
    }
}

impl DaemonConfig {
    /// The configured node name, else the kernel's host name, else `localhost`.
    #[must_use]
    pub fn node_name(&self) -> String {
        if let Some(n) = &self.node_name {
            return n.clone();
        }
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "localhost".to_owned())
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// `stdout`, `none`, or an absolute file path (JSON lines).
    pub events: EventsOutput,
    /// `json` (Vigil's schema) or `ocsf` (one OCSF record per event).
    pub format: OutputFormat,
    /// Emit anomalies only, not every event.
    pub anomalies_only: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScopeConfig {
    /// Extra paths where writes are never out of scope; added to
    /// [`DEFAULT_WRITE_IGNORE`] unless `write_ignore_defaults` is false.
    pub write_ignore: Vec<PathGlob>,
    /// Whether [`DEFAULT_WRITE_IGNORE`] applies.
    pub write_ignore_defaults: bool,
    /// Interval of the fallback resolution of configured host names.
    pub dns_refresh_seconds: u64,
    /// Window in which identical anomalies are folded into one report.
    pub aggregate_window_seconds: u64,
    /// A DNS query label longer than this (characters) is taken for
    /// encoded data; 63, the longest a label can be, turns the test off.
    pub dns_long_label: usize,
    /// Runs of at least this many characters in a query label are judged
    /// by their entropy.
    pub dns_entropy_label: usize,
    /// Bits per character above which such a run is taken for encoded data.
    pub dns_entropy_bits: f64,
    /// Search domains resolvers append to names (Kubernetes pods try
    /// `NAME.NAMESPACE.svc.cluster.local` first): an allowed name followed
    /// by one of these, or by a name ending in one, is the allowed name.
    pub dns_search_domains: Vec<String>,
}

impl Default for ScopeConfig {
    fn default() -> Self {
        Self {
            write_ignore: Vec::new(),
            write_ignore_defaults: true,
            dns_refresh_seconds: 60,
            aggregate_window_seconds: 10,
            dns_long_label: 50,
            dns_entropy_label: 32,
            dns_entropy_bits: 4.0,
            dns_search_domains: vec!["cluster.local".to_owned()],
        }
    }
}

impl ScopeConfig {
    /// The effective write-ignore globs: defaults (if enabled) then the configured ones.
    #[must_use]
    pub fn effective_write_ignore(&self) -> Vec<String> {
        let defaults = if self.write_ignore_defaults {
            DEFAULT_WRITE_IGNORE
        } else {
            &[]
        };
        defaults
            .iter()
            .map(|s| (*s).to_owned())
            .chain(self.write_ignore.iter().map(|g| g.as_str().to_owned()))
            .collect()
    }
}

/// What an agent's use of io_uring means.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IoUringPolicy {
    /// Allowed: no anomaly (its opens are still reported and judged).
    Allow,
    /// Reported as an `io_uring_used` anomaly.
    Alert,
    /// The process is killed in the kernel as `io_uring_setup` returns,
    /// before it can submit a request; reported.
    Deny,
}

/// A class of unusual sockets an agent's scope may allow (ordinary IPv4 and
/// IPv6 stream and datagram sockets, unix sockets and `NETLINK_ROUTE` need
/// no entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SocketFamily {
    /// `SOCK_RAW` in `AF_INET`/`AF_INET6`.
    Raw,
    /// `AF_PACKET`.
    Packet,
    /// `AF_NETLINK` other than `NETLINK_ROUTE`.
    Netlink,
    /// `AF_ALG`, the kernel crypto API.
    Alg,
    /// `AF_VSOCK`.
    Vsock,
    /// `AF_XDP`.
    Xdp,
    /// Every other family.
    Other,
}

impl SocketFamily {
    /// The class number the kernel programs use (`vigil_common::socket_class`).
    #[must_use]
    pub const fn class(self) -> u8 {
        use vigil_common::socket_class as c;
        match self {
            Self::Raw => c::RAW,
            Self::Packet => c::PACKET,
            Self::Netlink => c::NETLINK,
            Self::Alg => c::ALG,
            Self::Vsock => c::VSOCK,
            Self::Xdp => c::XDP,
            Self::Other => c::OTHER,
        }
    }

    /// The name used in config and events.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        vigil_common::socket_class::NAMES[self.class() as usize]
    }
}

/// One governed agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    pub name: Name,
    /// Who answers for this agent (a team or a mail address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub on_violation: OnViolation,
    /// Load `scope.systems` into the kernel: an out-of-scope connect fails
    /// with EPERM before any packet leaves (host names follow DNS answers).
    #[serde(default)]
    pub enforce: bool,
    /// The agent may act only while a task approval is active.
    #[serde(default)]
    pub require_approval: bool,
    /// A revocation also kills every process of the target (`cgroup.kill`).
    #[serde(default)]
    pub revoke_kills: bool,
    /// What setting up an io_uring means: its requests pass no syscall the
    /// other sensors see. Unset: `deny` for an agent with `enforce`, else
    /// `alert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_uring: Option<IoUringPolicy>,
    /// How processes are recognised as this agent; required.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub matcher: Option<MatchConfig>,
    #[serde(default)]
    pub scope: AgentScope,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MatchConfig {
    /// Processes started by `vigil exec --agent NAME`.
    pub sessions: bool,
    /// Globs on the cgroup v2 path (relative to the mount, starting with `/`).
    pub cgroups: Vec<PathGlob>,
    /// Pods of this node chosen by namespace, labels and service account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubeSelector>,
}

/// The declared boundary of an agent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentScope {
    pub systems: Vec<SystemEntry>,
    pub tools: Vec<PathGlob>,
    /// Names of `[data.*]` classes.
    pub data: Vec<String>,
    /// Names of `[identity.*]` entries or built-in catalog entries.
    pub identities: Vec<String>,
    /// Classes of unusual sockets it may create (`raw`, `packet`, `netlink`,
    /// `alg`, `vsock`, `xdp`, `other`); any other is an `unusual_socket`
    /// anomaly, refused in the kernel where `systems` are enforced.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub socket_families: Vec<SocketFamily>,
    /// It may run programs that no file system names (a memfd, a deleted
    /// file run through its descriptor). Otherwise each is an
    /// `exec_from_memory` anomaly, killed in the kernel before its first
    /// instruction where `systems` are enforced.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub exec_from_memory: bool,
    /// Pin `tools` by content: the SHA-256 of every file they name is taken
    /// when the config loads, and an exec is in scope only when its program
    /// is one of those files' contents (a binary copied or renamed under an
    /// allowed name is not).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub tools_by_hash: bool,
}

/// A named data class: what may be read and written.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataClass {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub read: Vec<PathGlob>,
    pub write: Vec<PathGlob>,
}

/// A named credential: files and network endpoints.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub files: Vec<PathGlob>,
    pub endpoints: Vec<SystemEntry>,
}

impl Config {
    /// Parses and checks a config; `source` names it in messages (usually the file path).
    pub fn from_toml_str(text: &str, source: &str) -> Result<Self, ConfigError> {
        let de = toml::Deserializer::parse(text).map_err(|e| {
            ConfigError::Invalid(vec![Diagnostic::new(
                source,
                text,
                FieldPath::default(),
                e.span(),
                e.message().trim_end().to_owned(),
            )])
        })?;
        let config: Self = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = FieldPath::from_serde(e.path());
            let inner = e.into_inner();
            ConfigError::Invalid(vec![Diagnostic::new(
                source,
                text,
                path,
                inner.span(),
                inner.message().trim_end().to_owned(),
            )])
        })?;
        let problems = validate::check(&config);
        if problems.is_empty() {
            Ok(config)
        } else {
            let mut diags: Vec<Diagnostic> = problems
                .into_iter()
                .map(|(path, msg)| Diagnostic::new(source, text, path, None, msg))
                .collect();
            // Document order reads best; problems without a place go last.
            diags.sort_by_key(|d| d.location.unwrap_or((usize::MAX, 0)));
            Err(ConfigError::Invalid(diags))
        }
    }

    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let (config, _) = Self::load_with_text(path)?;
        Ok(config)
    }

    /// Reads and parses a config file, also returning its text.
    pub fn load_with_text(path: &Path) -> Result<(Self, String), ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: name.clone(),
            source,
        })?;
        Ok((Self::from_toml_str(&text, &name)?, text))
    }

    /// The default config compiled into the binary (`deploy/config/default.toml`).
    pub fn embedded() -> Result<Self, ConfigError> {
        Self::from_toml_str(paths::EMBEDDED_CONFIG, EMBEDDED_SOURCE)
    }

    /// The agent with this name.
    #[must_use]
    pub fn agent(&self, name: &str) -> Option<&AgentConfig> {
        self.agents.iter().find(|a| a.name.as_str() == name)
    }
}

#[cfg(test)]
mod tests;
