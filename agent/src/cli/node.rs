//! `vigil status`: the daemon's own state.

use super::connection::{Connection, call_error};
use crate::wire::pb;

pub(super) async fn status(connection: &Connection) -> anyhow::Result<()> {
    let mut client = pb::node_service_client::NodeServiceClient::new(connection.channel().await?);
    let s = client
        .status(pb::StatusRequest {})
        .await
        .map_err(|s| call_error("status", &s))?
        .into_inner();
    println!("node      {} (vigil {})", s.node, s.version);
    if let Some(c) = &s.config {
        println!(
            "config    version {} from {} ({} reloads, {} failed)",
            c.version, c.path, c.reloads, c.reload_failures
        );
        for e in &c.load_errors {
            println!("          last load error: {e}");
        }
    }
    for sensor in &s.sensors {
        println!(
            "sensor    {:<8} {:<12} lost {}",
            sensor.name,
            if sensor.attached {
                "attached"
            } else {
                "NOT ATTACHED"
            },
            sensor.lost
        );
        for p in sensor.programs.iter().filter(|p| !p.attached || !p.pinned) {
            println!(
                "          {} ({}) {}{}",
                p.program,
                p.hook,
                if p.attached { "attached" } else { "DETACHED" },
                if p.pinned { "" } else { ", pin missing" }
            );
        }
    }
    for line in program_costs(&s) {
        println!("cost      {line}");
    }
    for f in s.kernel_features.iter().filter(|f| !f.available) {
        println!("missing   {}: {}", f.name, f.detail);
    }
    if s.sensor_tampers > 0 {
        println!(
            "tamper    {} pins removed or replaced, or links detached; last: {}",
            s.sensor_tampers, s.last_tamper
        );
    }
    if let Some(a) = &s.attribution {
        let total = a.attributed + a.unattributed;
        let pct = if total == 0 {
            100.0
        } else {
            a.attributed as f64 * 100.0 / total as f64
        };
        println!(
            "coverage  {pct:.1}% ({} attributed, {} unattributed)",
            a.attributed, a.unattributed
        );
    }
    if let Some(j) = &s.journal {
        let age = j
            .max_age
            .and_then(|d| std::time::Duration::try_from(d).ok())
            .map_or_else(
                || "no age limit".to_owned(),
                |d| humantime::format_duration(d).to_string(),
            );
        println!(
            "journal   {}: {} bytes, sequences {}..={}, {} pruned, {} gaps sent (keeps {} bytes, {age})",
            j.path,
            j.size_bytes,
            j.oldest_sequence,
            j.newest_sequence,
            j.pruned_events,
            j.gaps_sent,
            j.max_bytes
        );
    }
    println!("clients   {} subscribers", s.subscribers);
    for e in &s.exports {
        println!(
            "export    {} {} to {} ({}): {}, at sequence {}, {} behind, {} exported, {} retries, {} rejected, {} skipped",
            e.name,
            e.r#type,
            e.endpoint,
            e.format,
            if e.failing { "FAILING" } else { "delivering" },
            e.position,
            e.lag,
            e.exported,
            e.retries,
            e.rejected,
            e.skipped
        );
        if !e.error.is_empty() {
            println!("          error: {}", e.error);
        }
        if !e.warning.is_empty() {
            println!("          warning: {}", e.warning);
        }
    }
    for w in &s.warnings {
        println!("warning   {w}");
    }
    Ok(())
}

/// What each of the daemon's programs has cost the node, dearest first:
/// one line per program (its links share its figures), or how to have the
/// kernel count it.
fn program_costs(s: &pb::StatusResponse) -> Vec<String> {
    let mut seen = std::collections::BTreeMap::new();
    for p in s.sensors.iter().flat_map(|sensor| &sensor.programs) {
        if p.program_id != 0 && p.run_count > 0 {
            seen.entry(p.program_id)
                .or_insert((p.program.as_str(), p.run_count, p.run_time_ns));
        }
    }
    let mut programs: Vec<_> = seen.into_values().collect();
    programs.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(b.0)));
    let mut lines: Vec<String> = programs
        .into_iter()
        .map(|(name, runs, ns)| {
            format!(
                "{name:<24} {runs:>12} runs {:>8} ns/run {:>12.3} ms",
                ns / runs,
                ns as f64 / 1e6
            )
        })
        .collect();
    if !s.program_stats {
        lines.push(if lines.is_empty() {
            "not counted (sysctl kernel.bpf_stats_enabled=1 has the kernel time each program)"
                .to_owned()
        } else {
            "not counted now (kernel.bpf_stats_enabled is 0): the figures above stopped".to_owned()
        });
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn program(name: &str, id: u32, runs: u64, ns: u64) -> pb::ProgramStatus {
        pb::ProgramStatus {
            program: name.into(),
            program_id: id,
            run_count: runs,
            run_time_ns: ns,
            ..pb::ProgramStatus::default()
        }
    }

    #[test]
    fn program_costs_are_per_program_dearest_first() {
        let status = pb::StatusResponse {
            program_stats: true,
            sensors: vec![
                pb::SensorStatus {
                    name: "file".into(),
                    programs: vec![
                        // One program on three tracepoints: counted once.
                        program("vigil_open_exit", 7, 1000, 400_000),
                        program("vigil_open_exit", 7, 1000, 400_000),
                        program("vigil_open_exit", 7, 1000, 400_000),
                        program("vigil_link_exit", 8, 0, 0),
                    ],
                    ..pb::SensorStatus::default()
                },
                pb::SensorStatus {
                    name: "process".into(),
                    programs: vec![program("vigil_exec", 9, 10, 9_000_000)],
                    ..pb::SensorStatus::default()
                },
            ],
            ..pb::StatusResponse::default()
        };
        let lines = program_costs(&status);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].starts_with("vigil_exec "), "{lines:?}");
        assert!(lines[0].contains("900000 ns/run"), "{lines:?}");
        assert!(lines[1].contains(" 1000 runs      400 ns/run"), "{lines:?}");
    }

    #[test]
    fn program_costs_say_how_to_count_when_off() {
        let lines = program_costs(&pb::StatusResponse::default());
        assert_eq!(lines.len(), 1);
        assert!(lines[0].contains("kernel.bpf_stats_enabled=1"), "{lines:?}");
    }
}
