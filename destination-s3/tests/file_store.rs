//! The destination against `file://` directories: conformance and the real events.

mod support;

use destination_core::testing::{self, sample_events};
use destination_core::{Batch, Destination, ErrorKind, Event};
use destination_s3::{Compression, Format, S3Config, S3Destination};
use serde_json::json;
use support::{StoreReadBack, assert_ndjson_holds, assert_parquet_holds, github_events, objects};

fn file_destination(
    dir: &tempfile::TempDir,
    config: impl FnOnce(S3Config) -> S3Config,
) -> S3Destination {
    let url = format!("file://{}/out", dir.path().display());
    S3Destination::new("files", config(S3Config::new(url))).expect("valid config")
}

fn read_back(dest: &S3Destination) -> StoreReadBack {
    StoreReadBack {
        store: dest.store(),
        root: dest.root().clone(),
    }
}

#[tokio::test]
async fn conforms_with_parquet() {
    let dir = tempfile::tempdir().unwrap();
    let dest = file_destination(&dir, |c| c);
    testing::run_all(&dest, &read_back(&dest)).await;
}

#[tokio::test]
async fn conforms_with_ndjson() {
    let dir = tempfile::tempdir().unwrap();
    let dest = file_destination(&dir, |c| c.with_format(Format::Ndjson));
    testing::run_all(&dest, &read_back(&dest)).await;
}

#[tokio::test]
async fn all_real_events_in_one_parquet_object() {
    let dir = tempfile::tempdir().unwrap();
    let dest = file_destination(&dir, |c| c);
    let events = github_events();
    assert_eq!(events.len(), 420);
    let batch = Batch::new(dest.partition_key(&events[0]), events.clone());
    dest.deliver(&batch)
        .await
        .expect("all 420 events delivered");

    let stored = objects(dest.store().as_ref(), dest.root()).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].0, dest.object_path(&batch).unwrap());
    assert_eq!(assert_parquet_holds(&stored, &events), 420);
}

#[tokio::test]
async fn real_events_in_batches_of_fifty_with_zstd() {
    let dir = tempfile::tempdir().unwrap();
    let dest = file_destination(&dir, |c| c.with_compression(Compression::Zstd));
    let events = github_events();
    for chunk in events.chunks(50) {
        let batch = Batch::new(dest.partition_key(&chunk[0]), chunk.to_vec());
        dest.deliver(&batch).await.expect("batch delivered");
    }
    let stored = objects(dest.store().as_ref(), dest.root()).await;
    assert_eq!(stored.len(), 9);
    assert_parquet_holds(&stored, &events);
}

#[tokio::test]
async fn real_events_as_ndjson_in_every_compression() {
    for (compression, ext) in [
        (Compression::Gzip, "ndjson.gz"),
        (Compression::Zstd, "ndjson.zst"),
        (Compression::None, "ndjson"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let dest = file_destination(&dir, |c| {
            c.with_format(Format::Ndjson).with_compression(compression)
        });
        let events = github_events();
        for chunk in events.chunks(100) {
            dest.deliver(&Batch::new(Some("github".into()), chunk.to_vec()))
                .await
                .unwrap();
        }
        let stored = objects(dest.store().as_ref(), dest.root()).await;
        assert_eq!(stored.len(), 5);
        assert!(
            stored.iter().all(|(p, _)| p.as_ref().ends_with(ext)),
            "{ext}"
        );
        assert_ndjson_holds(&stored, &events);
    }
}

#[tokio::test]
async fn sample_events_round_trip_field_by_field() {
    let dir = tempfile::tempdir().unwrap();
    let dest = file_destination(&dir, |c| c.with_compression(Compression::None));
    let mut events = sample_events(40);
    events.push(Event::new(
        json!({"_event_id": "payload's own", "_sent_at": 5}),
    ));
    events.push(Event::new(json!([1, "two", null])));
    events.push(Event::new(
        json!({"big": u64::MAX, "deep": {"a": {"b": {"c": [[1.5]]}}}}),
    ));
    dest.deliver(&Batch::new(None, events.clone()))
        .await
        .unwrap();
    let stored = objects(dest.store().as_ref(), dest.root()).await;
    assert_parquet_holds(&stored, &events);
}

#[tokio::test]
async fn keys_are_deterministic_and_hive_style_works() {
    let dir = tempfile::tempdir().unwrap();
    let dest = file_destination(&dir, |c| c.with_key_template("hive"));
    let events = sample_events(3)
        .into_iter()
        .map(|e| e.with_attribute("prefix", "team/a"))
        .collect::<Vec<_>>();
    let batch = Batch::new(dest.partition_key(&events[0]), events.clone());
    let path = dest.object_path(&batch).unwrap();
    let day = events[0].sent_at.format("%Y-%m-%d").to_string();
    let expected = format!("out/team/a/dt={day}/{}.parquet", batch.key());
    assert!(
        path.as_ref().ends_with(&expected),
        "{path} should end with {expected}"
    );
    for _ in 0..3 {
        dest.deliver(&batch).await.unwrap();
    }
    let stored = objects(dest.store().as_ref(), dest.root()).await;
    assert_eq!(stored.len(), 1, "redelivery overwrites the same key");
    assert_eq!(stored[0].0, path);
}

#[tokio::test]
async fn no_temporary_file_is_left_behind() {
    let dir = tempfile::tempdir().unwrap();
    let dest = file_destination(&dir, |c| c);
    dest.deliver(&Batch::new(None, github_events()))
        .await
        .unwrap();
    let mut files = Vec::new();
    let mut stack = vec![dir.path().to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p);
            }
        }
    }
    assert_eq!(files.len(), 1, "{files:?}");
}

