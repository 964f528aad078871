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
/// Most bytes of events in one response: under the 4 MiB a gRPC client accepts by default,
/// with room for the rest of the message. A page stops before the event that would pass it
/// (it always holds one event: a stored event is at most a few hundred KiB).
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024 - 64 * 1024;
/// Events read from the store at a time while a page fills, so that the events read but not
/// sent are few whatever the page size asked for.
const READ_CHUNK: usize = 100;

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

/// Fills a page of at most `limit` events and [`MAX_RESPONSE_BYTES`], reading `READ_CHUNK`
/// events at a time with `read(after, n)`, where `after` is the cursor of the last event taken
/// (`cursor` gives it) or `start`.
async fn fill<F, Fut>(
    start: u64,
    limit: usize,
    cursor: impl Fn(&RecordedEvent) -> u64,
    mut read: F,
) -> Result<Vec<pb::StoredEvent>, ApiError>
where
    F: FnMut(u64, usize) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<RecordedEvent>, patron_store::StoreError>>,
{
    use prost::Message as _;
    let mut page = Vec::new();
    let mut bytes = 0usize;
    let mut after = start;
    while page.len() < limit {
        let asked = READ_CHUNK.min(limit - page.len());
        let chunk = read(after, asked).await?;
        let Some(last) = chunk.last() else {
            break;
        };
        let ended = chunk.len() < asked;
        after = cursor(last);
        for event in &chunk {
            let event = stored(event);
            // The field's tag and length prefix besides the event itself.
            let size = event.encoded_len() + 8;
            if !page.is_empty() && bytes + size > MAX_RESPONSE_BYTES {
                return Ok(page);
            }
            bytes += size;
            page.push(event);
        }
        if ended {
            break;
        }
    }
    Ok(page)
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
        let events = fill(
            request.after_version,
            limit,
            |event| event.version,
            |after, n| {
                let (store, id) = (Arc::clone(&store), id.clone());
                async move { store.read_stream(&id, after, n).await }
            },
        )
        .await?;
        Ok(Response::new(pb::GetCustomerEventsResponse {
            events,
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
        let events = fill(
            request.after_position,
            limit,
            |event| event.position.0,
            |after, n| {
                let store = Arc::clone(&store);
                async move { store.read_all(Position(after), n).await }
            },
        )
        .await?;
        Ok(Response::new(pb::ReadEventsResponse {
            events,
            head_position: head.0,
        }))
    }
}
