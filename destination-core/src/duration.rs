//! Serde support for durations written as `"250ms"`, `"30s"`, `"5m"` or a number of seconds.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer, de};

/// Serializes a duration as a human-readable string such as `"1m 30s"`.
///
/// # Errors
///
/// Whatever the serializer returns.
pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&humantime::format_duration(*value).to_string())
}

/// Deserializes `"250ms"`, `"30s"`, `"1h"` or a plain number of seconds.
///
/// # Errors
///
/// A message that shows the expected forms.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(u64),
        Float(f64),
        Text(String),
    }
    match Raw::deserialize(deserializer)? {
        Raw::Secs(secs) => Ok(Duration::from_secs(secs)),
        Raw::Float(secs) if secs.is_finite() && secs >= 0.0 => Ok(Duration::from_secs_f64(secs)),
        Raw::Float(secs) => Err(de::Error::custom(format!("invalid duration {secs}"))),
        Raw::Text(text) => humantime::parse_duration(&text).map_err(|e| {
            de::Error::custom(format!(
                "invalid duration {text:?} ({e}); write it as \"250ms\", \"30s\" or \"5m\""
            ))
        }),
    }
}
