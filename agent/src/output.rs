//! JSON-lines output: one event per line, to stdout or a file, as Vigil's
//! own schema (`docs/events.md`) or as OCSF records (`crate::ocsf`).

use std::{
    fs::{File, OpenOptions},
    io::{self, BufWriter, Write},
    path::{Path, PathBuf},
};

use crate::event::Event;

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("opening event output {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("writing event output: {0}")]
    Write(#[source] io::Error),
    #[error("encoding event as JSON: {0}")]
    Encode(#[source] serde_json::Error),
}

enum Target {
    Stdout(BufWriter<io::Stdout>),
    File(BufWriter<File>),
    None,
}

/// What each line holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// Vigil's own schema.
    #[default]
    Json,
    /// One OCSF record per event; `node` is the record's `device`.
    Ocsf { node: String },
}

/// Where events go as JSON lines; buffered, flushed once per batch.
pub struct JsonLines {
    target: Target,
    anomalies_only: bool,
    format: Format,
    /// The line being encoded. The encoder makes many small writes; into a
    /// vector they are plain copies, through the buffered writer each is a
    /// dynamic call and a bounds check.
    line: Vec<u8>,
}

impl JsonLines {
    #[must_use]
    pub fn stdout(anomalies_only: bool) -> Self {
        Self {
            target: Target::Stdout(BufWriter::with_capacity(1 << 16, io::stdout())),
            anomalies_only,
            format: Format::Json,
            line: Vec::new(),
        }
    }

    #[must_use]
    pub const fn none() -> Self {
        Self {
            target: Target::None,
            anomalies_only: false,
            format: Format::Json,
            line: Vec::new(),
        }
    }

    /// Appends to `path`, creating it (and its directory) if needed.
    pub fn file(path: &Path, anomalies_only: bool) -> Result<Self, OutputError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| OutputError::Open {
                path: path.to_owned(),
                source,
            })?;
        }
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| OutputError::Open {
                path: path.to_owned(),
                source,
            })?;
        Ok(Self {
            target: Target::File(BufWriter::with_capacity(1 << 16, f)),
            anomalies_only,
            format: Format::Json,
            line: Vec::new(),
        })
    }

    /// Writes lines in `format` instead of Vigil's own schema.
    #[must_use]
    pub fn with_format(mut self, format: Format) -> Self {
        self.format = format;
        self
    }

    fn writer(&mut self) -> Option<&mut dyn Write> {
        match &mut self.target {
            Target::Stdout(w) => Some(w),
            Target::File(w) => Some(w),
            Target::None => None,
        }
    }

    /// Writes one event as a line (not flushed until [`JsonLines::flush`]).
    pub fn write(&mut self, event: &Event) -> Result<(), OutputError> {
        if self.anomalies_only && !event.is_anomaly() {
            return Ok(());
        }
        let w: &mut dyn Write = match &mut self.target {
            Target::Stdout(w) => w,
            Target::File(w) => w,
            Target::None => return Ok(()),
        };
        self.line.clear();
        match &self.format {
            Format::Json => serde_json::to_writer(&mut self.line, event),
            Format::Ocsf { node } => {
                serde_json::to_writer(&mut self.line, &crate::ocsf::to_ocsf(event, node))
            }
        }
        .map_err(OutputError::Encode)?;
        self.line.push(b'\n');
        w.write_all(&self.line).map_err(OutputError::Write)
    }

    pub fn flush(&mut self) -> Result<(), OutputError> {
        match self.writer() {
            Some(w) => w.flush().map_err(OutputError::Write),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Identity, Loss, Payload};

    fn loss_event() -> Event {
        Event {
            seq: 1,
            time: std::time::SystemTime::UNIX_EPOCH,
            kernel_ts_ns: 0,
            identity: Identity::default(),
            process: None,
            payload: Payload::Loss(Loss {
                sensor: "file".into(),
                lost: 3,
                total: 3,
            }),
        }
    }

    #[test]
    fn writes_one_json_object_per_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/events.jsonl");
        let mut out = JsonLines::file(&path, false).unwrap();
        out.write(&loss_event()).unwrap();
        out.write(&loss_event()).unwrap();
        out.flush().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(v["kind"], "loss");
        assert_eq!(v["lost"], 3);
    }

    #[test]
    fn anomalies_only_skips_plain_events() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let mut out = JsonLines::file(&path, true).unwrap();
        out.write(&loss_event()).unwrap();
        out.flush().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
    }
}
