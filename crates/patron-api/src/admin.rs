//! `patron.api.v1.AdminService`: fitting the predictive CLV models on demand, the model in
//! force, erasing a customer's personal data, and undoing a wrong merge of two customers.

use std::sync::Arc;

use patron_domain::{CustomerId, CustomersUnmerged, ErasureRequested, Event, EventBody};
use patron_projector::clv::{FitError, Fitter};
use patron_proto::api::v1 as pb;
use patron_proto::api::v1::admin_service_server::AdminService;
use patron_store::{AppendBatch, EventStore, ExpectedVersion, StreamAppend};
use tonic::{Request, Response, Status};

use crate::convert;
use crate::error::ApiError;

/// The source of the events the admin calls append.
pub const ADMIN_SOURCE: &str = "patron-admin";

/// The admin calls over a [`Fitter`] (none: FitModel and GetModel are UNIMPLEMENTED) and the
/// event log (none: EraseCustomer and UnmergeCustomer are UNIMPLEMENTED).
#[derive(Clone)]
pub struct AdminApi {
    fitter: Option<Arc<Fitter>>,
    log: Option<Arc<dyn EventStore>>,
}

impl AdminApi {
    /// Admin calls fitting with `fitter`.
    pub fn new(fitter: Option<Arc<Fitter>>) -> Self {
        Self { fitter, log: None }
    }

    /// Erasures are appended to `log`.
    pub fn with_log(mut self, log: Option<Arc<dyn EventStore>>) -> Self {
        self.log = log;
        self
    }

    async fn erase(
        &self,
        request: pb::EraseCustomerRequest,
    ) -> Result<pb::EraseCustomerResponse, ApiError> {
        let customer_id = customer("customer_id", &request.customer_id)?;
        let reason = reason(&request.reason, "why the data is erased")?;
        let event_id = event_id(&request.event_id)?;
        self.existing(&customer_id).await?;
        let body = EventBody::ErasureRequested(ErasureRequested {
            reason: Some(reason),
            extra: Default::default(),
        });
        let (event_id, position) = self.append(customer_id, event_id, body).await?;
        tracing::info!(%event_id, position, "customer erasure requested");
        Ok(pb::EraseCustomerResponse {
            event_id: event_id.to_string(),
            position,
        })
    }

    async fn unmerge(
        &self,
        request: pb::UnmergeCustomerRequest,
    ) -> Result<pb::UnmergeCustomerResponse, ApiError> {
        let customer_id = customer("customer_id", &request.customer_id)?;
        let merged = customer("merged_customer_id", &request.merged_customer_id)?;
        if merged == customer_id {
            return Err(ApiError::invalid(
                "merged_customer_id",
                "a customer cannot be unmerged from itself",
            ));
        }
        let reason = reason(&request.reason, "why the merge was wrong")?;
        let event_id = event_id(&request.event_id)?;
        let log = self.existing(&customer_id).await?;
        let parent = log.merged_into(&merged).await?;
        if parent.as_ref() != Some(&customer_id) {
            // A retried call finds the merge already undone: it is answered with its event.
            if let Some(event_id) = event_id
                && let Some(found) = find_in_stream(log.as_ref(), &customer_id, event_id).await?
                && matches!(found.event.body, EventBody::CustomersUnmerged(_))
            {
                return Ok(pb::UnmergeCustomerResponse {
                    event_id: event_id.to_string(),
                    position: found.position.0,
                });
            }
            return Err(ApiError::FailedPrecondition(match parent {
                None => format!("{merged} is not merged into another customer"),
                Some(parent) => format!("{merged} is merged into {parent}, not {customer_id}"),
            }));
        }
        let body = EventBody::CustomersUnmerged(CustomersUnmerged {
            merged_customer_id: merged,
            reason: Some(reason),
            extra: Default::default(),
        });
        let (event_id, position) = self.append(customer_id, event_id, body).await?;
        tracing::info!(%event_id, position, "customers unmerged");
        Ok(pb::UnmergeCustomerResponse {
            event_id: event_id.to_string(),
            position,
        })
    }

    /// The event log, once it is known to hold events of `customer_id` (NOT_FOUND otherwise).
    async fn existing(&self, customer_id: &CustomerId) -> Result<&Arc<dyn EventStore>, ApiError> {
        let log = self.log()?;
        if log.stream_version(customer_id).await? == 0 {
            return Err(ApiError::NotFound(format!(
                "customer {:?}",
                customer_id.as_str()
            )));
        }
        Ok(log)
    }

    /// Appends an operator's event to a customer's stream under the client's event id (a new
    /// one when `None`); returns its id and position. A retried call (the same client event id)
    /// is answered with the stored event.
    async fn append(
        &self,
        customer_id: CustomerId,
        event_id: Option<uuid::Uuid>,
        body: EventBody,
    ) -> Result<(uuid::Uuid, u64), ApiError> {
        let event_id = event_id.unwrap_or_else(uuid::Uuid::new_v4);
        let log = self.log()?;
        let event_type = body.event_type();
        let event = Event {
            event_id,
            customer_id: customer_id.clone(),
            occurred_at: chrono::Utc::now(),
            source: ADMIN_SOURCE.to_owned(),
            body,
        };
        let mut batch = AppendBatch::default();
        batch.streams.push(StreamAppend {
            customer_id,
            expected: ExpectedVersion::Any,
            events: vec![event],
        });
        let position = match log.append(&batch).await {
            Ok(receipt) => match receipt.last_position {
                Some(position) => position.0,
                None => previous(log.as_ref(), &batch, event_id, &event_type).await?,
            },
            // A retried call: the same id, another time. The event it names stands.
            Err(patron_store::StoreError::DuplicateEventIds(_)) => {
                previous(log.as_ref(), &batch, event_id, &event_type).await?
            }
            Err(error) => return Err(error.into()),
        };
        Ok((event_id, position))
    }

