//! A sink's cursor: the journal sequence up to which the collector has
//! acknowledged everything, kept in a file of its own so that it survives
//! restarts without touching the journal's write path.
//!
//! The file is replaced by rename, so a crash leaves the old cursor or the
//! new one, never a torn one. It is not synced: a cursor lost with the page
//! cache only makes the sink send some events again, never skip any.

use std::io::Write as _;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum CursorError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {text:?} is not a journal sequence")]
    Invalid { path: String, text: String },
}

/// The cursor file of one sink.
#[derive(Clone, Debug)]
pub struct Cursor {
    path: PathBuf,
}

impl Cursor {
    /// The cursor of sink `name` under `dir`.
    #[must_use]
    pub fn new(dir: &Path, name: &str) -> Self {
        Self {
            path: dir.join(format!("{name}.cursor")),
        }
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self) -> impl FnOnce(std::io::Error) -> CursorError + '_ {
        |source| CursorError::Io {
            path: self.path.display().to_string(),
            source,
        }
    }

    /// The saved sequence; `None` when the sink has never acknowledged one.
    pub fn load(&self) -> Result<Option<u64>, CursorError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io()(e)),
        };
        text.trim()
            .parse()
            .map(Some)
            .map_err(|_| CursorError::Invalid {
                path: self.path.display().to_string(),
                text: text.chars().take(40).collect(),
            })
    }

    /// Saves `seq` in place of the previous cursor.
    pub fn save(&self, seq: u64) -> Result<(), CursorError> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(self.io())?;
        }
        let tmp = self.path.with_extension("cursor.tmp");
        let mut f = std::fs::File::create(&tmp).map_err(self.io())?;
        writeln!(f, "{seq}").map_err(self.io())?;
        drop(f);
        std::fs::rename(&tmp, &self.path).map_err(self.io())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_and_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cursor::new(&dir.path().join("export"), "siem");
        assert_eq!(c.load().unwrap(), None);
        c.save(41).unwrap();
        c.save(42).unwrap();
        assert_eq!(c.load().unwrap(), Some(42));
        assert!(!c.path().with_extension("cursor.tmp").exists());
    }

    #[test]
    fn a_damaged_cursor_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cursor::new(dir.path(), "siem");
        std::fs::write(c.path(), "forty-two\n").unwrap();
        let err = c.load().unwrap_err().to_string();
        assert!(err.contains("siem.cursor"), "{err}");
        assert!(err.contains("forty-two"), "{err}");
    }
}
