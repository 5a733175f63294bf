//! Events as OpenTelemetry log records, and the gRPC client that exports
//! them (`opentelemetry.proto.collector.logs.v1.LogsService/Export`).
//!
//! Each event is one record: its body the event's JSON (Vigil's schema or
//! OCSF), its identity in attributes, so a collector can route and index by
//! agent without parsing the body. Attribute names follow the OpenTelemetry
//! semantic conventions where one exists (`k8s.pod.name`, `process.pid`,
//! `gen_ai.agent.name`) and are `vigil.*` otherwise.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut as _, Bytes};
use http::uri::PathAndQuery;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, InstrumentationScope, KeyValue, any_value::Value,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message as _;
use tonic::client::Grpc;
use tonic::codec::{EncodeBuf, Encoder};
use tonic::metadata::{Ascii, MetadataKey, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic_prost::ProstDecoder;

use crate::config::{ExportConfig, ExportFormat};
use crate::event::{Event, Payload, Severity};

#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("endpoint {endpoint:?}: {source}")]
    Endpoint {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("reading {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("encoding the event as {format}: {source}")]
    Encode {
        format: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// Vigil's severity of an event, as the OCSF mapping grades it: an
/// anomaly's own, a loss medium (a blind spot a session can cause on
/// purpose), a tampered sensor high, a rejected config low.
#[must_use]
pub const fn severity(e: &Event) -> Severity {
    match &e.payload {
        Payload::Anomaly(a) => a.severity,
        Payload::Loss(_) => Severity::Medium,
        Payload::SensorTampered(_) => Severity::High,
        Payload::ConfigChange(c) if !c.applied => Severity::Low,
        _ => Severity::Info,
    }
}

/// The OpenTelemetry severity of a Vigil severity: info is INFO, low and
/// medium the first and third WARN grades, high ERROR, critical FATAL.
#[must_use]
pub const fn severity_number(s: Severity) -> SeverityNumber {
    match s {
        Severity::Info => SeverityNumber::Info,
        Severity::Low => SeverityNumber::Warn,
        Severity::Medium => SeverityNumber::Warn3,
        Severity::High => SeverityNumber::Error,
        Severity::Critical => SeverityNumber::Fatal,
    }
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn string(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value.into())),
        }),
        ..KeyValue::default()
    }
}

fn int(key: &str, value: u64) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(Value::IntValue(i64::try_from(value).unwrap_or(i64::MAX))),
        }),
        ..KeyValue::default()
    }
}

/// The attributes of one event: where it sits in the journal, who acted.
fn attributes(e: &Event, node: &str) -> Vec<KeyValue> {
    let mut a = vec![
        int("vigil.sequence", e.seq),
        string("vigil.kind", e.payload.kind()),
        string("vigil.node", node),
    ];
    let id = &e.identity;
    if let Some(agent) = &id.agent {
        a.push(string("vigil.agent", agent));
        a.push(string("gen_ai.agent.name", agent));
    }
    if let Some(session) = &id.session {
        a.push(string("vigil.session", session));
    }
    if let Some(task) = &id.task {
        a.push(string("vigil.task", task));
    }
    if id.cgroup_id != 0 {
        a.push(int("vigil.cgroup_id", id.cgroup_id));
    }
    if let Some(w) = &id.workload {
        a.push(string("container.id", &w.container_id));
        for (key, value) in [
            ("k8s.pod.uid", &w.pod_uid),
            ("k8s.pod.name", &w.pod_name),
            ("k8s.namespace.name", &w.namespace),
            ("k8s.container.name", &w.container_name),
            ("vigil.spiffe_id", &w.spiffe_id),
        ] {
            if let Some(v) = value {
                a.push(string(key, v));
            }
        }
    }
    if let Some(p) = &e.process {
        a.push(int("process.pid", u64::from(p.pid)));
        if let Some(exe) = &p.exe {
            a.push(string("process.executable.path", exe));
        }
    }
    if let Payload::Anomaly(an) = &e.payload {
        a.push(string("vigil.anomaly", an.anomaly.as_str()));
    }
    a
}

