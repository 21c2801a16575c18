//! The object store: building the client from the configuration, and streaming one object.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    BackoffConfig, MultipartUpload, ObjectStore, ObjectStoreExt, PutPayloadMut, RetryConfig,
};
use tokio::task::JoinSet;
use url::Url;

use crate::config::{MIN_S3_PART_SIZE, S3Config};
use crate::error::{Class, S3Error, classify};

/// An opened store and where in it this destination writes.
#[derive(Debug)]
pub(crate) struct Target {
    /// The client.
    pub(crate) store: Arc<dyn ObjectStore>,
    /// The key prefix from the URL's path.
    pub(crate) root: Path,
    /// The bucket name (or the URL for other stores), for error messages.
    pub(crate) bucket: String,
    /// Whether this is S3, which has a minimum part size.
    pub(crate) is_s3: bool,
}

fn config_error(message: impl Into<String>) -> S3Error {
    S3Error::Config {
        message: message.into(),
    }
}

/// Builds the client for `config.url`. Synchronous and without network I/O.
///
/// # Errors
///
/// [`S3Error::Config`] for an unparsable URL or inconsistent credentials, and
/// [`S3Error::Open`] when object_store refuses the settings.
pub(crate) fn open(config: &S3Config) -> Result<Target, S3Error> {
    let url = Url::parse(&config.url)
        .map_err(|e| config_error(format!("url {:?} is not a valid URL: {e}", config.url)))?;
    let root = Path::from_url_path(url.path())
        .map_err(|e| config_error(format!("url path {:?} is not a valid key: {e}", url.path())))?;
    let open_error = |source| S3Error::Open {
        url: config.url.clone(),
        source,
    };
    let store: Arc<dyn ObjectStore> = match url.scheme() {
        "s3" | "s3a" => {
            let bucket = url
                .host_str()
                .filter(|b| !b.is_empty())
                .ok_or_else(|| config_error("url must name a bucket: s3://bucket/prefix"))?;
            let store = s3_builder(config, bucket)?.build().map_err(open_error)?;
            return Ok(Target {
                store: Arc::new(store),
                root,
                bucket: bucket.to_owned(),
                is_s3: true,
            });
        }
        "file" => {
            // `file://dir` parses `dir` as a host and would write under `/`.
            if url
                .host_str()
                .is_some_and(|h| !h.is_empty() && h != "localhost")
            {
                return Err(config_error(format!(
                    "file url {:?} must be absolute, as file:///absolute/dir (three slashes)",
                    config.url
                )));
            }
            Arc::new(LocalFileSystem::new())
        }
        "memory" => Arc::new(InMemory::new()),
        _ => {
            let (store, prefix) = object_store::parse_url(&url).map_err(open_error)?;
            return Ok(Target {
                store: Arc::from(store),
                root: prefix,
                bucket: config.url.clone(),
                is_s3: false,
            });
        }
    };
    Ok(Target {
        store,
        root,
        bucket: config.url.clone(),
        is_s3: false,
    })
}

