//! Locating config problems: field paths (`agent[1].scope.systems[2]`),
//! their spans in the TOML text, and line/column numbers.

use std::fmt;
use std::ops::Range;

use toml::de::{DeTable, DeValue};

/// One step of a field path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// Where in the document a value lives, printed as `agent[1].scope.systems[2]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldPath(pub Vec<Seg>);

impl FieldPath {
    #[must_use]
    pub fn key(mut self, k: &str) -> Self {
        self.0.push(Seg::Key(k.to_owned()));
        self
    }

    #[must_use]
    pub fn index(mut self, i: usize) -> Self {
        self.0.push(Seg::Index(i));
        self
    }

    /// Builds a path from `serde_path_to_error`'s, dropping segments it could not name.
    #[must_use]
    pub fn from_serde(path: &serde_path_to_error::Path) -> Self {
        use serde_path_to_error::Segment;
        Self(
            path.iter()
                .filter_map(|s| match s {
                    Segment::Seq { index } => Some(Seg::Index(*index)),
                    Segment::Map { key } => Some(Seg::Key(key.clone())),
                    Segment::Enum { variant } => Some(Seg::Key(variant.clone())),
                    Segment::Unknown => None,
                })
                .collect(),
        )
    }

    /// The span of the value at this path, or of its key when the value is a
    /// table (a table's own span can cover many lines), or of the nearest
    /// ancestor that exists.
    #[must_use]
    pub fn span_in(&self, text: &str) -> Option<Range<usize>> {
        let root = DeTable::parse(text).ok()?;
        let mut best = None;
        let mut table: Option<&DeTable<'_>> = Some(root.get_ref());
        let mut value: Option<&DeValue<'_>> = None;
        for seg in &self.0 {
            match seg {
                Seg::Key(k) => {
                    let t = table?;
                    let (key, v) = t.get_key_value(k.as_str())?;
                    best = Some(if v.get_ref().is_table() {
                        key.span()
                    } else {
                        v.span()
                    });
                    value = Some(v.get_ref());
                }
                Seg::Index(i) => {
                    let v = value?.as_array()?.get(*i)?;
                    best = Some(v.span());
                    value = Some(v.get_ref());
                }
            }
            table = value.and_then(DeValue::as_table);
        }
        best
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => f.write_str(k)?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// 1-based line and column (in characters) of a byte offset.
#[must_use]
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// One problem in a config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// File name (or `<embedded>`).
    pub file: String,
    /// 1-based line and column, when the problem has a place in the text.
    pub location: Option<(usize, usize)>,
    /// Field path, empty for syntax errors.
    pub path: FieldPath,
    pub message: String,
}

impl Diagnostic {
    /// Places a problem found at `path` (and possibly `span`) in `text`.
    #[must_use]
    pub fn new(
        file: &str,
        text: &str,
        path: FieldPath,
        span: Option<Range<usize>>,
        message: String,
    ) -> Self {
        // serde reports a bad array element at the array; the path finds the
        // element itself. But an unknown key is best shown at the key, which
        // serde does and the path (pointing at the value) does not.
        let located = path.span_in(text);
        let span = match (span, located) {
            (Some(outer), Some(inner)) if outer.start <= inner.start && inner.end <= outer.end => {
                Some(inner)
            }
            (Some(s), _) | (None, Some(s)) => Some(s),
            (None, None) => None,
        };
        Self {
            file: file.to_owned(),
            location: span.map(|s| line_col(text, s.start)),
            path,
            message,
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some((line, col)) = self.location {
            write!(f, ":{line}:{col}")?;
        }
        if self.path.0.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.path, self.message)
        }
    }
}
