//! `patron.api.v1.KpiService`: population KPIs over validated time ranges.

mod compute;

use std::sync::Arc;

use patron_projector::kpi as metric;
use patron_proto::api::v1 as pb;
use patron_proto::api::v1::kpi_service_server::KpiService;
use tonic::{Request, Response, Status};

use crate::error::ApiError;
use crate::model::{KpiColumn, KpiQuery, KpiRows};
use crate::range::{self, Months};
use crate::read_models::ReadModels;
use crate::wait;

/// The KPI queries over a [`ReadModels`].
#[derive(Clone)]
pub struct KpiApi {
    models: Arc<dyn ReadModels>,
}

impl KpiApi {
    /// Serves KPIs from `models`.
    pub fn new(models: Arc<dyn ReadModels>) -> Self {
        Self { models }
    }

    /// Validates a month range, waits for `min_position`.
    async fn months(&self, request: Request<pb::MonthRangeRequest>) -> Result<Months, ApiError> {
        let budget = wait::budget(request.metadata());
        let request = request.into_inner();
        let months = range::months(&request.from_month, &request.to_month)?;
        wait::until_position(self.models.as_ref(), request.min_position, budget).await?;
        Ok(months)
    }

    async fn rows(
        &self,
        metric: &'static str,
        column: KpiColumn,
        from: String,
        to: String,
    ) -> Result<KpiRows, ApiError> {
        self.models
            .kpis(&KpiQuery {
                metric,
                column,
                from,
                to,
            })
            .await
    }

    /// One metric's rows whose period is in the month range.
    async fn monthly(&self, metric: &'static str, months: Months) -> Result<KpiRows, ApiError> {
        let (from, to) = (range::month_text(months.from), range::month_text(months.to));
        self.rows(metric, KpiColumn::Period, from, to).await
    }
}

fn currency(rows: &KpiRows) -> String {
    rows.snapshot
        .as_ref()
        .map(|snapshot| snapshot.currency.clone())
        .unwrap_or_default()
}

#[tonic::async_trait]
impl KpiService for KpiApi {
    async fn stage_flows(
        &self,
        request: Request<pb::DayRangeRequest>,
    ) -> Result<Response<pb::StageFlowsResponse>, Status> {
        let budget = wait::budget(request.metadata());
        let request = request.into_inner();
        let days = range::days(&request.from_day, &request.to_day)?;
        wait::until_position(self.models.as_ref(), request.min_position, budget).await?;
        let (from, to) = (range::day_text(days.from), range::day_text(days.to));
        let rows = self
            .rows(metric::STAGE_FLOW, KpiColumn::Period, from, to)
            .await?;
        let flows = compute::stage_flows(&rows.rows)?;
        Ok(Response::new(pb::StageFlowsResponse { flows }))
    }

    async fn stage_distribution(
        &self,
        request: Request<pb::DayRangeRequest>,
    ) -> Result<Response<pb::StageDistributionResponse>, Status> {
        let budget = wait::budget(request.metadata());
        let request = request.into_inner();
        let days = range::days(&request.from_day, &request.to_day)?;
        wait::until_position(self.models.as_ref(), request.min_position, budget).await?;
        // Every flow up to the last day: a stage's count is entries minus exits since the start.
        let to = range::day_text(days.to);
        let rows = self
            .rows(metric::STAGE_FLOW, KpiColumn::Period, String::new(), to)
            .await?;
        let days = compute::stage_distribution(&rows.rows, days)?;
        Ok(Response::new(pb::StageDistributionResponse { days }))
    }

    async fn cohort_retention(
        &self,
        request: Request<pb::MonthRangeRequest>,
    ) -> Result<Response<pb::CohortRetentionResponse>, Status> {
        let months = self.months(request).await?;
        let sizes = self.monthly(metric::COHORT_SIZE, months).await?;
        let churned = self.monthly(metric::COHORT_CHURNED, months).await?;
        let (from, to) = (range::month_text(months.from), range::month_text(months.to));
        let active = self
            .rows(metric::COHORT_ACTIVE, KpiColumn::Dim1, from, to)
            .await?;
        let cohorts = compute::cohorts(&sizes.rows, &active.rows, &churned.rows)?;
        Ok(Response::new(pb::CohortRetentionResponse { cohorts }))
    }

    async fn nps(
        &self,
        request: Request<pb::MonthRangeRequest>,
    ) -> Result<Response<pb::NpsResponse>, Status> {
        let months = self.months(request).await?;
        let rows = self.monthly(metric::NPS, months).await?;
        let (stages, total) = compute::nps(&rows.rows)?;
        Ok(Response::new(pb::NpsResponse {
            stages,
            total: Some(total),
        }))
    }

    async fn csat(
        &self,
        request: Request<pb::MonthRangeRequest>,
    ) -> Result<Response<pb::CsatResponse>, Status> {
        let months = self.months(request).await?;
        let rows = self.monthly(metric::CSAT, months).await?;
        let (stages, total) = compute::csat(&rows.rows)?;
        Ok(Response::new(pb::CsatResponse {
            stages,
            total: Some(total),
        }))
    }

    async fn cac_by_channel(
        &self,
        request: Request<pb::MonthRangeRequest>,
    ) -> Result<Response<pb::CacByChannelResponse>, Status> {
        let months = self.months(request).await?;
        let acquired = self.monthly(metric::ACQUIRED, months).await?;
        let cost = self.monthly(metric::ACQUISITION_COST, months).await?;
        Ok(Response::new(pb::CacByChannelResponse {
            channels: compute::cac(&acquired.rows, &cost.rows),
            currency: currency(&cost),
        }))
    }

    async fn revenue_by_tier(
        &self,
        request: Request<pb::MonthRangeRequest>,
    ) -> Result<Response<pb::RevenueByTierResponse>, Status> {
        let months = self.months(request).await?;
        let rows = self.monthly(metric::REVENUE, months).await?;
        Ok(Response::new(pb::RevenueByTierResponse {
            tiers: compute::revenue(&rows.rows),
            currency: currency(&rows),
        }))
    }

    async fn forecast_by_tier(
        &self,
        request: Request<pb::ForecastByTierRequest>,
    ) -> Result<Response<pb::ForecastByTierResponse>, Status> {
        let budget = wait::budget(request.metadata());
        let request = request.into_inner();
        wait::until_position(self.models.as_ref(), request.min_position, budget).await?;
        let forecast = self.models.forecast_by_tier().await?;
        Ok(Response::new(compute::forecast(&forecast)?))
    }
}
