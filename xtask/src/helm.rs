//! Renders the Helm chart in `deploy/helm/vigil` without Helm: the subset of
//! Go templates and Sprig functions the chart uses, with Helm's semantics
//! (`include`, `toYaml` with sorted keys and unindented sequences, `indent`
//! and `nindent` on every line, whitespace trimming with `{{-` and `-}}`).
//!
//! Anything outside the subset is an error naming the template and the
//! action, so a chart edit that needs more fails loudly instead of
//! rendering something Helm would not.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;

use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum HelmError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid YAML: {detail}")]
    Yaml { path: String, detail: String },
    #[error("{template}: {detail}")]
    Template { template: String, detail: String },
}

/// One parsed piece of a template.
#[derive(Clone, Debug)]
enum Node {
    Text(String),
    Print(Pipeline),
    If {
        cond: Pipeline,
        then: Vec<Node>,
        otherwise: Vec<Node>,
    },
}

#[derive(Clone, Debug)]
enum Arg {
    Str(String),
    Int(i64),
    /// Field path from the root context; empty for `.`.
    Path(Vec<String>),
    Sub(Pipeline),
}

/// `func arg...` or a lone value.
#[derive(Clone, Debug)]
struct Cmd {
    func: Option<String>,
    args: Vec<Arg>,
}

type Pipeline = Vec<Cmd>;

/// An action's body and whether it trims whitespace on either side.
struct Action<'a> {
    body: &'a str,
    trim_left: bool,
    trim_right: bool,
}

enum Piece<'a> {
    Text(&'a str),
    Action(Action<'a>),
}

fn split(src: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = src;
    while let Some(start) = rest.find("{{") {
        out.push(Piece::Text(&rest[..start]));
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| "unclosed action: missing }}".to_owned())?;
        let mut body = &after[..end];
        let trim_left = body.starts_with("- ");
        if trim_left {
            body = &body[2..];
        }
        let trim_right = body.ends_with(" -");
        if trim_right {
            body = &body[..body.len() - 2];
        }
        out.push(Piece::Action(Action {
            body: body.trim(),
            trim_left,
            trim_right,
        }));
        rest = &after[end + 2..];
    }
    out.push(Piece::Text(rest));
    // Trim markers eat the whitespace of the neighbouring text.
    for i in 0..out.len() {
        let (left, right) = match &out[i] {
            Piece::Action(a) => (a.trim_left, a.trim_right),
            Piece::Text(_) => continue,
        };
        if left && let Some(Piece::Text(t)) = i.checked_sub(1).and_then(|j| out.get_mut(j)) {
            *t = t.trim_end();
        }
        if right && let Some(Piece::Text(t)) = out.get_mut(i + 1) {
            *t = t.trim_start();
        }
    }
    Ok(out)
}

fn tokens(body: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = body.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '|' | '(' | ')' => {
                out.push(c.to_string());
                chars.next();
            }
            '"' => {
                chars.next();
                let mut s = String::from("\"");
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some('n') => s.push('\n'),
                            Some(e) => s.push(e),
                            None => return Err("unterminated string".into()),
                        },
                        Some(ch) => s.push(ch),
                        None => return Err("unterminated string".into()),
                    }
                }
                out.push(s);
            }
            _ => {
                let mut s = String::new();
                while let Some(&ch) = chars.peek() {
                    if ch.is_whitespace() || matches!(ch, '|' | '(' | ')') {
                        break;
                    }
                    s.push(ch);
                    chars.next();
                }
                out.push(s);
            }
        }
    }
    Ok(out)
}

fn parse_pipeline(toks: &[String], pos: &mut usize) -> Result<Pipeline, String> {
    let mut cmds = Vec::new();
    let mut cur = Cmd {
        func: None,
        args: Vec::new(),
    };
    while let Some(t) = toks.get(*pos) {
        match t.as_str() {
            ")" => break,
            "|" => {
                *pos += 1;
                cmds.push(std::mem::replace(
                    &mut cur,
                    Cmd {
                        func: None,
                        args: Vec::new(),
                    },
                ));
            }
            "(" => {
                *pos += 1;
                let sub = parse_pipeline(toks, pos)?;
                if toks.get(*pos).map(String::as_str) != Some(")") {
                    return Err("missing )".into());
                }
                *pos += 1;
                cur.args.push(Arg::Sub(sub));
            }
            _ => {
                *pos += 1;
                if let Some(s) = t.strip_prefix('"') {
                    cur.args.push(Arg::Str(s.to_owned()));
                } else if t == "." || t.starts_with('.') || t.starts_with("$.") || t == "$" {
                    let path = t.trim_start_matches('$').trim_start_matches('.');
                    let fields = path
                        .split('.')
                        .filter(|f| !f.is_empty())
                        .map(str::to_owned)
                        .collect();
                    cur.args.push(Arg::Path(fields));
                } else if let Ok(n) = t.parse::<i64>() {
                    cur.args.push(Arg::Int(n));
                } else if cur.func.is_none() && cur.args.is_empty() {
                    cur.func = Some(t.clone());
                } else {
                    return Err(format!("unexpected {t:?}"));
                }
            }
        }
    }
    cmds.push(cur);
    if cmds.iter().any(|c| c.func.is_none() && c.args.len() != 1) {
        return Err("a pipeline stage is neither a function nor one value".into());
    }
    Ok(cmds)
}

