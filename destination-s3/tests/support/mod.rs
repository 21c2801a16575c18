//! Shared helpers: reading objects back, turning Arrow rows into JSON, the real events.

#![allow(dead_code, unreachable_pub)]

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, Field};
use async_trait::async_trait;
use bytes::Bytes;
use destination_core::testing::ReadBack;
use destination_core::{Event, EventId};
use destination_s3::{ENCODING_JSON, ENCODING_KEY, VALUE_COLUMN, column_name, payload_key};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{Map, Value};

pub mod moto;
pub mod moto_process;
pub mod proxy;

/// One row read back: the event id, `sent_at` in microseconds, and the payload.
#[derive(Debug, Clone)]
pub struct Row {
    pub id: EventId,
    pub sent_at_micros: i64,
    pub payload: Value,
}

/// Every object under `root`, with its bytes.
pub async fn objects(store: &dyn ObjectStore, root: &Path) -> Vec<(Path, Bytes)> {
    let metas: Vec<_> = store
        .list(Some(root))
        .try_collect()
        .await
        .expect("list objects");
    let mut out = Vec::new();
    for meta in metas {
        let bytes = store
            .get(&meta.location)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        out.push((meta.location, bytes));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The record batches of a Parquet file.
pub fn parquet_batches(bytes: Bytes) -> Vec<RecordBatch> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .expect("a valid parquet file")
        .build()
        .unwrap();
    reader.collect::<Result<Vec<_>, _>>().unwrap()
}

/// The rows of one object, whatever its format.
pub fn rows_of(path: &Path, bytes: Bytes) -> Vec<Row> {
    let name = path.as_ref();
    if name.ends_with(".parquet") {
        return parquet_batches(bytes).iter().flat_map(batch_rows).collect();
    }
    let mut text = String::new();
    if name.ends_with(".gz") {
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_string(&mut text)
            .unwrap();
    } else if name.ends_with(".zst") {
        text = String::from_utf8(zstd::stream::decode_all(&bytes[..]).unwrap()).unwrap();
    } else {
        text = String::from_utf8(bytes.to_vec()).unwrap();
    }
    text.lines().map(ndjson_row).collect()
}

fn ndjson_row(line: &str) -> Row {
    let Value::Object(mut object) = serde_json::from_str(line).unwrap() else {
        panic!("ndjson line is not an object: {line}");
    };
    let id = object
        .remove("_event_id")
        .unwrap()
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let sent = object.remove("_sent_at").unwrap();
    let sent = chrono::DateTime::parse_from_rfc3339(sent.as_str().unwrap()).unwrap();
    let payload = match object.remove(VALUE_COLUMN) {
        Some(v) if object.is_empty() => v,
        other => {
            let mut out: Map<String, Value> = object
                .into_iter()
                .map(|(k, v)| (payload_key(&k), v))
                .collect();
            if let Some(v) = other {
                out.insert(VALUE_COLUMN.to_owned(), v);
            }
            Value::Object(out)
        }
    };
    Row {
        id,
        sent_at_micros: sent.timestamp_micros(),
        payload,
    }
}

/// The rows of a record batch, payloads rebuilt as JSON (null cells left out).
pub fn batch_rows(batch: &RecordBatch) -> Vec<Row> {
    let schema = batch.schema();
    assert_eq!(schema.field(0).name(), "_event_id");
    assert_eq!(schema.field(1).name(), "_sent_at");
    let ids = batch.column(0).as_string::<i32>();
    let sent = batch.column(1).as_primitive::<TimestampMicrosecondType>();
    (0..batch.num_rows())
        .map(|row| {
            let mut object = Map::new();
            let mut whole = None;
            for (i, field) in schema.fields().iter().enumerate().skip(2) {
                let value = cell(batch.column(i).as_ref(), field, row);
                if value.is_null() {
                    continue;
                }
                if field.name() == VALUE_COLUMN {
                    whole = Some(value);
                } else {
                    object.insert(payload_key(field.name()), value);
                }
            }
            let payload = match whole {
                Some(v) if object.is_empty() => v,
                _ => Value::Object(object),
            };
            Row {
                id: ids.value(row).parse().unwrap(),
                sent_at_micros: sent.value(row),
                payload,
            }
        })
        .collect()
}

fn is_json(field: &Field) -> bool {
    field.metadata().get(ENCODING_KEY).map(String::as_str) == Some(ENCODING_JSON)
}

/// One cell as JSON; object keys whose value is null are left out.
pub fn cell(array: &dyn Array, field: &Field, row: usize) -> Value {
    if array.is_null(row) {
        return Value::Null;
    }
    match array.data_type() {
        DataType::Boolean => Value::Bool(array.as_boolean().value(row)),
        DataType::Int64 => Value::from(array.as_primitive::<Int64Type>().value(row)),
        DataType::Float64 => Value::from(array.as_primitive::<Float64Type>().value(row)),
        DataType::Utf8 => {
            let text = array.as_string::<i32>().value(row);
            if is_json(field) {
                serde_json::from_str(text).expect("a json column holds json text")
            } else {
                Value::String(text.to_owned())
            }
        }
        DataType::List(item) => {
            let items = array.as_list::<i32>().value(row);
            Value::Array(
                (0..items.len())
                    .map(|i| cell(items.as_ref(), item, i))
                    .collect(),
            )
        }
        DataType::Struct(fields) => {
            let s = array.as_struct();
            let mut object = Map::new();
            for (i, f) in fields.iter().enumerate() {
                let v = cell(s.column(i).as_ref(), f, row);
                if !v.is_null() {
                    object.insert(f.name().clone(), v);
                }
            }
            Value::Object(object)
        }
        other => panic!("unexpected column type {other}"),
    }
}

/// What a payload should read back as, given the column types the writer chose: null
/// keys left out, integers in float columns as floats, JSON columns verbatim. Panics
/// when a value does not belong in its column per the documented inference rules.
pub fn expected_payload(payload: &Value, fields: &[Arc<Field>]) -> Value {
    let find = |name: &str| {
        fields
            .iter()
            .find(|f| f.name() == name)
            .unwrap_or_else(|| panic!("no column for payload key {name:?}"))
    };
    match payload {
        Value::Object(object) => Value::Object(
            object
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), widen(v, find(&column_name(k)))))
                .collect(),
        ),
        other => widen(other, find(VALUE_COLUMN)),
    }
}

