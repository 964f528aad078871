//! `patron.api.v1.CustomerService`: validation, the query and the answer.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::DateTime;

use patron_domain::CustomerId;
use patron_proto::api::v1 as pb;
use patron_proto::api::v1::customer_service_server::CustomerService;
use patron_proto::lifecycle::v1::Stage as PbStage;
use tonic::{Request, Response, Status};

use crate::as_of;
use crate::convert;
use crate::error::ApiError;
use crate::model::{CustomerFilter, CustomerQuery};
use crate::page_token;
use crate::read_models::ReadModels;
use crate::wait;
use crate::watch::{self, Watch, WatchStream};

/// Page size when the request says 0.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// Largest page size accepted.
pub const MAX_PAGE_SIZE: u32 = 500;
const TIERS: [&str; 3] = ["A", "B", "C"];

/// The customer queries over a [`ReadModels`].
#[derive(Clone)]
pub struct CustomerApi {
    models: Arc<dyn ReadModels>,
    watch_poll: Duration,
}

impl CustomerApi {
    /// Serves queries from `models`; watch streams poll every 200 ms.
    pub fn new(models: Arc<dyn ReadModels>) -> Self {
        Self {
            models,
            watch_poll: Duration::from_millis(200),
        }
    }

    /// Watch streams poll the outbox every `poll` when idle.
    pub fn with_watch_poll(mut self, poll: Duration) -> Self {
        self.watch_poll = poll;
        self
    }

    async fn get(&self, request: pb::GetCustomerRequest) -> Result<pb::Customer, ApiError> {
        let id = customer_id(&request.customer_id)?;
        self.models
            .customer_on_wire(id.as_str(), request.min_position)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("customer {:?}", id.as_str())))
    }

    async fn list(
        &self,
        request: pb::ListCustomersRequest,
    ) -> Result<pb::ListCustomersResponse, ApiError> {
        let filter = filter(&request)?;
        let page_size = page_size(request.page_size)?;
        let after = page_token::decode(&request.page_token, &filter)?;
        // One row more than the page shows whether another page follows.
        let query = CustomerQuery {
            filter,
            after,
            limit: page_size + 1,
        };
        let mut page = self.models.customers(&query).await?;
        let more = page.customers.len() > page_size as usize;
        page.customers.truncate(page_size as usize);
        let next_page_token = match (more, page.customers.last()) {
            (true, Some(last)) => page_token::encode(&query.filter, &last.customer_id),
            _ => String::new(),
        };
        let customers = match &page.snapshot {
            Some(snapshot) => page
                .customers
                .iter()
                .map(|row| convert::customer(row, snapshot))
                .collect::<Result<_, _>>()?,
            None => Vec::new(),
        };
        Ok(pb::ListCustomersResponse {
            customers,
            next_page_token,
        })
    }
}

fn customer_id(text: &str) -> Result<CustomerId, ApiError> {
    CustomerId::parse(text).map_err(|reason| ApiError::invalid("customer_id", reason))
}

/// The validated `as_of` of an as-of query.
fn as_of_time(as_of: Option<&prost_types::Timestamp>) -> Result<DateTime<chrono::Utc>, ApiError> {
    let as_of = as_of.ok_or_else(|| ApiError::invalid("as_of", "required"))?;
    u32::try_from(as_of.nanos)
        .ok()
        .and_then(|nanos| DateTime::from_timestamp(as_of.seconds, nanos))
        .filter(|_| (0..1_000_000_000).contains(&as_of.nanos))
        .ok_or_else(|| {
            ApiError::invalid(
                "as_of",
                format!(
                    "not a valid timestamp: {}s {}ns",
                    as_of.seconds, as_of.nanos
                ),
            )
        })
}

/// The validated start and filter of a watch.
fn watch_request(request: &pb::WatchLifecycleChangesRequest) -> Result<Watch, ApiError> {
    let after_id = i64::try_from(request.after_outbox_id).map_err(|_| {
        ApiError::invalid(
            "after_outbox_id",
            format!("at most {}, got {}", i64::MAX, request.after_outbox_id),
        )
    })?;
    let to_stages = request
        .to_stages
        .iter()
        .map(|&value| {
            PbStage::try_from(value)
                .ok()
                .and_then(convert::stage_from_wire)
                .map(|stage| stage.as_str().to_owned())
                .ok_or_else(|| {
                    ApiError::invalid("to_stages", format!("{value} is not a lifecycle stage"))
                })
        })
        .collect::<Result<HashSet<_>, _>>()?;
    Ok(Watch {
        after_id,
        to_stages,
        consent_purpose: consent_purpose(&request.consent_purpose)?,
    })
}

