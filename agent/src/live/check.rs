//! `vigil check-config`: the config as the daemon would load it, compiled,
//! and summarised for a reader.

use std::fmt::Write as _;
use std::path::Path;

use crate::config::{Config, ConfigError, OutputFormat};
use crate::scope::Scope;

/// `vigil check-config FILE`: loads and compiles the config and returns a
/// readable summary, or every problem found.
pub fn check_file(path: &Path) -> Result<String, ConfigError> {
    let config = Config::load(path)?;
    let scope = Scope::compile(&config)?;
    Ok(summary(&path.display().to_string(), &config, &scope))
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn summary(source: &str, config: &Config, scope: &Scope) -> String {
    let mut out = String::new();
    let d = &config.daemon;
    let _ = writeln!(out, "{source}: ok");
    let _ = writeln!(
        out,
        "  daemon: socket {}, cgroup parent {}, ring buffer {} bytes{}",
        d.socket.display(),
        d.cgroup_parent,
        d.ring_buffer_bytes,
        if d.watch_all { ", watch all" } else { "" }
    );
    let _ = writeln!(
        out,
        "  output: events to {}{}{}",
        config.output.events,
        match config.output.format {
            OutputFormat::Json => "",
            OutputFormat::Ocsf => " as OCSF",
        },
        if config.output.anomalies_only {
            " (anomalies only)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "  {}, {}, {} (+{} built-in)",
        plural(config.agents.len(), "agent", "agents"),
        plural(config.data.len(), "data class", "data classes"),
        plural(config.identities.len(), "identity", "identities"),
        crate::config::catalog::CATALOG.len(),
    );
    for info in scope.agents() {
        let a = &info.scope;
        let mut how = Vec::new();
        if info.sessions {
            how.push("sessions".to_owned());
        }
        if !info.cgroups.is_empty() {
            how.push(plural(info.cgroups.len(), "cgroup glob", "cgroup globs"));
        }
        if config
            .agent(&info.name)
            .and_then(|a| a.matcher.as_ref())
            .is_some_and(|m| m.kubernetes.is_some())
        {
            how.push("a kubernetes selector".to_owned());
        }
        let _ = writeln!(
            out,
            "  agent {} (on violation: {}; matched by {}): {}, {}, {}, {}",
            info.name,
            info.on_violation.as_str(),
            how.join(" and "),
            plural(a.systems.len(), "system", "systems"),
            plural(a.tools.len(), "tool", "tools"),
            plural(a.data.len(), "data class", "data classes"),
            plural(a.identities.len(), "identity", "identities"),
        );
        if let Some(p) = scope.pinned_tools(&info.name) {
            let _ = writeln!(
                out,
                "    tools pinned by content: {}, {} bytes hashed in {} ms{}",
                plural(p.files, "file", "files"),
                p.bytes,
                p.took.as_millis(),
                if p.unreadable.is_empty() {
                    String::new()
                } else {
                    format!("; unreadable, so not pinned: {}", p.unreadable.join(", "))
                }
            );
        }
    }
    out
}
