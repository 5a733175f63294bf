use std::net::IpAddr;

use proptest::prelude::*;

use super::*;
use crate::event::Protocol;

/// A full agent declaration, as the configuration reference shows one.
const EXAMPLE: &str = r#"
[daemon]
socket = "/run/vigil/vigil.sock"

[[agent]]
name = "code-assistant"
owner = "platform-team@example.com"
description = "Reads the workspace, calls the model API and the internal git server"
on_violation = "alert"          # alert | kill | revoke

  [agent.match]
  sessions = true               # processes started by `vigil exec --agent code-assistant`
  cgroups = ["/kubepods.slice/**/cri-containerd-*.scope"]   # globs on the cgroup v2 path, optional

  [agent.scope]
  systems = ["127.0.0.1:8080", "10.0.0.0/8:443", "[::1]:8080", "api.example.com:443", "udp://127.0.0.53:53"]
  tools = ["/usr/bin/git", "/usr/bin/python3*", "/bin/ls"]
  data = ["workspace"]
  identities = ["git-token"]

[data.workspace]
read = ["/srv/workspace/**"]
write = ["/srv/workspace/**"]

[identity.git-token]
files = ["/var/run/secrets/git/token"]
endpoints = []
"#;

fn err(text: &str) -> String {
    Config::from_toml_str(text, "test.toml")
        .unwrap_err()
        .to_string()
}

fn agent(name: &str) -> String {
    format!("[[agent]]\nname = \"{name}\"\n[agent.match]\nsessions = true\n")
}

#[test]
fn the_reference_example_parses() {
    let c = Config::from_toml_str(EXAMPLE, "example.toml").unwrap();
    assert_eq!(c.agents.len(), 1);
    let a = &c.agents[0];
    assert_eq!(a.name.as_str(), "code-assistant");
    assert_eq!(a.on_violation, OnViolation::Alert);
    let m = a.matcher.as_ref().unwrap();
    assert!(m.sessions);
    assert_eq!(
        m.cgroups[0].as_str(),
        "/kubepods.slice/**/cri-containerd-*.scope"
    );
    let s = &a.scope.systems;
    assert_eq!(s.len(), 5);
    assert_eq!(s[2].target, Target::Net("::1/128".parse().unwrap()));
    assert_eq!(s[2].ports, PortRange { lo: 8080, hi: 8080 });
    assert_eq!(
        s[3].target,
        Target::Host(HostPattern::Exact("api.example.com".into()))
    );
    assert_eq!(s[4].protocol, Some(Protocol::Udp));
    assert_eq!(c.data["workspace"].write[0].as_str(), "/srv/workspace/**");
    assert_eq!(c.identities["git-token"].files.len(), 1);
    // Unset sections take their defaults.
    assert_eq!(
        c.daemon.cgroup_parent.as_str(),
        crate::paths::DEFAULT_CGROUP_PARENT
    );
    assert_eq!(c.output.events, EventsOutput::Stdout);
    assert_eq!(c.output.format, super::OutputFormat::Json);
    assert_eq!(c.scope.dns_refresh_seconds, 60);
}

#[test]
fn shipped_configs_parse_and_compile() {
    let embedded = Config::embedded().unwrap();
    assert!(embedded.agents.is_empty());
    assert_eq!(
        embedded.daemon.socket,
        PathBuf::from("/run/vigil/vigil.sock")
    );
    crate::scope::Scope::compile(&embedded).unwrap();
    let example = include_str!("../../../deploy/config/vigil.toml");
    let c = Config::from_toml_str(example, "vigil.toml").unwrap();
    assert!(c.agents.len() >= 3);
    crate::scope::Scope::compile(&c).unwrap();
    // The commented-out export sink is valid once uncommented.
    let mut sink = String::new();
    for l in example
        .lines()
        .skip_while(|l| !l.starts_with("# [[export]]"))
        .take_while(|l| l.starts_with("# "))
    {
        sink.push_str(&l[2..]);
        sink.push('\n');
    }
    let c = Config::from_toml_str(&format!("{example}\n{sink}"), "vigil.toml").unwrap();
    assert_eq!(c.exports.len(), 1);
    assert_eq!(c.exports[0].headers.len(), 1);
}

