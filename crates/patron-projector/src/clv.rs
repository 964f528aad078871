//! Predictive CLV over the read models: fitting BG/NBD and Gamma-Gamma on the active
//! generation's purchase summaries, and storing the model version with per-customer predictions.
//!
//! A fit reads every customer's [`patron_clv::PurchaseSummary`] from the active generation and
//! evaluates them at the generation's *watermark* (event time, never the wall clock), so the same
//! read models always give the same model. Times are in weeks (days / 7), as in the published
//! BG/NBD analyses. An accepted fit is stored as a new model version together with a prediction
//! for every buyer of that generation, in one transaction; a rejected fit (too few customers, no
//! repeat purchase, no convergence) is recorded with its reason and changes nothing else: the
//! previous version and its predictions stay in force.
//!
//! Predictions belong to the generation they were computed on. A rebuild swaps in a generation
//! without predictions; the next fit (on schedule in `patron serve`, which also fits as soon as it
//! sees the active generation has none, or `patron fit`) computes them for it.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use patron_clv::{
    BgNbdParams, GammaGammaParams, Horizon, Observation, PurchaseSummary, TimeUnit, to_minor_units,
};
use patron_domain::{CustomerId, Event, EventBody, ModelFitted};
use patron_store::{AppendBatch, EventStore, ExpectedVersion, StoreError};
use serde::{Deserialize, Serialize};

use crate::port::{GenerationId, ReadModelError, ReadModelStore};

/// The time unit of every stored model.
pub const TIME_UNIT: TimeUnit = TimeUnit::Weeks;

/// Fewest repeat buyers for which a spend (Gamma-Gamma) model is fitted.
pub const MIN_REPEAT_BUYERS_FOR_SPEND: usize = 10;

/// What a fit predicts, and how much data it needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FitConfig {
    /// The prediction horizon in days: expected purchases, revenue and CLV are over the next
    /// `horizon_days` after the evaluation time.
    pub horizon_days: u32,
    /// The annual discount rate of the CLV (0.1 = 10 % a year), compounded per month-long period.
    pub annual_discount_rate: f64,
    /// Fewest customers with a purchase for a fit to be attempted.
    pub min_customers: usize,
}

impl Default for FitConfig {
    /// One year, 10 % a year, at least 20 customers.
    fn default() -> Self {
        Self {
            horizon_days: 365,
            annual_discount_rate: 0.10,
            min_customers: 20,
        }
    }
}

impl FitConfig {
    /// Checks the configuration: a horizon of 1 day to 100 years, a discount rate above −100 %,
    /// at least 2 customers.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=36_525).contains(&self.horizon_days) {
            return Err(format!(
                "the horizon must be 1 to 36525 days, got {}",
                self.horizon_days
            ));
        }
        if !(self.annual_discount_rate.is_finite() && self.annual_discount_rate > -1.0) {
            return Err(format!(
                "the annual discount rate must be finite and above -1, got {}",
                self.annual_discount_rate
            ));
        }
        if self.min_customers < 2 {
            return Err(format!(
                "a fit needs at least 2 customers, got a minimum of {}",
                self.min_customers
            ));
        }
        Ok(())
    }

    /// The CLV horizon: `horizon_days` cut into whole months (at least one period), each
    /// discounted at the annual rate compounded per period.
    fn horizon(&self) -> Result<Horizon, String> {
        let days = f64::from(self.horizon_days);
        let months = (days / 30.4375).round().max(1.0);
        #[expect(
            clippy::cast_possible_truncation,
            reason = "at most 36525 / 30.4375 = 1200 periods, a whole number"
        )]
        let periods = months as u32;
        let period_days = days / months;
        Horizon::with_annual_rate(
            periods,
            period_days / 7.0,
            self.annual_discount_rate,
            365.25 / period_days,
        )
        .map_err(|error| error.to_string())
    }
}

