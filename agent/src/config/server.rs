//! The `[journal]` and `[api]` sections: how long events are kept, and how
//! the API is exposed beyond the local socket.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

use super::FieldPath;

/// Default `journal.max_bytes`: 1 GiB of encoded events.
pub const DEFAULT_JOURNAL_MAX_BYTES: u64 = 1 << 30;
/// Default `journal.max_age`: a week.
pub const DEFAULT_JOURNAL_MAX_AGE: Duration = Duration::from_hours(7 * 24);
/// Smallest `journal.max_bytes`: a handful of events.
pub const MIN_JOURNAL_MAX_BYTES: u64 = 1024;
/// File name of the journal under `daemon.state_dir`.
pub const JOURNAL_FILE: &str = "journal.redb";

/// A duration written for humans: `"7d"`, `"12h"`, `"1h 30m"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        humantime::parse_duration(s.trim()).map(Self).map_err(|e| {
            format!("invalid duration {s:?}: {e} (write it like \"7d\", \"12h\" or \"30m\")")
        })
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// `[journal]`: the durable event store behind the API's resumable stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JournalConfig {
    /// The journal file; `<daemon.state_dir>/journal.redb` when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// Bytes of events kept at most; the oldest are pruned beyond it.
    pub max_bytes: u64,
    /// Events older than this are pruned.
    pub max_age: HumanDuration,
}

impl Default for JournalConfig {
    fn default() -> Self {
        Self {
            path: None,
            max_bytes: DEFAULT_JOURNAL_MAX_BYTES,
            max_age: HumanDuration(DEFAULT_JOURNAL_MAX_AGE),
        }
    }
}

impl JournalConfig {
    /// The journal file, given the daemon's state directory.
    #[must_use]
    pub fn path_in(&self, state_dir: &Path) -> PathBuf {
        self.path
            .clone()
            .unwrap_or_else(|| state_dir.join(JOURNAL_FILE))
    }

    /// The retention limits the journal applies.
    #[must_use]
    pub const fn retention(&self) -> crate::journal::Retention {
        crate::journal::Retention {
            max_bytes: Some(self.max_bytes),
            max_age: Some(self.max_age.0),
        }
    }
}

/// What a client of the network listener may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Subscribe and read: events, agents, node status.
    Reader,
    /// A reader that may also revoke, restore and approve.
    Operator,
}

