//! Value types of the node config that validate themselves while they are
//! deserialized, so a bad value is reported with the span and field path of
//! the exact TOML value that holds it.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

use globset::{Glob, GlobBuilder};
use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

use crate::event::Protocol;

/// Longest agent, data class or identity name: names become cgroup
/// directory names and must stay well below `NAME_MAX`.
pub const MAX_NAME_LEN: usize = 64;

/// Implements `Deserialize` through `FromStr` and `Serialize` through `Display`.
macro_rules! string_serde {
    ($t:ty) => {
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(de::Error::custom)
            }
        }
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
    };
}

/// A name usable as a cgroup directory: `[A-Za-z0-9._-]`, 1 to 64
/// characters, not `.` or `..`. Used for agents, data classes and identities.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(String);

impl Name {
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks the cgroup-safe name rule; the error says what is wrong.
pub fn check_name(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("name is empty".into());
    }
    if s.len() > MAX_NAME_LEN {
        return Err(format!(
            "name {s:?} is longer than {MAX_NAME_LEN} characters"
        ));
    }
    if s == "." || s == ".." {
        return Err(format!("name {s:?} is not allowed"));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "name {s:?} contains {c:?}; use only letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

impl FromStr for Name {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        check_name(s).map(|()| Self(s.to_owned()))
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0
    }
}

string_serde!(Name);

/// A relative path of safe components under the cgroup v2 mount
/// (`vigil`, `system.slice/vigil`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupParent(String);

impl CgroupParent {
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for CgroupParent {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.starts_with('/') {
            return Err(format!(
                "cgroup parent {s:?} must be relative to the cgroup v2 mount"
            ));
        }
        for part in s.split('/') {
            check_name(part).map_err(|e| format!("cgroup parent {s:?}: {e}"))?;
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for CgroupParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

string_serde!(CgroupParent);

/// A path glob (`*` stays within one component, `**` crosses them,
/// `{a,b}` alternates, `[...]` classes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathGlob {
    glob: Glob,
}

impl PathGlob {
    #[must_use]
    pub fn as_str(&self) -> &str {
        self.glob.glob()
    }

    #[must_use]
    pub fn glob(&self) -> &Glob {
        &self.glob
    }
}

/// Builds a glob with the options every Vigil path glob uses.
pub fn build_glob(s: &str) -> Result<Glob, globset::Error> {
    GlobBuilder::new(s)
        .literal_separator(true)
        .backslash_escape(true)
        .empty_alternates(true)
        .build()
}

impl FromStr for PathGlob {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        // A relative glob would only ever match relative paths, which the
        // daemon resolves to absolute ones: almost surely a mistake.
        if !(s.starts_with('/') || s.starts_with("**")) {
            return Err(format!(
                "glob {s:?} must be an absolute path (start with /) or start with **"
            ));
        }
        let glob = build_glob(s).map_err(|e| format!("invalid glob {s:?}: {}", e.kind()))?;
        Ok(Self { glob })
    }
}

impl fmt::Display for PathGlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

string_serde!(PathGlob);

/// What the daemon does on the first anomaly of an agent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnViolation {
    /// Report only.
    #[default]
    Alert,
    /// Kill the offending process.
    Kill,
    /// Revoke the agent (or its session) in the kernel.
    Revoke,
}

impl OnViolation {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Alert => "alert",
            Self::Kill => "kill",
            Self::Revoke => "revoke",
        }
    }
}

/// Where events go: `stdout`, `none`, or an absolute file path (JSON lines).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum EventsOutput {
    #[default]
    Stdout,
    None,
    File(PathBuf),
}

impl FromStr for EventsOutput {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "stdout" => Ok(Self::Stdout),
            "none" => Ok(Self::None),
            p if p.starts_with('/') => Ok(Self::File(PathBuf::from(p))),
            other => Err(format!(
                "events output {other:?} must be \"stdout\", \"none\" or an absolute file path"
            )),
        }
    }
}

impl fmt::Display for EventsOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Stdout => f.write_str("stdout"),
            Self::None => f.write_str("none"),
            Self::File(p) => write!(f, "{}", p.display()),
        }
    }
}

string_serde!(EventsOutput);

/// What each output line holds: Vigil's own schema or an OCSF record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OutputFormat {
    #[default]
    Json,
    Ocsf,
}

