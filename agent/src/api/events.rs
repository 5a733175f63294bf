//! `EventService`: the lossless, resumable event stream, served from the
//! journal hub.
//!
//! The service is written by hand rather than generated, for one reason:
//! its `Subscribe` responses are written by [`SubscribeCodec`] straight from
//! each event's journaled encoding. A `SubscribeResponse` is field 1 holding
//! an `Event`, so its encoding is the field's key, the event's length and
//! the event's bytes; every subscriber gets the bytes encoded once at
//! publishing, and the wire format is exactly what prost would write, so
//! generated clients decode it unchanged.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BufMut;
use futures_util::{Stream, StreamExt as _};
use prost::encoding::{WireType, encode_key, encode_varint};
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{Body, BoxFuture, StdError, http};
use tonic::server::{Grpc, NamedService, ServerStreamingService};
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;

use crate::journal::{Encoded, Filter, Hub, HubError, Start};
use crate::wire::pb;

/// `SubscribeResponse.event`.
const RESPONSE_EVENT: u32 = 1;

/// Bytes of responses tonic gathers before it sends them (its default).
const SEND_CHUNK: usize = 32 * 1024;

/// The gRPC path of the one method.
const SUBSCRIBE_PATH: &str = "/vigil.v1.EventService/Subscribe";

/// The status a client gets for a hub error.
#[must_use]
pub fn hub_status(e: &HubError) -> Status {
    match e {
        HubError::AheadOfJournal { .. } => Status::out_of_range(format!(
            "{e}: this node's journal is a different or reset one; resume with oldest or now"
        )),
        HubError::InvalidStart(_) => Status::invalid_argument(e.to_string()),
        HubError::Journal(_) | HubError::Worker(_) => Status::internal(e.to_string()),
    }
}

/// Turns a request into the hub's start position and filter.
pub fn parse(req: pb::SubscribeRequest) -> Result<(Start, Filter), Status> {
    let filter = Filter::try_from(req.filter.unwrap_or_default())
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let start = Start::try_from(req.start).map_err(|e| hub_status(&e))?;
    Ok((start, filter))
}

/// Writes the `SubscribeResponse` that carries the encoded `event`.
pub fn write_response(event: &[u8], dst: &mut impl BufMut) {
    encode_key(RESPONSE_EVENT, WireType::LengthDelimited, dst);
    encode_varint(event.len() as u64, dst);
    dst.put_slice(event);
}

/// The codec of `Subscribe`: prost for the request, pre-encoded events for
/// the responses.
#[derive(Clone, Copy, Debug, Default)]
pub struct SubscribeCodec;

/// Writes each event's stored encoding as a `SubscribeResponse`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ResponseEncoder;

impl Encoder for ResponseEncoder {
    type Item = Encoded;
    type Error = Status;

    fn encode(&mut self, item: Encoded, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        write_response(item.bytes(), dst);
        Ok(())
    }

    /// tonic sends what it encoded once the stream has nothing ready or the
    /// buffer reaches the threshold; a buffer that starts at that size is
    /// never grown (and copied) on the way, as the 8 KiB default would be.
    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(SEND_CHUNK + SEND_CHUNK / 4, SEND_CHUNK)
    }
}

type RequestCodec = ProstCodec<pb::SubscribeResponse, pb::SubscribeRequest>;

/// The request side is plain prost.
#[derive(Debug, Default)]
pub struct RequestDecoder(<RequestCodec as Codec>::Decoder);

impl Decoder for RequestDecoder {
    type Item = pb::SubscribeRequest;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        self.0.decode(src)
    }
}

impl Codec for SubscribeCodec {
    type Encode = Encoded;
    type Decode = pb::SubscribeRequest;
    type Encoder = ResponseEncoder;
    type Decoder = RequestDecoder;

    fn encoder(&mut self) -> ResponseEncoder {
        ResponseEncoder
    }

    fn decoder(&mut self) -> RequestDecoder {
        RequestDecoder(RequestCodec::default().decoder())
    }
}