impl Role {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Reader => "reader",
            Self::Operator => "operator",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[api]`: the optional TCP listener. The local socket (`daemon.socket`)
/// is always served.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Address of the TCP listener (`0.0.0.0:7443`); none when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// Server certificate chain (PEM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// Server private key (PEM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// CA certificates (PEM) that sign the client certificates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<PathBuf>,
    /// Plain TCP without TLS; only allowed on a loopback address.
    pub insecure: bool,
    /// Client certificate names (subject CN, DNS or URI SAN) and their role.
    pub roles: BTreeMap<String, Role>,
}

impl ApiConfig {
    /// The role of a client certificate with these names (its subject CNs
    /// and SANs): the highest any of them is granted.
    #[must_use]
    pub fn role_of<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Option<Role> {
        names
            .into_iter()
            .filter_map(|n| self.roles.get(n).copied())
            .max()
    }
}

type Problems = Vec<(FieldPath, String)>;

/// Problems of the `[journal]` and `[api]` sections.
pub(super) fn check(journal: &JournalConfig, api: &ApiConfig, out: &mut Problems) {
    let j = FieldPath::default().key("journal");
    if let Some(p) = &journal.path
        && !p.is_absolute()
    {
        out.push((
            j.clone().key("path"),
            format!("{} must be an absolute path", p.display()),
        ));
    }
    if journal.max_bytes < MIN_JOURNAL_MAX_BYTES {
        out.push((
            j.clone().key("max_bytes"),
            format!(
                "{} must be at least {MIN_JOURNAL_MAX_BYTES}",
                journal.max_bytes
            ),
        ));
    }
    if journal.max_age.0 < Duration::from_secs(1) {
        out.push((
            j.key("max_age"),
            format!("{} must be at least 1s", journal.max_age),
        ));
    }
    check_api(api, out);
}

fn check_api(api: &ApiConfig, out: &mut Problems) {
    let a = FieldPath::default().key("api");
    let files = [
        ("cert", &api.cert),
        ("key", &api.key),
        ("client_ca", &api.client_ca),
    ];
    for (field, path) in files {
        if let Some(p) = path
            && !p.is_absolute()
        {
            out.push((
                a.clone().key(field),
                format!("{} must be an absolute path", p.display()),
            ));
        }
    }
    for name in api.roles.keys() {
        if name.trim().is_empty() {
            out.push((a.clone().key("roles"), "a certificate name is empty".into()));
        }
    }
    let Some(listen) = api.listen else {
        for (field, path) in files {
            if path.is_some() {
                out.push((
                    a.clone().key(field),
                    "has no effect without api.listen: set the address to listen on".into(),
                ));
            }
        }
        if api.insecure {
            out.push((
                a.key("insecure"),
                "has no effect without api.listen: set the address to listen on".into(),
            ));
        }
        return;
    };
    if api.insecure {
        if !listen.ip().is_loopback() {
            out.push((
                a.clone().key("insecure"),
                format!(
                    "plain TCP is only allowed on a loopback address, not {listen}; \
                     use TLS (cert, key, client_ca) or listen on 127.0.0.1 or [::1]"
                ),
            ));
        }
        for (field, path) in files {
            if path.is_some() {
                out.push((
                    a.clone().key(field),
                    "insecure = true serves plain TCP: remove this or set insecure = false".into(),
                ));
            }
        }
    } else {
        let missing: Vec<&str> = files
            .iter()
            .filter(|(_, p)| p.is_none())
            .map(|(f, _)| *f)
            .collect();
        if !missing.is_empty() {
            out.push((
                a.key("listen"),
                format!(
                    "the TCP listener needs TLS with client certificates: set {} \
                     (or insecure = true on a loopback address)",
                    missing.join(", ")
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    fn err(text: &str) -> String {
        Config::from_toml_str(text, "t.toml")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn defaults() {
        let c = Config::from_toml_str("", "t.toml").unwrap();
        assert_eq!(
            c.journal.path_in(Path::new("/var/lib/vigil")),
            PathBuf::from("/var/lib/vigil/journal.redb")
        );
        assert_eq!(c.journal.max_bytes, DEFAULT_JOURNAL_MAX_BYTES);
        assert_eq!(c.journal.max_age.0, DEFAULT_JOURNAL_MAX_AGE);
        assert_eq!(c.api, ApiConfig::default());
    }

    #[test]
    fn journal_section() {
        let c = Config::from_toml_str(
            "[journal]\npath = \"/data/j.redb\"\nmax_bytes = 2048\nmax_age = \"12h\"\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(
            c.journal.path_in(Path::new("/x")),
            PathBuf::from("/data/j.redb")
        );
        let r = c.journal.retention();
        assert_eq!(r.max_bytes, Some(2048));
        assert_eq!(r.max_age, Some(Duration::from_hours(12)));
        let c = Config::from_toml_str("[journal]\nmax_age = \"7d 12h\"\n", "t").unwrap();
        assert_eq!(c.journal.max_age.0, Duration::from_hours(7 * 24 + 12));
    }

    #[test]
    fn journal_errors_name_the_field() {
        let e = err("[journal]\nmax_age = \"a week\"\n");
        assert!(
            e.contains("t.toml:2:11: journal.max_age: invalid duration \"a week\""),
            "{e}"
        );
        let e = err("[journal]\nmax_bytes = 10\n");
        assert!(
            e.contains("journal.max_bytes: 10 must be at least 1024"),
            "{e}"
        );
        let e = err("[journal]\nmax_age = \"0s\"\n");
        assert!(e.contains("journal.max_age: 0s must be at least 1s"), "{e}");
        let e = err("[journal]\npath = \"j.redb\"\n");
        assert!(
            e.contains("journal.path: j.redb must be an absolute path"),
            "{e}"
        );
        let e = err("[journal]\nmax_size = 1\n");
        assert!(
            e.contains("journal.max_size") || e.contains("unknown field `max_size`"),
            "{e}"
        );
    }

    #[test]
    fn tls_listener_with_roles() {
        let c = Config::from_toml_str(
            r#"
[api]
listen = "0.0.0.0:7443"
cert = "/etc/vigil/tls/server.crt"
key = "/etc/vigil/tls/server.key"
client_ca = "/etc/vigil/tls/clients.crt"
[api.roles]
"siem.example.com" = "reader"
"spiffe://example.org/ns/sec/sa/responder" = "operator"
alice = "operator"
"#,
            "t.toml",
        )
        .unwrap();
        let api = &c.api;
        assert_eq!(api.listen, Some("0.0.0.0:7443".parse().unwrap()));
        assert_eq!(api.role_of(["siem.example.com"]), Some(Role::Reader));
        assert_eq!(api.role_of(["nobody"]), None);
        // A certificate naming both a reader and an operator is an operator.
        assert_eq!(
            api.role_of(["siem.example.com", "alice"]),
            Some(Role::Operator)
        );
    }

    #[test]
    fn api_errors_name_the_field() {
        let e = err("[api]\nlisten = \"0.0.0.0:7443\"\n");
        assert!(
            e.contains("api.listen: the TCP listener needs TLS with client certificates: set cert, key, client_ca"),
            "{e}"
        );
        let e = err("[api]\nlisten = \"0.0.0.0:7443\"\ninsecure = true\n");
        assert!(
            e.contains(
                "api.insecure: plain TCP is only allowed on a loopback address, not 0.0.0.0:7443"
            ),
            "{e}"
        );
        Config::from_toml_str("[api]\nlisten = \"127.0.0.1:7443\"\ninsecure = true\n", "t")
            .unwrap();
        Config::from_toml_str("[api]\nlisten = \"[::1]:7443\"\ninsecure = true\n", "t").unwrap();
        let e = err("[api]\nlisten = \"127.0.0.1:7443\"\ninsecure = true\ncert = \"/c\"\n");
        assert!(
            e.contains("api.cert: insecure = true serves plain TCP"),
            "{e}"
        );
        let e = err("[api]\ncert = \"/c\"\n");
        assert!(
            e.contains("api.cert: has no effect without api.listen"),
            "{e}"
        );
        let e = err("[api]\nlisten = \"localhost:7443\"\n");
        assert!(e.contains("api.listen"), "{e}");
        let e = err("[api.roles]\nbob = \"admin\"\n");
        assert!(
            e.contains("api.roles.bob") && e.contains("unknown variant `admin`"),
            "{e}"
        );
        let e = err(
            "[api]\nlisten = \"0.0.0.0:1\"\ncert = \"c.pem\"\nkey = \"/k\"\nclient_ca = \"/ca\"\n",
        );
        assert!(
            e.contains("api.cert: c.pem must be an absolute path"),
            "{e}"
        );
        let e = err("[api]\ntls = true\n");
        assert!(e.contains("unknown field `tls`"), "{e}");
    }
}