/// A fitted model as stored (without its version number).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FittedModel {
    /// When the fit ran (wall clock).
    pub fitted_at: DateTime<Utc>,
    /// The generation whose summaries it was fitted on.
    pub generation: GenerationId,
    /// The evaluation time: that generation's watermark (ages `T` are measured to its day).
    pub evaluated_at: DateTime<Utc>,
    /// Customers fitted on (every customer with a purchase on or before the evaluation day).
    pub customers: u64,
    /// Of which repeat buyers with a positive mean repeat spend (the spend model's data).
    pub repeat_buyers: u64,
    /// BG/NBD parameters, in weeks.
    pub bgnbd: BgNbdParams,
    /// BG/NBD total log-likelihood.
    pub bgnbd_log_likelihood: f64,
    /// Gamma-Gamma parameters (`gamma` in minor units); `None` when not fitted (see `spend_note`).
    pub gamma_gamma: Option<GammaGammaParams>,
    /// Why there is no spend model, or why some spends are undefined; `None` when all is well.
    pub spend_note: Option<String>,
    /// The prediction horizon, days.
    pub horizon_days: u32,
    /// The CLV's annual discount rate.
    pub annual_discount_rate: f64,
}

/// A stored model version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelVersion {
    /// 1, 2, … in the order the fits were accepted.
    pub version: i64,
    /// The model.
    pub model: FittedModel,
}

/// One customer's predictions under a model, as of the model's evaluation time.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// The customer.
    pub customer_id: CustomerId,
    /// Probability that the customer is still active (has not dropped out).
    pub p_alive: f64,
    /// Expected purchase days (transactions) in the horizon.
    pub expected_purchases: f64,
    /// Expected value of one transaction, minor units (`None` without a spend model).
    pub expected_spend_minor: Option<i64>,
    /// Expected revenue in the horizon (expected purchases × expected spend, undiscounted).
    pub expected_revenue_minor: Option<i64>,
    /// Discounted expected revenue in the horizon (the predictive CLV), minor units.
    pub clv_minor: Option<i64>,
}

/// A fit that was not accepted, as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct FitFailure {
    /// When it was attempted (wall clock).
    pub attempted_at: DateTime<Utc>,
    /// The generation it read, if there was one.
    pub generation: Option<GenerationId>,
    /// The evaluation time it used, if there was one.
    pub evaluated_at: Option<DateTime<Utc>>,
    /// Customers it saw.
    pub customers: u64,
    /// Why it was rejected.
    pub reason: String,
}

/// Where model versions, fit failures and predictions are stored (beside the read models).
#[async_trait]
pub trait ClvStore: Send + Sync + 'static {
    /// Every customer of `generation` with its purchase summary (customers without purchases
    /// may be left out).
    async fn purchase_summaries(
        &self,
        generation: GenerationId,
    ) -> Result<Vec<(CustomerId, PurchaseSummary)>, ReadModelError>;

    /// The latest model version, if a fit was ever accepted.
    async fn latest_model(&self) -> Result<Option<ModelVersion>, ReadModelError>;

    /// Stores `model` as the next version with its predictions (replacing every stored
    /// prediction), in one transaction; [`ReadModelError::Superseded`] if the model's generation
    /// is no longer the active one. Returns the version.
    async fn store_model(
        &self,
        model: &FittedModel,
        predictions: &[Prediction],
    ) -> Result<i64, ReadModelError>;

    /// Records a rejected fit.
    async fn record_failure(&self, failure: &FitFailure) -> Result<(), ReadModelError>;

    /// Predictions stored for `generation`.
    async fn prediction_count(&self, generation: GenerationId) -> Result<u64, ReadModelError>;
}

/// Why a fit did not produce a new model version.
#[derive(Debug, thiserror::Error)]
pub enum FitError {
    /// The fit was rejected (the reason is recorded); the previous version stays in force.
    #[error("the fit was rejected: {reason}; {}", kept_message(*.kept))]
    Rejected {
        /// Why.
        reason: String,
        /// The version still in force, if any.
        kept: Option<i64>,
    },
    /// The configuration is invalid.
    #[error("invalid fit configuration: {0}")]
    Config(String),
    /// Reading or writing the read models failed.
    #[error(transparent)]
    Store(#[from] ReadModelError),
    /// The fit was accepted and stored as `version`, but its `model_fitted` event could not be
    /// appended to the log: the lifecycle rules keep following the previous model until a later
    /// fit's event is appended.
    #[error(
        "model version {version} was stored, but its model_fitted event could not be appended to the log: {source}"
    )]
    Log {
        /// The stored version.
        version: i64,
        /// Why the append failed.
        source: StoreError,
    },
}

