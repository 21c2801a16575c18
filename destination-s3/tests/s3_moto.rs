//! The destination against a real S3-compatible server (moto, started by
//! `scripts/peers/s3.sh`). Skipped with a notice when `DESTINATIONS_TEST_S3_ENDPOINT` (or,
//! for the test that kills a server of its own, `DESTINATIONS_TEST_MOTO_SERVER`) is unset,
//! unless `DESTINATIONS_REQUIRE_PEERS` is set.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use destination_core::testing::{self, ReadBack, peer};
use destination_core::{Batch, DeliveryError, Destination, ErrorKind, Event, EventId};
use destination_s3::{Compression, Format, MIN_S3_PART_SIZE, S3Config, S3Destination};
use serde_json::json;
use support::moto::{create_bucket, open_uploads, stored_parts, unique_bucket};
use support::moto_process::MotoProcess;
use support::{StoreReadBack, assert_ndjson_holds, assert_parquet_holds, github_events, objects};

const VAR: &str = "DESTINATIONS_TEST_S3_ENDPOINT";

fn config(endpoint: &str, bucket: &str) -> S3Config {
    S3Config::new(format!("s3://{bucket}/events"))
        .with_endpoint(endpoint, true)
        .with_region("us-east-1")
        .with_credentials("test-key", "test-secret")
}

async fn destination(
    test: &str,
    f: impl FnOnce(S3Config) -> S3Config,
) -> Option<(String, String, S3Destination)> {
    let endpoint = peer(VAR, test)?;
    let bucket = unique_bucket(test);
    create_bucket(&endpoint, &bucket).await;
    let dest = S3Destination::new(test, f(config(&endpoint, &bucket))).expect("valid config");
    Some((endpoint, bucket, dest))
}

fn read_back(dest: &S3Destination) -> StoreReadBack {
    StoreReadBack {
        store: dest.store(),
        root: dest.root().clone(),
    }
}

#[tokio::test]
async fn conforms_against_moto() {
    let Some((_, _, dest)) = destination("conform", |c| c).await else {
        return;
    };
    testing::run_all(&dest, &read_back(&dest)).await;
}

#[tokio::test]
async fn real_events_round_trip_through_moto() {
    let Some((_, _, dest)) = destination("realpq", |c| c).await else {
        return;
    };
    let events = github_events();
    dest.deliver(&Batch::new(Some("github".into()), events.clone()))
        .await
        .unwrap();
    for chunk in events.chunks(50) {
        // The same events again under other keys: a second, independent copy, under a
        // prefix that is not plain ASCII.
        dest.deliver(&Batch::new(Some("ünï cødé/q?x".into()), chunk.to_vec()))
            .await
            .unwrap();
    }
    let all = objects(dest.store().as_ref(), dest.root()).await;
    let (one, fifty): (Vec<_>, Vec<_>) = all
        .into_iter()
        .partition(|(p, _)| p.as_ref().contains("/github/"));
    assert_eq!((one.len(), fifty.len()), (1, 9));
    for (path, _) in &fifty {
        assert!(
            path.as_ref().starts_with("events/ünï cødé/q%3Fx/"),
            "{path}"
        );
    }
    assert_parquet_holds(&one, &events);
    assert_parquet_holds(&fifty, &events);
}

#[tokio::test]
async fn real_events_as_gzip_ndjson_through_moto() {
    let Some((_, _, dest)) = destination("realnd", |c| c.with_format(Format::Ndjson)).await else {
        return;
    };
    let events = github_events();
    dest.deliver(&Batch::new(None, events.clone()))
        .await
        .unwrap();
    let stored = objects(dest.store().as_ref(), dest.root()).await;
    assert_eq!(stored.len(), 1);
    assert!(stored[0].0.as_ref().ends_with(".ndjson.gz"));
    assert_ndjson_holds(&stored, &events);
}

/// Events whose payload is about `bytes` of incompressible text in total.
fn bulky_events(bytes: usize) -> Vec<Event> {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    (0..bytes / 4096)
        .map(|i| {
            let text: String = (0..4096)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    char::from(b'!' + (state % 90) as u8)
                })
                .collect();
            Event::new(json!({"seq": i, "blob": text}))
        })
        .collect()
}

