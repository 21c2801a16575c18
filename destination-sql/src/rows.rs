//! From events to rows: the fields of each payload, the columns a batch needs, and cell
//! values converted to the type of their column.

use std::borrow::Cow;
use std::collections::HashMap;

use chrono::{DateTime, SecondsFormat, Utc};
use destination_core::{Event, EventId};
use serde_json::Value;

use crate::config::Dialect;
use crate::schema::{Columns, Kind, Needs, column_names};

/// The key a payload that is not a JSON object is stored under.
pub(crate) const SCALAR_KEY: &str = "value";

/// The fields of one payload: column name and value, in key order.
pub(crate) type Fields<'a> = Vec<(String, &'a Value)>;

/// The columns and values of a payload. A payload that is not an object is one field,
/// [`SCALAR_KEY`].
pub(crate) fn fields(dialect: Dialect, payload: &Value) -> Fields<'_> {
    match payload {
        Value::Object(map) => column_names(dialect, map.keys().map(String::as_str))
            .into_iter()
            .zip(map.values())
            .map(|((_, name), value)| (name, value))
            .collect(),
        other => vec![(SCALAR_KEY.to_owned(), other)],
    }
}

/// The columns the non-null values of a batch need, each with the narrowest type that
/// holds all of them. A field that is always null needs no column yet.
pub(crate) fn needs<'a, 'b>(all: impl IntoIterator<Item = &'b Fields<'a>>) -> Needs
where
    'a: 'b,
{
    let mut needs = Needs::new();
    for fields in all {
        for (name, value) in fields {
            if let Some(kind) = Kind::of(value) {
                needs
                    .entry(name.clone())
                    .and_modify(|k| *k = k.join(kind))
                    .or_insert(kind);
            }
        }
    }
    needs
}

/// One value, converted for a column of a known type.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Cell<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Timestamp(DateTime<Utc>),
    /// Text, and JSON as its compact text.
    Text(Cow<'a, str>),
}

impl<'a> Cell<'a> {
    /// Converts `value` for a column of type `column`, which must cover the value's type.
    pub(crate) fn new(value: &'a Value, column: Kind) -> Self {
        match (value, column) {
            (Value::Null, _) => Self::Null,
            (Value::String(s), Kind::Text) => Self::Text(Cow::Borrowed(s)),
            (Value::Bool(b), Kind::Bool) => Self::Bool(*b),
            (Value::Number(n), Kind::Int) if n.is_i64() => n.as_i64().map_or(Self::Null, Self::Int),
            (Value::Number(n), Kind::Float) => n.as_f64().map_or(Self::Null, Self::Float),
            (Value::String(s), Kind::Timestamp) => match DateTime::parse_from_rfc3339(s) {
                Ok(t) => Self::Timestamp(t.with_timezone(&Utc)),
                Err(_) => Self::Text(Cow::Borrowed(s)),
            },
            // JSON and text columns take anything else as JSON text; so does any column
            // given a value it does not cover, which the schema step prevents.
            (other, _) => Self::Text(Cow::Owned(other.to_string())),
        }
    }

    /// An estimate of the bytes the cell takes in a statement.
    pub(crate) fn size(&self) -> usize {
        match self {
            Self::Text(s) => s.len() + 2,
            _ => 24,
        }
    }
}

/// The columns a batch writes, in order, each with the type it has in the table.
#[derive(Debug)]
pub(crate) struct Layout {
    pub(crate) columns: Vec<(String, Kind)>,
    index: HashMap<String, usize>,
}

impl Layout {
    /// The columns of `needs`, typed as the table has them (`have` covers `needs`).
    pub(crate) fn new(needs: &Needs, have: &Columns) -> Self {
        let columns: Vec<(String, Kind)> = needs
            .iter()
            .map(|(name, kind)| (name.clone(), have.get(name).copied().unwrap_or(*kind)))
            .collect();
        let index = columns
            .iter()
            .enumerate()
            .map(|(i, (name, _))| (name.clone(), i))
            .collect();
        Self { columns, index }
    }

    /// The row of `event`, whose fields are `fields`.
    pub(crate) fn row<'a>(&self, event: &Event, fields: &Fields<'a>) -> Row<'a> {
        let mut cells = vec![Cell::Null; self.columns.len()];
        for (name, value) in fields {
            if let Some(&i) = self.index.get(name) {
                cells[i] = Cell::new(value, self.columns[i].1);
            }
        }
        Row {
            id: event.id,
            sent_at: event.sent_at,
            cells,
        }
    }
}