/// The `model_fitted` event that announces an accepted fit to the projection (see
/// [`crate::p_alive`]): in the reserved `$clv` stream, at the fit's evaluation time, with the
/// BG/NBD parameters as shortest round-trip decimal strings.
pub fn model_event(fitted: &ModelVersion) -> Event {
    let params = &fitted.model.bgnbd;
    Event {
        event_id: uuid::Uuid::now_v7(),
        customer_id: CustomerId::clv(),
        occurred_at: fitted.model.evaluated_at,
        source: "patron-fit".into(),
        body: EventBody::ModelFitted(ModelFitted {
            version: fitted.version,
            time_unit: "weeks".into(),
            r: params.r.to_string(),
            alpha: params.alpha.to_string(),
            a: params.a.to_string(),
            b: params.b.to_string(),
        }),
    }
}

/// Appends [`model_event`] of `fitted` to the log.
pub async fn append_model_event(
    log: &dyn EventStore,
    fitted: &ModelVersion,
) -> Result<(), FitError> {
    let batch = AppendBatch::single(
        CustomerId::clv(),
        ExpectedVersion::Any,
        vec![model_event(fitted)],
    );
    log.append(&batch).await.map_err(|source| FitError::Log {
        version: fitted.version,
        source,
    })?;
    Ok(())
}

fn kept_message(kept: Option<i64>) -> String {
    match kept {
        Some(version) => format!("model version {version} stays in force"),
        None => "no model is in force yet".to_owned(),
    }
}

/// Fits the models on the active generation and stores the result as a new version (or records
/// why not). `now` is only the `fitted_at` stamp.
pub async fn fit_and_store(
    models: &dyn ReadModelStore,
    store: &dyn ClvStore,
    config: &FitConfig,
    now: DateTime<Utc>,
) -> Result<ModelVersion, FitError> {
    config.validate().map_err(FitError::Config)?;
    // Stored timestamps keep microseconds: the returned model equals the stored one.
    let now = chrono::DurationRound::duration_trunc(now, chrono::TimeDelta::microseconds(1))
        .unwrap_or(now);
    let generation = models.active_generation().await?;
    let (generation, evaluated_at) = match generation {
        Some(g) => match g.watermark {
            Some(watermark) => (g.id, watermark),
            None => {
                return reject(
                    store,
                    now,
                    Some(g.id),
                    None,
                    0,
                    "the read models hold no event yet".into(),
                )
                .await;
            }
        },
        None => {
            return reject(
                store,
                now,
                None,
                None,
                0,
                "there are no read models yet: run the projector first".into(),
            )
            .await;
        }
    };
    let summaries = store.purchase_summaries(generation).await?;
    match fit_population(&summaries, evaluated_at, config) {
        Ok((customers, repeat_buyers, fitted, predictions)) => {
            let model = FittedModel {
                fitted_at: now,
                generation,
                evaluated_at,
                customers,
                repeat_buyers,
                horizon_days: config.horizon_days,
                annual_discount_rate: config.annual_discount_rate,
                ..fitted
            };
            let version = store.store_model(&model, &predictions).await?;
            Ok(ModelVersion { version, model })
        }
        Err((customers, reason)) => {
            reject(
                store,
                now,
                Some(generation),
                Some(evaluated_at),
                customers,
                reason,
            )
            .await
        }
    }
}

async fn reject(
    store: &dyn ClvStore,
    now: DateTime<Utc>,
    generation: Option<GenerationId>,
    evaluated_at: Option<DateTime<Utc>>,
    customers: u64,
    reason: String,
) -> Result<ModelVersion, FitError> {
    store
        .record_failure(&FitFailure {
            attempted_at: now,
            generation,
            evaluated_at,
            customers,
            reason: reason.clone(),
        })
        .await?;
    let kept = store.latest_model().await?.map(|m| m.version);
    Err(FitError::Rejected { reason, kept })
}

