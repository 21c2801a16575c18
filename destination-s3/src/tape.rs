//! A flat reading of events' JSON text, borrowed from it: what schema inference and the
//! Parquet encoder walk.
//!
//! A `serde_json::Value` per event costs an allocation per string, array and object, and
//! as many frees afterwards; a tape is one vector of nodes for a whole chunk of events,
//! whose strings point into the events' own text (only strings with escapes are copied).
//! Numbers are read by serde_json exactly as `Event::payload` reads them, so both see the
//! same values.

use std::borrow::Borrow;
use std::fmt;

use destination_core::Event;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// One JSON value; an array or object is followed by its items (an object's as key, value
/// pairs), and records where they end.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Node<'a> {
    Null,
    Bool(bool),
    /// An integer that fits an `i64`.
    Int(i64),
    /// An integer above `i64::MAX`.
    Big(u64),
    /// Any other number.
    Float(f64),
    /// A string without escapes, in the event's text.
    Str(&'a str),
    /// A string with escapes: its index among the tape's own strings.
    Escaped(usize),
    /// An array of `len` items, whose last descendant is just before node `end`.
    Array {
        len: usize,
        end: usize,
    },
    /// An object of `len` keys, whose last descendant is just before node `end`.
    Object {
        len: usize,
        end: usize,
    },
}

/// The nodes of a chunk of events, and where each event's payload starts.
#[derive(Debug, Default)]
pub(crate) struct Tape<'a> {
    nodes: Vec<Node<'a>>,
    escaped: Vec<String>,
    roots: Vec<usize>,
}

impl<'a> Tape<'a> {
    /// The tape of `events`' payloads, one root each, in order.
    pub(crate) fn of_events<E: Borrow<Event>>(events: &'a [E]) -> Self {
        Self::of_texts(events.iter().map(|e| e.borrow().payload_json().as_ref()))
    }

    /// The tape of JSON texts, one root each.
    ///
    /// Events hold only text that parses; text that does not is read as a string holding
    /// the text, as `Event::payload` reads it.
    pub(crate) fn of_texts(texts: impl Iterator<Item = &'a [u8]>) -> Self {
        let mut tape = Self::default();
        for text in texts {
            let (root, escaped) = (tape.nodes.len(), tape.escaped.len());
            let mut de = serde_json::Deserializer::from_slice(text);
            let read = Build(&mut tape)
                .deserialize(&mut de)
                .and_then(|()| de.end());
            if read.is_err() {
                tape.nodes.truncate(root);
                tape.escaped.truncate(escaped);
                tape.push_owned(String::from_utf8_lossy(text).into_owned());
            }
            tape.roots.push(root);
        }
        tape
    }

    /// Where each payload starts.
    pub(crate) fn roots(&self) -> &[usize] {
        &self.roots
    }

    /// The node at `at`.
    pub(crate) fn node(&self, at: usize) -> Node<'a> {
        self.nodes[at]
    }

    /// The string at `at`, if it is one.
    pub(crate) fn str(&self, at: usize) -> Option<&str> {
        match self.nodes[at] {
            Node::Str(s) => Some(s),
            Node::Escaped(i) => Some(&self.escaped[i]),
            _ => None,
        }
    }

    /// The node just past the value at `at` and all its descendants.
    fn after(&self, at: usize) -> usize {
        match self.nodes[at] {
            Node::Array { end, .. } | Node::Object { end, .. } => end,
            _ => at + 1,
        }
    }

    /// The `count` values that follow the node at `at`, each past the previous one's
    /// descendants.
    fn children(&self, at: usize, count: usize) -> impl Iterator<Item = usize> + '_ {
        let mut next = at + 1;
        (0..count).map(move |_| {
            let child = next;
            next = self.after(child);
            child
        })
    }

    /// The items of the array at `at` (none if it is not an array).
    pub(crate) fn items(&self, at: usize) -> impl Iterator<Item = usize> + '_ {
        let len = match self.nodes[at] {
            Node::Array { len, .. } => len,
            _ => 0,
        };
        self.children(at, len)
    }

    /// The keys and values of the object at `at` (none if it is not an object).
    pub(crate) fn entries(&self, at: usize) -> impl Iterator<Item = (&str, usize)> + '_ {
        let len = match self.nodes[at] {
            Node::Object { len, .. } => len,
            _ => 0,
        };
        let mut children = self.children(at, 2 * len);
        std::iter::from_fn(move || {
            let key = children.next()?;
            Some((self.str(key).unwrap_or_default(), children.next()?))
        })
    }

    /// Appends the compact JSON text of the value at `at` to `out`.
    pub(crate) fn write_json(&self, at: usize, out: &mut Vec<u8>) {
        match self.nodes[at] {
            Node::Null => out.extend_from_slice(b"null"),
            Node::Bool(b) => out.extend_from_slice(if b { b"true" } else { b"false" }),
            Node::Int(n) => scalar(out, &n),
            Node::Big(n) => scalar(out, &n),
            Node::Float(f) => scalar(out, &f),
            Node::Str(_) | Node::Escaped(_) => scalar(out, self.str(at).unwrap_or_default()),
            Node::Array { .. } => {
                out.push(b'[');
                for (i, item) in self.items(at).enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    self.write_json(item, out);
                }
                out.push(b']');
            }
            Node::Object { .. } => {
                out.push(b'{');
                for (i, (key, value)) in self.entries(at).enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    scalar(out, key);
                    out.push(b':');
                    self.write_json(value, out);
                }
                out.push(b'}');
            }
        }
    }

    fn push_owned(&mut self, s: String) {
        self.nodes.push(Node::Escaped(self.escaped.len()));
        self.escaped.push(s);
    }
}

