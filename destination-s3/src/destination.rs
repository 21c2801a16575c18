//! The `Destination` implementation: one object per batch.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use destination_core::{Batch, BatchConfig, DeliveryError, Destination, Event};
use object_store::ObjectStore;
use object_store::path::Path;
use tracing::Instrument;

use crate::client::{self, ObjectSink, Target};
use crate::config::{Compression, DEFAULT_PART_SIZE, Format, S3Config};
use crate::error::S3Error;
use crate::format::{self, WriteError};
use crate::key::{DEFAULT_KEY_TEMPLATE, KeyTemplate};
use crate::schema::Plan;

/// The event attribute that selects a key prefix (and a batch partition).
pub const PREFIX_ATTRIBUTE: &str = "prefix";

/// Writes each batch as one object (Parquet or NDJSON) to S3 or another object store.
///
/// # Contract
///
/// - The key is derived from the batch alone: the template filled with the first
///   event's `sent_at` (UTC) and [`Batch::key`]. A retried or replayed batch overwrites the
///   same object, so each event is stored once per key.
/// - Nothing is visible under the key until the whole object is written (single put, or a
///   completed multipart upload; a temporary file and rename for `file://`).
/// - A failed multipart upload is aborted; an abort that fails because the store cannot
///   be reached is tried again in the background. A process killed mid-upload leaves
///   parts that only a bucket lifecycle rule (`AbortIncompleteMultipartUpload`) removes.
///
/// # Examples
///
/// ```
/// use destination_core::{Batch, Destination, Event};
/// use destination_s3::{S3Config, S3Destination};
/// use serde_json::json;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dest = S3Destination::new("archive", S3Config::new("memory:///events"))?;
/// let event = Event::new(json!({"action": "opened"})).with_attribute("prefix", "github");
/// let batch = Batch::new(dest.partition_key(&event), vec![event]);
/// dest.deliver(&batch).await?;
/// assert!(dest.object_path(&batch)?.as_ref().starts_with("events/github/"));
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct S3Destination {
    name: String,
    target: Target,
    format: Format,
    compression: Compression,
    template: KeyTemplate,
    plan: Plan,
    part_size: usize,
    /// Multipart aborts still going on, which `close` waits for.
    aborts: Arc<client::Aborts>,
}

impl S3Destination {
    /// Builds the destination. Synchronous: no request is made until the first delivery
    /// or health check.
    ///
    /// # Errors
    ///
    /// [`S3Error::Config`] or [`S3Error::Open`] when the configuration is invalid: a bad
    /// URL, a compression the format does not support, an invalid key template or schema,
    /// half-given credentials, or a part size below the store's minimum.
    pub fn new(name: impl Into<String>, config: S3Config) -> Result<Self, S3Error> {
        let invalid = |message: String| S3Error::Config { message };
        let compression = match (config.format, config.compression) {
            (Format::Parquet, None) => Compression::Snappy,
            (Format::Ndjson, None) => Compression::Gzip,
            (Format::Parquet, Some(Compression::Gzip)) => {
                return Err(invalid(
                    "compression for parquet: snappy, zstd or none".into(),
                ));
            }
            (Format::Ndjson, Some(Compression::Snappy)) => {
                return Err(invalid("compression for ndjson: gzip, zstd or none".into()));
            }
            (_, Some(c)) => c,
        };
        let template = config
            .key_template
            .as_deref()
            .unwrap_or(DEFAULT_KEY_TEMPLATE);
        let template = KeyTemplate::parse(template).map_err(invalid)?;
        let plan = Plan::new(&config.schema).map_err(invalid)?;
        let target = client::open(&config)?;
        let part_size = config.part_size_bytes.unwrap_or(DEFAULT_PART_SIZE);
        client::check_part_size(&target, part_size)?;
        Ok(Self {
            name: name.into(),
            target,
            format: config.format,
            compression,
            template,
            plan,
            part_size,
            aborts: Arc::default(),
        })
    }

