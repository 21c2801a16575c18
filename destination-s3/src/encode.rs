//! Encoding events: Arrow record batches for Parquet, and NDJSON lines.

use std::borrow::Borrow;
use std::sync::Arc;

use arrow_array::builder::{StringBuilder, TimestampMicrosecondBuilder};
use arrow_array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, ListArray, RecordBatch, StringArray,
    StructArray,
};
use arrow_buffer::{NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow_schema::{ArrowError, Field, Schema, SchemaRef};
use destination_core::Event;
use serde_json::Value;

use crate::infer::{
    EVENT_ID_COLUMN, SENT_AT_COLUMN, Shape, StructShape, VALUE_COLUMN, column_name, sent_at_type,
};

/// Where a column's values come from in an event's payload.
#[derive(Clone, Debug)]
enum Source {
    /// The payload object's key of this name.
    Key(String),
    /// The whole payload, when it is not an object.
    Whole,
}

/// The plan for turning events into record batches: one schema for a whole object.
#[derive(Clone, Debug)]
pub(crate) struct Encoder {
    schema: SchemaRef,
    columns: Vec<(Source, Shape)>,
}

impl Encoder {
    /// An encoder whose schema is inferred from every event of `events`.
    pub(crate) fn infer<E: Borrow<Event>>(events: &[E]) -> Self {
        let mut root = StructShape::default();
        let mut sources: Vec<Source> = Vec::new();
        for event in events.iter().map(Borrow::borrow) {
            match event.payload() {
                Value::Object(object) => {
                    for (key, value) in object {
                        let known = root.names.len();
                        root.entry(&column_name(key)).observe(value);
                        if root.names.len() > known {
                            sources.push(Source::Key(key.clone()));
                        }
                    }
                }
                other => {
                    let known = root.names.len();
                    root.entry(VALUE_COLUMN).observe(other);
                    if root.names.len() > known {
                        sources.push(Source::Whole);
                    }
                }
            }
        }
        let shapes = root.shapes.into_iter().map(Shape::finish);
        Self::from_parts(root.names.into_iter().zip(sources).zip(shapes))
    }

    /// An encoder for a schema given by the user, column names already final.
    pub(crate) fn with_columns(columns: &StructShape) -> Self {
        let parts = columns
            .names
            .iter()
            .zip(&columns.shapes)
            .map(|(name, shape)| {
                let source = if name == VALUE_COLUMN {
                    Source::Whole
                } else {
                    Source::Key(payload_key(name))
                };
                ((name.clone(), source), shape.clone())
            });
        Self::from_parts(parts)
    }

    fn from_parts(parts: impl Iterator<Item = ((String, Source), Shape)>) -> Self {
        let mut fields = vec![
            Field::new(EVENT_ID_COLUMN, arrow_schema::DataType::Utf8, false),
            Field::new(SENT_AT_COLUMN, sent_at_type(), false),
        ];
        let mut columns = Vec::new();
        for ((name, source), shape) in parts {
            fields.push(shape.field(&name));
            columns.push((source, shape));
        }
        Self {
            schema: Arc::new(Schema::new(fields)),
            columns,
        }
    }

    /// The Arrow schema of every record batch this encoder makes.
    pub(crate) fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// The record batch of `events`.
    ///
    /// Values that do not fit their column's type are stored as null; with an inferred
    /// schema that never happens.
    ///
    /// # Errors
    ///
    /// An [`ArrowError`] when the arrays do not make a valid record batch, or when a list
    /// holds more than `i32::MAX` items.
    pub(crate) fn encode<E: Borrow<Event>>(&self, events: &[E]) -> Result<RecordBatch, ArrowError> {
        let mut ids = StringBuilder::with_capacity(events.len(), events.len() * 36);
        let mut sent = TimestampMicrosecondBuilder::with_capacity(events.len());
        for event in events.iter().map(Borrow::borrow) {
            ids.append_value(event.id.to_string());
            sent.append_value(event.sent_at.timestamp_micros());
        }
        let mut arrays: Vec<ArrayRef> = vec![
            Arc::new(ids.finish()),
            Arc::new(sent.finish().with_timezone("UTC")),
        ];
        for (source, shape) in &self.columns {
            let values: Vec<Option<&Value>> = events
                .iter()
                .map(|e| match (source, e.borrow().payload()) {
                    (Source::Key(key), Value::Object(object)) => object.get(key),
                    (Source::Whole, Value::Object(_)) | (Source::Key(_), _) => None,
                    (Source::Whole, other) => Some(other),
                })
                .collect();
            arrays.push(build(shape, &values)?);
        }
        RecordBatch::try_new(self.schema(), arrays)
    }
}

/// The payload key a column name stands for: the inverse of [`column_name`].
pub fn payload_key(column: &str) -> String {
    match column.strip_prefix(crate::infer::RENAME_PREFIX) {
        Some(rest) if column_name(rest) == column => rest.to_owned(),
        _ => column.to_owned(),
    }
}

fn nulls(valid: Vec<bool>) -> Option<NullBuffer> {
    if valid.iter().all(|v| *v) {
        None
    } else {
        Some(NullBuffer::from(valid))
    }
}

fn offset(len: usize) -> Result<i32, ArrowError> {
    i32::try_from(len)
        .map_err(|_| ArrowError::ComputeError("list holds more than i32::MAX items".into()))
}

/// Builds the array of one column (or nested field) from its values.
fn build(shape: &Shape, values: &[Option<&Value>]) -> Result<ArrayRef, ArrowError> {
    let array: ArrayRef = match shape {
        Shape::Bool => Arc::new(
            values
                .iter()
                .map(|v| v.and_then(Value::as_bool))
                .collect::<BooleanArray>(),
        ),
        Shape::Int => Arc::new(
            values
                .iter()
                .map(|v| v.and_then(Value::as_i64))
                .collect::<Int64Array>(),
        ),
        Shape::Float => Arc::new(
            values
                .iter()
                .map(|v| v.and_then(Value::as_f64))
                .collect::<Float64Array>(),
        ),
        Shape::Str => Arc::new(
            values
                .iter()
                .map(|v| v.and_then(Value::as_str))
                .collect::<StringArray>(),
        ),
        Shape::Json | Shape::Null => Arc::new(
            values
                .iter()
                .map(|v| v.filter(|v| !v.is_null()).map(Value::to_string))
                .collect::<StringArray>(),
        ),
        Shape::List(item) => {
            let mut offsets = Vec::with_capacity(values.len() + 1);
            offsets.push(0);
            let mut items = Vec::new();
            let mut valid = Vec::with_capacity(values.len());
            for v in values {
                if let Some(Value::Array(list)) = v {
                    items.extend(list.iter().map(Some));
                    valid.push(true);
                } else {
                    valid.push(false);
                }
                offsets.push(offset(items.len())?);
            }
            let child = build(item, &items)?;
            Arc::new(ListArray::try_new(
                Arc::new(item.field("item")),
                OffsetBuffer::new(ScalarBuffer::from(offsets)),
                child,
                nulls(valid),
            )?)
        }
        Shape::Struct(fields) => {
            let objects: Vec<Option<&serde_json::Map<String, Value>>> = values
                .iter()
                .map(|v| v.and_then(Value::as_object))
                .collect();
            let mut children = Vec::with_capacity(fields.names.len());
            for (name, child) in fields.names.iter().zip(&fields.shapes) {
                let child_values: Vec<Option<&Value>> = objects
                    .iter()
                    .map(|o| o.and_then(|o| o.get(name)))
                    .collect();
                children.push(build(child, &child_values)?);
            }
            let valid = objects.iter().map(Option::is_some).collect();
            Arc::new(StructArray::try_new(
                fields.fields(),
                children,
                nulls(valid),
            )?)
        }
    };
    Ok(array)
}

/// One NDJSON line for `event`: `_event_id`, `_sent_at`, then the payload's keys renamed
/// as in Parquet (a non-object payload goes under `_value`), ending in a newline.
pub(crate) fn ndjson_line(event: &Event, out: &mut Vec<u8>) {
    let mut object = serde_json::Map::new();
    object.insert(EVENT_ID_COLUMN.into(), Value::String(event.id.to_string()));
    let sent_at = event
        .sent_at
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    object.insert(SENT_AT_COLUMN.into(), Value::String(sent_at));
    match event.payload() {
        Value::Object(payload) => {
            for (key, value) in payload {
                object.insert(column_name(key), value.clone());
            }
        }
        other => {
            object.insert(VALUE_COLUMN.into(), other.clone());
        }
    }
    // Serialising a map with string keys into a Vec cannot fail.
    serde_json::to_writer(&mut *out, &Value::Object(object)).ok();
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Array;
    use serde_json::json;

    #[test]
    fn columns_follow_first_seen_order_after_the_fixed_two() {
        let events = vec![
            Event::new(json!({"b": 1, "_event_id": "mine"})),
            Event::new(json!({"a": {"x": [1, 2]}, "b": 2.5})),
            Event::new(json!("not an object")),
        ];
        let encoder = Encoder::infer(&events);
        let schema = encoder.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(
            names,
            [
                "_event_id",
                "_sent_at",
                "_payload_event_id",
                "b",
                "a",
                "_value"
            ]
        );
        let batch = encoder.encode(&events).unwrap();
        assert_eq!(batch.num_rows(), 3);
        let b = batch
            .column(3)
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap();
        assert_eq!((b.value(0), b.value(1), b.is_null(2)), (1.0, 2.5, true));
        let renamed = batch
            .column(2)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(renamed.value(0), "mine");
        let value = batch
            .column(5)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert!(value.is_null(0));
        assert_eq!(value.value(2), "not an object");
    }

    #[test]
    fn payload_key_inverts_column_name() {
        for key in [
            "a",
            "_event_id",
            "_payload_sent_at",
            "_payload",
            "_value",
            "",
        ] {
            assert_eq!(payload_key(&column_name(key)), key);
        }
    }

    #[test]
    fn ndjson_lines_carry_id_time_and_renamed_keys() {
        let event = Event::new(json!({"_sent_at": 1, "x": [1]}));
        let mut out = Vec::new();
        ndjson_line(&event, &mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        let line: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(line["_event_id"], json!(event.id.to_string()));
        assert_eq!(line["_payload_sent_at"], json!(1));
        assert_eq!(line["x"], json!([1]));
        assert!(line["_sent_at"].as_str().unwrap().ends_with('Z'));
    }
}
