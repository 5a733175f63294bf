//! The `[kubernetes]` and `[metrics]` sections, and the `kubernetes`
//! selector of `[agent.match]`: how the daemon learns the pods of its node,
//! how agents are chosen by pod attributes, and where metrics are served.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

use super::{Config, FieldPath, HumanDuration};

/// Default `kubernetes.trust_domain`.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";
/// Default `kubernetes.metadata_wait`: how long events of a container wait
/// for their pod's metadata.
pub const DEFAULT_METADATA_WAIT: Duration = Duration::from_secs(2);
/// Default `kubernetes.metadata_wait_events`: events held at most while
/// waiting for pod metadata.
pub const DEFAULT_METADATA_WAIT_EVENTS: usize = 10_000;
/// Longest allowed `kubernetes.metadata_wait`.
pub const MAX_METADATA_WAIT: Duration = Duration::from_mins(1);
/// Environment variable the `DaemonSet` sets from the downward API.
pub const NODE_NAME_ENV: &str = "NODE_NAME";
/// Set by the kubelet in every pod; its presence means "running in a pod".
pub const IN_CLUSTER_ENV: &str = "KUBERNETES_SERVICE_HOST";

/// `kubernetes.enabled`: `true`, `false` or `"auto"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KubeEnabled {
    /// On when the daemon runs in a pod (`KUBERNETES_SERVICE_HOST` is set).
    #[default]
    Auto,
    On,
    Off,
}

impl KubeEnabled {
    /// Whether pod identity is on, given the value of `KUBERNETES_SERVICE_HOST`.
    #[must_use]
    pub fn resolve(self, service_host: Option<&str>) -> bool {
        match self {
            Self::On => true,
            Self::Off => false,
            Self::Auto => service_host.is_some_and(|h| !h.trim().is_empty()),
        }
    }
}

impl fmt::Display for KubeEnabled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::On => "true",
            Self::Off => "false",
        })
    }
}

impl<'de> Deserialize<'de> for KubeEnabled {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = KubeEnabled;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("true, false or \"auto\"")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<KubeEnabled, E> {
                Ok(if v { KubeEnabled::On } else { KubeEnabled::Off })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KubeEnabled, E> {
                if v == "auto" {
                    Ok(KubeEnabled::Auto)
                } else {
                    Err(E::custom(format!(
                        "invalid value {v:?}: expected true, false or \"auto\""
                    )))
                }
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for KubeEnabled {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Auto => s.serialize_str("auto"),
            Self::On => s.serialize_bool(true),
            Self::Off => s.serialize_bool(false),
        }
    }
}

/// `[kubernetes]`: pod identity from the API server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubernetesConfig {
    pub enabled: KubeEnabled,
    /// This node's name; default: `$NODE_NAME` (downward API), then
    /// `daemon.node_name`, then the host name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Trust domain of the SPIFFE IDs given to workloads.
    pub trust_domain: String,
    /// API server URL without authentication (tests, `kubectl proxy`);
    /// default: the in-cluster service account, else `$KUBECONFIG`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_server: Option<String>,
    /// A kubeconfig file to use instead of the in-cluster account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<PathBuf>,
    /// How long events of a container whose pod is not known yet are held
    /// back, waiting for its metadata.
    pub metadata_wait: HumanDuration,
    /// Most events held back at once; beyond it the oldest go out without
    /// pod identity.
    pub metadata_wait_events: usize,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        Self {
            enabled: KubeEnabled::Auto,
            node_name: None,
            trust_domain: DEFAULT_TRUST_DOMAIN.to_owned(),
            api_server: None,
            kubeconfig: None,
            metadata_wait: HumanDuration(DEFAULT_METADATA_WAIT),
            metadata_wait_events: DEFAULT_METADATA_WAIT_EVENTS,
        }
    }
}

impl KubernetesConfig {
    /// Whether pod identity is on in this process's environment.
    #[must_use]
    pub fn is_enabled(&self) -> bool {
        self.enabled
            .resolve(std::env::var(IN_CLUSTER_ENV).ok().as_deref())
    }

    /// The node name events carry when `daemon.node_name` is unset: in a
    /// pod the host name is the pod's, so pod identity names the node.
    #[must_use]
    pub fn event_node_name(&self) -> Option<String> {
        self.is_enabled()
            .then(|| self.node(""))
            .filter(|n| !n.is_empty())
    }

    /// The node whose pods are watched: the configured name, `$NODE_NAME`,
    /// or `fallback` (the daemon's node name).
    #[must_use]
    pub fn node(&self, fallback: &str) -> String {
        self.node_name
            .clone()
            .or_else(|| {
                std::env::var(NODE_NAME_ENV)
                    .ok()
                    .filter(|n| !n.trim().is_empty())
            })
            .unwrap_or_else(|| fallback.to_owned())
    }
}