#[test]
fn empty_config_is_all_defaults() {
    let c = Config::from_toml_str("", "empty.toml").unwrap();
    assert_eq!(c, Config::default());
    assert_eq!(c.daemon.ring_buffer_bytes, 8 << 20);
    assert_eq!(c.daemon.reader_nice, -10);
    assert_eq!(c.daemon.reader_interval_ms, 2);
    assert_eq!(c.daemon.open_repeat_ms, 1000);
    assert_eq!(
        c.daemon.pin_dir,
        PathBuf::from(crate::paths::DEFAULT_PIN_DIR)
    );
    assert_eq!(
        c.daemon.state_dir,
        PathBuf::from(crate::paths::DEFAULT_STATE_DIR)
    );
    assert!(!c.daemon.watch_all);
    assert_eq!(c.scope.aggregate_window_seconds, 10);
    assert!(!c.daemon.node_name().is_empty());
}

#[test]
fn full_daemon_output_and_scope_sections() {
    let c = Config::from_toml_str(
        r#"
[daemon]
socket = "/run/v.sock"
socket_group = "vigil"
node_name = "node-1"
cgroup_parent = "system.slice/vigil"
watch_all = true
ring_buffer_bytes = 4096
pin_dir = "/sys/fs/bpf/v"
state_dir = "/var/lib/v"
[output]
events = "/var/log/vigil/events.jsonl"
anomalies_only = true
[scope]
write_ignore = ["/var/cache/**"]
dns_refresh_seconds = 5
aggregate_window_seconds = 0
"#,
        "t.toml",
    )
    .unwrap();
    assert_eq!(c.daemon.node_name(), "node-1");
    assert_eq!(c.daemon.socket_group.as_deref(), Some("vigil"));
    assert_eq!(c.daemon.cgroup_parent.as_str(), "system.slice/vigil");
    assert_eq!(
        c.output.events,
        EventsOutput::File("/var/log/vigil/events.jsonl".into())
    );
    let ignore = c.scope.effective_write_ignore();
    assert!(
        ignore.iter().any(|g| g == "/dev/null"),
        "extends the defaults"
    );
    assert_eq!(ignore.last().unwrap(), "/var/cache/**");
}

#[test]
fn write_ignore_defaults_can_be_dropped() {
    let c = Config::from_toml_str(
        "[scope]\nwrite_ignore_defaults = false\nwrite_ignore = [\"/dev/null\"]\n",
        "t.toml",
    )
    .unwrap();
    assert_eq!(
        c.scope.effective_write_ignore(),
        vec!["/dev/null".to_owned()]
    );
}

#[test]
fn invalid_cidr_names_file_line_column_and_field_path() {
    let text = format!(
        "{}{}[agent.scope]\nsystems = [\"10.0.0.1:1\", \"::1\", \"10.0.0.0/33\"]\n",
        agent("a"),
        agent("b")
    );
    // Line 10, the opening quote of the third entry.
    assert_eq!(
        err(&text),
        r#"test.toml:10:33: agent[1].scope.systems[2]: invalid CIDR "10.0.0.0/33""#
    );
}

#[test]
fn syntax_errors_have_line_and_column() {
    let e = err("[daemon]\nsocket = \"/x\"\nwatch_all = tru\n");
    assert!(e.starts_with("test.toml:3:13: "), "{e}");
    let e = err("[[agent]\n");
    assert!(e.starts_with("test.toml:1:"), "{e}");
}

#[test]
fn unknown_fields_are_rejected_everywhere() {
    let e = err("[daemon]\nsockets = \"/x\"\n");
    assert!(
        e.starts_with(
            "test.toml:2:1: daemon.sockets: unknown field `sockets`, expected one of `socket`,"
        ),
        "{e}"
    );
    let e = err("colour = 1\n");
    assert!(
        e.starts_with("test.toml:1:1: colour: unknown field `colour`"),
        "{e}"
    );
    let e = err(&format!("{}[agent.scope]\nsystem = []\n", agent("a")));
    assert!(
        e.starts_with("test.toml:6:1: agent[0].scope.system: unknown field `system`"),
        "{e}"
    );
    let e = err("[data.x]\nread = [\"/a\"]\nreed = []\n");
    assert!(
        e.contains("test.toml:3:1: data.x.reed: unknown field `reed`"),
        "{e}"
    );
    let e = err("[identity.x]\nfile = []\n");
    assert!(e.contains("identity.x.file: unknown field `file`"), "{e}");
    let e = err(&format!(
        "{}[agent.match]\nsession = true\n",
        "[[agent]]\nname = \"a\"\n"
    ));
    assert!(
        e.contains("agent[0].match.session: unknown field `session`"),
        "{e}"
    );
}

