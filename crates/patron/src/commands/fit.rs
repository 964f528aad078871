//! `patron fit`: fit the predictive CLV models on the active read models, once.

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;
use patron_projector::clv::{FitError, Fitter};

use crate::cli::{DatabaseArgs, FitArgs};
use crate::commands::open_store;

pub(crate) async fn run(database: &DatabaseArgs, args: FitArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(database).await?;
    let fitter = Fitter::new(store.read_models(), store.clv_store(), args.clv.config())?
        .with_log(store.clone().into_dyn());
    match fitter.fit(chrono::Utc::now()).await {
        Ok(fitted) => {
            tracing::info!(
                version = fitted.version,
                generation = fitted.model.generation,
                customers = fitted.model.customers,
                repeat_buyers = fitted.model.repeat_buyers,
                evaluated_at = %fitted.model.evaluated_at,
                spend_model = fitted.model.gamma_gamma.is_some(),
                "CLV model fitted and predictions stored"
            );
            let json = serde_json::to_string_pretty(&fitted).context("cannot print the model")?;
            let mut out = std::io::stdout().lock();
            writeln!(out, "{json}").context("cannot write to stdout")?;
            Ok(ExitCode::SUCCESS)
        }
        Err(error @ FitError::Rejected { .. }) => {
            // Recorded in clv_fit_failures; said once, like any other error.
            let mut err = std::io::stderr().lock();
            writeln!(err, "error: {error}").context("cannot write to stderr")?;
            Ok(ExitCode::FAILURE)
        }
        Err(error) => Err(error.into()),
    }
}
