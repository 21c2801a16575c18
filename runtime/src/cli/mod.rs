//! The subcommands of the `destinations` binary.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use destinations::{Config, ConfigError, Runtime};
use tracing_subscriber::EnvFilter;

pub(crate) mod deliveries;
pub(crate) mod dlq;
pub(crate) mod run;
pub(crate) mod send;

/// A failure that ends the command, already rendered with its causes.
pub(crate) type Failure = String;

/// An error and its causes on one line.
pub(crate) fn chain(err: &dyn std::error::Error) -> String {
    destination_core::error_chain(err)
}

/// Logs to stderr; `RUST_LOG` overrides the level.
pub(crate) fn init_tracing(default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

pub(crate) fn load(path: &Path) -> Result<Config, Failure> {
    Config::from_file(path).map_err(|e| chain(&e))
}

/// Loads the config for commands that only read the queue folder (`deliveries`, `dlq
/// list`): when the whole config does not load (an unset `${VAR}` for the ingest token or a
/// destination's credentials, say), the part of it they need is enough, and an error in
/// that part is the one reported.
pub(crate) fn load_for_reading(path: &Path) -> Result<Config, Failure> {
    Config::from_file(path).or_else(|whole| match Config::queue_part_from_file(path) {
        Ok(config) => Ok(config),
        Err(part @ ConfigError::Invalid { .. }) => Err(chain(&part)),
        Err(_) => Err(chain(&whole)),
    })
}

pub(crate) async fn start(config: &Config) -> Result<Runtime, Failure> {
    Runtime::from_config(config).await.map_err(|e| chain(&e))
}

/// `destinations check`: the config parses, every destination builds and its health check
/// passes. The queue is not opened, so this is safe next to a running service.
pub(crate) async fn check(path: &Path) -> Result<ExitCode, Failure> {
    let config = load(path)?;
    let mut out = std::io::stdout().lock();
    let mut failed = 0;
    for (name, dest) in &config.destinations {
        let built = match destinations::build_destination(name, dest) {
            Ok(built) => built,
            Err(err) => {
                let _ = writeln!(out, "{name}: invalid: {}", chain(&err));
                failed += 1;
                continue;
            }
        };
        match built.health_check().await {
            Ok(()) => {
                let _ = writeln!(out, "{name}: ok ({})", dest.kind);
            }
            Err(err) => {
                let _ = writeln!(out, "{name}: health check failed: {}", err.chain());
                failed += 1;
            }
        }
    }
    if failed == 0 {
        let _ = writeln!(
            out,
            "config ok: {} destination(s)",
            config.destinations.len()
        );
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::from(1))
    }
}
