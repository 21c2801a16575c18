//! Configuration: what a user writes, and a builder for programmatic use.

use destination_core::Secret;
use serde::{Deserialize, Deserializer};

/// The smallest multipart part S3 accepts (every part but the last).
pub const MIN_S3_PART_SIZE: usize = 5 * 1024 * 1024;
/// The part size used when `part_size_bytes` is unset.
pub const DEFAULT_PART_SIZE: usize = 8 * 1024 * 1024;

/// Configuration of an S3 (or other object store) destination.
///
/// # Examples
///
/// ```
/// use destination_s3::{Format, S3Config};
///
/// let config: S3Config = serde_json::from_str(r#"{
///     "url": "s3://analytics/events",
///     "region": "eu-west-1",
///     "format": "ndjson",
///     "key_template": "hive"
/// }"#)?;
/// assert_eq!(config.format, Format::Ndjson);
///
/// let same = S3Config::new("s3://analytics/events")
///     .with_region("eu-west-1")
///     .with_format(Format::Ndjson)
///     .with_key_template("hive");
/// assert_eq!(same.key_template, config.key_template);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// Where objects go: `s3://bucket/prefix`, `file:///absolute/dir`, `memory:///prefix`,
    /// or another URL object_store understands. Every key starts with this prefix.
    pub url: String,
    /// The AWS region; defaults to `AWS_REGION` / `AWS_DEFAULT_REGION`, else `us-east-1`.
    #[serde(default)]
    pub region: Option<String>,
    /// A custom S3 endpoint, such as `http://127.0.0.1:9000` for an S3-compatible server.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Put the bucket in the request path (`endpoint/bucket/key`) instead of the host name
    /// (`bucket.endpoint/key`); S3-compatible servers on an IP address need `true`.
    #[serde(default)]
    pub force_path_style: bool,
    /// Allow `http://` endpoints (plain text). Off by default.
    #[serde(default)]
    pub allow_http: bool,
    /// The access key id. When unset, credentials come from the environment
    /// (`AWS_ACCESS_KEY_ID`, ...) and then the AWS chain (web identity, container, instance).
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// The secret access key; required with `access_key_id`.
    #[serde(default)]
    pub secret_access_key: Option<Secret>,
    /// A session token for temporary credentials.
    #[serde(default)]
    pub session_token: Option<Secret>,
    /// The file format: `parquet` (default) or `ndjson`.
    #[serde(default)]
    pub format: Format,
    /// The compression: for Parquet `snappy` (default), `zstd` or `none`; for NDJSON
    /// `gzip` (default), `zstd` or `none`.
    #[serde(default)]
    pub compression: Option<Compression>,
    /// The object key under the URL's prefix. Placeholders: `{prefix}` (the events'
    /// `prefix` attribute, or nothing), `{yyyy}`, `{mm}`, `{dd}`, `{hh}` (UTC, all from the
    /// first event's `sent_at`), `{batch}` (first and last event ids; required) and `{ext}`.
    /// The names `default` (`{prefix}/{yyyy}/{mm}/{dd}/{hh}/{batch}.{ext}`) and `hive`
    /// (`{prefix}/dt={yyyy}-{mm}-{dd}/{batch}.{ext}`) select built-in templates.
    #[serde(default)]
    pub key_template: Option<String>,
    /// How the Parquet schema is chosen: `"infer"` (default, per object from its events)
    /// or a fixed schema; see [`SchemaPolicy`].
    #[serde(default)]
    pub schema: SchemaPolicy,
    /// Objects larger than this are uploaded in parts of this size (multipart upload), so
    /// memory stays bounded. Default 8 MiB; S3 needs at least 5 MiB.
    #[serde(default)]
    pub part_size_bytes: Option<usize>,
}

/// The file format of the objects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Apache Parquet, one row per event, schema per [`SchemaPolicy`].
    #[default]
    Parquet,
    /// Newline-delimited JSON, one line per event.
    Ndjson,
}

/// A compression codec.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Snappy (Parquet only).
    Snappy,
    /// Zstandard.
    Zstd,
    /// Gzip (NDJSON only).
    Gzip,
    /// No compression.
    None,
}

/// How the Parquet schema of an object is chosen.
///
/// Written as the string `"infer"`, or as a table with `mode` and `fields`:
///
/// ```
/// use destination_s3::{SchemaMode, SchemaPolicy};
///
/// let policy: SchemaPolicy = serde_json::from_str(r#"{
///     "mode": "strict",
///     "fields": [
///         {"name": "action", "type": "string"},
///         {"name": "labels", "type": {"list": "string"}},
///         {"name": "user", "type": {"struct": [{"name": "id", "type": "int"}]}}
///     ]
/// }"#)?;
/// assert!(matches!(policy, SchemaPolicy::Fixed(ref s) if s.mode == SchemaMode::Strict));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub enum SchemaPolicy {
    /// Infer the schema of each object from its events (see the crate docs).
    #[default]
    Infer,
    /// Use this schema for every object.
    Fixed(UserSchema),
}

/// A schema given by the user: the columns after `_event_id` and `_sent_at`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserSchema {
    /// What happens to events that do not fit.
    pub mode: SchemaMode,
    /// The payload's top-level keys, in column order.
    pub fields: Vec<ColumnSpec>,
}

