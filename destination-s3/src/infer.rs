//! Schema inference: the Arrow type of each JSON field, worked out from a whole batch.
//!
//! The rules are documented on the crate root (`Schema inference`); this module is their
//! single implementation, shared by the Parquet encoder and by user-given schemas.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_schema::{DataType, Field, Fields, TimeUnit};

use crate::tape::{Node, Tape};

/// Field metadata key marking a Utf8 column that holds JSON text rather than plain strings.
pub const ENCODING_KEY: &str = "destinations.encoding";
/// The value of [`ENCODING_KEY`] for JSON-text columns.
pub const ENCODING_JSON: &str = "json";

/// The column holding each event's id.
pub const EVENT_ID_COLUMN: &str = "_event_id";
/// The column holding each event's `sent_at` timestamp.
pub const SENT_AT_COLUMN: &str = "_sent_at";
/// The column holding a payload that is not a JSON object.
pub const VALUE_COLUMN: &str = "_value";
/// The prefix a payload key gets when it would collide with a column above.
pub const RENAME_PREFIX: &str = "_payload";

const RESERVED: [&str; 3] = [EVENT_ID_COLUMN, SENT_AT_COLUMN, VALUE_COLUMN];

/// The most lists and structs a column nests; deeper values are stored as JSON text.
///
/// A Parquet file keeps its Arrow schema in a flatbuffer, which readers (the parquet
/// crate's among them) refuse to open past 64 levels of nesting, reached by columns of
/// about 61 nested lists; 32 leaves a margin, and real payloads rarely nest a tenth as deep.
pub const MAX_NESTING: usize = 32;

/// The column name of a top-level payload key.
///
/// Keys of the form `(_payload)*(_event_id|_sent_at|_value)` get one more `_payload` prefix;
/// every other key is kept. The mapping is injective, so no two keys share a column, and
/// it depends on the key alone, so every batch names a key's column the same way.
pub fn column_name(key: &str) -> String {
    let mut rest = key;
    while let Some(stripped) = rest.strip_prefix(RENAME_PREFIX) {
        rest = stripped;
    }
    if RESERVED.contains(&rest) {
        format!("{RENAME_PREFIX}{key}")
    } else {
        key.to_owned()
    }
}

/// The JSON shape of a field across every value seen for it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Shape {
    /// Only nulls (or nothing) seen so far.
    Null,
    /// Booleans.
    Bool,
    /// Integers that fit an `i64`.
    Int,
    /// Numbers, at least one of them not an `i64`.
    Float,
    /// Strings.
    Str,
    /// Mixed or unknowable: stored as the JSON text of each value.
    Json,
    /// Arrays, with the merged shape of their elements.
    List(Box<Shape>),
    /// Objects, with the merged shapes of their keys in first-seen order.
    Struct(StructShape),
}

/// The keys of an object shape, in the order they were first seen.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct StructShape {
    pub(crate) names: Vec<String>,
    pub(crate) shapes: Vec<Shape>,
    index: HashMap<String, usize>,
}

impl StructShape {
    /// The shape of `name`, added as [`Shape::Null`] when first seen.
    pub(crate) fn entry(&mut self, name: &str) -> &mut Shape {
        let i = self.position(name, self.names.len());
        &mut self.shapes[i]
    }

    /// The position of `name`, added when first seen.
    ///
    /// `guess` is where the name is likely to be: objects of one kind tend to list their
    /// keys in the same order, so the position after the previous key's is usually right,
    /// and checking it is cheaper than hashing the name.
    pub(crate) fn position(&mut self, name: &str, guess: usize) -> usize {
        if let Some(i) = self.find(name, guess) {
            return i;
        }
        self.index.insert(name.to_owned(), self.names.len());
        self.names.push(name.to_owned());
        self.shapes.push(Shape::Null);
        self.names.len() - 1
    }

    /// The position of `name`, if the struct has that key; `guess` as for
    /// [`position`](Self::position).
    pub(crate) fn find(&self, name: &str, guess: usize) -> Option<usize> {
        if self.names.get(guess).is_some_and(|n| n == name) {
            return Some(guess);
        }
        self.index.get(name).copied()
    }

    /// The shape of `name`, if the struct has that key.
    pub(crate) fn get(&self, name: &str) -> Option<&Shape> {
        self.index.get(name).map(|i| &self.shapes[*i])
    }

    /// Adds a field with a known shape (for user schemas); a repeated name is replaced.
    pub(crate) fn push(&mut self, name: &str, shape: Shape) {
        *self.entry(name) = shape;
    }