/// One event as a log record, its body in `format`.
pub fn record(
    e: &Event,
    node: &str,
    format: ExportFormat,
    observed: SystemTime,
) -> Result<LogRecord, OtlpError> {
    let body = match format {
        ExportFormat::Json => serde_json::to_string(e),
        ExportFormat::Ocsf => serde_json::to_string(&crate::ocsf::to_ocsf(e, node)),
    }
    .map_err(|source| OtlpError::Encode {
        format: format.as_str(),
        source,
    })?;
    let severity = severity(e);
    Ok(LogRecord {
        time_unix_nano: nanos(e.time),
        observed_time_unix_nano: nanos(observed),
        severity_number: severity_number(severity) as i32,
        severity_text: severity.as_str().to_owned(),
        body: Some(AnyValue {
            value: Some(Value::StringValue(body)),
        }),
        attributes: attributes(e, node),
        event_name: format!("vigil.{}", e.payload.kind()),
        ..LogRecord::default()
    })
}

/// A journaled event as a log record: decoded from the journal's bytes,
/// converted to the event model, then as [`record`].
pub fn journaled(
    encoded: &crate::journal::Encoded,
    node: &str,
    format: ExportFormat,
    observed: SystemTime,
) -> Result<LogRecord, String> {
    let wire = encoded.decode().map_err(|e| e.to_string())?;
    let event = Event::try_from(wire).map_err(|e| e.to_string())?;
    record(&event, node, format, observed).map_err(|e| e.to_string())
}

/// The request for a batch of records: one resource (this node's daemon),
/// one instrumentation scope.
#[must_use]
pub fn request(node: &str, records: Vec<LogRecord>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![
                    string("service.name", "vigil"),
                    string("service.version", env!("CARGO_PKG_VERSION")),
                    string("service.instance.id", node),
                    string("host.name", node),
                ],
                ..Resource::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "vigil".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..InstrumentationScope::default()
                }),
                log_records: records,
                ..ScopeLogs::default()
            }],
            ..ResourceLogs::default()
        }],
    }
}

/// The gRPC method every request goes to.
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";

/// A request encoded once: a retry sends the same bytes again, with no
/// copy of its records and no second encoding.
#[derive(Clone, Debug)]
pub struct EncodedRequest(Bytes);

impl EncodedRequest {
    #[must_use]
    pub fn new(request: &ExportLogsServiceRequest) -> Self {
        Self(Bytes::from(request.encode_to_vec()))
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Sends [`EncodedRequest`]s as they are and decodes the collector's
/// `ExportLogsServiceResponse` with prost, as the generated client would.
#[derive(Clone, Copy, Debug, Default)]
struct Codec;

#[derive(Clone, Copy, Debug, Default)]
struct RawEncoder;

impl Encoder for RawEncoder {
    type Item = EncodedRequest;
    type Error = tonic::Status;

    fn encode(&mut self, item: EncodedRequest, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        dst.put_slice(&item.0);
        Ok(())
    }
}

impl tonic::codec::Codec for Codec {
    type Encode = EncodedRequest;
    type Decode = ExportLogsServiceResponse;
    type Encoder = RawEncoder;
    type Decoder = ProstDecoder<ExportLogsServiceResponse>;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::default()
    }
}

/// A client of one collector. The connection is made on first use and
/// again after every failure, so a collector that is down at start or
/// restarts later is reached without any action here.
#[derive(Clone, Debug)]
pub struct Client {
    grpc: Grpc<Channel>,
    headers: Vec<(MetadataKey<Ascii>, MetadataValue<Ascii>)>,
    timeout: Duration,
}

fn read(what: &'static str, path: &std::path::Path) -> Result<Vec<u8>, OtlpError> {
    std::fs::read(path).map_err(|source| OtlpError::Read {
        what,
        path: path.display().to_string(),
        source,
    })
}

impl Client {
    /// A client for `config`; reads its certificate files now, so a missing
    /// file is an error of this sink at once rather than of every request.
    pub fn new(config: &ExportConfig) -> Result<Self, OtlpError> {
        let endpoint_err = |source| OtlpError::Endpoint {
            endpoint: config.endpoint.clone(),
            source,
        };
        let mut endpoint = Endpoint::from_shared(config.endpoint.clone())
            .map_err(endpoint_err)?
            .connect_timeout(config.timeout.0.min(Duration::from_secs(5)))
            .timeout(config.timeout.0)
            .tcp_nodelay(true);
        if config.tls() {
            let mut tls = ClientTlsConfig::new();
            tls = match &config.ca {
                Some(ca) => tls.ca_certificate(Certificate::from_pem(read("ca", ca)?)),
                None => tls.with_webpki_roots(),
            };
            if let (Some(cert), Some(key)) = (&config.cert, &config.key) {
                tls = tls.identity(Identity::from_pem(read("cert", cert)?, read("key", key)?));
            }
            if let Some(name) = &config.server_name {
                tls = tls.domain_name(name);
            }
            endpoint = endpoint.tls_config(tls).map_err(endpoint_err)?;
        }
        // Validated with the config; a header that fails here was not.
        let headers = config
            .headers
            .iter()
            .filter_map(|(k, v)| Some((k.parse().ok()?, v.parse().ok()?)))
            .collect();
        Ok(Self {
            grpc: Grpc::new(endpoint.connect_lazy()),
            headers,
            timeout: config.timeout.0,
        })
    }

