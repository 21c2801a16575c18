//! The TOML configuration of `destinations run`, `send`, `check` and `dlq`.
//!
//! ```toml
//! [queue]
//! path = "/var/lib/destinations"
//! max_bytes = 1073741824
//! when_full = "block"          # or "reject"
//!
//! [server]
//! listen = "127.0.0.1:8080"
//! token = "${DESTINATIONS_TOKEN}"
//!
//! [destinations.lake]
//! type = "s3"
//! url = "s3://my-bucket/events"
//! concurrency = 4
//!
//! [destinations.lake.batch]
//! max_events = 10000
//! max_age = "60s"
//!
//! [destinations.lake.retry]
//! max_attempts = 8
//! ```
//!
//! `${NAME}` in any string value is replaced by the environment variable `NAME` after the file
//! is parsed (write `$${` for a literal `${`), so secrets can stay out of the file; values are
//! never echoed in errors. Unknown keys are errors naming the key and its line.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use destination_core::{BatchSettings, RetryPolicy, Secret};
use serde::Deserialize;

use crate::queue::QueueConfig;

/// Room beyond `server.max_event_bytes` that `queue.max_bytes` must leave for one event's
/// record (its id, time, attributes and framing).
const MIN_QUEUE_SLACK: u64 = 64 << 10;

/// The text of the config file at `path`.
fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })
}

/// A parsed, interpolated and checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The `[queue]` section.
    pub queue: QueueConfig,
    /// The `[server]` section.
    pub server: ServerConfig,
    /// The `[shutdown]` section.
    pub shutdown: ShutdownConfig,
    /// The `[destinations.NAME]` tables, by name.
    pub destinations: BTreeMap<String, DestinationConfig>,
}

/// The `[server]` section: the HTTP ingest API of `destinations run`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on (default `127.0.0.1:8080`).
    pub listen: SocketAddr,
    /// Bearer token required on ingest requests, if set.
    pub token: Option<Secret>,
    /// Largest event accepted, in bytes of its JSON text as the request holds it, spaces
    /// and escapes included (an object written over several lines counts compacted);
    /// default 1 MiB.
    pub max_event_bytes: usize,
    /// Largest request body accepted, in bytes (default 16 MiB).
    pub max_body_bytes: usize,
    /// Most events one request may carry (default 10,000).
    pub max_events_per_request: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            token: None,
            max_event_bytes: 1 << 20,
            max_body_bytes: 16 << 20,
            max_events_per_request: 10_000,
        }
    }
}

/// The `[shutdown]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// How long shutdown spends delivering what was queued before it, open batches included
    /// (default 30 s); what is not delivered by then stays in the queue for the next start.
    #[serde(with = "destination_core::duration")]
    pub deadline: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(30),
        }
    }
}

/// How the runtime drives one destination, whatever its type.
#[derive(Debug, Clone, Default)]
pub struct DestinationSettings {
    /// Batch limits over the destination's defaults.
    pub batch: BatchSettings,
    /// The retry policy.
    pub retry: RetryPolicy,
    /// Batches delivered at once at most (default 4).
    pub concurrency: Option<usize>,
    /// A time limit per delivery attempt (default 60 s).
    pub attempt_timeout: Option<Duration>,
}

/// One `[destinations.NAME]` table.
#[derive(Debug, Clone)]
pub struct DestinationConfig {
    /// The `type` key: `s3`, `http`, `email`, `sql`, `snowflake` or `sse`.
    pub kind: String,
    /// The runtime's own keys.
    pub settings: DestinationSettings,
    /// Every other key, handed to the destination's own config type.
    pub options: toml::Table,
    /// Where the table starts in the file, for error messages.
    line: Option<usize>,
    /// The line of each key of `options`, for error messages.
    key_lines: BTreeMap<String, usize>,
    /// Values that came from the environment, kept out of error messages.
    redact: Redact,
}

/// Batches in flight per destination at most.
pub const MAX_CONCURRENCY: usize = 4096;

/// The values `${VAR}` interpolation put into the config: they may be secrets, and an error
/// message that quotes one (serde's "unknown variant `...`" does) must not show it.
#[derive(Clone, Default)]
struct Redact(Arc<Vec<String>>);

