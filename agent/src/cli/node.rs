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
