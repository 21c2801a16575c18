//! From a `[destinations.NAME]` table to a destination, for the types this build includes.

use std::sync::Arc;

use destination_core::Destination;

use crate::config::{ConfigError, DestinationConfig};

/// Every destination type the project knows, compiled in or not.
const KNOWN: [&str; 6] = ["s3", "http", "email", "sql", "snowflake", "sse"];

/// Builds the destination that one `[destinations.NAME]` table describes, without starting
/// anything.
///
/// # Errors
///
/// [`ConfigError`] when the type is unknown or not compiled in, or its options are invalid.
pub fn build(name: &str, config: &DestinationConfig) -> Result<Arc<dyn Destination>, ConfigError> {
    let built = build_unchecked(name, config)?;
    built
        .default_batch()
        .with_settings(&config.settings.batch)
        .map_err(|message| config.error(name, &message))?;
    Ok(built)
}

fn build_unchecked(
    name: &str,
    config: &DestinationConfig,
) -> Result<Arc<dyn Destination>, ConfigError> {
    let invalid = |message: String| config.error(name, &message);
    match config.kind.as_str() {
        #[cfg(feature = "s3")]
        "s3" => {
            let options = parse(name, config)?;
            let built = destination_s3::S3Destination::new(name, options);
            Ok(Arc::new(built.map_err(|e| invalid(chain(&e)))?))
        }
        #[cfg(feature = "http")]
        "http" => {
            let options = parse(name, config)?;
            let built = destination_http::HttpDestination::new(name, options);
            Ok(Arc::new(built.map_err(|e| invalid(chain(&e)))?))
        }
        #[cfg(feature = "sql")]
        "sql" => {
            let options = parse(name, config)?;
            let built = destination_sql::SqlDestination::new(name, options);
            Ok(Arc::new(built.map_err(|e| invalid(chain(&e)))?))
        }
        kind @ ("email" | "snowflake" | "sse") => Err(invalid(format!(
            "destination type `{kind}` is not implemented yet (only s3, http and sql are)"
        ))),
        kind if KNOWN.contains(&kind) => Err(invalid(format!(
            "destination type `{kind}` is not available in this build (enable the Cargo feature \
             `{kind}` of the `destinations` package, or `full`)"
        ))),
        kind => Err(invalid(format!(
            "unknown destination type `{kind}` (expected one of {})",
            KNOWN.join(", ")
        ))),
    }
}

/// Deserializes the destination's own options, naming the offending key and its line.
#[cfg_attr(
    not(any(feature = "s3", feature = "http", feature = "sql")),
    allow(dead_code)
)]
fn parse<T: serde::de::DeserializeOwned>(
    name: &str,
    config: &DestinationConfig,
) -> Result<T, ConfigError> {
    T::deserialize(toml::Value::Table(config.options.clone()))
        .map_err(|e| config.error(name, e.message()))
}

/// An error and its causes on one line.
pub(crate) fn chain(err: &dyn std::error::Error) -> String {
    destination_core::error_chain(err)
}