fn s3_builder(config: &S3Config, bucket: &str) -> Result<AmazonS3Builder, S3Error> {
    // Static keys from the configuration must not be mixed with a session token or
    // endpoint from the environment, so the environment is read only without them.
    let mut builder = match (&config.access_key_id, &config.secret_access_key) {
        (Some(id), Some(secret)) => {
            let mut b = AmazonS3Builder::new()
                .with_access_key_id(id)
                .with_secret_access_key(secret.expose());
            if let Some(token) = &config.session_token {
                b = b.with_token(token.expose());
            }
            let env_region =
                std::env::var("AWS_REGION").or_else(|_| std::env::var("AWS_DEFAULT_REGION"));
            if let Ok(region) = env_region {
                b = b.with_region(region);
            }
            b
        }
        (None, None) => AmazonS3Builder::from_env(),
        _ => {
            return Err(config_error(
                "access_key_id and secret_access_key must be set together",
            ));
        }
    };
    builder = builder
        .with_bucket_name(bucket)
        .with_allow_http(config.allow_http)
        .with_retry(RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(2),
                base: 2.0,
            },
            max_retries: 2,
            retry_timeout: Duration::from_secs(30),
        });
    if let Some(region) = &config.region {
        builder = builder.with_region(region);
    }
    if let Some(endpoint) = &config.endpoint {
        if endpoint.starts_with("http://") && !config.allow_http {
            return Err(config_error(format!(
                "endpoint {endpoint:?} is plain http: set allow_http = true to use it"
            )));
        }
        if config.force_path_style {
            builder = builder
                .with_endpoint(endpoint)
                .with_virtual_hosted_style_request(false);
        } else {
            // In virtual-hosted style object_store expects the bucket in the endpoint.
            let mut with_bucket = Url::parse(endpoint)
                .map_err(|e| config_error(format!("endpoint {endpoint:?} is invalid: {e}")))?;
            let host = with_bucket.host_str().unwrap_or_default().to_owned();
            with_bucket
                .set_host(Some(&format!("{bucket}.{host}")))
                .map_err(|e| {
                    config_error(format!(
                        "endpoint {endpoint:?} cannot take the bucket as a host name ({e}): \
                         set force_path_style = true"
                    ))
                })?;
            let text = with_bucket.as_str().trim_end_matches('/').to_owned();
            builder = builder
                .with_endpoint(text)
                .with_virtual_hosted_style_request(true);
        }
    } else if config.force_path_style {
        builder = builder.with_virtual_hosted_style_request(false);
    }
    Ok(builder)
}

/// Checks a part size against the store's rules.
pub(crate) fn check_part_size(target: &Target, part_size: usize) -> Result<(), S3Error> {
    let min = if target.is_s3 { MIN_S3_PART_SIZE } else { 1 };
    if part_size < min {
        return Err(config_error(format!(
            "part_size_bytes must be at least {min} for this store"
        )));
    }
    Ok(())
}

/// How many parts of one object are uploaded at once.
const PART_CONCURRENCY: usize = 4;

/// How long after a failed abort of a multipart upload it is first tried again; the delay
/// doubles up to [`ABORT_RETRY_MAX_DELAY`].
const ABORT_RETRY_FIRST_DELAY: Duration = Duration::from_secs(1);
const ABORT_RETRY_MAX_DELAY: Duration = Duration::from_secs(60);
/// How long a failed abort keeps being tried before its parts are left to the bucket's
/// lifecycle rule.
const ABORT_RETRY_FOR: Duration = Duration::from_secs(60 * 60);

/// Streams one object: a single `PUT` while it is smaller than a part, a multipart upload
/// once it grows past that.
///
/// Nothing is visible under the key until [`finish`](Self::finish) returns: a single put
/// is atomic, and a multipart upload becomes an object only when it is completed (the
/// local file store writes to a temporary file and renames it).
///
/// A failed or dropped upload is aborted, so no part stays billed; when the abort itself
/// fails (the store is unreachable), it is tried again in the background with growing
/// delays for an hour. If the process dies mid-upload the parts stay until the bucket's
/// lifecycle rule (`AbortIncompleteMultipartUpload`) removes them; configure one.
pub(crate) struct ObjectSink {
    store: Arc<dyn ObjectStore>,
    path: Path,
    part_size: usize,
    state: State,
    aborts: Arc<Aborts>,
}

enum State {
    Buffer(PutPayloadMut),
    Upload(Upload),
    Done,
}

impl std::fmt::Debug for ObjectSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            State::Buffer(_) => "buffer",
            State::Upload(_) => "multipart",
            State::Done => "done",
        };
        f.debug_struct("ObjectSink")
            .field("path", &self.path)
            .field("state", &state)
            .finish()
    }
}

impl ObjectSink {
    /// A sink writing `path`; aborts that cannot finish at once go on in `aborts`.
    pub(crate) fn new(
        store: Arc<dyn ObjectStore>,
        path: Path,
        part_size: usize,
        aborts: Arc<Aborts>,
    ) -> Self {
        Self {
            store,
            path,
            part_size,
            state: State::Buffer(PutPayloadMut::new()),
            aborts,
        }
    }

    /// Whether a multipart upload has been started.
    pub(crate) fn is_multipart(&self) -> bool {
        matches!(self.state, State::Upload(_))
    }