    /// Widens the shapes of the keys of the object at `at`, adding new keys.
    pub(crate) fn observe(&mut self, tape: &Tape<'_>, at: usize) {
        let mut guess = 0;
        for (key, value) in tape.entries(at) {
            let i = self.position(key, guess);
            self.shapes[i].observe(tape, value);
            guess = i + 1;
        }
    }

    /// The Arrow fields of this struct.
    pub(crate) fn fields(&self) -> Fields {
        self.names
            .iter()
            .zip(&self.shapes)
            .map(|(name, shape)| shape.field(name))
            .collect()
    }
}

impl Shape {
    fn of(tape: &Tape<'_>, at: usize) -> Self {
        match tape.node(at) {
            Node::Null => Self::Null,
            Node::Bool(_) => Self::Bool,
            Node::Int(_) => Self::Int,
            Node::Big(_) | Node::Float(_) => Self::Float,
            Node::Str(_) | Node::Escaped(_) => Self::Str,
            Node::Array { .. } => {
                let mut item = Self::Null;
                for i in tape.items(at) {
                    item.observe(tape, i);
                }
                Self::List(Box::new(item))
            }
            Node::Object { .. } => {
                let mut fields = StructShape::default();
                fields.observe(tape, at);
                Self::Struct(fields)
            }
        }
    }

    /// Widens this shape so that it also covers the value at `at`.
    pub(crate) fn observe(&mut self, tape: &Tape<'_>, at: usize) {
        let node = tape.node(at);
        let widened = match (&mut *self, node) {
            (_, Node::Null) | (Self::Json, _) => return,
            (Self::Null, _) => Self::of(tape, at),
            (Self::Bool, Node::Bool(_)) | (Self::Int, Node::Int(_)) => return,
            (Self::Float, Node::Int(_) | Node::Big(_) | Node::Float(_)) => return,
            (Self::Str, Node::Str(_) | Node::Escaped(_)) => return,
            (Self::Int, Node::Big(_) | Node::Float(_)) => Self::Float,
            (Self::List(item), Node::Array { .. }) => {
                for i in tape.items(at) {
                    item.observe(tape, i);
                }
                return;
            }
            (Self::Struct(fields), Node::Object { .. }) => {
                fields.observe(tape, at);
                return;
            }
            _ => Self::Json,
        };
        *self = widened;
    }

    /// Replaces what Parquet cannot store, or readers cannot open: all-null fields, empty
    /// objects, and lists and structs below [`MAX_NESTING`] levels become JSON text,
    /// recursively.
    pub(crate) fn finish(self) -> Self {
        self.finish_at(0)
    }

    fn finish_at(self, depth: usize) -> Self {
        match self {
            Self::Null => Self::Json,
            Self::List(_) | Self::Struct(_) if depth >= MAX_NESTING => Self::Json,
            Self::List(item) => Self::List(Box::new(item.finish_at(depth + 1))),
            Self::Struct(s) if s.names.is_empty() => Self::Json,
            Self::Struct(s) => {
                let mut out = StructShape::default();
                for (name, shape) in s.names.into_iter().zip(s.shapes) {
                    out.push(&name, shape.finish_at(depth + 1));
                }
                Self::Struct(out)
            }
            other => other,
        }
    }

    /// How many lists and structs nest in this shape, itself included.
    pub(crate) fn nesting(&self) -> usize {
        match self {
            Self::List(item) => 1 + item.nesting(),
            Self::Struct(s) => 1 + s.shapes.iter().map(Shape::nesting).max().unwrap_or(0),
            _ => 0,
        }
    }

    /// The Arrow type this shape is stored as.
    pub(crate) fn data_type(&self) -> DataType {
        match self {
            Self::Bool => DataType::Boolean,
            Self::Int => DataType::Int64,
            Self::Float => DataType::Float64,
            Self::Str | Self::Json | Self::Null => DataType::Utf8,
            Self::List(item) => DataType::List(Arc::new(item.field("item"))),
            Self::Struct(fields) => DataType::Struct(fields.fields()),
        }
    }

    /// A nullable Arrow field called `name`, marked when it holds JSON text.
    pub(crate) fn field(&self, name: &str) -> Field {
        let field = Field::new(name, self.data_type(), true);
        match self {
            Self::Json | Self::Null => field.with_metadata(HashMap::from([(
                ENCODING_KEY.to_owned(),
                ENCODING_JSON.to_owned(),
            )])),
            _ => field,
        }
    }
}

