//! Encoding events: Arrow record batches for Parquet, and NDJSON lines.

use std::borrow::{Borrow, Cow};
use std::fmt;
use std::sync::Arc;

use arrow_array::builder::{StringBuilder, TimestampMicrosecondBuilder};
use arrow_array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, ListArray, RecordBatch, StringArray,
    StructArray,
};
use arrow_buffer::{NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow_schema::{ArrowError, Field, Schema, SchemaRef};
use destination_core::Event;
use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::infer::{
    EVENT_ID_COLUMN, SENT_AT_COLUMN, Shape, StructShape, VALUE_COLUMN, column_name, sent_at_type,
};
use crate::tape::{Node, Tape};

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
    /// The payload keys of the columns, for looking up an event's keys (the shapes are
    /// unused), and the column of each.
    keys: StructShape,
    key_columns: Vec<usize>,
    /// The column of payloads that are not objects.
    whole: Option<usize>,
}

impl Encoder {
    /// An encoder whose schema is inferred from every payload of `tapes`.
    pub(crate) fn infer(tapes: &[Tape<'_>]) -> Self {
        // Keyed by payload key (column names are an injective function of it).
        let mut keys = StructShape::default();
        let mut whole: Option<(usize, Shape)> = None;
        for tape in tapes {
            for &root in tape.roots() {
                if let Node::Object { .. } = tape.node(root) {
                    keys.observe(tape, root);
                } else {
                    let (_, shape) = whole.get_or_insert((keys.names.len(), Shape::Null));
                    shape.observe(tape, root);
                }
            }
        }
        let mut parts: Vec<((String, Source), Shape)> = keys
            .names
            .into_iter()
            .zip(keys.shapes)
            .map(|(key, shape)| ((column_name(&key), Source::Key(key)), shape.finish()))
            .collect();
        if let Some((at, shape)) = whole {
            let part = ((VALUE_COLUMN.to_owned(), Source::Whole), shape.finish());
            parts.insert(at, part);
        }
        Self::from_parts(parts.into_iter())
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
        let (mut keys, mut key_columns, mut whole) = (StructShape::default(), Vec::new(), None);
        for ((name, source), shape) in parts {
            fields.push(shape.field(&name));
            match &source {
                Source::Key(key) => {
                    keys.push(key, Shape::Null);
                    key_columns.push(columns.len());
                }
                Source::Whole => whole = Some(columns.len()),
            }
            columns.push((source, shape));
        }
        Self {
            schema: Arc::new(Schema::new(fields)),
            columns,
            keys,
            key_columns,
            whole,
        }
    }

    /// The Arrow schema of every record batch this encoder makes.
    pub(crate) fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// The record batch of `events`, whose payloads are the roots of `tape`.
    ///
    /// Values that do not fit their column's type are stored as null; with an inferred
    /// schema that never happens.
    ///
    /// # Errors
    ///
    /// An [`ArrowError`] when the arrays do not make a valid record batch, or when a list
    /// holds more than `i32::MAX` items.
    pub(crate) fn encode<E: Borrow<Event>>(
        &self,
        events: &[E],
        tape: &Tape<'_>,
    ) -> Result<RecordBatch, ArrowError> {
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
        let mut values = vec![vec![None; tape.roots().len()]; self.columns.len()];
        for (row, &root) in tape.roots().iter().enumerate() {
            match (tape.node(root), self.whole) {
                (Node::Object { .. }, _) => {
                    let mut guess = 0;
                    for (key, value) in tape.entries(root) {
                        if let Some(i) = self.keys.find(key, guess) {
                            values[self.key_columns[i]][row] = Some(value);
                            guess = i + 1;
                        }
                    }
                }
                (_, Some(i)) => values[i][row] = Some(root),
                (_, None) => {}
            }
        }
        for ((_, shape), values) in self.columns.iter().zip(&values) {
            arrays.push(build(shape, tape, values)?);
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

/// Builds the array of one column (or nested field) from its values: positions in `tape`,
/// or `None` where the value is absent.
fn build(shape: &Shape, tape: &Tape<'_>, values: &[Option<usize>]) -> Result<ArrayRef, ArrowError> {
    let nodes = || values.iter().map(|v| v.map(|at| tape.node(at)));
    let array: ArrayRef = match shape {
        Shape::Bool => Arc::new(
            nodes()
                .map(|n| match n {
                    Some(Node::Bool(b)) => Some(b),
                    _ => None,
                })
                .collect::<BooleanArray>(),
        ),
        Shape::Int => Arc::new(
            nodes()
                .map(|n| match n {
                    Some(Node::Int(i)) => Some(i),
                    _ => None,
                })
                .collect::<Int64Array>(),
        ),
        Shape::Float => Arc::new(
            nodes()
                .map(|n| match n {
                    Some(Node::Int(i)) => Some(i as f64),
                    Some(Node::Big(u)) => Some(u as f64),
                    Some(Node::Float(f)) => Some(f),
                    _ => None,
                })
                .collect::<Float64Array>(),
        ),
        Shape::Str => Arc::new(
            values
                .iter()
                .map(|v| v.and_then(|at| tape.str(at)))
                .collect::<StringArray>(),
        ),
        Shape::Json | Shape::Null => {
            let mut out = StringBuilder::with_capacity(values.len(), 0);
            let mut text = Vec::new();
            for v in values {
                match v.filter(|at| tape.node(*at) != Node::Null) {
                    Some(at) => {
                        text.clear();
                        tape.write_json(at, &mut text);
                        // The tape writes JSON from valid strings: always UTF-8.
                        out.append_value(String::from_utf8_lossy(&text));
                    }
                    None => out.append_null(),
                }
            }
            Arc::new(out.finish())
        }
        Shape::List(item) => {
            let mut offsets = Vec::with_capacity(values.len() + 1);
            offsets.push(0);
            let mut items = Vec::new();
            let mut valid = Vec::with_capacity(values.len());
            for v in values {
                match v.filter(|at| matches!(tape.node(*at), Node::Array { .. })) {
                    Some(at) => {
                        items.extend(tape.items(at).map(Some));
                        valid.push(true);
                    }
                    None => valid.push(false),
                }
                offsets.push(offset(items.len())?);
            }
            let child = build(item, tape, &items)?;
            Arc::new(ListArray::try_new(
                Arc::new(item.field("item")),
                OffsetBuffer::new(ScalarBuffer::from(offsets)),
                child,
                nulls(valid),
            )?)
        }
        Shape::Struct(fields) => {
            let mut children = vec![vec![None; values.len()]; fields.names.len()];
            let mut valid = Vec::with_capacity(values.len());
            for (row, v) in values.iter().enumerate() {
                match v.filter(|at| matches!(tape.node(*at), Node::Object { .. })) {
                    Some(at) => {
                        let mut guess = 0;
                        for (key, value) in tape.entries(at) {
                            if let Some(i) = fields.find(key, guess) {
                                children[i][row] = Some(value);
                                guess = i + 1;
                            }
                        }
                        valid.push(true);
                    }
                    None => valid.push(false),
                }
            }
            let children = fields
                .shapes
                .iter()
                .zip(&children)
                .map(|(shape, values)| build(shape, tape, values))
                .collect::<Result<Vec<_>, _>>()?;
            Arc::new(StructArray::try_new(
                fields.fields(),
                children,
                nulls(valid),
            )?)
        }
    };
    Ok(array)
}

/// One NDJSON line for `event`: `_event_id`, `_sent_at`, then the payload's members as
/// sent (in their order, repeats included, each value's text exactly as the client wrote
/// it, so numbers keep every digit), keys renamed as in Parquet; a payload that is not an
/// object goes under `_value`. Ends in a newline.
pub(crate) fn ndjson_line(event: &Event, out: &mut Vec<u8>) {
    let sent_at = event
        .sent_at
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    // Serialising strings into a Vec cannot fail.
    let member = |out: &mut Vec<u8>, name: &str| {
        serde_json::to_writer(&mut *out, name).ok();
        out.push(b':');
    };
    out.push(b'{');
    member(out, EVENT_ID_COLUMN);
    serde_json::to_writer(&mut *out, &event.id.to_string()).ok();
    out.push(b',');
    member(out, SENT_AT_COLUMN);
    serde_json::to_writer(&mut *out, &sent_at).ok();
    let text = event.payload_json();
    if let Ok(Members(members)) = serde_json::from_slice::<Members<'_>>(text) {
        for (key, value) in members {
            out.push(b',');
            member(out, &column_name(&key));
            out.extend_from_slice(value.get().as_bytes());
        }
    } else {
        out.push(b',');
        member(out, VALUE_COLUMN);
        match serde_json::from_slice::<&RawValue>(text) {
            Ok(value) => out.extend_from_slice(value.get().as_bytes()),
            // Text that is not JSON (only text stored unchecked can be) is a string, as
            // `Event::payload` reads it.
            Err(_) => {
                serde_json::to_writer(&mut *out, &String::from_utf8_lossy(text)).ok();
            }
        }
    }
    out.extend_from_slice(b"}\n");
}

/// The members of a JSON object's text, in order, repeats included, each value as its
/// text.
struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> Visitor<'de> for Entries {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = Vec::new();
                while let Some(Key(key)) = map.next_key()? {
                    members.push((key, map.next_value()?));
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(Entries)
    }
}

/// An object key, borrowed from the text unless it holds escapes.
#[derive(Deserialize)]
struct Key<'a>(#[serde(borrow)] Cow<'a, str>);

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Array;
    use serde_json::{Value, json};

