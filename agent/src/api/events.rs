//! `EventService`: the lossless, resumable event stream, served from the
//! journal hub.

use std::pin::Pin;
use std::sync::Arc;

use futures_util::{Stream, StreamExt as _};
use tonic::{Request, Response, Status};

use super::pb;
use crate::daemon::Shared;
use crate::journal::{Filter, HubError, Start};

pub struct Events {
    shared: Arc<Shared>,
}

impl Events {
    #[must_use]
    pub const fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

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

type SubscribeStream = Pin<Box<dyn Stream<Item = Result<pb::SubscribeResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::event_service_server::EventService for Events {
    type SubscribeStream = SubscribeStream;

    async fn subscribe(
        &self,
        req: Request<pb::SubscribeRequest>,
    ) -> Result<Response<SubscribeStream>, Status> {
        let (start, filter) = parse(req.into_inner())?;
        let sub = self
            .shared
            .hub
            .subscribe(start, filter)
            .map_err(|e| hub_status(&e))?;
        let stream = sub.into_stream().map(|item| match item {
            Ok(event) => Ok(pb::SubscribeResponse { event: Some(event) }),
            Err(e) => {
                tracing::warn!("subscription ended: {e}");
                Err(hub_status(&e))
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::subscribe_request::Start as S;

    fn req(start: Option<S>, filter: pb::EventFilter) -> pb::SubscribeRequest {
        pb::SubscribeRequest {
            start,
            filter: Some(filter),
        }
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
