//! `patron.api.v1.EventStoreService`: the stored events, a customer's stream or the global log,
//! a page at a time, encoded as `patron.events.v1.CustomerEvent`.
//!
//! Paging is by cursor: the last event's version (a stream) or position (the log) is the next
//! request's `after_version` / `after_position`.

use std::sync::Arc;

use patron_domain::CustomerId;
use patron_proto::api::v1 as pb;
use patron_proto::api::v1::event_store_service_server::EventStoreService;
use patron_store::{EventStore, Position, RecordedEvent};
use tonic::{Request, Response, Status};

use crate::convert;
use crate::error::ApiError;
use crate::read_models::ReadModels;

/// Page size when the request says 0.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// Largest page size accepted.
pub const MAX_PAGE_SIZE: u32 = 1000;

/// The raw-event queries over the read models' event store.
#[derive(Clone)]
pub struct EventStoreApi {
    models: Arc<dyn ReadModels>,
}

impl EventStoreApi {
    /// Serves events from `models`' event store.
    pub fn new(models: Arc<dyn ReadModels>) -> Self {
        Self { models }
    }

    fn store(&self) -> Result<Arc<dyn EventStore>, ApiError> {
        self.models
            .event_store()
            .ok_or_else(|| ApiError::Unavailable("no event store".into()))
    }
}

/// The page size asked for, defaulted and checked.
fn page_size(asked: u32) -> Result<usize, ApiError> {
    match asked {
        0 => Ok(DEFAULT_PAGE_SIZE as usize),
        n if n <= MAX_PAGE_SIZE => Ok(n as usize),
        n => Err(ApiError::invalid(
            "page_size",
            format!("must be at most {MAX_PAGE_SIZE} (0 means {DEFAULT_PAGE_SIZE}), got {n}"),
        )),
    }
}

fn stored(event: &RecordedEvent) -> pb::StoredEvent {
    pb::StoredEvent {
        position: event.position.0,
        version: event.version,
        recorded_at: Some(convert::timestamp(event.recorded_at)),
        event_type: event.event.event_type().as_str().to_owned(),
        event: Some(patron_codec::to_proto(&event.event)),
    }
}

#[tonic::async_trait]
impl EventStoreService for EventStoreApi {
    async fn get_customer_events(
        &self,
        request: Request<pb::GetCustomerEventsRequest>,
    ) -> Result<Response<pb::GetCustomerEventsResponse>, Status> {
        let request = request.into_inner();
        let id = CustomerId::parse(&request.customer_id)
            .map_err(|reason| ApiError::invalid("customer_id", reason))?;
        let limit = page_size(request.page_size)?;
        let store = self.store()?;
        let stream_version = store.stream_version(&id).await.map_err(ApiError::from)?;
        if stream_version == 0 {
            return Err(ApiError::NotFound(format!("customer {:?}", id.as_str())).into());
        }
        let events = store
            .read_stream(&id, request.after_version, limit)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::GetCustomerEventsResponse {
            events: events.iter().map(stored).collect(),
            stream_version,
        }))
    }

    async fn read_events(
        &self,
        request: Request<pb::ReadEventsRequest>,
    ) -> Result<Response<pb::ReadEventsResponse>, Status> {
        let request = request.into_inner();
        let limit = page_size(request.page_size)?;
        let store = self.store()?;
        let head = store.head().await.map_err(ApiError::from)?;
        let events = store
            .read_all(Position(request.after_position), limit)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::ReadEventsResponse {
            events: events.iter().map(stored).collect(),
            head_position: head.0,
        }))
    }
}
