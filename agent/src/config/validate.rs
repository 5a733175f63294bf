//! Checks that span more than one value: references between sections,
//! duplicates, and limits that serde cannot express.

use std::collections::HashMap;

use super::{Config, FieldPath};
use crate::config::catalog;

type Problems = Vec<(FieldPath, String)>;

fn root(key: &str) -> FieldPath {
    FieldPath::default().key(key)
}

/// Every cross-field problem, in document order.
pub fn check(config: &Config) -> Problems {
    let mut out = Vec::new();
    check_daemon(config, &mut out);
    super::server::check(&config.journal, &config.api, &mut out);
    super::kube::check(config, &mut out);
    super::export::check(&config.exports, &mut out);
    check_scope(config, &mut out);
    check_classes(config, &mut out);
    check_agents(config, &mut out);
    out
}

fn check_daemon(config: &Config, out: &mut Problems) {
    let d = &config.daemon;
    let daemon = root("daemon");
    for (field, path) in [
        ("socket", &d.socket),
        ("pin_dir", &d.pin_dir),
        ("state_dir", &d.state_dir),
    ] {
        if !path.is_absolute() {
            out.push((
                daemon.clone().key(field),
                format!("{} must be an absolute path", path.display()),
            ));
        }
    }
    let rb = d.ring_buffer_bytes;
    if rb < 4096 || !rb.is_power_of_two() || rb > 1 << 30 {
        out.push((
            daemon.clone().key("ring_buffer_bytes"),
            format!("{rb} must be a power of two between 4096 and 1073741824"),
        ));
    }
    if !(-20..=19).contains(&d.reader_nice) {
        out.push((
            daemon.clone().key("reader_nice"),
            format!("{} is not a nice value (-20 to 19)", d.reader_nice),
        ));
    }
    if d.reader_interval_ms > 1000 {
        out.push((
            daemon.clone().key("reader_interval_ms"),
            format!(
                "{} is longer than a second: events would reach subscribers late",
                d.reader_interval_ms
            ),
        ));
    }
    if !(10..=60_000).contains(&d.guard_interval_ms) {
        out.push((
            daemon.clone().key("guard_interval_ms"),
            format!(
                "{} is not between 10 and 60000: a detached link would stay detached that long, or the checks would cost more than they save",
                d.guard_interval_ms
            ),
        ));
    }
    if d.open_repeat_ms > 3_600_000 {
        out.push((
            daemon.clone().key("open_repeat_ms"),
            format!(
                "{} is longer than an hour: repeated opens would be reported that late",
                d.open_repeat_ms
            ),
        ));
    }
    if let Some(group) = &d.socket_group
        && group.trim().is_empty()
    {
        out.push((
            daemon.clone().key("socket_group"),
            "group name is empty".into(),
        ));
    }
    if let Some(name) = &d.node_name
        && name.trim().is_empty()
    {
        out.push((daemon.key("node_name"), "node name is empty".into()));
    }
}

fn check_scope(config: &Config, out: &mut Problems) {
    let s = &config.scope;
    if !(1..=86_400).contains(&s.dns_refresh_seconds) {
        out.push((
            root("scope").key("dns_refresh_seconds"),
            format!("{} must be between 1 and 86400", s.dns_refresh_seconds),
        ));
    }
    if s.aggregate_window_seconds > 3600 {
        out.push((
            root("scope").key("aggregate_window_seconds"),
            format!("{} must be at most 3600", s.aggregate_window_seconds),
        ));
    }
    for (key, value) in [
        ("dns_long_label", s.dns_long_label),
        ("dns_entropy_label", s.dns_entropy_label),
    ] {
        if !(1..=63).contains(&value) {
            out.push((
                root("scope").key(key),
                format!("{value} must be between 1 and 63 (the longest a dns label can be)"),
            ));
        }
    }
    if !(0.0..=8.0).contains(&s.dns_entropy_bits) {
        out.push((
            root("scope").key("dns_entropy_bits"),
            format!("{} must be between 0 and 8", s.dns_entropy_bits),
        ));
    }
    for (i, d) in s.dns_search_domains.iter().enumerate() {
        if d.trim_matches('.').is_empty() || d.contains(char::is_whitespace) {
            out.push((
                root("scope").key("dns_search_domains").index(i),
                format!("\"{d}\" is not a domain name"),
            ));
        }
    }
}

fn check_classes(config: &Config, out: &mut Problems) {
    for (name, class) in &config.data {
        if class.read.is_empty() && class.write.is_empty() {
            out.push((
                root("data").key(name.as_str()),
                format!("data class \"{name}\" has neither read nor write globs"),
            ));
        }
    }
    for (name, id) in &config.identities {
        let path = root("identity").key(name.as_str());
        if catalog::find(name.as_str()).is_some() {
            out.push((
                path,
                format!(
                    "identity \"{name}\" is a built-in catalog identity; list it in an agent's identities instead of redefining it"
                ),
            ));
        } else if id.files.is_empty() && id.endpoints.is_empty() {
            out.push((
                path,
                format!("identity \"{name}\" has neither files nor endpoints"),
            ));
        }
    }
}

fn check_agents(config: &Config, out: &mut Problems) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, agent) in config.agents.iter().enumerate() {
        let path = root("agent").index(i);
        let name = agent.name.as_str();
        if let Some(first) = seen.insert(name, i) {
            seen.insert(name, first);
            out.push((
                path.clone().key("name"),
                format!("duplicate agent name \"{name}\" (first defined at agent[{first}])"),
            ));
        }
        let matched = agent
            .matcher
            .as_ref()
            .is_some_and(|m| m.sessions || !m.cgroups.is_empty() || m.kubernetes.is_some());
        if !matched {
            out.push((
                path.clone(),
                format!(
                    "agent \"{name}\" has no match: set match.sessions = true, list match.cgroups or set match.kubernetes"
                ),
            ));
        }
        let scope = path.key("scope");
        for (k, class) in agent.scope.data.iter().enumerate() {
            if !config.data.contains_key(class.as_str()) {
                out.push((
                    scope.clone().key("data").index(k),
                    format!("undefined data class \"{class}\""),
                ));
            }
        }
        for (k, id) in agent.scope.identities.iter().enumerate() {
            if !config.identities.contains_key(id.as_str()) && catalog::find(id).is_none() {
                out.push((
                    scope.clone().key("identities").index(k),
                    format!(
                        "undefined identity \"{id}\" (not in [identity] nor in the built-in catalog)"
                    ),
                ));
            }
        }
    }
}
