//! `patron.api.v1.AdminService`: fitting the predictive CLV models on demand, and the model in
//! force.

use std::sync::Arc;

use patron_projector::clv::{FitError, Fitter};
use patron_proto::api::v1 as pb;
use patron_proto::api::v1::admin_service_server::AdminService;
use tonic::{Request, Response, Status};

use crate::convert;
use crate::error::ApiError;

/// The admin calls over a [`Fitter`] (none: FitModel and GetModel are UNIMPLEMENTED).
#[derive(Clone)]
pub struct AdminApi {
    fitter: Option<Arc<Fitter>>,
}

impl AdminApi {
    /// Admin calls fitting with `fitter`.
    pub fn new(fitter: Option<Arc<Fitter>>) -> Self {
        Self { fitter }
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
}