#[test]
fn semantic_errors_point_at_the_reference() {
    let text = format!(
        "{}[agent.scope]\ndata = [\"workspace\", \"nope\"]\nidentities = [\"aws-credentials\", \"ghost\"]\n[data.workspace]\nread = [\"/w/**\"]\n",
        agent("a")
    );
    let e = err(&text);
    assert!(
        e.contains(r#"test.toml:6:22: agent[0].scope.data[1]: undefined data class "nope""#),
        "{e}"
    );
    assert!(
        e.contains(r#"test.toml:7:34: agent[0].scope.identities[1]: undefined identity "ghost""#),
        "{e}"
    );
    assert_eq!(
        Config::from_toml_str(&text, "t")
            .unwrap_err()
            .diagnostics()
            .len(),
        2,
        "all problems at once"
    );
}

#[test]
fn duplicate_agents_and_missing_match() {
    let e = err(&format!("{}{}", agent("a"), agent("a")));
    assert!(
        e.contains(
            r#"test.toml:6:8: agent[1].name: duplicate agent name "a" (first defined at agent[0])"#
        ),
        "{e}"
    );
    let e = err("[[agent]]\nname = \"lonely\"\n");
    assert!(
        e.starts_with("test.toml:1:1: agent[0]: agent \"lonely\" has no match"),
        "{e}"
    );
    let e = err("[[agent]]\nname = \"x\"\n[agent.match]\nsessions = false\ncgroups = []\n");
    assert!(e.contains("has no match"), "{e}");
}

#[test]
fn bad_names() {
    for (name, why) in [
        ("", "name is empty"),
        ("..", "not allowed"),
        (".", "not allowed"),
        ("a/b", "contains '/'"),
        ("a b", "contains ' '"),
        ("ünï", "contains 'ü'"),
    ] {
        let e = err(&agent(name));
        assert!(
            e.contains("agent[0].name: ") && e.contains(why),
            "{name:?}: {e}"
        );
    }
    let long = "x".repeat(MAX_NAME_LEN + 1);
    assert!(err(&agent(&long)).contains("longer than 64"));
    Config::from_toml_str(&agent(&"x".repeat(MAX_NAME_LEN)), "t").unwrap();
    Config::from_toml_str(&agent("A-z_0.9"), "t").unwrap();
    let e = err("[data.\"bad/name\"]\nread = [\"/a\"]\n");
    assert!(
        e.contains("data.bad/name: name \"bad/name\" contains '/'"),
        "{e}"
    );
}

#[test]
fn bad_globs_and_paths() {
    let e = err(&format!(
        "{}[agent.scope]\ntools = [\"/usr/bin/[\"]\n",
        agent("a")
    ));
    assert!(
        e.contains("agent[0].scope.tools[0]: invalid glob \"/usr/bin/[\""),
        "{e}"
    );
    let e = err(&format!("{}[agent.scope]\ntools = [\"git\"]\n", agent("a")));
    assert!(e.contains("must be an absolute path"), "{e}");
    let e = err("[daemon]\ncgroup_parent = \"/vigil\"\n");
    assert!(
        e.contains("daemon.cgroup_parent: cgroup parent \"/vigil\" must be relative"),
        "{e}"
    );
    let e = err("[daemon]\ncgroup_parent = \"a/../b\"\n");
    assert!(e.contains("not allowed"), "{e}");
    let e = err("[daemon]\nsocket = \"vigil.sock\"\n");
    assert!(
        e.contains("test.toml:2:10: daemon.socket: vigil.sock must be an absolute path"),
        "{e}"
    );
    let e = err("[daemon]\nring_buffer_bytes = 5000\n");
    assert!(
        e.contains("daemon.ring_buffer_bytes: 5000 must be a power of two"),
        "{e}"
    );
    let e = err("[daemon]\nreader_nice = -21\n");
    assert!(
        e.contains("daemon.reader_nice: -21 is not a nice value (-20 to 19)"),
        "{e}"
    );
    let e = err("[daemon]\nreader_interval_ms = 5000\n");
    assert!(
        e.contains("daemon.reader_interval_ms: 5000 is longer than a second"),
        "{e}"
    );
    let e = err("[daemon]\nopen_repeat_ms = 4000000\n");
    assert!(
        e.contains("daemon.open_repeat_ms: 4000000 is longer than an hour"),
        "{e}"
    );
    let e = err("[daemon]\nreader_nice = 300\n");
    assert!(e.contains("reader_nice"), "{e}");
    let e = err("[daemon]\nring_buffer_bytes = 2048\n");
    assert!(e.contains("power of two"), "{e}");
    let e = err("[output]\nevents = \"events.log\"\n");
    assert!(
        e.contains("output.events: events output \"events.log\""),
        "{e}"
    );
    let e = err("[output]\nformat = \"cef\"\n");
    assert!(
        e.contains("output.format: output format \"cef\" must be \"json\" or \"ocsf\""),
        "{e}"
    );
    let e = err("[scope]\ndns_refresh_seconds = 0\n");
    assert!(e.contains("scope.dns_refresh_seconds"), "{e}");
    let e = err("[scope]\ndns_long_label = 64\n");
    assert!(
        e.contains("scope.dns_long_label: 64 must be between 1 and 63"),
        "{e}"
    );
    let e = err("[scope]\ndns_entropy_label = 0\n");
    assert!(e.contains("scope.dns_entropy_label"), "{e}");
    let e = err("[scope]\ndns_entropy_bits = -1.0\n");
    assert!(e.contains("scope.dns_entropy_bits"), "{e}");
    let e = err("[scope]\ndns_search_domains = [\".\"]\n");
    assert!(e.contains("scope.dns_search_domains[0]"), "{e}");
    let e = err("[agent]\nname = \"x\"\n");
    assert!(e.contains("agent"), "{e}");
}

#[test]
fn classes_and_identities_need_content_and_own_names() {
    let e = err("[data.empty]\n");
    assert!(
        e.contains("data.empty: data class \"empty\" has neither read nor write globs"),
        "{e}"
    );
    let e = err("[identity.empty]\n");
    assert!(e.contains("has neither files nor endpoints"), "{e}");
    let e = err("[identity.ssh-keys]\nfiles = [\"/k\"]\n");
    assert!(e.contains("built-in catalog identity"), "{e}");
    let e = err("[identity.x]\nendpoints = [\"10.0.0.0/40\"]\n");
    assert!(
        e.contains("identity.x.endpoints[0]: invalid CIDR \"10.0.0.0/40\""),
        "{e}"
    );
}

#[test]
fn on_violation_values() {
    for (v, want) in [
        ("alert", OnViolation::Alert),
        ("kill", OnViolation::Kill),
        ("revoke", OnViolation::Revoke),
    ] {
        let text = format!(
            "[[agent]]\nname = \"a\"\non_violation = \"{v}\"\n[agent.match]\nsessions = true\n"
        );
        let c = Config::from_toml_str(&text, "t").unwrap();
        assert_eq!(c.agents[0].on_violation, want);
    }
    let e =
        err("[[agent]]\nname = \"a\"\non_violation = \"panic\"\n[agent.match]\nsessions = true\n");
    assert!(
        e.contains("agent[0].on_violation: unknown variant `panic`"),
        "{e}"
    );
}

fn entry(s: &str) -> SystemEntry {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn entry_err(s: &str) -> String {
    s.parse::<SystemEntry>().unwrap_err()
}

fn net(s: &str) -> Target {
    Target::Net(s.parse().unwrap())
}

#[test]
fn systems_entry_forms() {
    let e = entry("127.0.0.1:8080");
    assert_eq!(
        (e.target.clone(), e.ports, e.protocol),
        (net("127.0.0.1/32"), PortRange { lo: 8080, hi: 8080 }, None)
    );
    assert_eq!(entry("10.0.0.0/8").ports, PortRange::ANY);
    assert_eq!(
        entry("10.0.0.0/8:1000-2000").ports,
        PortRange { lo: 1000, hi: 2000 }
    );
    assert_eq!(entry("10.0.0.0/8:*").ports, PortRange::ANY);
    assert_eq!(entry("[::1]").target, net("::1/128"));
    assert_eq!(entry("::1").target, net("::1/128"));
    assert_eq!(entry("fd00::/8").target, net("fd00::/8"));
    assert_eq!(entry("[fd00::/8]:443").ports.lo, 443);
    assert_eq!(
        entry("TCP://[2001:db8::1]:22").protocol,
        Some(Protocol::Tcp)
    );
    assert_eq!(entry("udp://127.0.0.53:53").protocol, Some(Protocol::Udp));
    // v4-mapped forms fold into IPv4.
    assert_eq!(entry("[::ffff:10.1.2.3]:80").target, net("10.1.2.3/32"));
    assert_eq!(entry("::ffff:10.0.0.0/104").target, net("10.0.0.0/8"));
    assert_eq!(entry("::ffff:0:0/96").target, net("0.0.0.0/0"));
    assert_eq!(
        entry("API.Example.COM.:443").target,
        Target::Host(HostPattern::Exact("api.example.com".into()))
    );
    assert_eq!(
        entry("*.corp.example").target,
        Target::Host(HostPattern::Subdomains(".corp.example".into()))
    );
    assert_eq!(
        entry("localhost:5432").target,
        Target::Host(HostPattern::Exact("localhost".into()))
    );
    assert_eq!(entry(" 10.0.0.1 ").as_str(), "10.0.0.1");
    assert_eq!(entry("0.0.0.0/0").target, net("0.0.0.0/0"));
    assert_eq!(entry("::/0").target, net("::/0"));
}

#[test]
fn unix_socket_entries() {
    let e: SystemEntry = "unix:///var/run/docker.sock".parse().unwrap();
    assert_eq!(e.target, Target::Unix("/var/run/docker.sock".into()));
    assert_eq!(e.to_string(), "unix:///var/run/docker.sock");
    let e: SystemEntry = "unix://@vigil-abstract".parse().unwrap();
    assert_eq!(e.target, Target::Unix("@vigil-abstract".into()));
    assert!(entry_err("unix://run/docker.sock").contains("must be an absolute path"));
    assert!(entry_err("unix://").contains("must be an absolute path"));
    assert!(entry_err("unix://@").contains("abstract unix address"));
    let long = format!("unix:///{}", "a".repeat(108));
    assert!(entry_err(&long).contains("longer than 108 bytes"));
    let fits = format!("unix:///{}", "a".repeat(107));
    assert!(fits.parse::<SystemEntry>().is_ok());
}

#[test]
fn systems_entry_errors() {
    assert_eq!(entry_err("10.0.0.0/33"), r#"invalid CIDR "10.0.0.0/33""#);
    assert_eq!(entry_err("[fd00::/129]"), r#"invalid CIDR "fd00::/129""#);
    assert!(entry_err("10.0.0.1/8").contains("host bits are set (did you mean 10.0.0.0/8?)"));
    assert_eq!(
        entry_err("10.0.0.300"),
        r#"invalid IPv4 address "10.0.0.300""#
    );
    assert_eq!(entry_err("10.0.0"), r#"invalid IPv4 address "10.0.0""#);
    assert_eq!(entry_err("1.2.3.4:0"), r#"invalid port "0""#);
    assert_eq!(entry_err("1.2.3.4:65536"), r#"invalid port "65536""#);
    assert_eq!(entry_err("1.2.3.4:"), r#"invalid port """#);
    assert_eq!(entry_err("1.2.3.4:http"), r#"invalid port "http""#);
    assert_eq!(
        entry_err("1.2.3.4:2000-1000"),
        r#"invalid port range "2000-1000": start is above end"#
    );
    assert!(entry_err("http://x.example").contains("unknown protocol \"http\""));
    assert!(entry_err("[::1").contains("missing ']'"));
    assert!(entry_err("[::1]80").contains("unexpected \"80\" after ']'"));
    assert!(entry_err("[10.0.0.1]:80").contains("brackets are for IPv6"));
    assert!(entry_err("fe80::1%eth0").contains("invalid IPv6 address"));
    assert!(entry_err("bad_host!.example").contains("invalid host name"));
    assert!(entry_err("-x.example").contains("cannot start or end with '-'"));
    assert!(entry_err("a..b").contains("1 to 63 characters"));
    assert!(entry_err(&format!("{}.example", "a".repeat(64))).contains("1 to 63"));
    assert!(entry_err("").contains("empty"));
    assert!(entry_err("*.").contains("invalid host name"));
}

#[test]
fn glob_edge_cases() {
    let m = |glob: &str, path: &str| {
        glob.parse::<PathGlob>()
            .unwrap()
            .glob()
            .compile_matcher()
            .is_match(path)
    };
    // `*` stays within one component.
    assert!(m("/usr/bin/python3*", "/usr/bin/python3"));
    assert!(m("/usr/bin/python3*", "/usr/bin/python3.12"));
    assert!(!m("/usr/bin/python3*", "/usr/bin/python3/evil"));
    assert!(!m("/usr/bin/*", "/usr/bin/sub/x"));
    // `**` crosses components, but `/dir/**` does not match the directory itself.
    assert!(m("/srv/**", "/srv/a/b/c"));
    assert!(!m("/srv/**", "/srv"));
    assert!(!m("/srv/**", "/srvx/a"));
    assert!(m("/a/**/z", "/a/z"));
    assert!(m("/a/**/z", "/a/b/c/z"));
    // `**/name` anchors at a component boundary.
    assert!(m("**/.env", "/.env"));
    assert!(m("**/.env", "/home/u/app/.env"));
    assert!(!m("**/.env", "/home/u/app/x.env"));
    assert!(!m("**/.env", "/home/u/app/.envrc"));
    // Alternation, classes, escapes, empty alternates.
    assert!(m("/etc/{passwd,shadow}", "/etc/shadow"));
    assert!(!m("/etc/{passwd,shadow}", "/etc/group"));
    assert!(m("/bin/[!x]s", "/bin/ls"));
    assert!(!m("/bin/[!l]s", "/bin/ls"));
    assert!(m(r"/tmp/\*", "/tmp/*"));
    assert!(!m(r"/tmp/\*", "/tmp/a"));
    assert!(m("/opt/tool{,.sh}", "/opt/tool"));
    assert!(m("/opt/tool{,.sh}", "/opt/tool.sh"));
    // Case matters.
    assert!(!m("/usr/bin/git", "/usr/bin/Git"));
}

#[test]
fn check_file_summarises() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vigil.toml");
    std::fs::write(&path, EXAMPLE).unwrap();
    let s = crate::live::check_file(&path).unwrap();
    assert!(s.starts_with(&format!("{}: ok\n", path.display())), "{s}");
    assert!(s.contains("1 agent, 1 data class, 1 identity"), "{s}");
    assert!(
        s.contains("agent code-assistant (on violation: alert; matched by sessions and 1 cgroup glob): 5 systems, 3 tools, 1 data class, 1 identity"),
        "{s}"
    );
    std::fs::write(&path, "[daemon]\nbogus = 1\n").unwrap();
    let e = crate::live::check_file(&path).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!(
            "{}:2:1: daemon.bogus: unknown field `bogus`",
            path.display()
        )),
        "{e}"
    );
    let e = crate::live::check_file(&dir.path().join("missing.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.toml: cannot read config"), "{e}");
}

#[test]
fn line_col_counts_characters() {
    use super::diag::line_col;
    assert_eq!(line_col("abc", 0), (1, 1));
    assert_eq!(line_col("a\nbc", 3), (2, 2));
    assert_eq!(line_col("é\nü=x", 5), (2, 2));
    assert_eq!(line_col("ab", 99), (1, 3));
}

proptest! {
    #[test]
    fn system_entry_parser_never_panics(s in "\\PC{0,40}") {
        let _ = s.parse::<SystemEntry>();
    }

    #[test]
    fn any_v4_address_and_port_round_trips(a in any::<u32>(), port in 1u16..=u16::MAX) {
        let ip = std::net::Ipv4Addr::from(a);
        let e = entry(&format!("{ip}:{port}"));
        prop_assert_eq!(e.target, Target::Net(ipnet::IpNet::from(IpAddr::V4(ip))));
        prop_assert_eq!(e.ports, PortRange { lo: port, hi: port });
    }

    #[test]
    fn any_v6_address_round_trips_bracketed(a in any::<u128>(), port in 1u16..=u16::MAX) {
        let ip = std::net::Ipv6Addr::from(a);
        let e = entry(&format!("[{ip}]:{port}"));
        let want = canonical_ip(IpAddr::V6(ip));
        prop_assert_eq!(e.target, Target::Net(ipnet::IpNet::from(want)));
    }

    #[test]
    fn config_parser_never_panics(s in "\\PC{0,200}") {
        let _ = Config::from_toml_str(&s, "fuzz.toml");
    }
}

#[test]
fn an_export_sink_parses_with_its_defaults() {
    let c = Config::from_toml_str(
        "[[export]]\nname = \"siem\"\ntype = \"otlp\"\nendpoint = \"https://collector.example:4317\"\n\
         format = \"ocsf\"\nca = \"/etc/vigil/ca.pem\"\ncert = \"/etc/vigil/c.pem\"\nkey = \"/etc/vigil/k.pem\"\n\
         kinds = [\"anomaly\", \"revocation\"]\n[export.headers]\n\"x-api-key\" = \"k1\"\n",
        "t.toml",
    )
    .unwrap();
    let e = &c.exports[0];
    assert_eq!(e.kind, ExportType::Otlp);
    assert_eq!(e.format, ExportFormat::Ocsf);
    assert_eq!(e.start, ExportStart::Now);
    assert!(e.tls());
    assert_eq!(e.batch, DEFAULT_EXPORT_BATCH);
    assert_eq!(e.timeout.0, DEFAULT_EXPORT_TIMEOUT);
    assert_eq!(e.retry_max.0, DEFAULT_EXPORT_RETRY_MAX);
    assert_eq!(e.headers["x-api-key"], "k1");
}

#[test]
fn export_mistakes_name_the_field() {
    let sink = |extra: &str| {
        format!(
            "[[export]]\nname = \"s\"\ntype = \"otlp\"\nendpoint = \"http://c:4317\"\n{extra}\n"
        )
    };
    for (extra, want) in [
        ("", "export[1].name: s is already the name of export[0]"),
        (
            "batch = 0",
            "export[0].batch: 0 must be between 1 and 10000",
        ),
        (
            "ca = \"/ca.pem\"",
            "export[0].ca: has no effect on an http:// endpoint",
        ),
        (
            "kinds = [\"exce\"]",
            "export[0].kinds[0]: \"exce\" is not an event kind",
        ),
        (
            "[export.headers]\n\"X Key\" = \"v\"",
            "export[0].headers.X Key",
        ),
        (
            "timeout = \"1ms\"",
            "export[0].timeout: 1ms must be at least 10ms",
        ),
    ] {
        let text = if extra.is_empty() {
            format!("{}{}", sink(""), sink(""))
        } else {
            sink(extra)
        };
        let e = err(&text);
        assert!(e.contains(want), "{extra:?}: {e}");
    }
    let e = err("[[export]]\nname = \"s\"\ntype = \"otlp\"\nendpoint = \"grpc://c:4317\"\n");
    assert!(
        e.contains("export[0].endpoint: \"grpc://c:4317\" must start with http:// or https://"),
        "{e}"
    );
    let e =
        err("[[export]]\nname = \"s\"\ntype = \"otlp\"\nendpoint = \"http://c:4317/v1/logs\"\n");
    assert!(e.contains("the gRPC path is fixed"), "{e}");
    let e = err("[[export]]\nname = \"s\"\ntype = \"kafka\"\nendpoint = \"http://c:4317\"\n");
    assert!(e.contains("export[0].type") || e.contains("kafka"), "{e}");
    let e = err(&sink("cert = \"/c.pem\"").replace("http://", "https://"));
    assert!(e.contains("export[0].key: is missing"), "{e}");
}

#[test]
fn check_file_says_what_pinning_tools_by_content_found() {
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    std::fs::create_dir(root.join("bin")).unwrap();
    std::fs::write(root.join("bin/tool"), b"#!/bin/sh\n").unwrap();
    let path = root.join("vigil.toml");
    std::fs::write(
        &path,
        format!(
            "[[agent]]\nname = \"a\"\n[agent.match]\nsessions = true\n[agent.scope]\ntools = [\"{}/bin/*\"]\ntools_by_hash = true\n",
            root.display()
        ),
    )
    .unwrap();
    let s = crate::live::check_file(&path).unwrap();
    assert!(
        s.contains("tools pinned by content: 1 file, 10 bytes hashed in"),
        "{s}"
    );
    // A glob over a whole tree would read it all at every load: refused,
    // naming the field.
    std::fs::write(
        &path,
        "[[agent]]\nname = \"a\"\n[agent.match]\nsessions = true\n[agent.scope]\ntools = [\"/**\"]\ntools_by_hash = true\n",
    )
    .unwrap();
    let e = crate::live::check_file(&path).unwrap_err().to_string();
    assert!(
        e.contains("agent[0].scope.tools_by_hash") && e.contains("more than 4096 files"),
        "{e}"
    );
}