/// Fits on demand and on a schedule, one fit at a time in this process (a second process
/// fitting at the same moment gets a conflict on the version number and fails cleanly).
pub struct Fitter {
    models: Arc<dyn ReadModelStore>,
    store: Arc<dyn ClvStore>,
    log: Option<Arc<dyn EventStore>>,
    config: FitConfig,
    running: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Fitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fitter")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Fitter {
    /// A fitter over these stores; the configuration is checked.
    pub fn new(
        models: Arc<dyn ReadModelStore>,
        store: Arc<dyn ClvStore>,
        config: FitConfig,
    ) -> Result<Self, FitError> {
        config.validate().map_err(FitError::Config)?;
        Ok(Self {
            models,
            store,
            log: None,
            config,
            running: tokio::sync::Mutex::new(()),
        })
    }

    /// Appends a `model_fitted` event to `log` after every accepted fit, so that the
    /// probability-alive lifecycle rules follow the new model (see [`crate::p_alive`]).
    #[must_use]
    pub fn with_log(mut self, log: Arc<dyn EventStore>) -> Self {
        self.log = Some(log);
        self
    }

    /// The configuration fits use.
    pub fn config(&self) -> &FitConfig {
        &self.config
    }

    /// Fits now (after any fit already running here), stamped `now`; see [`fit_and_store`].
    pub async fn fit(&self, now: DateTime<Utc>) -> Result<ModelVersion, FitError> {
        let _one_at_a_time = self.running.lock().await;
        let started = std::time::Instant::now();
        let mut outcome =
            fit_and_store(self.models.as_ref(), self.store.as_ref(), &self.config, now).await;
        if let (Ok(fitted), Some(log)) = (&outcome, &self.log)
            && let Err(error) = append_model_event(log.as_ref(), fitted).await
        {
            outcome = Err(error);
        }
        metrics::histogram!("patron_clv_fit_seconds").record(started.elapsed().as_secs_f64());
        match &outcome {
            Ok(fitted) => {
                metrics::gauge!("patron_clv_model_version").set(fitted.version as f64);
                metrics::counter!("patron_clv_fits_total", "outcome" => "accepted").increment(1);
            }
            Err(FitError::Log { version, .. }) => {
                metrics::gauge!("patron_clv_model_version").set(*version as f64);
                metrics::counter!("patron_clv_fits_total", "outcome" => "not_logged").increment(1);
            }
            Err(_) => {
                metrics::counter!("patron_clv_fits_total", "outcome" => "rejected").increment(1);
            }
        }
        outcome
    }

    /// The model version in force, if any.
    pub async fn latest(&self) -> Result<Option<ModelVersion>, ReadModelError> {
        self.store.latest_model().await
    }
}

/// The last fit attempt this process made: when, and on which generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// When (wall clock).
    pub at: DateTime<Utc>,
    /// The active generation then.
    pub generation: GenerationId,
}

/// Whether a scheduled fit is due at `now`: when no fit has been accepted or tried within
/// `interval`, or when the active generation has no predictions of the model in force (a rebuild
/// swapped it in) and this process has not tried to fit it yet.
pub fn fit_due(
    now: DateTime<Utc>,
    interval: chrono::TimeDelta,
    active: GenerationId,
    latest: Option<&ModelVersion>,
    last_attempt: Option<Attempt>,
) -> bool {
    let last = match (
        latest.map(|m| m.model.fitted_at),
        last_attempt.map(|a| a.at),
    ) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, y) => x.or(y),
    };
    let stale = last.is_none_or(|last| now - last >= interval);
    let new_generation = latest.is_some_and(|m| m.model.generation != active)
        && last_attempt.is_none_or(|a| a.generation != active);
    stale || new_generation
}