    /// Appends bytes, starting or feeding the multipart upload as needed.
    ///
    /// # Errors
    ///
    /// The store's error; the caller should then [`abort`](Self::abort).
    pub(crate) async fn write(&mut self, bytes: Bytes) -> object_store::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        match &mut self.state {
            State::Buffer(buffer) => {
                buffer.push(bytes);
                if buffer.content_length() < self.part_size {
                    return Ok(());
                }
                // Started before the buffer moves into it: if starting fails, the bytes are
                // still here rather than lost from an object that `finish` would then write
                // short.
                let inner = self.store.put_multipart(&self.path).await?;
                let buffered = std::mem::take(buffer).freeze();
                tracing::debug!(path = %self.path, "multipart upload started");
                let upload = self.state.start(inner, self.part_size);
                for chunk in buffered {
                    upload.put(chunk).await?;
                }
                Ok(())
            }
            State::Upload(upload) => upload.put(bytes).await,
            State::Done => Err(object_store::Error::Generic {
                store: "destination-s3",
                source: "write after the object was finished".into(),
            }),
        }
    }

    /// Makes the object visible under its key.
    ///
    /// # Errors
    ///
    /// The store's error; a failed multipart upload has already been aborted (or handed
    /// to the background retries of a failed abort).
    pub(crate) async fn finish(&mut self) -> object_store::Result<()> {
        // The upload stays in the sink until it is completed: if this future is dropped
        // meanwhile (a delivery that timed out), `Drop` still aborts it.
        if let State::Upload(upload) = &mut self.state {
            if let Err(error) = upload.complete().await {
                // The abort's own failure is logged; the completion's error is the one
                // that counts.
                let _ = self.abort().await;
                return Err(error);
            }
            self.state = State::Done;
            return Ok(());
        }
        match std::mem::replace(&mut self.state, State::Done) {
            State::Buffer(buffer) => self.store.put(&self.path, buffer.freeze()).await.map(drop),
            _ => Err(object_store::Error::Generic {
                store: "destination-s3",
                source: "finish after the object was finished or abandoned".into(),
            }),
        }
    }

    /// Abandons the object: a started multipart upload is aborted.
    ///
    /// # Errors
    ///
    /// The store's error when the abort request fails; the abort is then tried again in
    /// the background.
    pub(crate) async fn abort(&mut self) -> object_store::Result<()> {
        let State::Upload(upload) = &mut self.state else {
            self.state = State::Done;
            return Ok(());
        };
        // As in `finish`, the upload stays in the sink while the request is out.
        let aborted = upload.abort().await;
        match (aborted, std::mem::replace(&mut self.state, State::Done)) {
            (Err(error), State::Upload(upload)) => {
                self.aborts.after_failure(self.path.clone(), upload, &error);
                Err(error)
            }
            (aborted, _) => aborted,
        }
    }
}

impl State {
    /// Switches to a multipart upload through `inner` and returns it.
    fn start(&mut self, inner: Box<dyn MultipartUpload>, part_size: usize) -> &mut Upload {
        *self = State::Upload(Upload {
            inner,
            buffer: PutPayloadMut::new(),
            part_size,
            parts: JoinSet::new(),
        });
        match self {
            State::Upload(upload) => upload,
            _ => unreachable!("just set"),
        }
    }
}

impl Drop for ObjectSink {
    fn drop(&mut self) {
        // A dropped delivery future (timeout, shutdown) must not leave a billed upload.
        if let State::Upload(upload) = std::mem::replace(&mut self.state, State::Done) {
            self.aborts.start(self.path.clone(), upload, Duration::ZERO);
        }
    }
}

/// A multipart upload in progress: full parts go up in background tasks, and the upload
/// can be aborted again after an abort failed.
struct Upload {
    inner: Box<dyn MultipartUpload>,
    /// Bytes not yet making up a part.
    buffer: PutPayloadMut,
    part_size: usize,
    parts: JoinSet<object_store::Result<()>>,
}

impl Upload {
    /// Buffers `bytes`, sending each part as soon as it is full.
    ///
    /// # Errors
    ///
    /// A failed part's, found while waiting for room for the next part.
    async fn put(&mut self, mut bytes: Bytes) -> object_store::Result<()> {
        while !bytes.is_empty() {
            let room = self.part_size - self.buffer.content_length();
            if bytes.len() < room {
                self.buffer.push(bytes);
                return Ok(());
            }
            self.buffer.push(bytes.split_to(room));
            self.send_buffer().await?;
        }
        Ok(())
    }