type SubscribeStream = Pin<Box<dyn Stream<Item = Result<Encoded, Status>> + Send>>;

/// `EventService` over the hub, ready for `Server::add_service`.
#[derive(Clone, Debug)]
pub struct Events {
    hub: Hub,
}

impl Events {
    #[must_use]
    pub const fn new(hub: Hub) -> Self {
        Self { hub }
    }

    fn subscribe(&self, req: pb::SubscribeRequest) -> Result<SubscribeStream, Status> {
        let (start, filter) = parse(req)?;
        let sub = self
            .hub
            .subscribe(start, filter)
            .map_err(|e| hub_status(&e))?;
        Ok(Box::pin(sub.into_stream().map(|item| {
            item.map_err(|e| {
                tracing::warn!("subscription ended: {e}");
                hub_status(&e)
            })
        })))
    }
}

impl NamedService for Events {
    const NAME: &'static str = pb::event_service_server::SERVICE_NAME;
}

impl ServerStreamingService<pb::SubscribeRequest> for Events {
    type Response = Encoded;
    type ResponseStream = SubscribeStream;
    type Future = std::future::Ready<Result<Response<SubscribeStream>, Status>>;

    /// The subscription is registered before the call returns, so `now`
    /// misses nothing published after the client sees the response.
    fn call(&mut self, req: Request<pb::SubscribeRequest>) -> Self::Future {
        std::future::ready(self.subscribe(req.into_inner()).map(Response::new))
    }
}