/// Fits on a schedule until `shutdown`: looks every `check` (at most a minute is sensible) and
/// fits when [`fit_due`] says so. Rejected fits and unreachable databases are logged, never fatal.
/// With `only_while`, fits are scheduled only while it is true: in `patron serve` it is the
/// projector's [`crate::ProjectorConfig::active`], so that of several replicas only the one
/// running the active projector fits.
pub async fn run_fitter(
    fitter: Arc<Fitter>,
    interval: std::time::Duration,
    check: std::time::Duration,
    clock: Arc<dyn crate::Clock>,
    only_while: Option<Arc<std::sync::atomic::AtomicBool>>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let interval = chrono::TimeDelta::from_std(interval).unwrap_or(chrono::TimeDelta::MAX);
    let mut last_attempt: Option<Attempt> = None;
    loop {
        let standing_by = only_while
            .as_ref()
            .is_some_and(|active| !active.load(std::sync::atomic::Ordering::SeqCst));
        let due = if standing_by {
            Ok(None)
        } else {
            scheduled(&fitter, interval, clock.now(), last_attempt).await
        };
        match due {
            Ok(Some(attempt)) => last_attempt = Some(attempt),
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "cannot check whether a CLV fit is due"),
        }
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(check) => {}
        }
    }
}

/// One scheduler check: fits if due; returns the attempt made, if any.
async fn scheduled(
    fitter: &Fitter,
    interval: chrono::TimeDelta,
    now: DateTime<Utc>,
    last_attempt: Option<Attempt>,
) -> Result<Option<Attempt>, ReadModelError> {
    let Some(active) = fitter.models.active_generation().await? else {
        return Ok(None);
    };
    // Nothing projected yet: nothing to fit, and nothing worth recording as a failure.
    if active.watermark.is_none() {
        return Ok(None);
    }
    let latest = fitter.latest().await?;
    if !fit_due(now, interval, active.id, latest.as_ref(), last_attempt) {
        return Ok(None);
    }
    match fitter.fit(now).await {
        Ok(fitted) => tracing::info!(
            version = fitted.version,
            generation = fitted.model.generation,
            customers = fitted.model.customers,
            "CLV model fitted"
        ),
        Err(error) => tracing::warn!(%error, "scheduled CLV fit"),
    }
    Ok(Some(Attempt {
        at: now,
        generation: active.id,
    }))
}

type Fitted = (u64, u64, FittedModel, Vec<Prediction>);

