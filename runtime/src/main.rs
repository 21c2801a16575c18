//! The `destinations` command: the delivery service, the one-shot send job, config checks
//! and the dead-letter tools.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Durable, batched event delivery.
#[derive(Debug, Parser)]
#[command(name = "destinations", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the service: the HTTP ingest API and one worker per destination.
    Run {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Queues every NDJSON line of a file (or stdin) for one destination and waits until
    /// each is delivered or dead-lettered.
    Send {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
        /// The destination's name.
        #[arg(long)]
        to: String,
        /// The NDJSON file, or `-` for stdin.
        #[arg(default_value = "-")]
        input: String,
    },
    /// Validates the config and runs every destination's health check.
    Check {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Shows recent delivery records: each batch's outcome, and what the target last
    /// answered for each event when the destination records it (HTTP).
    Deliveries {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Only this destination's.
        #[arg(long)]
        destination: Option<String>,
        /// Only the records about this event id.
        #[arg(long)]
        event: Option<String>,
        /// How many of the newest records to show.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print the records as JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Lists or replays dead letters.
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
}

#[derive(Debug, Subcommand)]
enum DlqAction {
    /// Lists dead letters.
    List {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Only this destination's.
        #[arg(long)]
        destination: Option<String>,
    },
    /// Queues dead letters' events again and waits for their delivery.
    Replay {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Only this destination's.
        #[arg(long)]
        destination: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Run { .. } => "info",
        _ => "warn",
    };
    cli::init_tracing(default_level);

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run { config } => cli::run::run(&config).await,
            Command::Send { config, to, input } => cli::send::send(&config, &to, &input).await,
            Command::Check { config } => cli::check(&config).await,
            Command::Deliveries {
                config,
                destination,
                event,
                limit,
                json,
            } => cli::deliveries::show(
                &config,
                destination.as_deref(),
                event.as_deref(),
                limit,
                json,
            ),
            Command::Dlq { action } => match action {
                DlqAction::List {
                    config,
                    destination,
                } => cli::dlq::list(&config, destination.as_deref()).await,
                DlqAction::Replay {
                    config,
                    destination,
                } => cli::dlq::replay(&config, destination.as_deref()).await,
            },
        }
    });
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(2)
        }
    }
}
