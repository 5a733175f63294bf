//! The import graph of the daemon's top-level modules (`agent/src/*`),
//! checked by `cargo xtask lint`: a lower layer never imports a higher one,
//! so the graph has no cycle. Test code is left out (a test may reach
//! across layers to build its fixtures).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context as _, Result};

/// Each top-level module and the top-level modules its non-test code names.
pub type Graph = BTreeMap<String, BTreeSet<String>>;

/// Reads the graph of the crate whose `src` directory is `src`.
pub fn graph(src: &Path) -> Result<Graph> {
    let mut graph = Graph::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            // Test-only files, declared under #[cfg(test)].
            let rust = path.extension().is_some_and(|e| e == "rs");
            if !rust || name == "tests.rs" || name == "testing.rs" {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap_or(&path);
            let top = top_module(rel);
            if top == "lib" || top == "main" {
                continue;
            }
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let refs = graph.entry(top.clone()).or_default();
            refs.extend(crate_refs(&text).into_iter().filter(|r| *r != top));
        }
    }
    // Only edges between modules of the crate count (`crate::X` where X is
    // an item of lib.rs, such as a re-export, is not a module edge).
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for refs in graph.values_mut() {
        refs.retain(|r| modules.contains(r));
    }
    Ok(graph)
}

fn top_module(rel: &Path) -> String {
    let first = rel
        .components()
        .next()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .unwrap_or_default();
    first.strip_suffix(".rs").unwrap_or(&first).to_owned()
}

/// The text before the file's test module, without comments.
fn code(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim() == "#[cfg(test)]"
            && lines
                .peek()
                .is_some_and(|next| next.trim_start().starts_with("mod "))
            && !line.starts_with(' ')
        {
            break;
        }
        let line = line.find("//").map_or(line, |i| &line[..i]);
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The top-level module names that `crate::` paths in `text` start with,
/// including each branch of a `use crate::{a::…, b};` group.
#[must_use]
pub fn crate_refs(text: &str) -> BTreeSet<String> {
    let code = code(text);
    let mut out = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().next_back();
        rest = &rest[i + "crate::".len()..];
        // `$crate::` in macros and `foo_crate::` are other paths.
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0usize;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.extend(ident(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 || item.is_empty() {
                    item.push(c);
                }
            }
            out.extend(ident(&item));
        } else {
            out.extend(ident(rest));
        }
    }
    out
}

fn ident(s: &str) -> Option<String> {
    let s = s.trim_start();
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    (end > 0 && s != "self").then(|| s[..end].to_owned())
}

/// A cycle of the graph, as its modules in order, if there is one.
#[must_use]
pub fn cycle(graph: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &str,
        graph: &Graph,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let start = path.iter().position(|n| n == node).unwrap_or(0);
                let mut c = path[start..].to_vec();
                c.push(node.to_owned());
                return Some(c);
            }
            None => {}
        }
        marks.insert(node.to_owned(), Mark::Open);
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, marks, path) {
                return Some(c);
            }
        }
        path.pop();
        marks.insert(node.to_owned(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        if let Some(c) = visit(node, graph, &mut marks, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(edges: &[(&str, &[&str])]) -> Graph {
        edges
            .iter()
            .map(|(a, bs)| {
                (
                    (*a).to_owned(),
                    bs.iter().map(|b| (*b).to_owned()).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn reads_paths_groups_and_nested_groups() {
        let text = "use crate::{\n    api::{a, b::{c}},\n    event::Event,\n    wire,\n};\n\
                    fn f() { crate::journal::x(); $crate::nope; my_crate::nope2; }\n\
                    // crate::commented\n\
                    #[cfg(test)]\nmod tests { use crate::testonly; }\n";
        let refs: Vec<String> = crate_refs(text).into_iter().collect();
        assert_eq!(refs, ["api", "event", "journal", "wire"]);
    }

    #[test]
    fn finds_a_cycle_and_accepts_layers() {
        let layered = g(&[
            ("api", &["journal", "event"]),
            ("journal", &["event"]),
            ("event", &[]),
        ]);
        assert_eq!(cycle(&layered), None);
        let circular = g(&[
            ("api", &["daemon"]),
            ("daemon", &["journal"]),
            ("journal", &["api"]),
        ]);
        let c = cycle(&circular).unwrap();
        assert_eq!(c.first(), c.last());
        assert_eq!(c.len(), 4, "{c:?}");
    }

    #[test]
    fn the_daemon_has_no_cycle() {
        let src = crate::workspace::root().join("agent/src");
        let graph = graph(&src).unwrap();
        assert!(
            graph.contains_key("daemon") && graph.contains_key("api"),
            "{graph:?}"
        );
        assert_eq!(cycle(&graph), None, "{graph:#?}");
    }
}