impl fmt::Debug for Redact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redact({} values)", self.0.len())
    }
}

impl Redact {
    fn text(&self, message: &str) -> String {
        let mut out = message.to_string();
        for value in self.0.iter().filter(|v| !v.is_empty()) {
            out = out.replace(value.as_str(), "REDACTED");
        }
        out
    }

    fn error(&self, error: ConfigError) -> ConfigError {
        match error {
            ConfigError::Invalid { message, line } => ConfigError::Invalid {
                message: self.text(&message),
                line,
            },
            other => other,
        }
    }
}

/// A configuration that could not be read or is invalid.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("config is not valid TOML: {0}")]
    Syntax(String),
    /// A key or value is wrong.
    #[error("{message}{}", at_line(*line))]
    Invalid {
        /// What is wrong, naming the key.
        message: String,
        /// The line of the key, when known.
        line: Option<usize>,
    },
}

fn at_line(line: Option<usize>) -> String {
    line.map(|l| format!(" (line {l})")).unwrap_or_default()
}

impl ConfigError {
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid {
            message: message.into(),
            line: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    queue: QueueConfig,
    #[serde(default)]
    server: ServerConfig,
    #[serde(default)]
    shutdown: ShutdownConfig,
    #[serde(default)]
    destinations: BTreeMap<String, toml::Table>,
}

impl Config {
    /// Reads and checks a config file; a relative `queue.path` is taken relative to the
    /// file's folder.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the file, the key and its line.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let config = Self::from_toml(&read_file(path)?)?;
        Ok(config.with_queue_beside(path))
    }

    /// The part of the config file at `path` that tools reading the queue folder need: the
    /// `[queue]` section and the destinations' names and types, with every other key left
    /// unread, so that a `${VAR}` elsewhere (the ingest token, a destination's credentials)
    /// need not be set.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the key, without a line: the part is checked on its own.
    pub fn queue_part_from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let mut table: toml::Table =
            toml::from_str(&read_file(path)?).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        table.retain(|key, _| key == "queue" || key == "destinations");
        if let Some(toml::Value::Table(destinations)) = table.get_mut("destinations") {
            for (_, destination) in destinations.iter_mut() {
                if let toml::Value::Table(destination) = destination {
                    destination.retain(|key, _| key == "type");
                }
            }
        }
        let config = Self::from_toml(&table.to_string()).map_err(|e| match e {
            ConfigError::Invalid { message, .. } => ConfigError::Invalid {
                message,
                line: None,
            },
            other => other,
        })?;
        Ok(config.with_queue_beside(path))
    }

    /// A relative queue path is taken from the folder of the config file at `path`.
    fn with_queue_beside(mut self, path: &Path) -> Self {
        if self.queue.path.is_relative() {
            let dir = path.parent().unwrap_or(Path::new("."));
            self.queue.path = dir.join(&self.queue.path);
        }
        self
    }

    /// Parses and checks a config from TOML text, reading `${VAR}`s from the environment.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the key and its line.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::from_toml_with_env(text, |name| std::env::var(name).ok())
    }

    /// Like [`from_toml`](Self::from_toml) with another source of variables.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the key and its line.
    pub fn from_toml_with_env(
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        let mut secrets = Vec::new();
        interpolate_table(&mut table, "", &env, text, &mut secrets)?;
        let redact = Redact(Arc::new(secrets));

        let raw = RawConfig::deserialize(toml::Value::Table(table))
            .map_err(|e| redact.error(located(text, "", &e.to_string())))?;
        if raw
            .server
            .token
            .as_ref()
            .is_some_and(|t| t.expose().trim().is_empty())
        {
            return Err(ConfigError::Invalid {
                message: "server.token is empty; remove it to turn authentication off".into(),
                line: key_line(text, "server", "token"),
            });
        }
        if raw.destinations.is_empty() {
            return Err(ConfigError::invalid(
                "no destination is configured: add a [destinations.NAME] table",
            ));
        }
        // The largest event must fit in the queue with its record, or it could never be sent.
        let least = raw.server.max_event_bytes as u64 + MIN_QUEUE_SLACK;
        if raw.queue.max_bytes < least {
            return Err(ConfigError::Invalid {
                message: format!(
                    "queue.max_bytes ({}) must hold at least one event of server.max_event_bytes \
                     ({}) and its record: at least {least}",
                    raw.queue.max_bytes, raw.server.max_event_bytes
                ),
                line: key_line(text, "queue", "max_bytes"),
            });
        }

        let mut destinations = BTreeMap::new();
        for (name, table) in raw.destinations {
            let parsed = DestinationConfig::parse(&name, table, text, &redact)
                .map_err(|e| redact.error(e))?;
            destinations.insert(name, parsed);
        }
        Ok(Self {
            queue: raw.queue,
            server: raw.server,
            shutdown: raw.shutdown,
            destinations,
        })
    }
}