    /// Sends the buffer as the next part once fewer than [`PART_CONCURRENCY`] are on
    /// their way.
    async fn send_buffer(&mut self) -> object_store::Result<()> {
        self.wait_for_parts(PART_CONCURRENCY - 1).await?;
        let part = std::mem::take(&mut self.buffer).freeze();
        self.parts.spawn(self.inner.put_part(part));
        Ok(())
    }

    /// Waits until at most `max` parts are on their way.
    ///
    /// # Errors
    ///
    /// The first failed part's.
    async fn wait_for_parts(&mut self, max: usize) -> object_store::Result<()> {
        while self.parts.len() > max {
            match self.parts.join_next().await {
                Some(Ok(sent)) => sent?,
                Some(Err(task)) => {
                    return Err(object_store::Error::Generic {
                        store: "destination-s3",
                        source: Box::new(task),
                    });
                }
                None => break,
            }
        }
        Ok(())
    }

    /// Sends the last part, waits for every part, and completes the upload.
    async fn complete(&mut self) -> object_store::Result<()> {
        if self.buffer.content_length() > 0 {
            self.send_buffer().await?;
        }
        self.wait_for_parts(0).await?;
        self.inner.complete().await.map(drop)
    }

    /// Stops the parts still on their way and aborts the upload; an upload the store no
    /// longer knows (an earlier abort that did reach it) counts as aborted.
    async fn abort(&mut self) -> object_store::Result<()> {
        self.parts.shutdown().await;
        match self.inner.abort().await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(error),
        }
    }
}

/// The aborts of multipart uploads that go on in the background (after a failed abort,
/// or for a sink dropped mid-upload), so that closing the destination can wait for them.
#[derive(Debug, Default)]
pub(crate) struct Aborts {
    tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Aborts {
    /// Keeps trying to abort `upload` in the background, first after `delay`: until it is
    /// aborted, fails for a reason that will not pass, or [`ABORT_RETRY_FOR`] is over.
    fn start(&self, path: Path, upload: Upload, delay: Duration) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            tracing::error!(
                %path,
                "multipart upload left outside a Tokio runtime, so it cannot be aborted; \
                 its parts stay until the bucket's lifecycle rule removes them"
            );
            return;
        };
        let task = handle.spawn(keep_aborting(path, upload, delay));
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
    }

    /// After an abort failed with `error`: tries again in the background when the failure
    /// may pass, and logs that the parts are left behind when it cannot.
    fn after_failure(&self, path: Path, upload: Upload, error: &object_store::Error) {
        if transient(error) {
            tracing::warn!(%path, %error, "aborting a multipart upload failed; trying again in the background");
            self.start(path, upload, ABORT_RETRY_FIRST_DELAY);
        } else {
            tracing::error!(
                %path,
                %error,
                "aborting a multipart upload failed; its parts stay until the bucket's lifecycle rule removes them"
            );
        }
    }

    /// Waits up to `limit` for the aborts still going on; logs those that are not done.
    pub(crate) async fn wait(&self, limit: Duration) {
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        let mut pending: Vec<_> = tasks.into_iter().filter(|t| !t.is_finished()).collect();
        let until = tokio::time::Instant::now() + limit;
        while let Some(task) = pending.pop() {
            if tokio::time::timeout_at(until, task).await.is_err() {
                tracing::error!(
                    uploads = pending.len() + 1,
                    "multipart uploads still being aborted at shutdown; their parts stay until \
                     the bucket's lifecycle rule removes them"
                );
                return;
            }
        }
    }
}

fn transient(error: &object_store::Error) -> bool {
    matches!(classify(error), Class::Retryable | Class::Throttled)
}