impl<B> tower::Service<http::Request<B>> for Events
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() == SUBSCRIBE_PATH {
            let method = self.clone();
            Box::pin(async move {
                Ok(Grpc::new(SubscribeCodec)
                    .server_streaming(method, req)
                    .await)
            })
        } else {
            Box::pin(async { Ok(Status::unimplemented("no such method").into_http()) })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::filter::{MAX_FILTER_ENTRIES, MAX_FILTER_NAME_BYTES};
    use pb::subscribe_request::Start as S;

    fn req(start: Option<S>, filter: pb::EventFilter) -> pb::SubscribeRequest {
        pb::SubscribeRequest {
            start,
            filter: Some(filter),
        }
    }

    fn wire_events() -> Vec<pb::Event> {
        use crate::event::Severity;
        use crate::journal::testing::{anomaly, exec, fork};
        let mut big = exec("coder", "s-1");
        if let crate::event::Payload::Exec(e) = &mut big.payload {
            // Long enough for a three-byte length.
            e.argv = (0..2000).map(|i| format!("--arg-{i}")).collect();
        }
        [
            fork(1, std::time::SystemTime::now()),
            exec("a", "s-2"),
            anomaly("b", Severity::Critical),
            big,
        ]
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let mut e = pb::Event::from(&e);
            e.sequence = i as u64 + 1;
            e
        })
        .chain([crate::wire::gap_event("node-1", 5, 9)])
        .collect()
    }

    #[test]
    fn written_responses_are_what_prost_encodes() {
        use prost::Message as _;
        for event in wire_events() {
            let encoded = Encoded::encode(&event).unwrap();
            let mut written = Vec::new();
            write_response(encoded.bytes(), &mut written);
            let response = pb::SubscribeResponse { event: Some(event) };
            assert_eq!(written, response.encode_to_vec());
            assert_eq!(
                pb::SubscribeResponse::decode(&written[..]).unwrap(),
                response
            );
        }
    }

    /// A generated client subscribed over a real socket decodes exactly
    /// what was journaled, from the catch-up and from the live stream.
    #[tokio::test]
    async fn a_generated_client_decodes_the_stream() {
        use crate::journal::{Journal, Retention};

        let dir = tempfile::tempdir().unwrap();
        let journal =
            Journal::open(&dir.path().join("j.redb"), "node-1", Retention::default()).unwrap();
        let hub = Hub::new(journal, crate::journal::HubConfig::default());
        let events = wire_events();
        hub.publish_wire_blocking(events[..2].to_vec()).unwrap();

        let socket = dir.path().join("api.sock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(Events::new(hub.clone()))
                .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener)),
        );
        let channel = crate::api::client::connect_unix(&socket).await.unwrap();
        let mut client = pb::event_service_client::EventServiceClient::new(channel);
        let mut stream = client
            .subscribe(req(Some(S::Oldest(true)), pb::EventFilter::default()))
            .await
            .unwrap()
            .into_inner();
        let mut filtered = client
            .subscribe(req(
                Some(S::AfterSequence(0)),
                pb::EventFilter {
                    kinds: vec![pb::EventKind::Anomaly.into()],
                    ..pb::EventFilter::default()
                },
            ))
            .await
            .unwrap()
            .into_inner();
        hub.publish_wire_blocking(events[2..4].to_vec()).unwrap();

        let journaled = hub.reader().read_after(0, 10).unwrap();
        assert_eq!(journaled.len(), 4);
        for want in &journaled {
            let got = stream.message().await.unwrap().unwrap();
            assert_eq!(got.event.as_ref(), Some(want));
        }
        let got = filtered.message().await.unwrap().unwrap();
        assert_eq!(got.event.as_ref(), Some(&journaled[2]));

        let status = client
            .subscribe(req(Some(S::AfterSequence(99)), pb::EventFilter::default()))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::OutOfRange);
        server.abort();
    }

    #[test]
    fn requests_map_to_hub_starts_and_filters() {
        let (start, filter) = parse(pb::SubscribeRequest::default()).unwrap();
        assert_eq!(start, Start::Now);
        assert!(filter.is_all());
        let (start, filter) = parse(req(
            Some(S::AfterSequence(9)),
            pb::EventFilter {
                agents: vec!["coder".into()],
                kinds: vec![pb::EventKind::Exec.into()],
                ..pb::EventFilter::default()
            },
        ))
        .unwrap();
        assert_eq!(start, Start::AfterSequence(9));
        assert_eq!(
            filter,
            Filter::all().agents(["coder"]).kinds([pb::EventKind::Exec])
        );
    }

    #[test]
    fn bad_requests_are_invalid_arguments() {
        let cases = [
            (
                req(Some(S::Oldest(false)), pb::EventFilter::default()),
                "start.oldest",
            ),
            (
                req(Some(S::Now(false)), pb::EventFilter::default()),
                "start.now",
            ),
            (
                req(
                    None,
                    pb::EventFilter {
                        kinds: vec![999],
                        ..pb::EventFilter::default()
                    },
                ),
                "filter.kinds: 999",
            ),
            (
                req(
                    None,
                    pb::EventFilter {
                        min_severity: 42,
                        ..pb::EventFilter::default()
                    },
                ),
                "filter.min_severity: 42",
            ),
            (
                req(
                    None,
                    pb::EventFilter {
                        agents: vec!["a".into(); MAX_FILTER_ENTRIES + 1],
                        ..pb::EventFilter::default()
                    },
                ),
                "filter.agents: 257 entries, at most 256",
            ),
            (
                req(
                    None,
                    pb::EventFilter {
                        sessions: vec!["s".into(), "x".repeat(MAX_FILTER_NAME_BYTES + 1)],
                        ..pb::EventFilter::default()
                    },
                ),
                "filter.sessions[1]: 257 bytes, at most 256",
            ),
            (
                req(
                    None,
                    pb::EventFilter {
                        kinds: vec![pb::EventKind::Exec.into(); MAX_FILTER_ENTRIES + 1],
                        ..pb::EventFilter::default()
                    },
                ),
                "filter.kinds: 257 entries",
            ),
        ];
        for (r, says) in cases {
            let e = parse(r).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
            assert!(e.message().contains(says), "{e:?}");
        }
        let ahead = hub_status(&HubError::AheadOfJournal {
            requested: 10,
            newest: 3,
        });
        assert_eq!(ahead.code(), tonic::Code::OutOfRange);
    }
}