/// The Arrow type of the `_sent_at` column.
pub(crate) fn sent_at_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn infer(values: &[Value]) -> Shape {
        let texts: Vec<String> = values.iter().map(Value::to_string).collect();
        let tape = Tape::of_texts(texts.iter().map(String::as_bytes));
        let mut shape = Shape::Null;
        for root in tape.roots() {
            shape.observe(&tape, *root);
        }
        shape.finish()
    }

    #[test]
    fn ints_and_floats_widen_to_float() {
        assert_eq!(infer(&[json!(1), json!(2)]), Shape::Int);
        assert_eq!(infer(&[json!(1), json!(2.5)]), Shape::Float);
        assert_eq!(infer(&[json!(2.5), json!(1)]), Shape::Float);
        assert_eq!(infer(&[json!(u64::MAX)]), Shape::Float);
    }

    #[test]
    fn other_mixes_become_json_text() {
        assert_eq!(infer(&[json!(1), json!("1")]), Shape::Json);
        assert_eq!(infer(&[json!(true), json!(1)]), Shape::Json);
        assert_eq!(infer(&[json!({"a": 1}), json!("a")]), Shape::Json);
        assert_eq!(infer(&[json!([1]), json!({"a": 1})]), Shape::Json);
        assert_eq!(infer(&[json!("a"), json!({"a": 1}), json!(3)]), Shape::Json);
    }

    #[test]
    fn nulls_never_decide_a_type() {
        assert_eq!(infer(&[json!(null), json!("x"), json!(null)]), Shape::Str);
        assert_eq!(infer(&[json!(null)]), Shape::Json);
        assert_eq!(infer(&[]), Shape::Json);
    }

    #[test]
    fn empty_objects_and_unknown_items_become_json() {
        assert_eq!(infer(&[json!({})]), Shape::Json);
        assert_eq!(infer(&[json!([])]), Shape::List(Box::new(Shape::Json)));
        let Shape::Struct(s) = infer(&[json!({"e": {}, "n": null, "l": [null]})]) else {
            panic!("not a struct");
        };
        assert_eq!(s.names, ["e", "l", "n"]);
        assert_eq!(s.shapes[0], Shape::Json);
        assert_eq!(s.shapes[1], Shape::List(Box::new(Shape::Json)));
        assert_eq!(s.shapes[2], Shape::Json);
    }

    #[test]
    fn objects_merge_keys_in_first_seen_order() {
        let shape = infer(&[
            json!({"b": 1}),
            json!({"c": [1.5], "a": {"x": 1}}),
            json!({"a": {"y": "s"}}),
        ]);
        let Shape::Struct(s) = shape else {
            panic!("not a struct");
        };
        assert_eq!(s.names, ["b", "a", "c"]);
        let Shape::Struct(inner) = &s.shapes[1] else {
            panic!("not a struct");
        };
        assert_eq!(inner.names, ["x", "y"]);
        assert_eq!(inner.shapes, [Shape::Int, Shape::Str]);
        assert_eq!(s.shapes[2], Shape::List(Box::new(Shape::Float)));
    }

    #[test]
    fn values_nested_deeper_than_the_limit_become_json_text() {
        let deep = |levels: usize| (0..levels).fold(json!(1), |inner, _| json!([inner]));
        let at_limit = infer(&[deep(MAX_NESTING)]);
        assert_eq!(at_limit.nesting(), MAX_NESTING);
        let beyond = infer(&[deep(MAX_NESTING + 5)]);
        assert_eq!(beyond.nesting(), MAX_NESTING);
        let mut innermost = &beyond;
        while let Shape::List(item) = innermost {
            innermost = item;
        }
        assert_eq!(*innermost, Shape::Json);
    }

    #[test]
    fn an_empty_object_merges_with_a_full_one() {
        let shape = infer(&[json!({}), json!({"a": 1})]);
        assert!(matches!(shape, Shape::Struct(ref s) if s.names == ["a"]));
    }

    #[test]
    fn reserved_keys_are_renamed_injectively() {
        assert_eq!(column_name("action"), "action");
        assert_eq!(column_name("_event_id"), "_payload_event_id");
        assert_eq!(column_name("_sent_at"), "_payload_sent_at");
        assert_eq!(column_name("_value"), "_payload_value");
        assert_eq!(
            column_name("_payload_event_id"),
            "_payload_payload_event_id"
        );
        assert_eq!(column_name("_payload"), "_payload");
        assert_eq!(column_name("_payloadx"), "_payloadx");
    }

    #[test]
    fn json_columns_are_marked() {
        let field = Shape::Json.field("mixed");
        assert_eq!(
            field.metadata().get(ENCODING_KEY).map(String::as_str),
            Some("json")
        );
        assert!(Shape::Str.field("s").metadata().is_empty());
    }
}
