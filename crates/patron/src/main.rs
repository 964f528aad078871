//! `patron`: Patron's services and operator tasks in one binary.

mod cli;
mod commands;
mod observe;
mod reference;
mod telemetry;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

/// Decoding and batching allocate many small, short-lived values; mimalloc handles that load
/// markedly better than the system allocator (measured by `make bench`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let telemetry = {
        let _runtime = runtime.enter();
        match telemetry::init(&cli.log, cli.command.name()) {
            Ok(telemetry) => telemetry,
            Err(error) => {
                eprintln!("error: {error:#}");
                return ExitCode::FAILURE;
            }
        }
    };
    let result = runtime.block_on(async {
        if let Some(listen) = cli.metrics_listen {
            observe::start(listen, &cli.database, cli.command.kafka()).await?;
        }
        match cli.command {
            Command::Migrate => commands::migrate::run(&cli.database).await,
            Command::Import(args) => commands::import::run(&cli.database, args).await,
            Command::Events(args) => commands::events::run(&cli.database, args).await,
            Command::CheckHistories => commands::check::run(&cli.database).await,
            Command::Sources(command) => match command.action {
                None => commands::sources::list(&cli.database).await,
                Some(cli::SourcesAction::Release(args)) => {
                    commands::sources::release(&cli.database, &args).await
                }
            },
            Command::Ingest(args) => commands::ingest::run(&cli.database, args).await,
            Command::Project(args) => commands::project::run(&cli.database, args).await,
            Command::Relay(args) => commands::relay::run(&cli.database, args).await,
            Command::Rebuild(args) => commands::rebuild::run(&cli.database, args).await,
            Command::ConfigReference => {
                #[allow(clippy::print_stdout)]
                {
                    // With the markers, ready to replace the README's copy.
                    print!(
                        "{}\n{}{}\n",
                        reference::START,
                        reference::markdown(),
                        reference::END
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
            Command::Serve(args) => commands::serve::run(&cli.database, *args).await,
            Command::Api(args) => commands::api::run(&cli.database, args).await,
            Command::Fit(args) => commands::fit::run(&cli.database, args).await,
            Command::Rules(command) => match command.action {
                None => commands::rules::run(&command.rules),
                Some(cli::RulesAction::Diff(args)) => {
                    commands::rules::diff(&cli.database, &command.rules, &args).await
                }
            },
            Command::Dev(args) => commands::dev::run(&cli.database, args).await,
        }
    });
    let code = match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    };
    {
        let _runtime = runtime.enter();
        telemetry.shutdown();
    }
    code
}