    #[test]
    fn columns_follow_first_seen_order_after_the_fixed_two() {
        let events = vec![
            Event::new(json!({"b": 1, "_event_id": "mine"})),
            Event::new(json!({"a": {"x": [1, 2]}, "b": 2.5})),
            Event::new(json!("not an object")),
        ];
        let tape = Tape::of_events(&events);
        let encoder = Encoder::infer(std::slice::from_ref(&tape));
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
        let batch = encoder.encode(&events, &tape).unwrap();
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

    fn sent(texts: &[&str]) -> Vec<Event> {
        texts
            .iter()
            .map(|t| Event::from_sent_json(bytes::Bytes::copy_from_slice(t.as_bytes())).expect(t))
            .collect()
    }

    fn column<'b, T: 'static>(batch: &'b RecordBatch, name: &str) -> &'b T {
        batch
            .column_by_name(name)
            .unwrap_or_else(|| panic!("no column {name}"))
            .as_any()
            .downcast_ref::<T>()
            .unwrap_or_else(|| panic!("column {name} is of another type"))
    }

    #[test]
    fn keys_keep_text_order_and_the_last_of_a_repeated_key_wins() {
        let events = sent(&[
            r#"{"z": 1, "": "empty", "s": {"q": 1, "p": "a"}, "z": 2}"#,
            r#"{"s": {"p": "b", "new": true, "q": 3}, "k\u00e9y": "escaped"}"#,
            r#""not an object""#,
        ]);
        // Two tapes, as a batch of more than one chunk has.
        let tapes = [Tape::of_events(&events[..1]), Tape::of_events(&events[1..])];
        let encoder = Encoder::infer(&tapes);
        let schema = encoder.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(
            names,
            ["_event_id", "_sent_at", "z", "", "s", "k\u{e9}y", "_value"]
        );
        let first = encoder.encode(&events[..1], &tapes[0]).unwrap();
        let rest = encoder.encode(&events[1..], &tapes[1]).unwrap();
        assert_eq!(column::<Int64Array>(&first, "z").value(0), 2);
        assert_eq!(column::<StringArray>(&first, "").value(0), "empty");
        assert!(column::<StringArray>(&rest, "").is_null(1));
        assert_eq!(column::<StringArray>(&rest, "k\u{e9}y").value(0), "escaped");
        assert_eq!(
            column::<StringArray>(&rest, "_value").value(1),
            "not an object"
        );
        let s = column::<StructArray>(&rest, "s");
        let names: Vec<&str> = s.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["q", "p", "new"]);
        let q = s.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        let p = s.column(1).as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!((q.value(0), p.value(0)), (3, "b"));
        assert!(s.is_null(1));
        let q = column::<StructArray>(&first, "s").column(0);
        assert_eq!(q.as_any().downcast_ref::<Int64Array>().unwrap().value(0), 1);
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
    fn ndjson_lines_carry_id_time_and_renamed_keys_in_text_order() {
        let events = sent(&[
            r#"{"x": [1, {"b": 2, "a": "\u00e9"}], "_sent_at": 1}"#,
            "[true]",
        ]);
        let mut out = Vec::new();
        for event in &events {
            ndjson_line(event, &mut out);
        }
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(text.ends_with('\n'));
        let id = events[0].id.to_string();
        let prefix = format!("{{\"_event_id\":\"{id}\",\"_sent_at\":\"");
        assert!(lines[0].starts_with(&prefix), "{}", lines[0]);
        assert!(
            lines[0].ends_with(r#"Z","x":[1, {"b": 2, "a": "\u00e9"}],"_payload_sent_at":1}"#),
            "{}",
            lines[0]
        );
        let second: Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(second["_value"], json!([true]));
        assert_eq!(second["_event_id"], json!(events[1].id.to_string()));
    }

    #[test]
    fn ndjson_values_keep_the_text_they_were_sent_as() {
        let mut events = sent(&[
            r#"{"big": 18446744073709551616, "neg": -9223372036854775809, "z": -0, "f": 1.50, "k": 1, "k": [2]}"#,
            r#""just text""#,
            "12345678901234567890123",
        ]);
        // Text stored unchecked that is not JSON is a string, as `Event::payload` reads it.
        events.push(Event::from_trusted_json(
            destination_core::EventId::new(),
            chrono::Utc::now(),
            bytes::Bytes::from_static(b"{not json"),
        ));
        let mut out = Vec::new();
        for event in &events {
            ndjson_line(event, &mut out);
        }
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let ends = [
            r#"Z","big":18446744073709551616,"neg":-9223372036854775809,"z":-0,"f":1.50,"k":1,"k":[2]}"#,
            r#"Z","_value":"just text"}"#,
            r#"Z","_value":12345678901234567890123}"#,
            r#"Z","_value":"{not json"}"#,
        ];
        assert_eq!(lines.len(), ends.len());
        for (line, end) in lines.iter().zip(ends) {
            assert!(line.ends_with(end), "{line}");
            serde_json::from_str::<Value>(line).expect("each line is JSON");
        }
    }
}