#[tokio::test]
async fn large_batches_stream_as_multipart_and_leave_no_upload_open() {
    let Some((endpoint, bucket, dest)) = destination("multi", |c| {
        c.with_part_size(MIN_S3_PART_SIZE)
            .with_compression(Compression::None)
    })
    .await
    else {
        return;
    };
    let events = bulky_events(13 * 1024 * 1024);
    dest.deliver(&Batch::new(None, events.clone()))
        .await
        .unwrap();
    let stored = objects(dest.store().as_ref(), dest.root()).await;
    assert_eq!(stored.len(), 1);
    assert!(
        stored[0].1.len() > 2 * MIN_S3_PART_SIZE,
        "{} bytes",
        stored[0].1.len()
    );
    assert_parquet_holds(&stored, &events);
    assert_eq!(open_uploads(&endpoint, &bucket).await, 0);
}

#[tokio::test]
async fn missing_bucket_is_a_config_error_naming_it() {
    let Some(endpoint) = peer(VAR, "missing_bucket") else {
        return;
    };
    let bucket = unique_bucket("absent");
    let dest = S3Destination::new("absent", config(&endpoint, &bucket)).unwrap();
    let err = dest.health_check().await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Config, "{}", err.chain());
    assert!(err.message().contains(&bucket), "{}", err.message());
    let batch = Batch::new(None, testing::sample_events(2));
    let err = dest.deliver(&batch).await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Config, "{}", err.chain());
    assert!(err.message().contains(&bucket), "{}", err.message());
    assert!(!err.chain().contains("test-secret"));
}

