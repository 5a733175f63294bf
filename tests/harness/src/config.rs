//! A private daemon's files and names, and its config.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// Where a private daemon keeps everything: its socket, config, log, state
/// and event file in one directory, and its cgroup parent and bpffs pin
/// directory under one name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub root: PathBuf,
    pub socket: PathBuf,
    pub config: PathBuf,
    pub events: PathBuf,
    pub state: PathBuf,
    /// The daemon's stderr.
    pub log: PathBuf,
    /// Relative to the cgroup v2 mount.
    pub cgroup_parent: String,
    pub pin_dir: PathBuf,
}

/// Where the daemon writes its events (`[output]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Events<'a> {
    /// Nowhere (`events = "none"`): the API still serves them.
    Off,
    /// To [`Layout::events`], as JSON lines.
    File,
    /// To [`Layout::events`], in this format (`json`, `ocsf`).
    FileAs(&'a str),
}

impl Layout {
    /// The layout of a daemon whose files are in `root`.
    #[must_use]
    pub fn new(root: &Path, cgroup_parent: &str) -> Self {
        Self {
            root: root.to_owned(),
            socket: root.join("vigil.sock"),
            config: root.join("vigil.toml"),
            events: root.join("events.jsonl"),
            state: root.join("state"),
            log: root.join("daemon.log"),
            cgroup_parent: cgroup_parent.to_owned(),
            pin_dir: Path::new("/sys/fs/bpf").join(cgroup_parent),
        }
    }

    /// The layout of a daemon whose files are in a new temporary directory
    /// (named `PREFIX…`), which is removed when the returned guard drops.
    /// The root has its symlinks resolved, as the kernel reports paths.
    pub fn temp(prefix: &str, cgroup_parent: &str) -> anyhow::Result<(tempfile::TempDir, Self)> {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .context("creating the daemon's directory")?;
        let root = dir
            .path()
            .canonicalize()
            .context("resolving the daemon's directory")?;
        let layout = Self::new(&root, cgroup_parent);
        Ok((dir, layout))
    }

    /// The daemon's config: its private `[daemon]` settings and
    /// `daemon_settings`, its `[output]`, then `rest` (agents, data classes,
    /// other sections).
    #[must_use]
    pub fn config_text(&self, daemon_settings: &str, events: Events<'_>, rest: &str) -> String {
        let path = |p: &Path| toml_string(&p.to_string_lossy());
        let output = match events {
            Events::Off => "events = \"none\"".to_owned(),
            Events::File => format!("events = {}", path(&self.events)),
            Events::FileAs(format) => format!(
                "events = {}\nformat = {}",
                path(&self.events),
                toml_string(format)
            ),
        };
        format!(
            "[daemon]\nsocket = {socket}\ncgroup_parent = {parent}\nstate_dir = {state}\npin_dir = {pins}\n{daemon_settings}\n\n[output]\n{output}\n{rest}",
            socket = path(&self.socket),
            parent = toml_string(&self.cgroup_parent),
            state = path(&self.state),
            pins = path(&self.pin_dir),
        )
    }
}

/// `s` as a TOML basic string (a JSON string is one).
#[must_use]
pub fn toml_string(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// The TOML of an agent that `vigil exec` sessions may run as and whose
/// scope allows everything (loopback systems, every tool, every file as the
/// data class `everything`), so that what it does is reported and never an
/// anomaly: `permissive_agent!(NAME, OWNER)` or
/// `permissive_agent!(NAME, OWNER, DESCRIPTION)`, all string literals. A
/// `&'static str`, so that a constant can hold it.
#[macro_export]
macro_rules! permissive_agent {
    ($name:literal, $owner:literal $(, $description:literal)?) => {
        concat!(
            "\n[[agent]]\nname = \"",
            $name,
            "\"\nowner = \"",
            $owner,
            "\"\n",
            $("description = \"", $description, "\"\n",)?
            "on_violation = \"alert\"\n",
            "  [agent.match]\n",
            "  sessions = true\n",
            "  [agent.scope]\n",
            "  systems = [\"127.0.0.0/8\", \"[::1]\"]\n",
            "  tools = [\"/**\"]\n",
            "  data = [\"everything\"]\n",
            "\n",
            "[data.everything]\n",
            "read = [\"/**\"]\n",
            "write = [\"/**\"]\n",
        )
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> toml::Table {
        text.parse()
            .unwrap_or_else(|e| panic!("not TOML: {e}\n{text}"))
    }

    #[test]
    fn the_config_names_the_private_files_and_keeps_the_rest() {
        let layout = Layout::new(Path::new("/tmp/d \"q\" \\"), "vigil-test-1-0");
        assert_eq!(layout.pin_dir, Path::new("/sys/fs/bpf/vigil-test-1-0"));
        let text = layout.config_text(
            "open_repeat_ms = 0",
            Events::FileAs("ocsf"),
            "[scope]\naggregate_window_seconds = 0\n",
        );
        let t = parse(&text);
        let d = &t["daemon"];
        assert_eq!(d["socket"].as_str(), Some("/tmp/d \"q\" \\/vigil.sock"));
        assert_eq!(d["cgroup_parent"].as_str(), Some("vigil-test-1-0"));
        assert_eq!(d["state_dir"].as_str(), Some("/tmp/d \"q\" \\/state"));
        assert_eq!(d["pin_dir"].as_str(), Some("/sys/fs/bpf/vigil-test-1-0"));
        assert_eq!(d["open_repeat_ms"].as_integer(), Some(0));
        assert_eq!(
            t["output"]["events"].as_str(),
            Some("/tmp/d \"q\" \\/events.jsonl")
        );
        assert_eq!(t["output"]["format"].as_str(), Some("ocsf"));
        assert_eq!(t["scope"]["aggregate_window_seconds"].as_integer(), Some(0));

        let off = parse(&layout.config_text("", Events::Off, ""));
        assert_eq!(off["output"]["events"].as_str(), Some("none"));
        let file = parse(&layout.config_text("", Events::File, ""));
        assert!(file["output"].get("format").is_none());
    }

    #[test]
    fn the_permissive_agent_allows_everything_to_sessions() {
        const CODER: &str = permissive_agent!("coder", "tests@example.com");
        let t = parse(CODER);
        let agent = &t["agent"][0];
        assert_eq!(agent["name"].as_str(), Some("coder"));
        assert_eq!(agent["owner"].as_str(), Some("tests@example.com"));
        assert!(agent.get("description").is_none());
        assert_eq!(agent["on_violation"].as_str(), Some("alert"));
        assert_eq!(agent["match"]["sessions"].as_bool(), Some(true));
        let scope = &agent["scope"];
        assert_eq!(scope["tools"][0].as_str(), Some("/**"));
        assert_eq!(scope["data"][0].as_str(), Some("everything"));
        assert_eq!(t["data"]["everything"]["write"][0].as_str(), Some("/**"));

        let bench = parse(permissive_agent!("bench", "b@localhost", "workloads"));
        assert_eq!(bench["agent"][0]["description"].as_str(), Some("workloads"));
        // Another section may follow it, as in the test configs.
        parse(&format!("{CODER}[journal]\nmax_bytes = 2000000\n"));
    }
}