/// `[metrics]`: the Prometheus endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address of the plain-HTTP `/metrics` endpoint; none when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
}

/// `[agent.match] kubernetes = { namespace, labels, service_account }`:
/// every field given must match the pod.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubeSelector {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Labels the pod must carry with these values.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
}

impl KubeSelector {
    /// Whether a pod with these attributes is selected.
    #[must_use]
    pub fn matches(
        &self,
        namespace: &str,
        service_account: &str,
        labels: &BTreeMap<String, String>,
    ) -> bool {
        self.namespace.as_deref().is_none_or(|n| n == namespace)
            && self
                .service_account
                .as_deref()
                .is_none_or(|s| s == service_account)
            && self
                .labels
                .iter()
                .all(|(k, v)| labels.get(k).is_some_and(|have| have == v))
    }

    fn is_empty(&self) -> bool {
        self.namespace.is_none() && self.labels.is_empty() && self.service_account.is_none()
    }
}

type Problems = Vec<(FieldPath, String)>;

/// A DNS label (RFC 1123), as namespace names are.
fn is_dns_label(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A DNS subdomain (RFC 1123), as service account names are.
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// A SPIFFE trust domain: lower-case letters, digits, `.`, `-` and `_`.
fn is_trust_domain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        })
}

/// Problems of `[kubernetes]`, `[metrics]` and the agents' `match.kubernetes`.
pub(super) fn check(config: &Config, out: &mut Problems) {
    let k = &config.kubernetes;
    let at = FieldPath::default().key("kubernetes");
    if !is_trust_domain(&k.trust_domain) {
        out.push((
            at.clone().key("trust_domain"),
            format!(
                "{:?} is not a SPIFFE trust domain: use lower-case letters, digits, '.', '-' and '_'",
                k.trust_domain
            ),
        ));
    }
    if let Some(n) = &k.node_name
        && n.trim().is_empty()
    {
        out.push((at.clone().key("node_name"), "node name is empty".into()));
    }
    if let Some(url) = &k.api_server
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        out.push((
            at.clone().key("api_server"),
            format!("{url:?} must be an http:// or https:// URL"),
        ));
    }
    if let Some(p) = &k.kubeconfig
        && !p.is_absolute()
    {
        out.push((
            at.clone().key("kubeconfig"),
            format!("{} must be an absolute path", p.display()),
        ));
    }
    if k.api_server.is_some() && k.kubeconfig.is_some() {
        out.push((
            at.clone().key("kubeconfig"),
            "set either api_server or kubeconfig, not both".into(),
        ));
    }
    if k.metadata_wait.0 > MAX_METADATA_WAIT {
        out.push((
            at.clone().key("metadata_wait"),
            format!("{} must be at most 1m", k.metadata_wait),
        ));
    }
    if !(1..=1_000_000).contains(&k.metadata_wait_events) {
        out.push((
            at.key("metadata_wait_events"),
            format!("{} must be between 1 and 1000000", k.metadata_wait_events),
        ));
    }
    for (i, agent) in config.agents.iter().enumerate() {
        let Some(sel) = agent.matcher.as_ref().and_then(|m| m.kubernetes.as_ref()) else {
            continue;
        };
        let at = FieldPath::default()
            .key("agent")
            .index(i)
            .key("match")
            .key("kubernetes");
        if sel.is_empty() {
            out.push((
                at.clone(),
                "selects every pod: set namespace, labels or service_account".into(),
            ));
        }
        if let Some(ns) = &sel.namespace
            && !is_dns_label(ns)
        {
            out.push((
                at.clone().key("namespace"),
                format!("{ns:?} is not a valid namespace name"),
            ));
        }
        if let Some(sa) = &sel.service_account
            && !is_dns_subdomain(sa)
        {
            out.push((
                at.clone().key("service_account"),
                format!("{sa:?} is not a valid service account name"),
            ));
        }
        for key in sel.labels.keys() {
            if key.trim().is_empty() {
                out.push((at.clone().key("labels"), "a label key is empty".into()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::from_toml_str(text, "t.toml")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn defaults_are_auto_and_cluster_local() {
        let c = Config::from_toml_str("", "t").unwrap();
        assert_eq!(c.kubernetes, KubernetesConfig::default());
        assert_eq!(c.kubernetes.enabled, KubeEnabled::Auto);
        assert_eq!(c.kubernetes.trust_domain, "cluster.local");
        assert_eq!(c.kubernetes.metadata_wait.0, Duration::from_secs(2));
        assert_eq!(c.metrics.listen, None);
    }

    #[test]
    fn enabled_takes_booleans_and_auto() {
        for (text, want) in [
            ("true", KubeEnabled::On),
            ("false", KubeEnabled::Off),
            ("\"auto\"", KubeEnabled::Auto),
        ] {
            let c =
                Config::from_toml_str(&format!("[kubernetes]\nenabled = {text}\n"), "t").unwrap();
            assert_eq!(c.kubernetes.enabled, want);
        }
        let e = err("[kubernetes]\nenabled = \"yes\"\n");
        assert!(e.contains("kubernetes.enabled"), "{e}");
        assert!(e.contains("expected true, false or \"auto\""), "{e}");
        assert!(!KubeEnabled::Auto.resolve(None));
        assert!(!KubeEnabled::Auto.resolve(Some("")));
        assert!(KubeEnabled::Auto.resolve(Some("10.96.0.1")));
        assert!(!KubeEnabled::Off.resolve(Some("10.96.0.1")));
        assert!(KubeEnabled::On.resolve(None));
    }

    #[test]
    fn full_sections_parse() {
        let c = Config::from_toml_str(
            r#"
[kubernetes]
enabled = true
node_name = "worker-1"
trust_domain = "prod.example.org"
api_server = "http://127.0.0.1:8001"
metadata_wait = "5s"
metadata_wait_events = 100

[metrics]
listen = "0.0.0.0:9090"

[[agent]]
name = "coder"
  [agent.match]
  kubernetes = { namespace = "agents", labels = { "app" = "code-assistant" }, service_account = "coder" }
"#,
            "t",
        )
        .unwrap();
        assert_eq!(c.kubernetes.node("x"), "worker-1");
        assert_eq!(c.kubernetes.metadata_wait.0, Duration::from_secs(5));
        assert_eq!(c.metrics.listen, Some("0.0.0.0:9090".parse().unwrap()));
        let sel = c.agents[0]
            .matcher
            .as_ref()
            .and_then(|m| m.kubernetes.clone())
            .unwrap();
        let labels: BTreeMap<String, String> = [
            ("app".to_owned(), "code-assistant".to_owned()),
            ("tier".to_owned(), "x".to_owned()),
        ]
        .into();
        assert!(sel.matches("agents", "coder", &labels));
        assert!(!sel.matches("agents", "default", &labels));
        assert!(!sel.matches("other", "coder", &labels));
        assert!(!sel.matches("agents", "coder", &BTreeMap::new()));
    }

    #[test]
    fn errors_name_the_field() {
        let e = err("[kubernetes]\ntrust_domain = \"Cluster Local\"\n");
        assert!(
            e.contains("kubernetes.trust_domain: \"Cluster Local\" is not a SPIFFE trust domain"),
            "{e}"
        );
        let e = err("[kubernetes]\napi_server = \"127.0.0.1:8001\"\n");
        assert!(e.contains("kubernetes.api_server"), "{e}");
        let e = err("[kubernetes]\nkubeconfig = \"kube.yaml\"\n");
        assert!(
            e.contains("kubernetes.kubeconfig: kube.yaml must be an absolute path"),
            "{e}"
        );
        let e = err("[kubernetes]\nmetadata_wait = \"5m\"\n");
        assert!(
            e.contains("kubernetes.metadata_wait: 5m must be at most 1m"),
            "{e}"
        );
        let e = err("[kubernetes]\nmetadata_wait_events = 0\n");
        assert!(e.contains("kubernetes.metadata_wait_events"), "{e}");
        let e = err("[metrics]\nlisten = \"localhost\"\n");
        assert!(e.contains("metrics.listen"), "{e}");
        let e = err("[[agent]]\nname = \"a\"\n[agent.match]\nkubernetes = {}\n");
        assert!(
            e.contains("agent[0].match.kubernetes: selects every pod"),
            "{e}"
        );
        let e = err(
            "[[agent]]\nname = \"a\"\n[agent.match]\nkubernetes = { namespace = \"Agents\" }\n",
        );
        assert!(
            e.contains(
                "agent[0].match.kubernetes.namespace: \"Agents\" is not a valid namespace name"
            ),
            "{e}"
        );
        let e = err("[[agent]]\nname = \"a\"\n[agent.match]\nkubernetes = { pod = \"x\" }\n");
        assert!(e.contains("unknown field `pod`"), "{e}");
    }

    #[test]
    fn a_kubernetes_selector_is_a_match() {
        Config::from_toml_str(
            "[[agent]]\nname = \"a\"\n[agent.match]\nkubernetes = { namespace = \"agents\" }\n",
            "t",
        )
        .unwrap();
    }
}