impl DestinationConfig {
    fn parse(
        name: &str,
        mut table: toml::Table,
        text: &str,
        redact: &Redact,
    ) -> Result<Self, ConfigError> {
        let section = format!("destinations.{name}");
        let line = header_line(text, &section);
        valid_name(name).map_err(|message| ConfigError::Invalid { message, line })?;

        let kind = match table.remove("type") {
            Some(toml::Value::String(kind)) => kind,
            Some(_) => {
                return Err(ConfigError::Invalid {
                    message: format!("{section}.type must be a string"),
                    line: key_line(text, &section, "type"),
                });
            }
            None => {
                return Err(ConfigError::Invalid {
                    message: format!(
                        "{section} has no `type` (one of s3, http, email, sql, snowflake, sse)"
                    ),
                    line,
                });
            }
        };

        let mut settings = DestinationSettings::default();
        if let Some(batch) = table.remove("batch") {
            let section = format!("{section}.batch");
            settings.batch = BatchSettings::deserialize(batch)
                .map_err(|e| located(text, &section, &e.to_string()))?;
        }
        if let Some(retry) = table.remove("retry") {
            let section = format!("{section}.retry");
            settings.retry = RetryPolicy::deserialize(retry)
                .map_err(|e| located(text, &section, &e.to_string()))?;
            settings
                .retry
                .validate()
                .map_err(|message| ConfigError::Invalid {
                    message: format!("{section}: {message}"),
                    line: header_line(text, &section),
                })?;
        }
        if let Some(value) = table.remove("concurrency") {
            match value.as_integer() {
                Some(n) if (1..=MAX_CONCURRENCY as i64).contains(&n) => {
                    settings.concurrency = Some(n as usize)
                }
                _ => {
                    return Err(ConfigError::Invalid {
                        message: format!(
                            "{section}.concurrency must be a whole number from 1 to {MAX_CONCURRENCY}"
                        ),
                        line: key_line(text, &section, "concurrency"),
                    });
                }
            }
        }
        if let Some(value) = table.remove("attempt_timeout") {
            let timeout = destination_core::duration::deserialize(value)
                .map_err(|e| located(text, &section, &format!("attempt_timeout: {e}")))?;
            if timeout.is_zero() {
                return Err(ConfigError::Invalid {
                    message: format!(
                        "{section}.attempt_timeout must be longer than 0s: every attempt would \
                         time out"
                    ),
                    line: key_line(text, &section, "attempt_timeout"),
                });
            }
            settings.attempt_timeout = Some(timeout);
        }

        let key_lines = table
            .keys()
            .filter_map(|key| Some((key.clone(), key_line(text, &section, key)?)))
            .collect();
        Ok(Self {
            kind,
            settings,
            options: table,
            line,
            key_lines,
            redact: redact.clone(),
        })
    }

    /// Turns an error from the destination's own config type into one naming the key and
    /// its line in this table.
    pub(crate) fn error(&self, name: &str, message: &str) -> ConfigError {
        let line = unknown_field(message)
            .and_then(|key| self.key_lines.get(key).copied())
            .or(self.line);
        ConfigError::Invalid {
            message: self.redact.text(&format!("destinations.{name}: {message}")),
            line,
        }
    }
}

/// Destination names appear in URLs, metrics labels and file names.
fn valid_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "destination name {name:?} must be 1 to 64 letters, digits, '_' or '-'"
        ))
    }
}