/// A row of a batch: the event's id and time, then one cell per column of the layout.
#[derive(Debug)]
pub(crate) struct Row<'a> {
    pub(crate) id: EventId,
    pub(crate) sent_at: DateTime<Utc>,
    pub(crate) cells: Vec<Cell<'a>>,
}

impl Row<'_> {
    /// An estimate of the bytes the row takes in a statement.
    pub(crate) fn size(&self) -> usize {
        64 + self.cells.iter().map(Cell::size).sum::<usize>()
    }
}

/// A timestamp as fixed-width UTC text with microseconds, which sorts as it compares.
pub(crate) fn timestamp_text(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Appends a row to a PostgreSQL `COPY ... (FORMAT csv)` body.
///
/// Every non-null value is quoted, so that an empty string and NULL (an unquoted empty
/// field) stay apart.
pub(crate) fn write_csv(out: &mut String, row: &Row<'_>) {
    out.push_str(&row.id.to_string());
    out.push(',');
    out.push_str(&timestamp_text(&row.sent_at));
    for cell in &row.cells {
        out.push(',');
        match cell {
            Cell::Null => {}
            // `true`/`false` rather than `t`/`f`: also valid in a column another writer
            // has just widened to JSON.
            Cell::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Cell::Int(i) => out.push_str(&i.to_string()),
            Cell::Float(f) => out.push_str(&f.to_string()),
            Cell::Timestamp(t) => out.push_str(&timestamp_text(t)),
            Cell::Text(s) => {
                out.push('"');
                out.push_str(&s.replace('"', "\"\""));
                out.push('"');
            }
        }
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn needs_join_types_and_skip_nulls() {
        let a = json!({"n": 1, "x": null, "s": "2020-01-01T00:00:00Z", "o": {"k": 1}});
        let b = json!({"n": 1.5, "x": null, "s": "text", "o": 3});
        let all = [fields(Dialect::Postgres, &a), fields(Dialect::Postgres, &b)];
        let needs = needs(&all);
        assert_eq!(needs.get("n"), Some(&Kind::Float));
        assert_eq!(needs.get("s"), Some(&Kind::Text));
        assert_eq!(needs.get("o"), Some(&Kind::Json));
        assert_eq!(needs.get("x"), None);
    }

    #[test]
    fn scalar_payloads_are_one_field() {
        let payload = json!([1, 2]);
        let f = fields(Dialect::Sqlite, &payload);
        assert_eq!(f, vec![(SCALAR_KEY.to_owned(), &payload)]);
    }

    #[test]
    fn cells_convert_to_the_column_type() {
        assert_eq!(Cell::new(&json!(3), Kind::Float), Cell::Float(3.0));
        assert_eq!(Cell::new(&json!(3), Kind::Text), Cell::Text("3".into()));
        assert_eq!(Cell::new(&json!("a"), Kind::Text), Cell::Text("a".into()));
        assert_eq!(
            Cell::new(&json!("a"), Kind::Json),
            Cell::Text("\"a\"".into())
        );
        assert_eq!(
            Cell::new(&json!(true), Kind::Json),
            Cell::Text("true".into())
        );
        assert_eq!(
            Cell::new(&json!({"a": [1]}), Kind::Text),
            Cell::Text("{\"a\":[1]}".into())
        );
        assert_eq!(Cell::new(&json!(null), Kind::Int), Cell::Null);
        let text = json!("2020-01-01T02:00:00+02:00");
        let t = Cell::new(&text, Kind::Timestamp);
        assert_eq!(t, Cell::Timestamp("2020-01-01T00:00:00Z".parse().unwrap()));
    }

    #[test]
    fn csv_quotes_text_and_leaves_null_empty() {
        let event = Event::new(json!({}));
        let row = Row {
            id: event.id,
            sent_at: "2020-01-01T00:00:00Z".parse().unwrap(),
            cells: vec![
                Cell::Null,
                Cell::Text("".into()),
                Cell::Text("say \"hi\",\nbye".into()),
                Cell::Bool(false),
                Cell::Int(-7),
            ],
        };
        let mut out = String::new();
        write_csv(&mut out, &row);
        let expected = format!(
            "{},2020-01-01T00:00:00.000000Z,,\"\",\"say \"\"hi\"\",\nbye\",false,-7\n",
            event.id
        );
        assert_eq!(out, expected);
    }
}
