//! Helpers shared by the integration tests: the `destinations` binary, configs, free ports
//! and reading Parquet output back.

#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use arrow_array::{Array, StringArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// The repository's root folder.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The real GitHub webhook events shipped in `testdata/`.
pub fn webhooks() -> PathBuf {
    root().join("testdata/github-webhooks.ndjson")
}

/// The `destinations` binary, built with every destination on first use.
pub fn binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        // target/<profile>/deps/<test> -> target/<profile>/destinations
        let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args([
            "build",
            "-q",
            "-p",
            "destinations",
            "--all-features",
            "--bin",
            "destinations",
        ]);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build.current_dir(root()).status().expect("cargo runs");
        assert!(status.success(), "building the destinations binary failed");
        let bin = profile_dir.join("destinations");
        assert!(bin.exists(), "no binary at {}", bin.display());
        bin
    })
    .clone()
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A config with one `file://` S3 destination `lake` under `dir`, batches of
/// `batch_events`, and `extra` lines in the `[destinations.lake]` table.
pub fn lake_config(dir: &Path, batch_events: usize, extra: &str) -> PathBuf {
    let text = format!(
        r#"
[queue]
path = "{queue}"

[shutdown]
deadline = "5s"

[destinations.lake]
type = "s3"
url = "file://{lake}"
{extra}

[destinations.lake.batch]
max_events = {batch_events}
max_age = "500ms"

[destinations.lake.retry]
max_attempts = 3
initial_backoff = "10ms"
"#,
        queue = dir.join("queue").display(),
        lake = dir.join("lake").display(),
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Every `.parquet` file under `dir`.
pub fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// How many rows each `_event_id` has across every Parquet file under `dir`.
pub fn stored_ids(dir: &Path) -> HashMap<String, usize> {
    let mut ids = HashMap::new();
    for path in parquet_files(dir) {
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap())
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let column = batch
                .column_by_name("_event_id")
                .expect("an _event_id column");
            let strings = column
                .as_any()
                .downcast_ref::<StringArray>()
                .expect("string ids");
            for id in strings.iter().flatten() {
                *ids.entry(id.to_string()).or_insert(0) += 1;
            }
        }
    }
    ids
}

/// The values of a string column across every Parquet file under `dir`.
pub fn string_column(dir: &Path, name: &str) -> Vec<String> {
    let mut values = Vec::new();
    for path in parquet_files(dir) {
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap())
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            if let Some(column) = batch.column_by_name(name) {
                let strings = column.as_any().downcast_ref::<StringArray>().unwrap();
                values.extend(strings.iter().flatten().map(str::to_string));
            }
        }
    }
    values
}