fn pipeline_of(body: &str) -> Result<Pipeline, String> {
    let toks = tokens(body)?;
    let mut pos = 0;
    let p = parse_pipeline(&toks, &mut pos)?;
    if pos != toks.len() {
        return Err(format!("unexpected {:?}", toks[pos]));
    }
    Ok(p)
}

/// Parses a template into nodes, collecting `define` blocks into `defines`.
fn parse(src: &str, defines: &mut HashMap<String, Vec<Node>>) -> Result<Vec<Node>, String> {
    enum Frame {
        Root,
        Define(String),
        If {
            cond: Pipeline,
            then: Option<Vec<Node>>,
        },
    }
    let mut stack: Vec<(Frame, Vec<Node>)> = vec![(Frame::Root, Vec::new())];
    for piece in split(src)? {
        let action = match piece {
            Piece::Text(t) => {
                if !t.is_empty() {
                    stack
                        .last_mut()
                        .expect("root frame")
                        .1
                        .push(Node::Text(t.to_owned()));
                }
                continue;
            }
            Piece::Action(a) => a,
        };
        let body = action.body;
        if body.starts_with("/*") {
            continue;
        }
        let (word, rest) = body.split_once(' ').unwrap_or((body, ""));
        match word {
            "define" => {
                let name = rest.trim().trim_matches('"').to_owned();
                stack.push((Frame::Define(name), Vec::new()));
            }
            "if" => stack.push((
                Frame::If {
                    cond: pipeline_of(rest)?,
                    then: None,
                },
                Vec::new(),
            )),
            "else" => match stack.last_mut() {
                Some((
                    Frame::If {
                        then: then @ None, ..
                    },
                    nodes,
                )) => {
                    *then = Some(std::mem::take(nodes));
                }
                _ => return Err("else outside if".into()),
            },
            "end" => {
                let (frame, nodes) = stack.pop().ok_or("end without a block")?;
                let parent = &mut stack.last_mut().ok_or("end without a block")?.1;
                match frame {
                    Frame::Root => return Err("end without a block".into()),
                    Frame::Define(name) => {
                        defines.insert(name, nodes);
                    }
                    Frame::If { cond, then } => {
                        let (then, otherwise) = match then {
                            Some(t) => (t, nodes),
                            None => (nodes, Vec::new()),
                        };
                        parent.push(Node::If {
                            cond,
                            then,
                            otherwise,
                        });
                    }
                }
            }
            "range" | "with" | "template" | "block" | "tpl" => {
                return Err(format!("{word} is not supported by this renderer"));
            }
            _ => stack
                .last_mut()
                .expect("root frame")
                .1
                .push(Node::Print(pipeline_of(body)?)),
        }
    }
    match stack.pop() {
        Some((Frame::Root, nodes)) if stack.is_empty() => Ok(nodes),
        _ => Err("a block is not closed with end".into()),
    }
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// Go's `fmt.Sprint` of a value, for printing.
fn text_of(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Null => Err("no value (a missing value?)".into()),
        Value::Array(_) | Value::Object(_) => {
            Err("a map or list cannot be printed; use toYaml".into())
        }
    }
}

/// Go's `%q`.
fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Whether a YAML plain scalar would be read back as something other than
/// this string.
fn needs_quotes(s: &str) -> bool {
    const WORDS: &[&str] = &[
        "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "true", "True", "TRUE", "false",
        "False", "FALSE", "on", "On", "ON", "off", "Off", "OFF", "null", "Null", "NULL", "~",
    ];
    let Some(first) = s.chars().next() else {
        return true;
    };
    WORDS.contains(&s)
        || s.parse::<f64>().is_ok()
        || s.starts_with("0x")
        || s.starts_with('.') && s[1..].parse::<f64>().is_ok()
        || "-?:,[]{}#&*!|>'\"%@`".contains(first)
        || first.is_whitespace()
        || s.ends_with(char::is_whitespace)
        || s.ends_with(':')
        || s.contains(": ")
        || s.contains(" #")
        || s.chars().any(char::is_control)
}