    fn log(&self) -> Result<&Arc<dyn EventStore>, ApiError> {
        self.log.as_ref().ok_or_else(|| {
            ApiError::Unimplemented("this server was started without the event store".into())
        })
    }

    fn fitter(&self) -> Result<&Fitter, ApiError> {
        self.fitter.as_deref().ok_or_else(|| {
            ApiError::Unimplemented("this server was started without a CLV fitter".into())
        })
    }

    async fn fit(&self) -> Result<pb::ClvModel, ApiError> {
        match self.fitter()?.fit(chrono::Utc::now()).await {
            Ok(fitted) => Ok(convert::model(&fitted)),
            Err(error @ FitError::Rejected { .. }) => {
                Err(ApiError::FailedPrecondition(error.to_string()))
            }
            Err(FitError::Config(why)) => Err(ApiError::Internal(why)),
            Err(FitError::Store(error)) => Err(error.into()),
            Err(error @ FitError::Log { .. }) => Err(ApiError::Internal(error.to_string())),
        }
    }

    async fn model(&self) -> Result<pb::ClvModel, ApiError> {
        let latest = self.fitter()?.latest().await?;
        latest
            .map(|version| convert::model(&version))
            .ok_or_else(|| ApiError::NotFound("a fitted CLV model".into()))
    }
}

/// A customer id an operator names: valid and not one of Patron's own streams.
fn customer(field: &'static str, id: &str) -> Result<CustomerId, ApiError> {
    let customer_id = CustomerId::parse(id).map_err(|reason| ApiError::invalid(field, reason))?;
    if customer_id.is_reserved() {
        return Err(ApiError::invalid(
            field,
            "names one of Patron's own streams, not a customer",
        ));
    }
    Ok(customer_id)
}

/// The client's optional event id (empty: none).
fn event_id(text: &str) -> Result<Option<uuid::Uuid>, ApiError> {
    match text {
        "" => Ok(None),
        text => uuid::Uuid::parse_str(text)
            .map(Some)
            .map_err(|e| ApiError::invalid("event_id", format!("not a UUID: {e}"))),
    }
}

/// The required reason of an operator's call, trimmed.
fn reason(text: &str, what: &str) -> Result<String, ApiError> {
    let reason = text.trim();
    if reason.is_empty() || reason.chars().count() > 1024 {
        return Err(ApiError::invalid(
            "reason",
            format!("required, 1-1024 characters: {what} (kept with the event)"),
        ));
    }
    Ok(reason.to_owned())
}

/// The position of the event of `event_type` stored earlier under `event_id` in the batch's
/// stream (a retried call); an error when the id is taken by another event.
async fn previous(
    log: &dyn EventStore,
    batch: &AppendBatch,
    event_id: uuid::Uuid,
    event_type: &patron_domain::EventType,
) -> Result<u64, ApiError> {
    let Some(stream) = batch.streams.first() else {
        return Err(ApiError::Internal("an admin batch without a stream".into()));
    };
    let found = find_in_stream(log, &stream.customer_id, event_id).await?;
    match found {
        None => Err(ApiError::invalid(
            "event_id",
            "is taken by an event of another customer",
        )),
        Some(found) if found.event.event_type() == *event_type => Ok(found.position.0),
        Some(_) => Err(ApiError::invalid(
            "event_id",
            "is taken by another event of this customer",
        )),
    }
}

/// The event of `customer_id`'s stream with id `event_id`, if there is one.
async fn find_in_stream(
    log: &dyn EventStore,
    customer_id: &CustomerId,
    event_id: uuid::Uuid,
) -> Result<Option<patron_store::RecordedEvent>, ApiError> {
    let mut after = 0;
    loop {
        let page = log.read_stream(customer_id, after, 1_000).await?;
        let Some(last) = page.last() else {
            return Ok(None);
        };
        after = last.version;
        if let Some(found) = page.into_iter().find(|e| e.event.event_id == event_id) {
            return Ok(Some(found));
        }
    }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn fit_model(
        &self,
        _request: Request<pb::FitModelRequest>,
    ) -> Result<Response<pb::FitModelResponse>, Status> {
        let model = self.fit().await?;
        Ok(Response::new(pb::FitModelResponse { model: Some(model) }))
    }

    async fn get_model(
        &self,
        _request: Request<pb::GetModelRequest>,
    ) -> Result<Response<pb::GetModelResponse>, Status> {
        let model = self.model().await?;
        Ok(Response::new(pb::GetModelResponse { model: Some(model) }))
    }

    async fn erase_customer(
        &self,
        request: Request<pb::EraseCustomerRequest>,
    ) -> Result<Response<pb::EraseCustomerResponse>, Status> {
        Ok(Response::new(self.erase(request.into_inner()).await?))
    }

    async fn unmerge_customer(
        &self,
        request: Request<pb::UnmergeCustomerRequest>,
    ) -> Result<Response<pb::UnmergeCustomerResponse>, Status> {
        Ok(Response::new(self.unmerge(request.into_inner()).await?))
    }
}
