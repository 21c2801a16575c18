//! Schema policies: inferring per object, or a fixed user schema in strict or relaxed mode.

use std::borrow::Cow;

use destination_core::{Event, EventId};
use serde_json::Value;

use crate::config::{ColumnSpec, ColumnType, SchemaMode, SchemaPolicy};
use crate::encode::Encoder;
use crate::infer::{MAX_NESTING, Shape, StructShape, VALUE_COLUMN, column_name};
use crate::tape::Tape;

/// A resolved schema policy.
#[derive(Clone, Debug)]
pub(crate) enum Plan {
    /// Infer from each batch.
    Infer,
    /// A fixed schema.
    Fixed {
        /// The encoder for the schema (it never changes).
        encoder: Box<Encoder>,
        /// The top-level columns, for fit checks.
        columns: StructShape,
        /// Strict or relaxed.
        mode: SchemaMode,
    },
}

impl Plan {
    /// Resolves a configured policy.
    ///
    /// # Errors
    ///
    /// A message when the schema names a column twice or has an empty struct (which
    /// Parquet cannot store; use `json`).
    pub(crate) fn new(policy: &SchemaPolicy) -> Result<Self, String> {
        let SchemaPolicy::Fixed(schema) = policy else {
            return Ok(Self::Infer);
        };
        let mut columns = StructShape::default();
        for spec in &schema.fields {
            let name = column_name(&spec.name);
            if columns.get(&name).is_some() {
                return Err(format!("schema names the field {:?} twice", spec.name));
            }
            let shape = shape_of(spec)?;
            if shape.nesting() > MAX_NESTING {
                return Err(format!(
                    "schema field {:?} nests {} lists and structs; at most {MAX_NESTING} can be \
                     read back from Parquet, use the type \"json\" below that",
                    spec.name,
                    shape.nesting()
                ));
            }
            columns.push(&name, shape);
        }
        Ok(Self::Fixed {
            encoder: Box::new(Encoder::with_columns(&columns)),
            columns,
            mode: schema.mode,
        })
    }