impl FromStr for OutputFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "json" => Ok(Self::Json),
            "ocsf" => Ok(Self::Ocsf),
            other => Err(format!(
                "output format {other:?} must be \"json\" or \"ocsf\""
            )),
        }
    }
}

impl fmt::Display for OutputFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Json => "json",
            Self::Ocsf => "ocsf",
        })
    }
}

string_serde!(OutputFormat);

/// An inclusive port range; a bare port is a range of one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    /// Every port, including 0.
    pub const ANY: Self = Self {
        lo: 0,
        hi: u16::MAX,
    };

    #[must_use]
    pub const fn contains(self, port: u16) -> bool {
        self.lo <= port && port <= self.hi
    }

    #[must_use]
    pub const fn is_any(self) -> bool {
        self.lo == 0 && self.hi == u16::MAX
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_any() {
            f.write_str("*")
        } else if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

fn parse_port(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("invalid port {s:?}")),
        Ok(p) => Ok(p),
    }
}

impl FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "*" {
            return Ok(Self::ANY);
        }
        if let Some((lo, hi)) = s.split_once('-') {
            let (lo, hi) = (parse_port(lo)?, parse_port(hi)?);
            if lo > hi {
                return Err(format!("invalid port range {s:?}: start is above end"));
            }
            return Ok(Self { lo, hi });
        }
        let p = parse_port(s)?;
        Ok(Self { lo: p, hi: p })
    }
}

/// A host name pattern: an exact name, or `*.suffix` for any name below it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// Lower-case, without a trailing dot.
    Exact(String),
    /// The suffix including its leading dot (`.example.com`).
    Subdomains(String),
}

impl HostPattern {
    /// True when `name` (lower-case, no trailing dot) is covered.
    #[must_use]
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Self::Exact(n) => n == name,
            Self::Subdomains(suffix) => {
                name.len() > suffix.len() && name.ends_with(suffix.as_str())
            }
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(n) => f.write_str(n),
            Self::Subdomains(s) => write!(f, "*{s}"),
        }
    }
}

/// Lower-cases a DNS name and drops a trailing dot, so names from config,
/// resolver and DNS answers compare equal.
#[must_use]
pub fn normalize_host(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

fn parse_host(s: &str) -> Result<HostPattern, String> {
    let invalid = |why: &str| format!("invalid host name {s:?}: {why}");
    let (wild, rest) = match s.strip_prefix("*.") {
        Some(r) => (true, r),
        None => (false, s),
    };
    let name = normalize_host(rest);
    if name.is_empty() {
        return Err(invalid("empty"));
    }
    if name.len() > 253 {
        return Err(invalid("longer than 253 characters"));
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(invalid("each label must have 1 to 63 characters"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(invalid("a label cannot start or end with '-'"));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_')))
        {
            return Err(invalid(&format!("unexpected character {c:?}")));
        }
    }
    // A name whose last label is numeric is a mistyped address, not a host.
    if name
        .rsplit('.')
        .next()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(format!("invalid IPv4 address {s:?}"));
    }
    Ok(if wild {
        HostPattern::Subdomains(format!(".{name}"))
    } else {
        HostPattern::Exact(name)
    })
}

/// What a systems or endpoint entry points at.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// An address (as a /32 or /128) or a CIDR; v4-mapped IPv6 is stored as IPv4.
    Net(IpNet),
    Host(HostPattern),
    /// A unix socket address (`unix:///run/docker.sock`): an absolute path,
    /// or `@NAME` for an abstract address.
    Unix(String),
}

/// The address of a `unix://` entry: an absolute path, or `@NAME` (an
/// abstract address), short enough for `sun_path`.
fn parse_unix(s: &str, rest: &str) -> Result<Target, String> {
    let fits = |bytes: usize| bytes <= vigil_common::UNIX_PATH_MAX;
    if let Some(name) = rest.strip_prefix('@') {
        if name.is_empty() || !fits(name.len() + 1) {
            return Err(format!(
                "abstract unix address in {s:?} must be 1 to {} bytes",
                vigil_common::UNIX_PATH_MAX - 1
            ));
        }
    } else if !rest.starts_with('/') {
        return Err(format!(
            "unix socket in {s:?} must be an absolute path (unix:///run/x.sock) or @NAME"
        ));
    } else if !fits(rest.len()) || rest.contains('\0') {
        return Err(format!(
            "unix socket path in {s:?} is longer than {} bytes",
            vigil_common::UNIX_PATH_MAX
        ));
    }
    Ok(Target::Unix(rest.to_owned()))
}

/// One `systems` (or identity `endpoints`) entry:
/// `[tcp://|udp://](ADDR|CIDR|[IPV6]|[IPV6/LEN]|HOST)[:PORT|:LO-HI|:*]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SystemEntry {
    text: String,
    /// `None` matches TCP, UDP and anything else.
    pub protocol: Option<Protocol>,
    pub target: Target,
    pub ports: PortRange,
}

