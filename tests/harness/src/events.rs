//! A daemon's event file: one JSON object per line.

use std::path::Path;

use anyhow::Context as _;
use serde_json::Value;

/// Every complete line of the event file at `path` so far; none while it
/// does not exist.
pub fn read(path: &Path) -> anyhow::Result<Vec<Value>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    parse(&text)
}

fn parse(text: &str) -> anyhow::Result<Vec<Value>> {
    // The daemon may be half-way through writing the last line.
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("bad JSON line {l:?}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_being_written_is_left_for_later() {
        let events = parse("{\"seq\":1}\n\n{\"seq\":2}\n{\"seq\":").unwrap();
        let seqs: Vec<_> = events.iter().map(|e| e["seq"].as_u64()).collect();
        assert_eq!(seqs, [Some(1), Some(2)]);
        assert!(parse("{\"seq\":").unwrap().is_empty());
        assert!(parse("not json\n").is_err());
        assert!(
            read(Path::new("/nonexistent/events.jsonl"))
                .unwrap()
                .is_empty()
        );
    }
}