fn yaml_scalar(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) if needs_quotes(s) => go_quote(s),
        Value::String(s) => s.clone(),
        Value::Array(a) if a.is_empty() => "[]".into(),
        Value::Object(o) if o.is_empty() => "{}".into(),
        Value::Array(_) | Value::Object(_) => unreachable!("collections are not scalars"),
    }
}

fn is_collection(v: &Value) -> bool {
    match v {
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        _ => false,
    }
}

fn sorted(o: &Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut entries: Vec<_> = o.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    entries
}

/// Emits `v` in the style of Helm's `toYaml` (go-yaml v2): sorted keys, two
/// spaces per level, sequences inside mappings not indented.
fn emit(v: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(o) if !o.is_empty() => {
            for (k, item) in sorted(o) {
                let key = yaml_scalar(&Value::String(k.clone()));
                match item {
                    Value::Object(_) if is_collection(item) => {
                        let _ = writeln!(out, "{pad}{key}:");
                        emit(item, indent + 2, out);
                    }
                    Value::Array(_) if is_collection(item) => {
                        let _ = writeln!(out, "{pad}{key}:");
                        emit(item, indent, out);
                    }
                    _ => {
                        let _ = writeln!(out, "{pad}{key}: {}", yaml_scalar(item));
                    }
                }
            }
        }
        Value::Array(a) if !a.is_empty() => {
            for item in a {
                if is_collection(item) {
                    let mut inner = String::new();
                    emit(item, indent + 2, &mut inner);
                    // The first line of the item goes after the dash.
                    let inner = &inner[indent + 2..];
                    let _ = write!(out, "{pad}- {inner}");
                } else {
                    let _ = writeln!(out, "{pad}- {}", yaml_scalar(item));
                }
            }
        }
        scalar => {
            let _ = writeln!(out, "{pad}{}", yaml_scalar(scalar));
        }
    }
}

/// Helm's `toYaml`: the YAML of a value, without the final newline.
#[must_use]
pub fn to_yaml(v: &Value) -> String {
    let mut out = String::new();
    emit(v, 0, &mut out);
    out.trim_end_matches('\n').to_owned()
}

fn indent(n: usize, s: &str) -> String {
    let pad = " ".repeat(n);
    format!("{pad}{}", s.replace('\n', &format!("\n{pad}")))
}

/// A chart ready to render: its templates, defines and root context.
pub struct Chart {
    name: String,
    /// Template name (`vigil/templates/x.yaml`) → parsed nodes.
    templates: BTreeMap<String, Vec<Node>>,
    defines: HashMap<String, Vec<Node>>,
    root: Value,
    /// Includes in progress, to stop a template that includes itself.
    depth: std::cell::Cell<usize>,
}

/// Most includes in progress at once.
const MAX_DEPTH: usize = 32;

fn read(path: &Path) -> Result<String, HelmError> {
    std::fs::read_to_string(path).map_err(|source| HelmError::Read {
        path: path.display().to_string(),
        source,
    })
}

fn yaml(path: &Path) -> Result<Value, HelmError> {
    serde_saphyr::from_str(&read(path)?).map_err(|e| HelmError::Yaml {
        path: path.display().to_string(),
        detail: e.to_string(),
    })
}