/// Writes a number or string as serde_json writes it inside a `serde_json::Value`.
fn scalar<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // Numbers read from JSON are finite, and serialising into a Vec cannot fail.
    serde_json::to_writer(out, value).ok();
}

/// Reads one value onto the tape.
struct Build<'t, 'a>(&'t mut Tape<'a>);

impl<'de> DeserializeSeed<'de> for Build<'_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Build<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.0.nodes.push(Node::Null);
        Ok(())
    }

    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.0.nodes.push(Node::Bool(v));
        Ok(())
    }

    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.0.nodes.push(Node::Int(v));
        Ok(())
    }

    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        let node = i64::try_from(v).map_or(Node::Big(v), Node::Int);
        self.0.nodes.push(node);
        Ok(())
    }

    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.0.nodes.push(Node::Float(v));
        Ok(())
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<(), E> {
        self.0.nodes.push(Node::Str(v));
        Ok(())
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.0.push_owned(v.to_owned());
        Ok(())
    }

    fn visit_string<E>(self, v: String) -> Result<(), E> {
        self.0.push_owned(v);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.0.container(
            |len, end| Node::Array { len, end },
            |tape| Ok(seq.next_element_seed(Build(tape))?.is_some()),
        )
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.0.container(
            |len, end| Node::Object { len, end },
            |tape| {
                if map.next_key_seed(Build(&mut *tape))?.is_none() {
                    return Ok(false);
                }
                map.next_value_seed(Build(tape))?;
                Ok(true)
            },
        )
    }
}

impl<'a> Tape<'a> {
    /// Reads an array or object: a node made by `node` (from the item count and the end),
    /// followed by the items `next` reads, one per call, until it returns `false`.
    fn container<E>(
        &mut self,
        node: fn(usize, usize) -> Node<'a>,
        mut next: impl FnMut(&mut Self) -> Result<bool, E>,
    ) -> Result<(), E> {
        let at = self.nodes.len();
        self.nodes.push(Node::Null);
        let mut len = 0;
        while next(self)? {
            len += 1;
        }
        self.nodes[at] = node(len, self.nodes.len());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn tape(texts: &[&'static str]) -> Tape<'static> {
        Tape::of_texts(texts.iter().map(|t| t.as_bytes()))
    }

    fn text(tape: &Tape<'_>, at: usize) -> String {
        let mut out = Vec::new();
        tape.write_json(at, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn values_read_back_as_serde_json_reads_them() {
        let texts = [
            r#"{"a": [1, -2, 1.5, 18446744073709551615, -0, 1e400], "b": {"c": null, "d": true}}"#,
            r#""esc\"aped\u00e9""#,
            "[]",
            "{}",
            r#"{"k\n": "v", "k\n": [[], {}]}"#,
            "12345678901234567890123",
        ];
        let texts: Vec<&'static str> = texts
            .into_iter()
            .filter(|t| serde_json::from_str::<Value>(t).is_ok())
            .collect();
        let tape = tape(&texts);
        assert_eq!(tape.roots().len(), texts.len());
        for (root, original) in tape.roots().iter().zip(&texts) {
            let expected: Value = serde_json::from_str(original).unwrap();
            let written: Value = serde_json::from_str(&text(&tape, *root)).unwrap();
            assert_eq!(written, expected, "{original}");
        }
    }

    #[test]
    fn strings_borrow_unless_escaped_and_subtrees_skip() {
        let tape = tape(&[r#"{"x": {"y": [1, {"z": 2}]}, "s": "plain", "e": "t\tab"}"#]);
        let root = tape.roots()[0];
        let entries: Vec<(&str, usize)> = tape.entries(root).collect();
        let keys: Vec<&str> = entries.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, ["x", "s", "e"]);
        assert_eq!(tape.node(entries[1].1), Node::Str("plain"));
        assert!(matches!(tape.node(entries[2].1), Node::Escaped(_)));
        assert_eq!(tape.str(entries[2].1), Some("t\tab"));
        assert_eq!(text(&tape, entries[0].1), r#"{"y":[1,{"z":2}]}"#);
        let y = tape.entries(entries[0].1).next().unwrap().1;
        assert_eq!(tape.items(y).count(), 2);
    }

    #[test]
    fn numbers_keep_their_kind() {
        let tape = tape(&["[9223372036854775807, 9223372036854775808, -1, 2.0]"]);
        let items: Vec<Node<'_>> = tape.items(0).map(|i| tape.node(i)).collect();
        assert_eq!(
            items,
            [
                Node::Int(i64::MAX),
                Node::Big(9_223_372_036_854_775_808),
                Node::Int(-1),
                Node::Float(2.0)
            ]
        );
        assert_eq!(
            text(&tape, 0),
            "[9223372036854775807,9223372036854775808,-1,2.0]"
        );
    }

    #[test]
    fn floats_are_read_exactly() {
        // serde_json's default float parser can be off by one unit in the last place.
        let text = "[1.4129089017134051e-13, 0.1, 2.2250738585072014e-308]";
        let tape = tape(&[text]);
        for (at, literal) in
            tape.items(0)
                .zip(["1.4129089017134051e-13", "0.1", "2.2250738585072014e-308"])
        {
            assert_eq!(
                tape.node(at),
                Node::Float(literal.parse().unwrap()),
                "{literal}"
            );
        }
    }

    #[test]
    fn text_that_does_not_parse_reads_as_a_string() {
        let tape = tape(&["{\"a\": 1", "[1]"]);
        assert_eq!(tape.str(tape.roots()[0]), Some("{\"a\": 1"));
        assert_eq!(text(&tape, tape.roots()[1]), "[1]");
        assert_eq!(
            json!(text(&tape, tape.roots()[0])),
            json!("\"{\\\"a\\\": 1\"")
        );
    }
}
