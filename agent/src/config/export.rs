//! `[[export]]`: sinks the daemon delivers the journal to by itself, each
//! from its own cursor, so a sink that is down misses nothing.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{FieldPath, HumanDuration, Name};
use crate::wire::kind_from_name;

/// Most log records in one export request.
pub const MAX_EXPORT_BATCH: usize = 10_000;
/// Default records per export request.
pub const DEFAULT_EXPORT_BATCH: usize = 1024;
/// Default time an export request may take.
pub const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default longest wait between retries of a failed request.
pub const DEFAULT_EXPORT_RETRY_MAX: Duration = Duration::from_secs(30);

/// The protocol of a sink.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportType {
    /// OpenTelemetry logs over gRPC (`LogsService/Export`).
    Otlp,
}

impl ExportType {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Otlp => "otlp",
        }
    }
}

/// What the body of each log record holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// The event in Vigil's JSON schema (`docs/events.md`).
    #[default]
    Json,
    /// The event as an OCSF record (`docs/integrations.md`).
    Ocsf,
}

impl ExportFormat {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Ocsf => "ocsf",
        }
    }
}

/// Where a sink starts the first time, before it has a cursor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportStart {
    /// Events journaled from the daemon's start on.
    #[default]
    Now,
    /// Every event the journal still holds.
    Oldest,
}

/// One `[[export]]` entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportConfig {
    /// Names the sink in status, metrics and its cursor file.
    pub name: Name,
    #[serde(rename = "type")]
    pub kind: ExportType,
    /// `http://host:port` (plaintext) or `https://host:port` (TLS).
    pub endpoint: String,
    #[serde(default)]
    pub format: ExportFormat,
    #[serde(default)]
    pub start: ExportStart,
    /// gRPC metadata sent with every request (API keys, tenant ids).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// CA certificates (PEM) the collector's certificate must chain to; the
    /// Web PKI roots when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// Client certificate chain (PEM), for mTLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// Client private key (PEM), for mTLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// The name the collector's certificate must carry, when it is not the
    /// endpoint's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// Records per request at most.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Time one request may take before it is retried.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// Longest wait between retries; waits double from 100 ms up to it.
    #[serde(default = "default_retry_max")]
    pub retry_max: HumanDuration,
    /// Only these event kinds (`anomaly`, `exec`, ...); every kind when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<String>,
    /// Only events of these agents; every event when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agents: Vec<String>,
}

const fn default_batch() -> usize {
    DEFAULT_EXPORT_BATCH
}

const fn default_timeout() -> HumanDuration {
    HumanDuration(DEFAULT_EXPORT_TIMEOUT)
}

const fn default_retry_max() -> HumanDuration {
    HumanDuration(DEFAULT_EXPORT_RETRY_MAX)
}

impl ExportConfig {
    /// Whether the endpoint is reached over TLS.
    #[must_use]
    pub fn tls(&self) -> bool {
        self.endpoint.starts_with("https://")
    }
}

type Problems = Vec<(FieldPath, String)>;

pub(super) fn check(exports: &[ExportConfig], out: &mut Problems) {
    let mut names = BTreeMap::new();
    for (i, e) in exports.iter().enumerate() {
        let at = FieldPath::default().key("export").index(i);
        if let Some(first) = names.insert(e.name.as_str(), i) {
            out.push((
                at.clone().key("name"),
                format!("{} is already the name of export[{first}]", e.name),
            ));
        }
        check_endpoint(&e.endpoint, &at, out);
        for (field, path) in [("ca", &e.ca), ("cert", &e.cert), ("key", &e.key)] {
            let Some(p) = path else { continue };
            if !p.is_absolute() {
                out.push((
                    at.clone().key(field),
                    format!("{} must be an absolute path", p.display()),
                ));
            } else if !e.tls() {
                out.push((
                    at.clone().key(field),
                    "has no effect on an http:// endpoint: use https://".into(),
                ));
            }
        }
        if e.server_name.is_some() && !e.tls() {
            out.push((
                at.clone().key("server_name"),
                "has no effect on an http:// endpoint: use https://".into(),
            ));
        }
        match (&e.cert, &e.key) {
            (Some(_), None) => out.push((
                at.clone().key("key"),
                "is missing: a client certificate needs its key".into(),
            )),
            (None, Some(_)) => out.push((
                at.clone().key("cert"),
                "is missing: a client key needs its certificate".into(),
            )),
            _ => {}
        }
        for (k, v) in &e.headers {
            let at = at.clone().key("headers").key(k);
            if k.parse::<tonic::metadata::MetadataKey<tonic::metadata::Ascii>>()
                .is_err()
            {
                out.push((
                    at,
                    format!("{k:?} is not a gRPC metadata key (lower-case ASCII letters, digits, '-', '_', '.')"),
                ));
            } else if k.ends_with("-bin") {
                out.push((at, format!("{k:?}: binary metadata is not supported")));
            } else if v
                .parse::<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>()
                .is_err()
            {
                out.push((at, "the value must be visible ASCII".into()));
            }
        }
        if !(1..=MAX_EXPORT_BATCH).contains(&e.batch) {
            out.push((
                at.clone().key("batch"),
                format!("{} must be between 1 and {MAX_EXPORT_BATCH}", e.batch),
            ));
        }
        if e.timeout.0 < Duration::from_millis(10) {
            out.push((
                at.clone().key("timeout"),
                format!("{} must be at least 10ms", e.timeout),
            ));
        }
        if e.retry_max.0 < Duration::from_millis(100) {
            out.push((
                at.clone().key("retry_max"),
                format!("{} must be at least 100ms", e.retry_max),
            ));
        }
        for (j, kind) in e.kinds.iter().enumerate() {
            if kind_from_name(kind).is_none() {
                out.push((
                    at.clone().key("kinds").index(j),
                    format!("{kind:?} is not an event kind"),
                ));
            }
        }
    }
}

fn check_endpoint(endpoint: &str, at: &FieldPath, out: &mut Problems) {
    let at = at.clone().key("endpoint");
    let uri = match endpoint.parse::<http::Uri>() {
        Ok(uri) => uri,
        Err(e) => {
            out.push((at, format!("{endpoint:?} is not a URI: {e}")));
            return;
        }
    };
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        out.push((
            at,
            format!("{endpoint:?} must start with http:// or https://"),
        ));
        return;
    }
    if uri.host().is_none_or(str::is_empty) {
        out.push((at, format!("{endpoint:?} has no host")));
    } else if uri.path() != "/" && !uri.path().is_empty() {
        out.push((
            at,
            format!("{endpoint:?}: give host and port only; the gRPC path is fixed"),
        ));
    }
}
