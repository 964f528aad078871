//! `patron`: Patron's services and operator tasks in one binary.

mod cli;
mod commands;
mod observe;
mod reference;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command, LogFormat};

/// Decoding and batching allocate many small, short-lived values; mimalloc handles that load
/// markedly better than the system allocator (measured by `make bench`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli.log.log, cli.log.log_format);
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
    let result = runtime.block_on(async {
        if let Some(listen) = cli.metrics_listen {
            observe::start(listen, &cli.database).await?;
        }
        match cli.command {
            Command::Migrate => commands::migrate::run(&cli.database).await,
            Command::Import(args) => commands::import::run(&cli.database, args).await,
            Command::Events(args) => commands::events::run(&cli.database, args).await,
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
            Command::Serve(args) => commands::serve::run(&cli.database, args).await,
            Command::Api(args) => commands::api::run(&cli.database, args).await,
            Command::Rules(args) => commands::rules::run(&args),
            Command::Dev(args) => commands::dev::run(&cli.database, args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(filter: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