/// Fits BG/NBD (and Gamma-Gamma when there are enough repeat buyers) on the summaries as of
/// `evaluated_at`'s UTC day, and predicts every customer. The returned model's bookkeeping
/// fields (`fitted_at`, `generation`, horizon) are placeholders the caller fills in. On error:
/// the customers seen and why the fit is rejected.
pub fn fit_population(
    summaries: &[(CustomerId, PurchaseSummary)],
    evaluated_at: DateTime<Utc>,
    config: &FitConfig,
) -> Result<Fitted, (u64, String)> {
    let at = evaluated_at.date_naive();
    let customers: Vec<(&CustomerId, Observation, &PurchaseSummary)> = summaries
        .iter()
        .filter_map(|(id, summary)| Some((id, summary.observation(at, TIME_UNIT)?, summary)))
        .collect();
    let seen = customers.len() as u64;
    let fail = |reason: String| (seen, reason);
    if customers.len() < config.min_customers {
        return Err(fail(format!(
            "only {} customers have a purchase, and a fit needs at least {}",
            customers.len(),
            config.min_customers
        )));
    }
    let horizon = config.horizon().map_err(fail)?;
    let observations: Vec<Observation> = customers.iter().map(|(_, o, _)| *o).collect();
    let bgnbd =
        patron_clv::fit_bgnbd(&observations).map_err(|error| fail(format!("BG/NBD: {error}")))?;
    let spends: Vec<_> = customers
        .iter()
        .filter_map(|(_, _, summary)| summary.spend_observation(at))
        .collect();
    let repeat_buyers = spends.len() as u64;
    let (gamma_gamma, mut spend_note) = if spends.len() < MIN_REPEAT_BUYERS_FOR_SPEND {
        let note = format!(
            "no spend model: {} repeat buyers with a positive spend, at least {MIN_REPEAT_BUYERS_FOR_SPEND} needed",
            spends.len()
        );
        (None, Some(note))
    } else {
        match patron_clv::fit_gamma_gamma(&spends) {
            Ok(report) => (Some(report.params), None),
            Err(error) => (None, Some(format!("no spend model: Gamma-Gamma: {error}"))),
        }
    };
    let t = TIME_UNIT.from_days(i64::from(config.horizon_days));
    let mut predictions = Vec::with_capacity(customers.len());
    let mut undefined_spends = 0_u64;
    for (id, observation, summary) in &customers {
        let fail_for = |what: &str, error: &dyn std::fmt::Display| {
            fail(format!("{what} of customer {id}: {error}"))
        };
        let p_alive = bgnbd.params.probability_alive(observation);
        let expected_purchases = bgnbd
            .params
            .expected_purchases(t, observation)
            .map_err(|e| fail_for("expected purchases", &e))?;
        let mean_spend = summary.spend_observation(at).map_or(0.0, |s| s.mean_spend);
        let spend = gamma_gamma.and_then(|gg| {
            gg.conditional_expected_spend(observation.frequency, mean_spend)
                .ok()
        });
        if gamma_gamma.is_some() && spend.is_none() {
            undefined_spends += 1;
        }
        let (expected_spend_minor, expected_revenue_minor, clv_minor) = match (gamma_gamma, spend) {
            (Some(gg), Some(spend)) => {
                let value = patron_clv::clv(&bgnbd.params, &gg, observation, mean_spend, &horizon)
                    .map_err(|e| fail_for("CLV", &e))?;
                let minor = |amount: f64, what: &str| {
                    to_minor_units(amount).map_err(|e| fail_for(what, &e))
                };
                (
                    Some(minor(spend, "expected spend")?),
                    Some(minor(spend * expected_purchases, "expected revenue")?),
                    Some(minor(value, "CLV")?),
                )
            }
            _ => (None, None, None),
        };
        predictions.push(Prediction {
            customer_id: (*id).clone(),
            p_alive,
            expected_purchases,
            expected_spend_minor,
            expected_revenue_minor,
            clv_minor,
        });
    }
    if undefined_spends > 0 {
        spend_note = Some(format!(
            "the expected spend is undefined for {undefined_spends} customers (q <= 1 makes the population mean infinite)"
        ));
    }
    let model = FittedModel {
        fitted_at: evaluated_at,
        generation: 0,
        evaluated_at,
        customers: seen,
        repeat_buyers,
        bgnbd: bgnbd.params,
        bgnbd_log_likelihood: bgnbd.log_likelihood,
        gamma_gamma,
        spend_note,
        horizon_days: config.horizon_days,
        annual_discount_rate: config.annual_discount_rate,
    };
    Ok((seen, repeat_buyers, model, predictions))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use chrono::{NaiveDate, TimeDelta, TimeZone};
    use patron_clv::simulate;

    use super::*;

    /// Buyers drawn from a BG/NBD population, each turned into purchase days: a first day a year
    /// before the evaluation day and `x` repeat days up to its last purchase; spends vary between and within customers.
    fn population(n: usize) -> (Vec<(CustomerId, PurchaseSummary)>, DateTime<Utc>) {
        let truth = BgNbdParams {
            r: 0.25,
            alpha: 4.0,
            a: 0.8,
            b: 2.5,
        };
        let at = Utc.with_ymd_and_hms(2025, 12, 31, 18, 0, 0).unwrap();
        let day0: NaiveDate = at.date_naive() - TimeDelta::days(364);
        let customers = simulate(&truth, n, 52.0, 11).unwrap();
        let summaries = customers
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut summary = PurchaseSummary::new();
                summary.record_purchase(day0, 2_000).unwrap();
                #[expect(clippy::cast_possible_truncation, reason = "a test's small day counts")]
                let last = (c.recency * 7.0).round() as i64;
                let repeats = i64::from(c.frequency).min(last);
                for k in 1..=repeats {
                    let day = day0 + TimeDelta::days(last * k / repeats);
                    let i = i as i64;
                    let scale = 1_000 + (i * 7_919) % 9_000;
                    let spread = 50 + (i * 31 + k * 17) % 100;
                    summary.record_purchase(day, scale * spread / 100).unwrap();
                }
                (CustomerId::parse(&format!("c{i}")).unwrap(), summary)
            })
            .collect();
        (summaries, at)
    }

    #[test]
    fn a_fit_predicts_every_buyer_with_figures_in_range() {
        let (summaries, at) = population(2_000);
        let (customers, repeat_buyers, model, predictions) =
            fit_population(&summaries, at, &FitConfig::default()).unwrap();
        assert_eq!(customers, 2_000);
        assert_eq!(predictions.len(), 2_000);
        assert!(repeat_buyers > 100, "{repeat_buyers}");
        let gg = model
            .gamma_gamma
            .unwrap_or_else(|| panic!("{:?}", model.spend_note));
        assert!(gg.p > 0.0 && gg.q > 1.0, "{gg:?}");
        for p in &predictions {
            assert!((0.0..=1.0).contains(&p.p_alive), "{p:?}");
            assert!(p.expected_purchases >= 0.0, "{p:?}");
            let (spend, revenue, clv) = (
                p.expected_spend_minor.unwrap(),
                p.expected_revenue_minor.unwrap(),
                p.clv_minor.unwrap(),
            );
            assert!(spend > 0, "{p:?}");
            assert!(clv <= revenue + 1, "discounting never adds value: {p:?}");
        }
        // A buyer whose only purchases were long ago is less likely alive than a recent one
        // with as many purchases.
        let alive = |frequency: u32, recency: f64| {
            model
                .bgnbd
                .probability_alive(&Observation::new(frequency, recency, 52.0).unwrap())
        };
        assert!(alive(3, 10.0) < alive(3, 50.0));
    }

    #[test]
    fn too_few_customers_or_no_repeat_purchase_is_rejected_with_the_reason() {
        let (summaries, at) = population(2_000);
        let config = FitConfig {
            min_customers: 50,
            ..FitConfig::default()
        };
        let (seen, reason) = fit_population(&summaries[..30], at, &config).unwrap_err();
        assert_eq!(seen, 30);
        assert!(
            reason.contains("only 30 customers") && reason.contains("at least 50"),
            "{reason}"
        );

        let one_offs: Vec<_> = summaries
            .into_iter()
            .filter(|(_, s)| s.frequency() == 0)
            .collect();
        assert!(one_offs.len() > 100);
        let (_, reason) = fit_population(&one_offs, at, &FitConfig::default()).unwrap_err();
        assert!(
            reason.contains("BG/NBD") && reason.contains("repeat"),
            "{reason}"
        );
    }

    #[test]
    fn a_scheduled_fit_is_due_after_the_interval_or_on_a_new_generation() {
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let day = TimeDelta::days(1);
        let (summaries, at) = population(300);
        let (_, _, model, _) = fit_population(&summaries, at, &FitConfig::default()).unwrap();
        let latest = ModelVersion {
            version: 4,
            model: FittedModel {
                fitted_at: t0,
                generation: 7,
                ..model
            },
        };
        assert!(fit_due(t0, day, 7, None, None), "never fitted");
        assert!(!fit_due(
            t0 + TimeDelta::hours(23),
            day,
            7,
            Some(&latest),
            None
        ));
        assert!(
            fit_due(t0 + day, day, 7, Some(&latest), None),
            "a day later"
        );
        assert!(
            fit_due(t0 + TimeDelta::hours(1), day, 8, Some(&latest), None),
            "rebuilt"
        );
        let tried = Attempt {
            at: t0 + TimeDelta::hours(1),
            generation: 8,
        };
        assert!(
            !fit_due(t0 + TimeDelta::hours(2), day, 8, Some(&latest), Some(tried)),
            "a rejected fit of the new generation is not retried before the interval"
        );
        let failed = Attempt {
            at: t0,
            generation: 7,
        };
        assert!(!fit_due(
            t0 + TimeDelta::hours(5),
            day,
            7,
            None,
            Some(failed)
        ));
        assert!(fit_due(t0 + day, day, 7, None, Some(failed)));
    }

    #[test]
    fn the_configuration_is_checked() {
        let bad = FitConfig {
            horizon_days: 0,
            ..FitConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("horizon"));
        let bad = FitConfig {
            annual_discount_rate: f64::NAN,
            ..FitConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("discount"));
        let horizon = FitConfig::default().horizon().unwrap();
        assert_eq!(horizon.periods, 12, "a year is twelve monthly periods");
    }
}