    /// The object store client, for reading back what was written.
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        Arc::clone(&self.target.store)
    }

    /// The key prefix every object is written under (the URL's path).
    pub fn root(&self) -> &Path {
        &self.target.root
    }

    /// The file name extension of the objects, such as `parquet` or `ndjson.gz`.
    pub fn extension(&self) -> &'static str {
        match (self.format, self.compression) {
            (Format::Parquet, _) => "parquet",
            (Format::Ndjson, Compression::Gzip) => "ndjson.gz",
            (Format::Ndjson, Compression::Zstd) => "ndjson.zst",
            (Format::Ndjson, _) => "ndjson",
        }
    }

    /// The path of the object a batch is written to.
    ///
    /// # Errors
    ///
    /// [`S3Error::BadPrefix`] when the batch's `prefix` has a `.` or `..` segment.
    pub fn object_path(&self, batch: &Batch) -> Result<Path, S3Error> {
        let first = batch.events().first();
        let at = first.map(|e| e.sent_at).unwrap_or_default();
        let prefix = batch
            .partition()
            .or_else(|| first.and_then(|e| e.attribute_str(PREFIX_ATTRIBUTE)));
        self.template
            .render(
                &self.target.root,
                prefix,
                at,
                &batch.key(),
                self.extension(),
            )
            .map_err(|reason| S3Error::BadPrefix { reason })
    }

    fn store_error(&self, operation: &'static str, source: object_store::Error) -> S3Error {
        S3Error::Store {
            operation,
            bucket: self.target.bucket.clone(),
            source,
        }
    }

    /// Writes one object and returns whether it went up as a multipart upload.
    async fn write(&self, path: Path, events: &[&Event]) -> Result<bool, S3Error> {
        let aborts = Arc::clone(&self.aborts);
        let mut sink = ObjectSink::new(self.store(), path, self.part_size, aborts);
        let written = match self.format {
            Format::Parquet => {
                let (compression, part_size) = (self.compression, self.part_size);
                format::write_parquet(events, &self.plan, compression, part_size, &mut sink).await
            }
            Format::Ndjson => format::write_ndjson(events, self.compression, &mut sink).await,
        };
        let multipart = sink.is_multipart();
        match written {
            Ok(()) => sink
                .finish()
                .await
                .map_err(|e| self.store_error("upload of an object", e))?,
            Err(err) => {
                if let Err(error) = sink.abort().await {
                    tracing::warn!(%error, "aborting a failed multipart upload failed");
                }
                return Err(match err {
                    WriteError::Encode(e) => e,
                    WriteError::Store(e) => self.store_error("upload of an object", e),
                });
            }
        }
        Ok(multipart)
    }
}

/// How long `close` waits for multipart aborts still going on.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

#[async_trait]
impl Destination for S3Destination {
    fn name(&self) -> &str {
        &self.name
    }

    async fn deliver(&self, batch: &Batch) -> Result<(), DeliveryError> {
        if batch.is_empty() {
            return Ok(());
        }
        let path = self
            .object_path(batch)
            .map_err(S3Error::into_delivery_error)?;
        let span = tracing::debug_span!(
            "s3_deliver",
            destination = %self.name,
            batch_id = %batch.key(),
            events = batch.len(),
            bytes = batch.bytes(),
        );
        async move {
            let started = Instant::now();
            let (kept, refused) = self.plan.select(batch.events());
            if !kept.is_empty() {
                let multipart = self.write(path.clone(), &kept).await?;
                tracing::debug!(
                    %path,
                    rows = kept.len(),
                    multipart,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "object written"
                );
            }
            if refused.is_empty() {
                return Ok(());
            }
            let message = format!(
                "{} of {} events do not fit the strict schema",
                refused.len(),
                batch.len()
            );
            Err(DeliveryError::permanent(message).with_rejected(refused))
        }
        .instrument(span)
        .await
    }

    /// Waits a little for multipart aborts still going on in the background (a delivery cut
    /// off by shutdown leaves one); those not done in time are logged.
    async fn close(&self) -> Result<(), DeliveryError> {
        self.aborts.wait(CLOSE_WAIT).await;
        Ok(())
    }

    async fn health_check(&self) -> Result<(), DeliveryError> {
        let root = &self.target.root;
        let listed = self.target.store.list_with_delimiter(Some(root)).await;
        match listed {
            Ok(_) => Ok(()),
            // A local directory that does not exist yet is created by the first write.
            Err(object_store::Error::NotFound { .. }) if !self.target.is_s3 => Ok(()),
            Err(e) => Err(self
                .store_error("listing the key prefix", e)
                .into_delivery_error()),
        }
    }

    fn partition_key(&self, event: &Event) -> Option<String> {
        event.attribute_str(PREFIX_ATTRIBUTE).map(str::to_owned)
    }

    fn default_batch(&self) -> BatchConfig {
        BatchConfig {
            max_age: Duration::from_secs(60),
            ..BatchConfig::bulk()
        }
    }
}