fn widen(value: &Value, field: &Field) -> Value {
    if is_json(field) || value.is_null() {
        return value.clone();
    }
    let path = field.name();
    match (field.data_type(), value) {
        (DataType::Boolean, Value::Bool(_)) | (DataType::Utf8, Value::String(_)) => value.clone(),
        (DataType::Int64, Value::Number(n)) if n.is_i64() => value.clone(),
        (DataType::Float64, Value::Number(n)) => Value::from(n.as_f64().unwrap()),
        (DataType::List(item), Value::Array(items)) => {
            Value::Array(items.iter().map(|v| widen(v, item)).collect())
        }
        (DataType::Struct(fields), Value::Object(object)) => Value::Object(
            object
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| {
                    let f = fields
                        .iter()
                        .find(|f| f.name() == k)
                        .unwrap_or_else(|| panic!("struct {path:?} has no field {k:?}"));
                    (k.clone(), widen(v, f))
                })
                .collect(),
        ),
        (t, v) => panic!("value {v} does not belong in column {path:?} of type {t}"),
    }
}

/// Reads every object under a root back and lists the event ids stored.
#[derive(Debug)]
pub struct StoreReadBack {
    pub store: Arc<dyn ObjectStore>,
    pub root: Path,
}

#[async_trait]
impl ReadBack for StoreReadBack {
    async fn stored_ids(&self) -> Result<Vec<EventId>, String> {
        let mut ids = Vec::new();
        for (path, bytes) in objects(self.store.as_ref(), &self.root).await {
            ids.extend(rows_of(&path, bytes).into_iter().map(|r| r.id));
        }
        Ok(ids)
    }
}

/// The 420 real GitHub webhook payloads, as events with the prefix `github`.
pub fn github_events() -> Vec<Event> {
    let path = std::env::var("DESTINATIONS_GITHUB_WEBHOOKS").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../testdata/github-webhooks.ndjson"
        )
        .into()
    });
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading the real events at {path}: {e}"));
    text.lines()
        .map(|line| {
            let record: Value = serde_json::from_str(line).unwrap();
            Event::new(record["payload"].clone()).with_attribute("prefix", "github")
        })
        .collect()
}

/// Checks that the Parquet objects hold exactly `events`, each once, field by field,
/// with the widening the writer's column types imply. Returns the rows checked.
pub fn assert_parquet_holds(objects: &[(Path, Bytes)], events: &[Event]) -> usize {
    let by_id: HashMap<EventId, &Event> = events.iter().map(|e| (e.id, e)).collect();
    let mut seen = HashSet::new();
    for (path, bytes) in objects {
        assert!(
            path.as_ref().ends_with(".parquet"),
            "unexpected object {path}"
        );
        for batch in parquet_batches(bytes.clone()) {
            let fields: Vec<Arc<Field>> = batch.schema().fields().iter().cloned().collect();
            for row in batch_rows(&batch) {
                assert!(seen.insert(row.id), "event {} stored twice", row.id);
                let event = by_id
                    .get(&row.id)
                    .unwrap_or_else(|| panic!("unknown id {}", row.id));
                assert_eq!(row.sent_at_micros, event.sent_at.timestamp_micros());
                let expected = expected_payload(event.payload(), &fields);
                assert_eq!(
                    row.payload, expected,
                    "payload of event {} in {path}",
                    row.id
                );
            }
        }
    }
    assert_eq!(seen.len(), events.len(), "events stored");
    seen.len()
}

/// Checks that NDJSON objects hold exactly `events`, each once, payloads verbatim.
pub fn assert_ndjson_holds(objects: &[(Path, Bytes)], events: &[Event]) {
    let by_id: HashMap<EventId, &Event> = events.iter().map(|e| (e.id, e)).collect();
    let mut seen = HashSet::new();
    for (path, bytes) in objects {
        for row in rows_of(path, bytes.clone()) {
            assert!(seen.insert(row.id), "event {} stored twice", row.id);
            let event = by_id
                .get(&row.id)
                .unwrap_or_else(|| panic!("unknown id {}", row.id));
            assert_eq!(row.sent_at_micros, event.sent_at.timestamp_micros());
            assert_eq!(row.payload, *event.payload(), "payload of event {}", row.id);
        }
    }
    assert_eq!(seen.len(), events.len(), "events stored");
}
