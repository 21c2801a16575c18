//! An S3 (and object store) destination for Destinations: each batch becomes one Parquet
//! or NDJSON object.
//!
//! [`S3Destination`] writes to `s3://bucket/prefix` (AWS or any S3-compatible server),
//! `file:///dir`, `memory:///` or another URL object_store understands; [`S3Config`]
//! lists the settings.
//!
//! # Object keys
//!
//! `{prefix}/{yyyy}/{mm}/{dd}/{hh}/{batch}.{ext}` under the URL's path by default, or
//! `{prefix}/dt={yyyy}-{mm}-{dd}/{batch}.{ext}` with `key_template = "hive"`. `{prefix}` is
//! the events' `prefix` attribute (events with different prefixes are never batched
//! together); the date parts all come from the first event's `sent_at`, in UTC; `{batch}`
//! is the first and last event ids, so a redelivered batch overwrites its own object.
//! A prefix is split at `/` into folders; a `.` or `..` folder is refused (the batch is
//! dead-lettered), empty ones are dropped, and UTF-8 is kept as it is, while ASCII control
//! characters and the characters AWS and Google advise against in object names
//! (`` \ { ^ } % ` ] " > [ ~ < # | * ? ``) are percent-encoded: `q?x` becomes `q%3Fx`.
//!
//! # Columns
//!
//! Every row starts with `_event_id` (Utf8, the event id) and `_sent_at` (timestamp in
//! microseconds, UTC), followed by the payload's top-level keys in the order they first
//! appear in the batch's JSON text. A payload that is not a JSON object is stored in a
//! `_value` column. A payload key that would collide with one of these three names gets a
//! `_payload` prefix: `_event_id` is stored as `_payload_event_id`, and a key that already
//! looks like that (`_payload_event_id`) gets one more prefix, so names never collide and
//! a key's column name is the same in every object. NDJSON lines carry the same names, with
//! each payload's keys in the order it was sent, repeats included, and each value's JSON
//! text exactly as sent (an integer beyond 64 bits keeps every digit there).
//!
//! # Schema inference
//!
//! With `schema = "infer"` (the default), each Parquet object's schema is inferred from
//! all of its events, field by field:
//!
//! | JSON values seen for a field        | Arrow / Parquet column                       |
//! |-------------------------------------|----------------------------------------------|
//! | booleans                            | Boolean                                      |
//! | integers that fit an `i64`          | Int64                                        |
//! | numbers, one or more not an `i64`   | Float64 (integers are widened to floats)     |
//! | strings                             | Utf8                                         |
//! | arrays                              | List of the merged element type              |
//! | objects with at least one key       | Struct of the merged keys, in first-seen order|
//! | anything else mixed (string and number, object and array, ...) | Utf8 of JSON text |
//! | only nulls, only empty objects `{}` | Utf8 of JSON text (null or `"{}"`)           |
//!
//! The rules apply at every depth (an array of mixed items is a list of JSON text), down
//! to [`MAX_NESTING`] (32) nested lists and structs in a column; values nested deeper are
//! stored as JSON text, since Parquet readers refuse to open files whose schemas nest
//! past about 60 levels.
//! Nulls never decide a type; a null or absent key is a null cell. A JSON-text column
//! holds each value serialised as JSON (a string value keeps its quotes), and its Arrow
//! field carries the metadata `destinations.encoding = json`, so readers can parse it back.
//! Integers beyond `i64` are stored as Float64. Strings are never parsed as dates. Of a
//! key repeated within one object, the last value is stored (as `Event::payload` reads
//! it), though the earlier ones also count in the inferred type; a JSON-text cell keeps
//! its object's keys in their order, repeats included.
//!
//! Because the schema is inferred per object, a field can have different types in
//! different objects; a fixed [`SchemaPolicy`] gives every object the same schema.
//!
//! # Fixed schemas
//!
//! [`SchemaPolicy::Fixed`] gives the columns and their types. In `strict` mode an event
//! with a key the schema lacks, or a value of another type (an integer fits a `float`
//! column, anything fits `json`), is rejected: the other events are written and the
//! delivery returns a permanent error naming only the rejected ids, which the runtime
//! dead-letters. In `relaxed` mode unknown keys are dropped and misfitting values become
//! nulls. Both modes also filter NDJSON objects the same way (relaxed writes payloads
//! unchanged).
//!
//! # Known limitations
//!
//! - Multipart parts of a process killed mid-upload stay in the bucket, billed, until a
//!   lifecycle rule with `AbortIncompleteMultipartUpload` removes them: configure one on
//!   the bucket. So do the parts of an upload whose abort failed and kept failing for an
//!   hour of background retries (the store unreachable all that time), or was still
//!   failing when the process shut down (closing the destination waits 5 s for such
//!   aborts, and logs those left).
//! - The whole batch is in memory already (the runtime holds it); the encoder adds a
//!   reading of the batch's JSON text about as large as the text (for the real GitHub
//!   payloads, 0.97 times), released chunk by chunk, and about one part
//!   (`part_size_bytes`) of buffered output.
//! - With no credentials configured, the AWS chain may query the instance metadata
//!   service, as the AWS SDKs do.
//!
//! # Errors
//!
//! Throttling (503 `SlowDown`, 429) is reported as rate limited; other 5xx, timeouts and
//! connection errors as retryable; a missing bucket, access denied or rejected
//! credentials as a configuration error naming the bucket; other 4xx as permanent.

#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod client;
mod config;
mod destination;
mod encode;
mod error;
mod format;
mod infer;
mod key;
mod schema;
mod tape;
#[cfg(test)]
mod tape_fuzz;

pub use config::{
    ColumnSpec, ColumnType, Compression, DEFAULT_PART_SIZE, Format, MIN_S3_PART_SIZE, S3Config,
    SchemaMode, SchemaPolicy, UserSchema,
};
pub use destination::{PREFIX_ATTRIBUTE, S3Destination};
pub use encode::payload_key;
pub use error::S3Error;
pub use infer::{
    ENCODING_JSON, ENCODING_KEY, EVENT_ID_COLUMN, MAX_NESTING, RENAME_PREFIX, SENT_AT_COLUMN,
    VALUE_COLUMN, column_name,
};
pub use key::{DEFAULT_KEY_TEMPLATE, HIVE_KEY_TEMPLATE};