/// The validated filters of a listing.
fn filter(request: &pb::ListCustomersRequest) -> Result<CustomerFilter, ApiError> {
    let stage = PbStage::try_from(request.stage)
        .map_err(|_| ApiError::invalid("stage", format!("unknown value {}", request.stage)))?;
    let tier = match request.tier.as_str() {
        "" => None,
        tier if TIERS.contains(&tier) => Some(tier.to_owned()),
        tier => {
            return Err(ApiError::invalid(
                "tier",
                format!("{tier:?} is not a tier (expected A, B or C)"),
            ));
        }
    };
    let rfm_segment = match request.rfm_segment.as_str() {
        "" => None,
        segment if patron_value::segment::ALL.contains(&segment) => Some(segment.to_owned()),
        segment => {
            return Err(ApiError::invalid(
                "rfm_segment",
                format!(
                    "{segment:?} is not a segment (expected one of {})",
                    patron_value::segment::ALL.join(", ")
                ),
            ));
        }
    };
    Ok(CustomerFilter {
        stage: convert::stage_from_wire(stage).map(|stage| stage.as_str().to_owned()),
        tier,
        rfm_segment,
        min_net_revenue_minor: request.min_net_revenue_minor,
        consent_purpose: consent_purpose(&request.consent_purpose)?,
    })
}

/// A validated consent purpose filter (`None` when empty).
fn consent_purpose(purpose: &str) -> Result<Option<String>, ApiError> {
    match purpose {
        "" => Ok(None),
        purpose if patron_domain::is_purpose_name(purpose) => Ok(Some(purpose.to_owned())),
        purpose => Err(ApiError::invalid(
            "consent_purpose",
            format!(
                "{purpose:?} is not a purpose name (1-{} lowercase letters, digits and _ . : -)",
                patron_domain::MAX_PURPOSE_CHARS
            ),
        )),
    }
}

/// The page size asked for, defaulted and checked.
fn page_size(asked: u32) -> Result<u32, ApiError> {
    match asked {
        0 => Ok(DEFAULT_PAGE_SIZE),
        n if n <= MAX_PAGE_SIZE => Ok(n),
        n => Err(ApiError::invalid(
            "page_size",
            format!("must be at most {MAX_PAGE_SIZE} (0 means {DEFAULT_PAGE_SIZE}), got {n}"),
        )),
    }
}

#[tonic::async_trait]
impl CustomerService for CustomerApi {
    async fn get_customer(
        &self,
        request: Request<pb::GetCustomerRequest>,
    ) -> Result<Response<pb::GetCustomerResponse>, Status> {
        let budget = wait::budget(request.metadata());
        let request = request.into_inner();
        customer_id(&request.customer_id)?;
        wait::until_position(self.models.as_ref(), request.min_position, budget).await?;
        let customer = self.get(request).await?;
        Ok(Response::new(pb::GetCustomerResponse {
            customer: Some(customer),
        }))
    }

    async fn list_customers(
        &self,
        request: Request<pb::ListCustomersRequest>,
    ) -> Result<Response<pb::ListCustomersResponse>, Status> {
        let budget = wait::budget(request.metadata());
        let request = request.into_inner();
        wait::until_position(self.models.as_ref(), request.min_position, budget).await?;
        Ok(Response::new(self.list(request).await?))
    }

    async fn get_customer_as_of(
        &self,
        request: Request<pb::GetCustomerAsOfRequest>,
    ) -> Result<Response<pb::GetCustomerResponse>, Status> {
        let request = request.into_inner();
        let id = customer_id(&request.customer_id)?;
        let at = as_of_time(request.as_of.as_ref())?;
        let detail = as_of::customer_as_of(self.models.as_ref(), &id, at).await?;
        Ok(Response::new(pb::GetCustomerResponse {
            customer: Some(convert::customer_detail(&detail)?),
        }))
    }

    type WatchLifecycleChangesStream = WatchStream;

    async fn watch_lifecycle_changes(
        &self,
        request: Request<pb::WatchLifecycleChangesRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let watch = watch_request(request.get_ref())?;
        Ok(Response::new(watch::start(
            self.models.clone(),
            watch,
            self.watch_poll,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_sizes_are_defaulted_and_capped() {
        assert_eq!(page_size(0).unwrap(), DEFAULT_PAGE_SIZE);
        assert_eq!(page_size(500).unwrap(), 500);
        assert_eq!(
            page_size(10_000).unwrap_err().to_string(),
            "page_size: must be at most 500 (0 means 50), got 10000"
        );
    }

    #[test]
    fn filters_are_validated_by_field() {
        let request = |f: fn(&mut pb::ListCustomersRequest)| {
            let mut request = pb::ListCustomersRequest::default();
            f(&mut request);
            filter(&request)
        };
        let ok = request(|r| {
            r.stage = PbStage::AtRisk as i32;
            r.tier = "A".into();
            r.min_net_revenue_minor = Some(100);
        })
        .unwrap();
        assert_eq!(ok.stage.as_deref(), Some("at_risk"));
        assert_eq!(ok.tier.as_deref(), Some("A"));
        for (f, field) in [
            (
                (|r: &mut pb::ListCustomersRequest| r.stage = 99) as fn(&mut _),
                "stage",
            ),
            (|r| r.tier = "Z".into(), "tier"),
            (|r| r.rfm_segment = "nobody".into(), "rfm_segment"),
        ] {
            let error = request(f).unwrap_err();
            assert!(
                matches!(error, ApiError::InvalidArgument { field: f, .. } if f == field),
                "{error}"
            );
        }
    }
}