    /// Sends one request and waits for the collector's answer.
    pub async fn export(
        &mut self,
        request: EncodedRequest,
    ) -> Result<ExportLogsServiceResponse, tonic::Status> {
        self.grpc
            .ready()
            .await
            .map_err(|e| tonic::Status::unavailable(format!("connecting: {e}")))?;
        let mut request = tonic::Request::new(request);
        request.set_timeout(self.timeout);
        for (k, v) in &self.headers {
            request.metadata_mut().insert(k.clone(), v.clone());
        }
        self.grpc
            .unary(request, PathAndQuery::from_static(EXPORT_PATH), Codec)
            .await
            .map(tonic::Response::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ocsf::samples;

    fn attr<'a>(r: &'a LogRecord, key: &str) -> Option<&'a Value> {
        r.attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
    }

    #[test]
    fn the_severity_is_the_one_the_ocsf_record_has() {
        for e in samples::all() {
            let ocsf = crate::ocsf::to_ocsf(&e, "n1");
            assert_eq!(
                crate::ocsf::severity(severity(&e)).0,
                ocsf.severity_id,
                "{}",
                e.payload.kind()
            );
        }
    }

    #[test]
    fn a_record_carries_the_event_and_its_identity() {
        for e in samples::all() {
            for format in [ExportFormat::Json, ExportFormat::Ocsf] {
                let r = record(&e, "n1", format, SystemTime::now()).expect("record");
                let Some(Value::StringValue(body)) = r.body.as_ref().and_then(|b| b.value.clone())
                else {
                    panic!("no string body");
                };
                let json: serde_json::Value = serde_json::from_str(&body).expect("json body");
                match format {
                    ExportFormat::Json => {
                        let back: Event = serde_json::from_value(json).expect("an event");
                        assert_eq!(back, e);
                    }
                    ExportFormat::Ocsf => assert!(json["class_uid"].as_u64().is_some()),
                }
                assert_eq!(r.event_name, format!("vigil.{}", e.payload.kind()));
                assert_eq!(r.time_unix_nano, nanos(e.time));
                assert_eq!(
                    attr(&r, "vigil.kind"),
                    Some(&Value::StringValue(e.payload.kind().into()))
                );
                assert_eq!(
                    attr(&r, "vigil.sequence"),
                    Some(&Value::IntValue(i64::try_from(e.seq).unwrap()))
                );
                if let Some(agent) = &e.identity.agent {
                    assert_eq!(
                        attr(&r, "gen_ai.agent.name"),
                        Some(&Value::StringValue(agent.clone()))
                    );
                }
            }
        }
    }

    #[test]
    fn pod_and_spiffe_id_are_attributes() {
        let e = samples::all()
            .into_iter()
            .find(|e| matches!(e.payload, Payload::Anomaly(_)))
            .expect("an anomaly sample");
        let r = record(&e, "n1", ExportFormat::Json, SystemTime::now()).unwrap();
        assert_eq!(
            attr(&r, "k8s.pod.name"),
            Some(&Value::StringValue("coder-0".into()))
        );
        assert_eq!(
            attr(&r, "vigil.spiffe_id"),
            Some(&Value::StringValue(
                "spiffe://cluster.local/ns/agents/sa/coder".into()
            ))
        );
        assert!(matches!(
            attr(&r, "vigil.anomaly"),
            Some(Value::StringValue(_))
        ));
        assert!(r.severity_number >= SeverityNumber::Warn as i32);
    }
}