impl SystemEntry {
    /// The entry as written in the config.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// Folds IPv4-mapped IPv6 (`::ffff:a.b.c.d`) into IPv4: a dual-stack
/// socket connecting to an IPv4 peer reports the mapped form.
#[must_use]
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 @ IpAddr::V4(_) => v4,
    }
}

fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => {
                IpNet::V4(Ipv4Net::new(v4, v6.prefix_len() - 96).unwrap_or(Ipv4Net::from(v4)))
            }
            None => net,
        },
        other => other,
    }
}

fn parse_net(s: &str, v6_only: bool) -> Result<IpNet, String> {
    if s.contains('/') {
        let net: IpNet = s.parse().map_err(|_| format!("invalid CIDR {s:?}"))?;
        if v6_only && matches!(net, IpNet::V4(_)) {
            return Err(format!("brackets are for IPv6 addresses, not {s:?}"));
        }
        if net.addr() != net.network() {
            return Err(format!(
                "invalid CIDR {s:?}: host bits are set (did you mean {}/{}?)",
                net.network(),
                net.prefix_len()
            ));
        }
        return Ok(canonical_net(net));
    }
    let ip: IpAddr = s.parse().map_err(|_| {
        if v6_only || s.contains(':') {
            format!("invalid IPv6 address {s:?}")
        } else {
            format!("invalid IPv4 address {s:?}")
        }
    })?;
    if v6_only && ip.is_ipv4() {
        return Err(format!("brackets are for IPv6 addresses, not {s:?}"));
    }
    Ok(canonical_net(IpNet::from(ip)))
}

fn looks_numeric(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || b == b'.' || b == b'/')
}

impl FromStr for SystemEntry {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let s = text.trim();
        if s.is_empty() {
            return Err("empty systems entry".into());
        }
        if let Some(rest) = s.strip_prefix("unix://") {
            return Ok(Self {
                text: s.to_owned(),
                protocol: None,
                target: parse_unix(s, rest)?,
                ports: PortRange::ANY,
            });
        }
        let (protocol, rest) = match s.split_once("://") {
            Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
                "tcp" => (Some(Protocol::Tcp), rest),
                "udp" => (Some(Protocol::Udp), rest),
                _ => {
                    return Err(format!(
                        "unknown protocol {scheme:?} in {s:?} (use tcp://, udp:// or unix://)"
                    ));
                }
            },
            None => (None, s),
        };
        let (target, ports) = if let Some(inner) = rest.strip_prefix('[') {
            let (addr, after) = inner
                .split_once(']')
                .ok_or_else(|| format!("missing ']' in {s:?}"))?;
            let ports = match after {
                "" => PortRange::ANY,
                p => p
                    .strip_prefix(':')
                    .ok_or_else(|| format!("unexpected {p:?} after ']' in {s:?}"))?
                    .parse()?,
            };
            (Target::Net(parse_net(addr, true)?), ports)
        } else if rest.matches(':').count() >= 2 {
            // Bare IPv6: the colons belong to the address, so no port.
            (Target::Net(parse_net(rest, false)?), PortRange::ANY)
        } else {
            let (host, ports) = match rest.rsplit_once(':') {
                Some((h, p)) => (h, p.parse()?),
                None => (rest, PortRange::ANY),
            };
            let target = if looks_numeric(host) {
                Target::Net(parse_net(host, false)?)
            } else {
                Target::Host(parse_host(host)?)
            };
            (target, ports)
        };
        Ok(Self {
            text: s.to_owned(),
            protocol,
            target,
            ports,
        })
    }
}

impl fmt::Display for SystemEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

string_serde!(SystemEntry);