#[tokio::test]
async fn unreachable_endpoint_is_retryable() {
    // A port on loopback that nothing listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let dest = S3Destination::new("down", config(&endpoint, "nobody")).unwrap();
    let err = dest
        .deliver(&Batch::new(None, testing::sample_events(1)))
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{:?}: {}", err.kind(), err.chain());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_dying_mid_upload_then_redelivery_stores_each_event_once() {
    let Some(moto) = peer(VAR, "dying_server") else {
        return;
    };
    let bucket = unique_bucket("dying");
    create_bucket(&moto, &bucket).await;
    let mut proxy = support::proxy::Proxy::start(moto.trim_start_matches("http://")).await;
    let settings = config(&proxy.endpoint(), &bucket)
        .with_part_size(MIN_S3_PART_SIZE)
        .with_compression(Compression::None);
    let dest = std::sync::Arc::new(S3Destination::new("dying", settings).unwrap());
    let events = bulky_events(24 * 1024 * 1024);
    let batch = Batch::new(None, events.clone());

    // Deliver, and cut the server off as soon as the multipart upload is open.
    let delivery = {
        let (dest, batch) = (std::sync::Arc::clone(&dest), batch.clone());
        tokio::spawn(async move { dest.deliver(&batch).await })
    };
    let mut seen_open = false;
    for _ in 0..1000 {
        if open_uploads(&moto, &bucket).await > 0 {
            seen_open = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(seen_open, "the upload never went multipart");
    proxy.cut().await;
    let err = delivery
        .await
        .unwrap()
        .expect_err("the delivery cannot finish");
    assert!(err.is_retryable(), "{:?}: {}", err.kind(), err.chain());
    let direct = S3Destination::new("reader", config(&moto, &bucket)).unwrap();
    let listed = objects(direct.store().as_ref(), direct.root()).await;
    assert!(listed.is_empty(), "a partial object is visible");

    // The server is back: the runtime redelivers the same batch.
    proxy.restore().await;
    dest.deliver(&batch).await.expect("redelivery succeeds");
    dest.deliver(&batch)
        .await
        .expect("a second redelivery succeeds");
    let stored = objects(direct.store().as_ref(), direct.root()).await;
    assert_eq!(stored.len(), 1, "one object for the batch key");
    assert_eq!(stored[0].0, dest.object_path(&batch).unwrap());
    assert_parquet_holds(&stored, &events);
    // The upload cut off with the server could not be aborted (the abort request failed
    // too); it is the one a bucket lifecycle rule must clean. Nothing else is left open.
    assert!(open_uploads(&moto, &bucket).await <= 1);
}

const MOTO_VAR: &str = "DESTINATIONS_TEST_MOTO_SERVER";

/// Polls the server until it has stored at least one part of an open multipart upload,
/// and returns that upload's key and how many parts it has.
///
/// Killing the server then is killing it mid-upload for certain: the upload was opened and
/// fed, and with a batch many parts long most parts, and the completion, are still to come.
/// Polling the server's state rather than sleeping keeps this independent of how fast the
/// machine encodes and uploads.
async fn wait_for_a_stored_part(
    endpoint: &str,
    bucket: &str,
    delivery: &mut tokio::task::JoinHandle<Result<(), DeliveryError>>,
) -> (String, usize) {
    let started = Instant::now();
    loop {
        let fed = stored_parts(endpoint, bucket).await;
        if let Some(upload) = fed.into_iter().find(|(_, parts)| *parts > 0) {
            return upload;
        }
        if delivery.is_finished() {
            let outcome = delivery.await.expect("the delivery task panicked");
            panic!(
                "the delivery ended before any part reached the server ({outcome:?}): too \
                 small a batch to go multipart, or a failure"
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no part of the multipart upload reached the server within two minutes"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Delivers `batch` as the runtime would: again after each retryable failure, a few times.
async fn deliver_until_stored(dest: &S3Destination, batch: &Batch) {
    const ATTEMPTS: u32 = 5;
    for attempt in 1..=ATTEMPTS {
        match dest.deliver(batch).await {
            Ok(()) => return,
            Err(err) if err.is_retryable() && attempt < ATTEMPTS => {
                eprintln!("attempt {attempt} failed, retrying: {}", err.chain());
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(err) => panic!(
                "redelivery attempt {attempt} failed ({:?}): {}",
                err.kind(),
                err.chain()
            ),
        }
    }
}

/// Checks that `stored` holds each id of `sent` exactly once, and nothing else.
fn assert_each_stored_once(stored: &[EventId], sent: &[EventId]) {
    let mut counts: HashMap<EventId, usize> = sent.iter().map(|id| (*id, 0)).collect();
    let mut unknown = 0;
    for id in stored {
        match counts.get_mut(id) {
            Some(n) => *n += 1,
            None => unknown += 1,
        }
    }
    let missing = counts.values().filter(|n| **n == 0).count();
    let duplicated = counts.values().filter(|n| **n > 1).count();
    assert!(
        (missing, duplicated, unknown) == (0, 0, 0),
        "of {} events sent, {missing} are missing and {duplicated} stored more than once; \
         {unknown} stored rows are not from the batch",
        sent.len()
    );
}

/// The server process itself dies (`SIGKILL`) in the middle of a multipart upload, and
/// comes back empty, as an in-memory server does: the bucket is created again and the
/// batch redelivered. Every event is then stored exactly once, under the batch's key, and
/// no multipart upload is left open.
///
/// The server is one of the test's own: the shared peer serves the other tests meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_upload_and_restarted_stores_each_event_once() {
    let Some(binary) = peer(MOTO_VAR, "killed_server") else {
        return;
    };
    let mut moto = MotoProcess::start(&binary).await;
    let endpoint = moto.endpoint();
    let bucket = unique_bucket("killed");
    create_bucket(&endpoint, &bucket).await;
    let settings = config(&endpoint, &bucket)
        .with_part_size(MIN_S3_PART_SIZE)
        .with_compression(Compression::None);
    let dest = Arc::new(S3Destination::new("killed", settings).unwrap());
    // About eight parts: when the first is stored, most of the object is still to come.
    let batch = Batch::new(None, bulky_events(40 * 1024 * 1024));
    let key = dest.object_path(&batch).unwrap();

    let mut delivery = {
        let (dest, batch) = (Arc::clone(&dest), batch.clone());
        tokio::spawn(async move { dest.deliver(&batch).await })
    };
    let (killed_key, parts) = wait_for_a_stored_part(&endpoint, &bucket, &mut delivery).await;
    moto.kill();
    eprintln!("killed the server with {parts} part(s) of the upload stored");
    assert_eq!(
        killed_key,
        key.as_ref(),
        "the upload was for the batch's key"
    );
    let err = delivery.await.unwrap().expect_err(
        "the delivery cannot succeed: its server was killed before the upload was complete",
    );
    assert!(err.is_retryable(), "{:?}: {}", err.kind(), err.chain());

    moto.restart().await;
    let (status, _) = support::moto::request(&endpoint, "HEAD", &format!("/{bucket}")).await;
    assert_eq!(
        status, 404,
        "the restarted server still has the bucket: it was not killed"
    );
    create_bucket(&endpoint, &bucket).await;
    deliver_until_stored(&dest, &batch).await;
    // A replay of the same batch later, as after a crash of the sender, changes nothing.
    deliver_until_stored(&dest, &batch).await;

    let stored = objects(dest.store().as_ref(), dest.root()).await;
    let keys: Vec<_> = stored.iter().map(|(path, _)| path.clone()).collect();
    assert_eq!(
        keys,
        [key],
        "one object, under the same deterministic key as the killed upload"
    );
    let stored_ids = read_back(&dest).stored_ids().await.unwrap();
    assert_each_stored_once(&stored_ids, &batch.ids().collect::<Vec<_>>());
    assert_parquet_holds(&stored, batch.events());
    assert_eq!(
        open_uploads(&endpoint, &bucket).await,
        0,
        "a multipart upload is left open after the failure and redeliveries"
    );
}