/// A first `delay` above zero means an abort already failed (and was logged).
async fn keep_aborting(path: Path, mut upload: Upload, mut delay: Duration) {
    let started = tokio::time::Instant::now();
    let mut failed = !delay.is_zero();
    loop {
        tokio::time::sleep(delay).await;
        let error = match upload.abort().await {
            Ok(()) if failed => {
                tracing::info!(%path, "multipart upload aborted after earlier failures");
                return;
            }
            Ok(()) => return,
            Err(error) => error,
        };
        delay = if delay.is_zero() {
            ABORT_RETRY_FIRST_DELAY
        } else {
            (delay * 2).min(ABORT_RETRY_MAX_DELAY)
        };
        if !transient(&error) || started.elapsed() + delay >= ABORT_RETRY_FOR {
            tracing::error!(
                %path,
                %error,
                "gave up aborting a multipart upload; its parts stay until the bucket's lifecycle rule removes them"
            );
            return;
        }
        if !failed {
            tracing::warn!(%path, %error, "aborting a multipart upload failed; trying again in the background");
        }
        failed = true;
    }
}

#[cfg(test)]
#[path = "../tests/support/moto.rs"]
mod moto;

#[cfg(test)]
mod tests {
    use super::*;
    use destination_core::testing::peer;

    const VAR: &str = "DESTINATIONS_TEST_S3_ENDPOINT";

    async fn sink_target(test: &str) -> Option<(String, String, Target)> {
        let endpoint = peer(VAR, test)?;
        let bucket = moto::unique_bucket(test);
        moto::create_bucket(&endpoint, &bucket).await;
        let config = S3Config::new(format!("s3://{bucket}"))
            .with_endpoint(&endpoint, true)
            .with_region("us-east-1")
            .with_credentials("k", "s");
        Some((endpoint, bucket, open(&config).unwrap()))
    }

    #[test]
    fn relative_file_urls_are_refused() {
        for url in ["file://lake", "file://./lake"] {
            let Err(err) = open(&S3Config::new(url)) else {
                panic!("{url} was accepted");
            };
            assert!(err.to_string().contains("must be absolute"), "{url}: {err}");
        }
        assert!(open(&S3Config::new("file:///tmp/lake")).is_ok());
        assert!(open(&S3Config::new("file://localhost/tmp/lake")).is_ok());
    }