/// Overlays `top` onto `base`, as `helm --set`/`-f` do for maps.
fn merge(base: &mut Value, top: Value) {
    match (base, top) {
        (Value::Object(b), Value::Object(t)) => {
            for (k, v) in t {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, t) => *b = t,
    }
}

impl Chart {
    /// Loads a chart directory with `overrides` merged over `values.yaml`.
    pub fn load(
        dir: &Path,
        release: &str,
        namespace: &str,
        overrides: Value,
    ) -> Result<Self, HelmError> {
        let meta = yaml(&dir.join("Chart.yaml"))?;
        let name = meta["name"].as_str().unwrap_or_default().to_owned();
        let mut values = yaml(&dir.join("values.yaml"))?;
        merge(&mut values, overrides);
        let root = serde_json::json!({
            "Values": values,
            "Release": {"Name": release, "Namespace": namespace, "Service": "Helm"},
            "Chart": {
                "Name": name,
                "Version": meta["version"],
                "AppVersion": meta["appVersion"],
            },
            "Template": {"BasePath": format!("{name}/templates")},
        });
        let mut files: Vec<_> = std::fs::read_dir(dir.join("templates"))
            .map_err(|source| HelmError::Read {
                path: dir.join("templates").display().to_string(),
                source,
            })?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        let mut templates = BTreeMap::new();
        let mut defines = HashMap::new();
        for path in files {
            let file = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let tname = format!("{name}/templates/{file}");
            let nodes =
                parse(&read(&path)?, &mut defines).map_err(|detail| HelmError::Template {
                    template: tname.clone(),
                    detail,
                })?;
            templates.insert(tname, nodes);
        }
        Ok(Self {
            name,
            templates,
            defines,
            root,
            depth: std::cell::Cell::new(0),
        })
    }

    /// Every manifest template (not `_*` helpers) rendered, by file name;
    /// templates that render to nothing are left out.
    pub fn render(&self) -> Result<BTreeMap<String, String>, HelmError> {
        let prefix = format!("{}/templates/", self.name);
        let mut out = BTreeMap::new();
        for name in self.templates.keys() {
            let file = name.strip_prefix(&prefix).unwrap_or(name);
            if file.starts_with('_') {
                continue;
            }
            let text = self.include(name).map_err(|detail| HelmError::Template {
                template: name.clone(),
                detail,
            })?;
            if !text.trim().is_empty() {
                out.insert(file.to_owned(), text);
            }
        }
        Ok(out)
    }

    fn include(&self, name: &str) -> Result<String, String> {
        let nodes = self
            .defines
            .get(name)
            .or_else(|| self.templates.get(name))
            .ok_or_else(|| format!("include of undefined template {name:?}"))?;
        if self.depth.get() >= MAX_DEPTH {
            return Err(format!("include of {name:?} nested too deeply (a loop?)"));
        }
        self.depth.set(self.depth.get() + 1);
        let mut out = String::new();
        let done = self.exec(nodes, &mut out);
        self.depth.set(self.depth.get() - 1);
        done.map(|()| out)
    }

    fn exec(&self, nodes: &[Node], out: &mut String) -> Result<(), String> {
        for node in nodes {
            match node {
                Node::Text(t) => out.push_str(t),
                Node::Print(p) => out.push_str(&text_of(&self.eval(p)?)?),
                Node::If {
                    cond,
                    then,
                    otherwise,
                } => {
                    let branch = if truthy(&self.eval(cond)?) {
                        then
                    } else {
                        otherwise
                    };
                    self.exec(branch, out)?;
                }
            }
        }
        Ok(())
    }

    fn arg(&self, a: &Arg) -> Result<Value, String> {
        Ok(match a {
            Arg::Str(s) => Value::String(s.clone()),
            Arg::Int(n) => Value::from(*n),
            Arg::Path(fields) => {
                let mut v = &self.root;
                for f in fields {
                    v = v.get(f).unwrap_or(&Value::Null);
                }
                v.clone()
            }
            Arg::Sub(p) => self.eval(p)?,
        })
    }

    fn eval(&self, p: &Pipeline) -> Result<Value, String> {
        let mut piped: Option<Value> = None;
        for cmd in p {
            let mut args = cmd
                .args
                .iter()
                .map(|a| self.arg(a))
                .collect::<Result<Vec<_>, _>>()?;
            args.extend(piped.take());
            let v = match cmd.func.as_deref() {
                None => args.pop().unwrap_or(Value::Null),
                Some(f) => self.call(f, &args)?,
            };
            piped = Some(v);
        }
        Ok(piped.unwrap_or(Value::Null))
    }

    fn call(&self, f: &str, args: &[Value]) -> Result<Value, String> {
        let str_arg = |v: &Value| text_of(v).map_err(|e| format!("{f}: {e}"));
        let int_arg = |v: &Value| {
            v.as_u64()
                .map(|n| n as usize)
                .ok_or_else(|| format!("{f}: {v} is not a count"))
        };
        let want = |n: usize| {
            if args.len() == n {
                Ok(())
            } else {
                Err(format!("{f} takes {n} arguments, got {}", args.len()))
            }
        };
        Ok(Value::String(match f {
            "include" => {
                want(2)?;
                self.include(&str_arg(&args[0])?)?
            }
            "toYaml" => {
                want(1)?;
                to_yaml(&args[0])
            }
            "indent" | "nindent" => {
                want(2)?;
                let s = indent(int_arg(&args[0])?, &str_arg(&args[1])?);
                if f == "nindent" { format!("\n{s}") } else { s }
            }
            "quote" => {
                want(1)?;
                go_quote(&str_arg(&args[0])?)
            }
            "default" => {
                want(2)?;
                let v = if truthy(&args[1]) { &args[1] } else { &args[0] };
                return Ok(v.clone());
            }
            "sha256sum" => {
                want(1)?;
                Sha256::digest(str_arg(&args[0])?.as_bytes()).iter().fold(
                    String::new(),
                    |mut s, b| {
                        let _ = write!(s, "{b:02x}");
                        s
                    },
                )
            }
            "print" => args.iter().map(str_arg).collect::<Result<String, _>>()?,
            "trim" => {
                want(1)?;
                str_arg(&args[0])?.trim().to_owned()
            }
            "not" => {
                want(1)?;
                return Ok(Value::Bool(!truthy(&args[0])));
            }
            other => {
                return Err(format!(
                    "function {other:?} is not supported by this renderer"
                ));
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(src: &str, values: &Value) -> Result<String, String> {
        let mut defines = HashMap::new();
        let nodes = parse(src, &mut defines)?;
        let mut templates = BTreeMap::new();
        templates.insert("t/templates/x.yaml".to_owned(), nodes);
        let chart = Chart {
            name: "t".into(),
            templates,
            defines,
            root: serde_json::json!({
                "Values": values.clone(),
                "Release": {"Name": "rel", "Namespace": "ns"},
                "Chart": {"Name": "t", "AppVersion": "1.2.3"},
                "Template": {"BasePath": "t/templates"},
            }),
            depth: std::cell::Cell::new(0),
        };
        chart.include("t/templates/x.yaml")
    }

    #[test]
    fn values_trimming_and_conditionals() {
        let src = "a: {{ .Values.a }}\n{{- if .Values.on }}\nb: yes\n{{- else }}\nb: no\n{{- end }}\nc: {{ .Values.missing | default .Chart.AppVersion | quote }}\n";
        assert_eq!(
            render(src, &serde_json::json!({"a": 1, "on": true})).unwrap(),
            "a: 1\nb: yes\nc: \"1.2.3\"\n"
        );
        assert_eq!(
            render(src, &serde_json::json!({"a": "x", "on": false})).unwrap(),
            "a: x\nb: no\nc: \"1.2.3\"\n"
        );
        assert!(render("{{ .Values.nope }}", &serde_json::json!({})).is_err());
        assert!(render("{{ range .Values.x }}{{ end }}", &serde_json::json!({})).is_err());
        assert!(render("{{ if .Values.x }}", &serde_json::json!({})).is_err());
    }

    #[test]
    fn include_and_indentation_like_helm() {
        let src = "{{- define \"l\" -}}\nk: v\nj: w\n{{- end }}\nmeta:\n  labels:\n    {{- include \"l\" . | nindent 4 }}\n";
        assert_eq!(
            render(src, &serde_json::json!({})).unwrap(),
            // As in Go, the newline after a define's end is output.
            "\nmeta:\n  labels:\n    k: v\n    j: w\n"
        );
        let looped = render(
            "{{ include (print $.Template.BasePath \"/x.yaml\") . | sha256sum }}",
            &serde_json::json!({}),
        );
        assert!(looped.unwrap_err().contains("nested too deeply"));
        assert_eq!(
            render("{{ print \"a\" \"/b\" }}", &serde_json::json!({})).unwrap(),
            "a/b"
        );
        assert_eq!(
            render("{{ \"x\" | sha256sum }}", &serde_json::json!({})).unwrap(),
            "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"
        );
    }

    #[test]
    fn to_yaml_matches_go_yaml_style() {
        let v = serde_json::json!({
            "tolerations": [{"operator": "Exists"}, {"key": "a", "effect": "NoSchedule"}],
            "resources": {"limits": {"cpu": "1", "memory": "512Mi"}, "requests": {}},
            "list": ["BPF", "true", ""],
            "count": 3
        });
        assert_eq!(
            to_yaml(&v),
            "count: 3\nlist:\n- BPF\n- \"true\"\n- \"\"\nresources:\n  limits:\n    cpu: \"1\"\n    memory: 512Mi\n  requests: {}\ntolerations:\n- operator: Exists\n- effect: NoSchedule\n  key: a"
        );
    }
}
