//! `patron.api.v1.AdminService`: fitting the predictive CLV models on demand, the model in
//! force, and erasing a customer's personal data.

use std::sync::Arc;

use patron_domain::{CustomerId, ErasureRequested, Event, EventBody};
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
/// event log (none: EraseCustomer is UNIMPLEMENTED).
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
        let customer_id = CustomerId::parse(&request.customer_id)
            .map_err(|reason| ApiError::invalid("customer_id", reason))?;
        if customer_id.is_reserved() {
            return Err(ApiError::invalid(
                "customer_id",
                "Patron's own streams hold no personal data",
            ));
        }
        let reason = request.reason.trim();
        if reason.is_empty() || reason.chars().count() > 1024 {
            return Err(ApiError::invalid(
                "reason",
                "required, 1-1024 characters: why the data is erased (kept with the event)",
            ));
        }
        let event_id = match request.event_id.as_str() {
            "" => uuid::Uuid::new_v4(),
            text => uuid::Uuid::parse_str(text)
                .map_err(|e| ApiError::invalid("event_id", format!("not a UUID: {e}")))?,
        };
        let log = self.log.as_ref().ok_or_else(|| {
            ApiError::Unimplemented("this server was started without the event store".into())
        })?;
        if log.stream_version(&customer_id).await? == 0 {
            return Err(ApiError::NotFound(format!(
                "customer {:?}",
                customer_id.as_str()
            )));
        }
        let event = Event {
            event_id,
            customer_id: customer_id.clone(),
            occurred_at: chrono::Utc::now(),
            source: ADMIN_SOURCE.to_owned(),
            body: EventBody::ErasureRequested(ErasureRequested {
                reason: Some(reason.to_owned()),
                extra: Default::default(),
            }),
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
                None => previous_erasure(log.as_ref(), &batch, event_id).await?,
            },
            // A retried call: the same id, another time. The erasure it names stands.
            Err(patron_store::StoreError::DuplicateEventIds(_)) => {
                previous_erasure(log.as_ref(), &batch, event_id).await?
            }
            Err(error) => return Err(error.into()),
        };
        tracing::info!(%event_id, position, "customer erasure requested");
        Ok(pb::EraseCustomerResponse {
            event_id: event_id.to_string(),
            position,
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

/// The position of the erasure stored earlier under `event_id` in the batch's stream (a retried
/// call); an error when the id is taken by another kind of event.
async fn previous_erasure(
    log: &dyn EventStore,
    batch: &AppendBatch,
    event_id: uuid::Uuid,
) -> Result<u64, ApiError> {
    let Some(stream) = batch.streams.first() else {
        return Err(ApiError::Internal(
            "an erasure batch without a stream".into(),
        ));
    };
    let mut after = 0;
    loop {
        let page = log.read_stream(&stream.customer_id, after, 1_000).await?;
        let Some(last) = page.last() else {
            return Err(ApiError::invalid(
                "event_id",
                "is taken by an event of another customer",
            ));
        };
        after = last.version;
        if let Some(found) = page.iter().find(|e| e.event.event_id == event_id) {
            return match found.event.body {
                EventBody::ErasureRequested(_) => Ok(found.position.0),
                _ => Err(ApiError::invalid(
                    "event_id",
                    "is taken by another event of this customer",
                )),
            };
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
}