    /// Splits `events` into those to write and the ids of those a strict schema refuses.
    pub(crate) fn select<'a>(&self, events: &'a [Event]) -> (Vec<&'a Event>, Vec<EventId>) {
        match self {
            Self::Fixed {
                columns,
                mode: SchemaMode::Strict,
                ..
            } => {
                let (kept, refused): (Vec<&Event>, Vec<&Event>) = events
                    .iter()
                    .partition(|e| payload_fits(columns, e.payload()));
                (kept, refused.iter().map(|e| e.id).collect())
            }
            _ => (events.iter().collect(), Vec::new()),
        }
    }

    /// The encoder for the events to write, whose payloads are on `tapes`.
    pub(crate) fn encoder(&self, tapes: &[Tape<'_>]) -> Cow<'_, Encoder> {
        match self {
            Self::Infer => Cow::Owned(Encoder::infer(tapes)),
            Self::Fixed { encoder, .. } => Cow::Borrowed(encoder),
        }
    }
}

fn shape_of(spec: &ColumnSpec) -> Result<Shape, String> {
    type_shape(&spec.data_type, &spec.name)
}

fn type_shape(t: &ColumnType, name: &str) -> Result<Shape, String> {
    Ok(match t {
        ColumnType::Bool => Shape::Bool,
        ColumnType::Int => Shape::Int,
        ColumnType::Float => Shape::Float,
        ColumnType::String => Shape::Str,
        ColumnType::Json => Shape::Json,
        ColumnType::List(item) => Shape::List(Box::new(type_shape(item, name)?)),
        ColumnType::Struct(fields) if fields.is_empty() => {
            return Err(format!(
                "schema field {name:?} is a struct without fields; Parquet cannot store that, \
                 use the type \"json\""
            ));
        }
        ColumnType::Struct(fields) => {
            let mut out = StructShape::default();
            for f in fields {
                if out.get(&f.name).is_some() {
                    return Err(format!("schema struct {name:?} names {:?} twice", f.name));
                }
                out.push(&f.name, shape_of(f)?);
            }
            Shape::Struct(out)
        }
    })
}

/// Whether a payload fits the top-level columns exactly (no unknown key, no wrong type).
pub(crate) fn payload_fits(columns: &StructShape, payload: &Value) -> bool {
    match payload {
        Value::Object(object) => object
            .iter()
            .all(|(k, v)| columns.get(&column_name(k)).is_some_and(|s| fits(s, v))),
        other => columns.get(VALUE_COLUMN).is_some_and(|s| fits(s, other)),
    }
}

/// Whether `value` can be stored in a column of `shape` without loss.
pub(crate) fn fits(shape: &Shape, value: &Value) -> bool {
    match (shape, value) {
        (_, Value::Null) | (Shape::Json | Shape::Null, _) => true,
        (Shape::Bool, Value::Bool(_)) | (Shape::Float, Value::Number(_)) => true,
        (Shape::Str, Value::String(_)) => true,
        (Shape::Int, Value::Number(n)) => n.is_i64(),
        (Shape::List(item), Value::Array(items)) => items.iter().all(|v| fits(item, v)),
        (Shape::Struct(fields), Value::Object(object)) => object
            .iter()
            .all(|(k, v)| fields.get(k).is_some_and(|s| fits(s, v))),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UserSchema;
    use serde_json::json;

    fn plan(mode: &str) -> Plan {
        let schema: UserSchema = serde_json::from_value(json!({
            "mode": mode,
            "fields": [
                {"name": "n", "type": "int"},
                {"name": "tags", "type": {"list": "string"}},
                {"name": "user", "type": {"struct": [{"name": "id", "type": "float"}]}},
            ]
        }))
        .unwrap();
        Plan::new(&SchemaPolicy::Fixed(schema)).unwrap()
    }

    #[test]
    fn strict_refuses_unknown_keys_and_wrong_types() {
        let events = vec![
            Event::new(json!({"n": 1, "tags": ["a"], "user": {"id": 2}})),
            Event::new(json!({"n": "one"})),
            Event::new(json!({"n": 1, "extra": true})),
            Event::new(json!({"user": {"id": 1, "name": "x"}})),
            Event::new(json!({"tags": null})),
        ];
        let plan = plan("strict");
        let (kept, refused) = plan.select(&events);
        let encoder = plan.encoder(&[Tape::of_events(&kept)]);
        assert_eq!(kept.len(), 2);
        assert_eq!(refused, vec![events[1].id, events[2].id, events[3].id]);
        let names: Vec<String> = encoder
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(names, ["_event_id", "_sent_at", "n", "tags", "user"]);
    }

    #[test]
    fn relaxed_keeps_everything() {
        let events = vec![Event::new(json!({"n": "one", "extra": 1}))];
        let plan = plan("relaxed");
        let (kept, refused) = plan.select(&events);
        assert_eq!((kept.len(), refused.len()), (1, 0));
        let tape = Tape::of_events(&kept);
        let batch = plan
            .encoder(std::slice::from_ref(&tape))
            .encode(&kept, &tape)
            .unwrap();
        assert_eq!(batch.num_columns(), 5);
        assert_eq!(batch.column(2).null_count(), 1);
    }

    #[test]
    fn empty_structs_and_duplicates_are_config_errors() {
        let bad = |fields| {
            let schema: UserSchema =
                serde_json::from_value(json!({"mode": "strict", "fields": fields})).unwrap();
            Plan::new(&SchemaPolicy::Fixed(schema)).unwrap_err()
        };
        assert!(bad(json!([{"name": "e", "type": {"struct": []}}])).contains("json"));
        let deep = (0..=MAX_NESTING).fold(json!("int"), |inner, _| json!({ "list": inner }));
        assert!(bad(json!([{"name": "d", "type": deep}])).contains("at most 32"));
        let fits = (0..MAX_NESTING).fold(json!("int"), |inner, _| json!({ "list": inner }));
        let schema: UserSchema = serde_json::from_value(
            json!({"mode": "strict", "fields": [{"name": "d", "type": fits}]}),
        )
        .unwrap();
        assert!(Plan::new(&SchemaPolicy::Fixed(schema)).is_ok());
        assert!(
            bad(json!([{"name": "a", "type": "int"}, {"name": "a", "type": "int"}]))
                .contains("twice")
        );
    }
}