#[tokio::test]
async fn bad_prefix_is_permanent_and_bad_config_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let dest = file_destination(&dir, |c| c);
    let event = Event::new(json!({"a": 1})).with_attribute("prefix", "../escape");
    let err = dest
        .deliver(&Batch::new(dest.partition_key(&event), vec![event]))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Permanent);
    // A folder name longer than the file system allows fails the same way every time.
    let event = Event::new(json!({"a": 1})).with_attribute("prefix", "x".repeat(300));
    let err = dest
        .deliver(&Batch::new(dest.partition_key(&event), vec![event]))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Permanent, "{}", err.chain());

    let bad = [
        S3Config::new("file:///tmp/x").with_compression(Compression::Gzip),
        S3Config::new("file:///tmp/x")
            .with_format(Format::Ndjson)
            .with_compression(Compression::Snappy),
        S3Config::new("file:///tmp/x").with_key_template("{yyyy}/{hh}"),
        S3Config::new("not a url"),
        S3Config::new("s3://bucket/p").with_part_size(1024),
    ];
    for config in bad {
        assert!(
            S3Destination::new("bad", config.clone()).is_err(),
            "{config:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_schema_rejects_misfits_and_writes_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let schema: destination_s3::SchemaPolicy = serde_json::from_value(json!({
        "mode": "strict",
        "fields": [
            {"name": "action", "type": "string"},
            {"name": "n", "type": "float"},
            {"name": "user", "type": {"struct": [{"name": "login", "type": "string"}]}},
        ]
    }))
    .unwrap();
    let dest = file_destination(&dir, |c| c.with_schema(schema));
    let events = vec![
        Event::new(json!({"action": "opened", "n": 1, "user": {"login": "octocat"}})),
        Event::new(json!({"action": "opened", "extra": true})),
        Event::new(json!({"action": 7})),
        Event::new(json!({"n": 2.5, "user": null})),
    ];
    let err = dest
        .deliver(&Batch::new(None, events.clone()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Permanent);
    assert_eq!(err.rejected(), Some(&[events[1].id, events[2].id][..]));

    let stored = objects(dest.store().as_ref(), dest.root()).await;
    let kept = [events[0].clone(), events[3].clone()];
    assert_parquet_holds(&stored, &kept);
    let batches = support::parquet_batches(stored[0].1.clone());
    let schema = batches[0].schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["_event_id", "_sent_at", "action", "n", "user"]);
}

#[tokio::test]
async fn relaxed_schema_drops_unknown_keys_and_nulls_misfits() {
    let dir = tempfile::tempdir().unwrap();
    let schema: destination_s3::SchemaPolicy = serde_json::from_value(json!({
        "mode": "relaxed",
        "fields": [{"name": "n", "type": "int"}, {"name": "tags", "type": {"list": "string"}}]
    }))
    .unwrap();
    let dest = file_destination(&dir, |c| c.with_schema(schema));
    let events = vec![
        Event::new(json!({"n": 1, "tags": ["a", 2], "extra": {"x": 1}})),
        Event::new(json!({"n": "one"})),
    ];
    dest.deliver(&Batch::new(None, events.clone()))
        .await
        .unwrap();
    let stored = objects(dest.store().as_ref(), dest.root()).await;
    let rows = support::rows_of(&stored[0].0, stored[0].1.clone());
    assert_eq!(rows[0].payload, json!({"n": 1, "tags": ["a", null]}));
    assert_eq!(rows[1].payload, json!({}));
}