fn interpolate_table(
    table: &mut toml::Table,
    path: &str,
    env: &impl Fn(&str) -> Option<String>,
    text: &str,
    secrets: &mut Vec<String>,
) -> Result<(), ConfigError> {
    for (key, value) in table.iter_mut() {
        let here = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        interpolate_value(value, &here, env, text, secrets)?;
    }
    Ok(())
}

fn interpolate_value(
    value: &mut toml::Value,
    path: &str,
    env: &impl Fn(&str) -> Option<String>,
    text: &str,
    secrets: &mut Vec<String>,
) -> Result<(), ConfigError> {
    match value {
        toml::Value::String(s) if s.contains('$') => {
            let used = std::cell::RefCell::new(Vec::new());
            let recording = |name: &str| {
                let value = env(name);
                if let Some(v) = &value {
                    used.borrow_mut().push(v.clone());
                }
                value
            };
            let result = interpolate(s, &recording);
            secrets.extend(used.into_inner());
            *s = result.map_err(|message| {
                let (section, key) = path.rsplit_once('.').unwrap_or(("", path));
                ConfigError::Invalid {
                    message: format!("{path}: {message}"),
                    line: key_line(text, section, key),
                }
            })?;
        }
        toml::Value::Table(t) => interpolate_table(t, path, env, text, secrets)?,
        toml::Value::Array(items) => {
            for item in items {
                interpolate_value(item, path, env, text, secrets)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Replaces `${NAME}` with the variable's value; `$${` stands for a literal `${`.
fn interpolate(input: &str, env: &impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix("${") {
            out.push_str("${");
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| "unclosed `${` in value".to_string())?;
            let name = &body[..end];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("invalid variable name {name:?} in `${{...}}`"));
            }
            let value =
                env(name).ok_or_else(|| format!("environment variable {name} is not set"))?;
            out.push_str(&value);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The key named in a serde "unknown field" message.
fn unknown_field(message: &str) -> Option<&str> {
    let start = message.find("unknown field `")? + "unknown field `".len();
    let len = message[start..].find('`')?;
    Some(&message[start..start + len])
}

fn located(text: &str, section: &str, message: &str) -> ConfigError {
    // Errors inside nested tables end with "in `path.to.table`".
    let (message, inner) = match message.trim_end().rsplit_once("in `") {
        Some((head, tail)) if tail.ends_with('`') => (head.trim_end(), tail.trim_end_matches('`')),
        _ => (message.trim_end(), ""),
    };
    let section = match (section.is_empty(), inner.is_empty()) {
        (_, true) => section.to_string(),
        (true, false) => inner.to_string(),
        (false, false) => format!("{section}.{inner}"),
    };
    let line = unknown_field(message).and_then(|key| key_line(text, &section, key));
    let message = if section.is_empty() {
        message.to_string()
    } else {
        format!("{section}: {message}")
    };
    ConfigError::Invalid { message, line }
}

/// Finds the line (1-based) where `key` is set in `section`, or where a table of that name
/// starts.
pub(crate) fn key_line(text: &str, section: &str, key: &str) -> Option<usize> {
    let full = if section.is_empty() {
        key.to_string()
    } else {
        format!("{section}.{key}")
    };
    let mut current = String::new();
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            current = trimmed.trim_matches(['[', ']']).trim().to_string();
            if current == full {
                return Some(index + 1);
            }
            continue;
        }
        if current != section {
            continue;
        }
        let bare = trimmed.trim_start_matches(['"', '\'']);
        if let Some(after) = bare.strip_prefix(key) {
            let after = after.trim_start_matches(['"', '\'']).trim_start();
            if after.starts_with('=') || after.starts_with('.') {
                return Some(index + 1);
            }
        }
    }
    None
}

fn header_line(text: &str, section: &str) -> Option<usize> {
    text.lines().enumerate().find_map(|(index, line)| {
        let header = line
            .trim()
            .strip_prefix('[')?
            .trim_end()
            .strip_suffix(']')?;
        (header.trim() == section).then_some(index + 1)
    })
}

impl fmt::Display for DestinationConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} destination", self.kind)
    }
}

#[cfg(test)]
mod tests;
