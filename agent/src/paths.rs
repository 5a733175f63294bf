//! Every filesystem path the daemon uses by default, in one place.

/// Node config read by `vigil run` when `--config` is given without a path.
pub const DEFAULT_CONFIG: &str = "/etc/vigil/vigil.toml";
/// Local gRPC socket (overridden by `daemon.socket`).
pub const DEFAULT_SOCKET: &str = "/run/vigil/vigil.sock";
/// Where the journal and other state live.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/vigil";
/// Directory under the state directory that holds each export sink's cursor.
pub const EXPORT_DIR: &str = "export";
/// bpffs mount point; Vigil pins under [`DEFAULT_PIN_DIR`].
pub const BPFFS: &str = "/sys/fs/bpf";
/// Pinned maps and links of this daemon.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/vigil";
/// tracefs mount points, in the order they are tried.
pub const TRACEFS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];
/// Kernel BTF, for struct offsets.
pub const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";
/// `kernel.bpf_stats_enabled`: the kernel counts BPF programs' run time.
pub const BPF_STATS_ENABLED: &str = "/proc/sys/kernel/bpf_stats_enabled";
/// Mount table used to find the cgroup v2 hierarchy.
pub const MOUNTINFO: &str = "/proc/self/mountinfo";
/// Name of the directory, under the cgroup v2 root, that holds agent sessions.
pub const DEFAULT_CGROUP_PARENT: &str = "vigil";
/// Embedded default config (`vigil run` without `--config`).
pub const EMBEDDED_CONFIG: &str = include_str!("../../deploy/config/default.toml");