    /// The bucket's open multipart uploads, once none are left or `limit` has passed.
    async fn open_uploads_within(endpoint: &str, bucket: &str, limit: Duration) -> usize {
        let until = tokio::time::Instant::now() + limit;
        loop {
            let open = moto::open_uploads(endpoint, bucket).await;
            if open == 0 || tokio::time::Instant::now() >= until {
                return open;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A sink writing key `k` of `store`, with aborts of its own.
    fn sink_on(store: Arc<dyn ObjectStore>, part_size: usize) -> ObjectSink {
        ObjectSink::new(store, Path::from("k"), part_size, Arc::default())
    }

    fn chunk(bytes: usize) -> Bytes {
        Bytes::from(vec![b'x'; bytes])
    }

    #[tokio::test]
    async fn a_dropped_upload_is_aborted() {
        let Some((endpoint, bucket, target)) = sink_target("dropped").await else {
            return;
        };
        let mut sink = sink_on(target.store, MIN_S3_PART_SIZE);
        sink.write(chunk(MIN_S3_PART_SIZE + 1)).await.unwrap();
        assert!(sink.is_multipart());
        assert_eq!(moto::open_uploads(&endpoint, &bucket).await, 1);
        drop(sink);
        let open = open_uploads_within(&endpoint, &bucket, Duration::from_secs(5)).await;
        assert_eq!(open, 0, "the dropped upload is still open");
    }

    #[tokio::test]
    async fn a_failed_completion_leaves_no_upload_and_no_object() {
        let Some((endpoint, bucket, target)) = sink_target("failed").await else {
            return;
        };
        // Parts under 5 MiB make the server refuse the completion (EntityTooSmall).
        let store = Arc::clone(&target.store);
        let mut sink = sink_on(target.store, 1024 * 1024);
        for _ in 0..3 {
            sink.write(chunk(1024 * 1024)).await.unwrap();
        }
        let err = sink.finish().await.unwrap_err();
        let class = crate::error::classify(&err);
        assert_eq!(class, crate::error::Class::Permanent, "{err}");
        assert_eq!(moto::open_uploads(&endpoint, &bucket).await, 0);
        assert!(
            store.head(&Path::from("k")).await.is_err(),
            "no object appears"
        );
    }

    #[tokio::test]
    async fn an_explicit_abort_cancels_the_upload() {
        let Some((endpoint, bucket, target)) = sink_target("aborted").await else {
            return;
        };
        let mut sink = sink_on(target.store, MIN_S3_PART_SIZE);
        sink.write(chunk(2 * MIN_S3_PART_SIZE)).await.unwrap();
        assert_eq!(moto::open_uploads(&endpoint, &bucket).await, 1);
        sink.abort().await.unwrap();
        assert_eq!(moto::open_uploads(&endpoint, &bucket).await, 0);
    }

    /// A TCP relay on 127.0.0.1 to the server at `endpoint` that can be cut: while cut, it
    /// closes every connection, open or new, as an unreachable store would.
    struct Relay {
        port: u16,
        cut: tokio::sync::watch::Sender<bool>,
    }

    impl Relay {
        /// A sink for `bucket` whose requests go through the relay.
        fn sink(
            &self,
            bucket: &str,
            part_size: usize,
            aborts: Arc<Aborts>,
        ) -> (ObjectSink, Arc<dyn ObjectStore>) {
            let config = S3Config::new(format!("s3://{bucket}"))
                .with_endpoint(format!("http://127.0.0.1:{}", self.port), true)
                .with_region("us-east-1")
                .with_credentials("k", "s");
            let store = open(&config).unwrap().store;
            let sink = ObjectSink::new(Arc::clone(&store), Path::from("k"), part_size, aborts);
            (sink, store)
        }
    }

    /// The moto endpoint, a fresh bucket on it, and a relay to it.
    async fn relayed(test: &str) -> Option<(String, String, Relay)> {
        let endpoint = peer(VAR, test)?;
        let bucket = moto::unique_bucket(test);
        moto::create_bucket(&endpoint, &bucket).await;
        let relay = relay(&endpoint).await;
        Some((endpoint, bucket, relay))
    }

    async fn relay(endpoint: &str) -> Relay {
        let upstream = endpoint.trim_start_matches("http://").to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (cut, watch) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut watch = watch.clone();
                if *watch.borrow() {
                    continue;
                }
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = watch.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Relay { port, cut }
    }

    #[tokio::test]
    async fn an_abort_that_fails_while_the_store_is_unreachable_is_retried() {
        let Some((endpoint, bucket, relay)) = relayed("abort-retried").await else {
            return;
        };
        let (mut sink, _) = relay.sink(&bucket, MIN_S3_PART_SIZE, Arc::default());
        sink.write(chunk(MIN_S3_PART_SIZE + 1)).await.unwrap();
        assert_eq!(moto::open_uploads(&endpoint, &bucket).await, 1);

        relay.cut.send_replace(true);
        sink.abort()
            .await
            .expect_err("the abort cannot reach the store");
        assert_eq!(
            moto::open_uploads(&endpoint, &bucket).await,
            1,
            "the upload is still open on the server"
        );

        relay.cut.send_replace(false);
        let open = open_uploads_within(&endpoint, &bucket, Duration::from_secs(30)).await;
        assert_eq!(open, 0, "the abort was not retried once the store was back");
    }

    #[tokio::test]
    async fn closing_waits_for_an_abort_still_going_on() {
        let Some((endpoint, bucket, relay)) = relayed("close-waits").await else {
            return;
        };
        let aborts = Arc::new(Aborts::default());
        let (mut sink, _) = relay.sink(&bucket, MIN_S3_PART_SIZE, Arc::clone(&aborts));
        sink.write(chunk(MIN_S3_PART_SIZE + 1)).await.unwrap();
        assert_eq!(moto::open_uploads(&endpoint, &bucket).await, 1);
        // Dropped (as a delivery cut off by shutdown is) while the store is unreachable:
        // the first abort fails, and the retry a second later finds the store back.
        relay.cut.send_replace(true);
        drop(sink);
        let back = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            relay.cut.send_replace(false);
            relay
        });
        aborts.wait(Duration::from_secs(20)).await;
        assert_eq!(moto::open_uploads(&endpoint, &bucket).await, 0);
        drop(back.await.unwrap());
    }

    #[tokio::test]
    async fn finishing_twice_is_an_error() {
        let Some((_, _, target)) = sink_target("finish-twice").await else {
            return;
        };
        let mut sink = sink_on(target.store, MIN_S3_PART_SIZE);
        sink.write(chunk(10)).await.unwrap();
        sink.finish().await.unwrap();
        assert!(sink.finish().await.is_err());
        sink.abort().await.unwrap();
        assert!(
            sink.finish().await.is_err(),
            "nothing to finish after an abort"
        );
    }

    #[tokio::test]
    async fn at_most_four_parts_are_on_their_way_at_once() {
        let Some((_, _, target)) = sink_target("part-concurrency").await else {
            return;
        };
        let store = Arc::clone(&target.store);
        let mut sink = sink_on(target.store, MIN_S3_PART_SIZE);
        // Parts leave the set only when waited for, so its size after a write is the most
        // that write had on their way. Unbounded, one write of eight parts leaves eight.
        for size in [
            8 * MIN_S3_PART_SIZE + 7,
            MIN_S3_PART_SIZE / 2,
            3 * MIN_S3_PART_SIZE,
        ] {
            sink.write(chunk(size)).await.unwrap();
            let State::Upload(upload) = &sink.state else {
                panic!("a multipart upload");
            };
            assert!(
                upload.parts.len() <= PART_CONCURRENCY,
                "{}",
                upload.parts.len()
            );
        }
        sink.finish().await.unwrap();
        let size = store.head(&Path::from("k")).await.unwrap().size;
        assert_eq!(
            size,
            11 * MIN_S3_PART_SIZE as u64 + 7 + MIN_S3_PART_SIZE as u64 / 2
        );
    }

    #[tokio::test]
    async fn a_finish_cut_short_by_a_timeout_leaves_no_upload_open() {
        let Some((endpoint, bucket, target)) = sink_target("finish-timeout").await else {
            return;
        };
        let mut sink = sink_on(target.store, MIN_S3_PART_SIZE);
        sink.write(chunk(3 * MIN_S3_PART_SIZE + 10)).await.unwrap();
        let finished = tokio::time::timeout(Duration::from_millis(5), sink.finish()).await;
        assert!(finished.is_err(), "the parts cannot all be up in 5 ms");
        drop(sink);
        let open = open_uploads_within(&endpoint, &bucket, Duration::from_secs(10)).await;
        assert_eq!(open, 0, "the upload outlived its delivery");
    }

    #[tokio::test]
    async fn bytes_written_while_an_upload_cannot_start_are_kept() {
        let Some((_, bucket, relay)) = relayed("failed-start").await else {
            return;
        };
        let (mut sink, store) = relay.sink(&bucket, MIN_S3_PART_SIZE, Arc::default());
        relay.cut.send_replace(true);
        sink.write(chunk(MIN_S3_PART_SIZE + 1))
            .await
            .expect_err("the upload cannot start");
        relay.cut.send_replace(false);
        sink.finish().await.unwrap();
        let size = store.head(&Path::from("k")).await.unwrap().size;
        assert_eq!(size, MIN_S3_PART_SIZE as u64 + 1, "no byte was lost");
    }

    #[test]
    fn s3_urls_need_a_bucket_and_paired_credentials() {
        assert!(open(&S3Config::new("s3:///prefix")).is_err());
        let mut half = S3Config::new("s3://b/p");
        half.access_key_id = Some("id".into());
        assert!(open(&half).is_err());
        let on_ip = S3Config::new("s3://b/p").with_endpoint("http://127.0.0.1:9", false);
        let err = open(&on_ip).unwrap_err();
        assert!(format!("{err}").contains("force_path_style"), "{err}");
        let plain = S3Config::new("s3://b/p").with_endpoint("http://localhost:9", false);
        assert!(
            open(&plain).is_ok(),
            "virtual-hosted style with an endpoint"
        );
        let mut refused = plain;
        refused.allow_http = false;
        assert!(open(&refused).is_err(), "plain http needs allow_http");
        let local = open(&S3Config::new("file:///tmp/dest/x")).unwrap();
        assert_eq!(local.root.as_ref(), "tmp/dest/x");
        assert!(!local.is_s3);
    }
}