/// What happens to an event that does not fit a [`UserSchema`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SchemaMode {
    /// The event is rejected (dead-lettered); the other events of the batch are written.
    Strict,
    /// Keys missing from the schema are dropped, values of the wrong type are stored as
    /// null.
    Relaxed,
}

/// One field of a [`UserSchema`].
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    /// The payload key.
    pub name: String,
    /// Its type.
    #[serde(rename = "type")]
    pub data_type: ColumnType,
}

/// The type of a [`ColumnSpec`].
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    /// `true` or `false` (Arrow Boolean).
    Bool,
    /// An integer that fits 64 bits (Arrow Int64).
    Int,
    /// Any number (Arrow Float64).
    Float,
    /// A string (Arrow Utf8).
    String,
    /// Any value, stored as its JSON text (Arrow Utf8).
    Json,
    /// An array of this type (Arrow List).
    List(Box<ColumnType>),
    /// An object with these keys (Arrow Struct).
    Struct(Vec<ColumnSpec>),
}

impl<'de> Deserialize<'de> for SchemaPolicy {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Name(String),
            Fixed(UserSchema),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Name(name) if name == "infer" => Ok(Self::Infer),
            Raw::Name(other) => Err(serde::de::Error::custom(format!(
                "schema must be \"infer\" or a table with mode and fields, not {other:?}"
            ))),
            Raw::Fixed(schema) => Ok(Self::Fixed(schema)),
        }
    }
}

impl S3Config {
    /// A configuration for `url` with every other setting at its default.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            region: None,
            endpoint: None,
            force_path_style: false,
            allow_http: false,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            format: Format::default(),
            compression: None,
            key_template: None,
            schema: SchemaPolicy::default(),
            part_size_bytes: None,
        }
    }

    /// Sets the region.
    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Sets a custom endpoint; `path_style` as in [`force_path_style`](Self::force_path_style),
    /// and `http://` endpoints are allowed.
    pub fn with_endpoint(mut self, endpoint: impl Into<String>, path_style: bool) -> Self {
        let endpoint = endpoint.into();
        self.allow_http = endpoint.starts_with("http://");
        self.endpoint = Some(endpoint);
        self.force_path_style = path_style;
        self
    }

    /// Sets static credentials.
    pub fn with_credentials(
        mut self,
        key_id: impl Into<String>,
        secret: impl Into<Secret>,
    ) -> Self {
        self.access_key_id = Some(key_id.into());
        self.secret_access_key = Some(secret.into());
        self
    }

    /// Sets the file format.
    pub fn with_format(mut self, format: Format) -> Self {
        self.format = format;
        self
    }

    /// Sets the compression.
    pub fn with_compression(mut self, compression: Compression) -> Self {
        self.compression = Some(compression);
        self
    }

    /// Sets the key template (or `default` / `hive`).
    pub fn with_key_template(mut self, template: impl Into<String>) -> Self {
        self.key_template = Some(template.into());
        self
    }

    /// Sets the schema policy.
    pub fn with_schema(mut self, schema: SchemaPolicy) -> Self {
        self.schema = schema;
        self
    }

    /// Sets the multipart part size.
    pub fn with_part_size(mut self, bytes: usize) -> Self {
        self.part_size_bytes = Some(bytes);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_config_takes_defaults() {
        let c: S3Config = serde_json::from_str(r#"{"url": "file:///tmp/x"}"#).unwrap();
        assert_eq!(c, S3Config::new("file:///tmp/x"));
        assert_eq!(c.format, Format::Parquet);
        assert_eq!(c.schema, SchemaPolicy::Infer);
    }

    #[test]
    fn unknown_and_runtime_keys_are_rejected() {
        for key in ["bucket", "type", "batch", "retry", "concurrency"] {
            let text = format!(r#"{{"url": "s3://b", "{key}": 1}}"#);
            let err = serde_json::from_str::<S3Config>(&text).unwrap_err();
            assert!(err.to_string().contains(key), "{err}");
        }
    }

    #[test]
    fn secrets_do_not_show_in_debug() {
        let c: S3Config = serde_json::from_str(
            r#"{"url": "s3://b", "access_key_id": "AKIA", "secret_access_key": "hunter2"}"#,
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn schema_is_infer_or_a_table() {
        let c: S3Config = serde_json::from_str(r#"{"url": "s3://b", "schema": "infer"}"#).unwrap();
        assert_eq!(c.schema, SchemaPolicy::Infer);
        assert!(
            serde_json::from_str::<S3Config>(r#"{"url": "s3://b", "schema": "guess"}"#).is_err()
        );
        let c: S3Config = serde_json::from_str(
            r#"{"url": "s3://b", "schema": {"mode": "relaxed",
                "fields": [{"name": "n", "type": {"list": {"list": "float"}}}]}}"#,
        )
        .unwrap();
        let SchemaPolicy::Fixed(s) = c.schema else {
            panic!("not fixed")
        };
        assert_eq!(s.mode, SchemaMode::Relaxed);
        let nested = ColumnType::List(Box::new(ColumnType::List(Box::new(ColumnType::Float))));
        assert_eq!(s.fields[0].data_type, nested);
    }
}
