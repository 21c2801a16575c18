//! Differential fuzzing of the tape-based schema inference and Arrow/Parquet encoder
//! against `Event::payload` (serde_json's reading of the same text).
//!
//! Random JSON payloads are generated as text by a small deterministic PRNG, turned into
//! events with `Event::from_json`, encoded (tapes of 1024 events, one inferred schema, as
//! `format::write_parquet` does) and every cell is read back and compared with the
//! payload, after the documented mapping (reserved keys renamed, non-objects in `_value`,
//! ints widened to floats, JSON-text columns parsed back, absent == null in structs).
//! The inferred schema is also compared with an independent reference inference worked
//! out from the generated trees (which keep duplicate keys and key order).
//!
//! A failing batch is shrunk (events dropped, subtrees removed) before it is reported.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use arrow_array::{
    Array, BooleanArray, Float64Array, Int64Array, ListArray, RecordBatch, StringArray,
    StructArray, TimestampMicrosecondArray,
};
use arrow_schema::{DataType, Field, TimeUnit};
use bytes::Bytes;
use destination_core::{Event, EventId};
use serde_json::Value;

use crate::config::Compression;
use crate::encode::{Encoder, payload_key};
use crate::infer::{
    ENCODING_JSON, ENCODING_KEY, EVENT_ID_COLUMN, SENT_AT_COLUMN, VALUE_COLUMN, column_name,
};
use crate::schema::Plan;
use crate::tape::Tape;

/// Events per tape, as in `format::write_parquet`.
const CHUNK: usize = 1024;

// ---------------------------------------------------------------------------------------
// PRNG

/// SplitMix64: small, deterministic, good enough.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// True with probability `num / den`.
    fn chance(&mut self, num: u64, den: u64) -> bool {
        self.next() % den < num
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn hash_str(seed: u64, s: &str) -> u64 {
    let mut h = seed ^ 0xCBF2_9CE4_8422_2325;
    for b in s.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3);
    }
    mix(h)
}

// ---------------------------------------------------------------------------------------
// Generated JSON trees: kept as text pieces, so duplicate keys, escapes and number
// spellings survive exactly as written.

#[derive(Clone, Debug)]
enum J {
    Null,
    Bool(bool),
    /// A number literal as written.
    Num(String),
    /// A string literal as written, quotes and escapes included.
    Str(String),
    Arr(Vec<J>),
    /// Entries in text order; keys are string literals as written (may repeat).
    Obj(Vec<(String, J)>),
}

impl J {
    fn render(&self, out: &mut String, spaces: u64) {
        // Deterministic "random" whitespace between tokens (never a line break).
        let mut state = spaces;
        let mut ws = |out: &mut String| {
            state = mix(state.wrapping_add(1));
            match state % 11 {
                0 => out.push(' '),
                1 => out.push('\t'),
                _ => {}
            }
        };
        self.render_with(out, &mut ws);
    }

    fn render_with(&self, out: &mut String, ws: &mut dyn FnMut(&mut String)) {
        match self {
            J::Null => out.push_str("null"),
            J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            J::Num(n) => out.push_str(n),
            J::Str(s) => out.push_str(s),
            J::Arr(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    ws(out);
                    item.render_with(out, ws);
                }
                ws(out);
                out.push(']');
            }
            J::Obj(entries) => {
                out.push('{');
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    ws(out);
                    out.push_str(k);
                    ws(out);
                    out.push(':');
                    ws(out);
                    v.render_with(out, ws);
                }
                ws(out);
                out.push('}');
            }
        }
    }

    /// Smaller trees, for shrinking a failing case.
    fn shrinks(&self) -> Vec<J> {
        let mut out = Vec::new();
        match self {
            J::Arr(items) => {
                for i in 0..items.len() {
                    let mut fewer = items.clone();
                    fewer.remove(i);
                    out.push(J::Arr(fewer));
                }
                for (i, item) in items.iter().enumerate() {
                    for s in item.shrinks() {
                        let mut other = items.clone();
                        other[i] = s;
                        out.push(J::Arr(other));
                    }
                }
            }
            J::Obj(entries) => {
                for i in 0..entries.len() {
                    let mut fewer = entries.clone();
                    fewer.remove(i);
                    out.push(J::Obj(fewer));
                }
                for (i, (k, v)) in entries.iter().enumerate() {
                    for s in v.shrinks() {
                        let mut other = entries.clone();
                        other[i] = (k.clone(), s);
                        out.push(J::Obj(other));
                    }
                }
            }
            _ => {}
        }
        if !matches!(self, J::Null) {
            out.push(J::Null);
        }
        out
    }
}

fn key_text(literal: &str) -> String {
    serde_json::from_str(literal).expect("generated key literals are valid JSON strings")
}

/// Object keys, as literals. Some spell the same key differently ("a" and "\u0061",
/// "kéy" and "k\u00e9y").
const KEYS: &[&str] = &[
    r#""a""#,
    r#""b""#,
    r#""c""#,
    r#""\u0061""#,
    r#""""#,
    r#""_event_id""#,
    r#""_sent_at""#,
    r#""_value""#,
    r#""_payload_value""#,
    r#""_payload_event_id""#,
    r#""_payload""#,
    r#""_payload_payload_sent_at""#,
    r#""kéy""#,
    r#""k\u00e9y""#,
    r#""x\"y""#,
    r#""\ud83d\ude00""#,
    r#""nul\u0000""#,
    r#""a.b""#,
    r#""item""#,
    r#""list""#,
    r#""element""#,
    r#""key_value""#,
    r#""A""#,
    r#"" a""#,
    r#""back\\slash""#,
    r#""new\nline""#,
];

/// The first few keys, for nested objects (more overlap, so more structs).
const NESTED_KEYS: usize = 8;

const STRINGS: &[&str] = &[
    r#""plain""#,
    r#""""#,
    r#""line\nbreak""#,
    r#""quote\"d""#,
    r#""back\\slash""#,
    r#""caf\u00e9""#,
    r#""café""#,
    r#""\ud83d\ude00""#,
    r#""😀""#,
    r#""nul\u0000byte""#,
    r#""\/slash""#,
    r#""tab\t\r\b\f""#,
    r#""\u0041BC""#,
    r#""1""#,
    r#""true""#,
    r#""null""#,
    r#""{\"a\":1}""#,
    r#""[1,2]""#,
    r#""\u001f\u007f""#,
];

const NUMBERS: &[&str] = &[
    "0",
    "1",
    "-1",
    "42",
    "-0",
    "0.0",
    "-0.0",
    "1.5",
    "-2.25",
    "1e300",
    "-1e300",
    "1E2",
    "2.0",
    "1e-300",
    "5e-324",
    "9223372036854775807",
    "-9223372036854775808",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775809",
    "123456789012345678901234567890",
    "0.1",
    "0.30000000000000004",
    "1.7976931348623157e308",
    "-0e0",
    "100e-2",
];

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Null,
    Bool,
    Int,
    Float,
    Big,
    AnyNum,
    Str,
    Arr,
    Obj,
    EmptyObj,
    EmptyArr,
}

const KINDS: &[Kind] = &[
    Kind::Null,
    Kind::Bool,
    Kind::Int,
    Kind::Int,
    Kind::Float,
    Kind::Big,
    Kind::AnyNum,
    Kind::Str,
    Kind::Str,
    Kind::Arr,
    Kind::Arr,
    Kind::Obj,
    Kind::Obj,
    Kind::Obj,
    Kind::EmptyObj,
    Kind::EmptyArr,
];

/// Generates the payloads of one batch: the same path tends to keep one kind of value
/// (so that structs, lists and typed columns are inferred), with deviations.
struct Gen<'r> {
    rng: &'r mut Rng,
    /// Seeds the kind each path prefers.
    plan: u64,
    /// Out of 100: how often a value ignores its path's kind.
    deviate: u64,
    max_depth: usize,
}

impl Gen<'_> {
    fn kind_for(&mut self, hint: u64) -> Kind {
        if self.rng.chance(self.deviate, 100) {
            *self.rng.pick(KINDS)
        } else {
            KINDS[(mix(self.plan ^ hint) % KINDS.len() as u64) as usize]
        }
    }

    fn number(&mut self, kind: Kind) -> String {
        let r = self.rng.next();
        match kind {
            Kind::Int => match r % 4 {
                0 => (r as i64 >> (r % 60)).to_string(),
                1 => (r % 1000).to_string(),
                2 => format!("-{}", r % 1000),
                _ => (*self.rng.pick(&[
                    "0",
                    "1",
                    "-1",
                    "9223372036854775807",
                    "-9223372036854775808",
                ]))
                .to_owned(),
            },
            Kind::Float => match r % 4 {
                0 => format!("{}.{}", (r >> 8) % 100_000, (r >> 32) % 1000),
                1 => format!(
                    "-{}.{}e{}",
                    r % 10,
                    (r >> 8) % 1_000_000_000,
                    (r >> 40) % 40
                ),
                2 => format!("{}e-{}", (r >> 5) % 100_000_000_000_000_000, (r >> 50) % 30),
                _ => (*self
                    .rng
                    .pick(&["1.5", "-0", "1e300", "0.1", "2.0", "-0.0", "5e-324"]))
                .to_owned(),
            },
            Kind::Big => match r % 3 {
                0 => (u64::MAX - r % 1_000_000).to_string(),
                1 => format!("{}", (1u64 << 63) + r % 1000),
                _ => format!("-{}{:09}", 9_223_372_036u64 + r % 10, r % 1_000_000_000),
            },
            _ => (*self.rng.pick(NUMBERS)).to_owned(),
        }
    }

    fn string(&mut self) -> String {
        if self.rng.chance(1, 3) {
            let len = self.rng.below(6);
            let s: String = (0..len)
                .map(|_| (b'a' + self.rng.below(26) as u8) as char)
                .collect();
            format!("\"{s}\"")
        } else {
            (*self.rng.pick(STRINGS)).to_owned()
        }
    }

    fn value(&mut self, kind: Kind, depth: usize, hint: u64) -> J {
        if self.rng.chance(1, 12) {
            return J::Null;
        }
        let deep = depth >= self.max_depth;
        match kind {
            Kind::Null => J::Null,
            Kind::Bool => J::Bool(self.rng.chance(1, 2)),
            Kind::Int | Kind::Float | Kind::Big | Kind::AnyNum => J::Num(self.number(kind)),
            Kind::Str => J::Str(self.string()),
            Kind::EmptyArr => J::Arr(Vec::new()),
            Kind::EmptyObj => J::Obj(Vec::new()),
            Kind::Arr if deep => J::Arr(Vec::new()),
            Kind::Obj if deep => J::Obj(Vec::new()),
            Kind::Arr => {
                let len = self.rng.below(5);
                let item_hint = mix(hint ^ 0xA11A);
                let items = (0..len)
                    .map(|_| {
                        let k = self.kind_for(item_hint);
                        self.value(k, depth + 1, item_hint)
                    })
                    .collect();
                J::Arr(items)
            }
            Kind::Obj => J::Obj(self.entries(depth, hint, NESTED_KEYS, 5)),
        }
    }

    fn entries(&mut self, depth: usize, hint: u64, keys: usize, max: usize) -> Vec<(String, J)> {
        let n = self.rng.below(max + 1);
        let mut entries: Vec<(String, J)> = Vec::with_capacity(n);
        for _ in 0..n {
            let key = if !entries.is_empty() && self.rng.chance(1, 8) {
                // A repeated key (maybe spelled the same way).
                entries[self.rng.below(entries.len())].0.clone()
            } else {
                KEYS[self.rng.below(keys.min(KEYS.len()))].to_owned()
            };
            let child = hash_str(hint, &key_text(&key));
            let kind = self.kind_for(child);
            let value = self.value(kind, depth + 1, child);
            entries.push((key, value));
        }
        entries
    }

    fn payload(&mut self) -> J {
        if self.rng.chance(6, 7) {
            J::Obj(self.entries(0, 0, KEYS.len(), 7))
        } else {
            let kind = self.kind_for(1);
            match self.value(kind, 1, 1) {
                // A payload that is an object would go to the key columns.
                J::Obj(_) => J::Str(self.string()),
                other => other,
            }
        }
    }
}

/// Events of the trees' text; also returns the texts.
fn events_of(trees: &[J], seed: u64) -> (Vec<Event>, Vec<String>) {
    let texts: Vec<String> = trees
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut s = String::new();
            t.render(&mut s, mix(seed ^ i as u64));
            s
        })
        .collect();
    let events = texts
        .iter()
        .map(|t| {
            Event::from_json(EventId::new(), chrono::Utc::now(), Bytes::from(t.clone()))
                .unwrap_or_else(|e| panic!("generated text refused ({e}): {t}"))
        })
        .collect();
    (events, texts)
}

// ---------------------------------------------------------------------------------------
// Reference schema inference, from the generated trees.

#[derive(Clone, Debug, PartialEq)]
enum R {
    Null,
    Bool,
    Int,
    Float,
    Str,
    Json,
    List(Box<R>),
    Struct(Vec<(String, R)>),
}

fn observe(r: &mut R, j: &J) {
    if matches!(j, J::Null) || *r == R::Json {
        return;
    }
    let kind = match j {
        J::Num(n) => {
            let v: Value = serde_json::from_str(n).expect("number literal");
            if v.is_i64() { R::Int } else { R::Float }
        }
        J::Bool(_) => R::Bool,
        J::Str(_) => R::Str,
        J::Arr(_) => R::List(Box::new(R::Null)),
        J::Obj(_) => R::Struct(Vec::new()),
        J::Null => unreachable!(),
    };
    if *r == R::Null {
        *r = kind.clone();
    }
    match (&mut *r, &kind, j) {
        (R::Bool, R::Bool, _) | (R::Int, R::Int, _) | (R::Str, R::Str, _) => {}
        (R::Float, R::Int | R::Float, _) => {}
        (R::Int, R::Float, _) => *r = R::Float,
        (R::List(item), R::List(_), J::Arr(items)) => {
            for i in items {
                observe(item, i);
            }
        }
        (R::Struct(fields), R::Struct(_), J::Obj(entries)) => {
            for (k, v) in entries {
                let k = key_text(k);
                let at = match fields.iter().position(|(n, _)| *n == k) {
                    Some(at) => at,
                    None => {
                        fields.push((k, R::Null));
                        fields.len() - 1
                    }
                };
                observe(&mut fields[at].1, v);
            }
        }
        _ => *r = R::Json,
    }
}

fn finish(r: R, depth: usize) -> R {
    match r {
        R::Null => R::Json,
        R::List(_) | R::Struct(_) if depth >= crate::MAX_NESTING => R::Json,
        R::List(item) => R::List(Box::new(finish(*item, depth + 1))),
        R::Struct(fields) if fields.is_empty() => R::Json,
        R::Struct(fields) => R::Struct(
            fields
                .into_iter()
                .map(|(n, r)| (n, finish(r, depth + 1)))
                .collect(),
        ),
        other => other,
    }
}

/// The payload columns (name, shape) the documentation promises for these payloads.
fn reference_columns(trees: &[J]) -> Vec<(String, R)> {
    let mut columns: Vec<(String, R)> = Vec::new();
    let slot = |columns: &mut Vec<(String, R)>, name: String| match columns
        .iter()
        .position(|(n, _)| *n == name)
    {
        Some(at) => at,
        None => {
            columns.push((name, R::Null));
            columns.len() - 1
        }
    };
    for tree in trees {
        match tree {
            J::Obj(entries) => {
                for (k, v) in entries {
                    let at = slot(&mut columns, column_name(&key_text(k)));
                    observe(&mut columns[at].1, v);
                }
            }
            other => {
                let at = slot(&mut columns, VALUE_COLUMN.to_owned());
                observe(&mut columns[at].1, other);
            }
        }
    }
    columns
        .into_iter()
        .map(|(n, r)| (n, finish(r, 0)))
        .collect()
}

fn is_json(field: &Field) -> bool {
    field.metadata().get(ENCODING_KEY).map(String::as_str) == Some(ENCODING_JSON)
}

fn check_field(r: &R, field: &Field, path: &str) -> Result<(), String> {
    let bad = || {
        Err(format!(
            "[schema] {path}: expected {r:?}, got {:?} (json metadata: {})",
            field.data_type(),
            is_json(field)
        ))
    };
    match (r, field.data_type()) {
        (R::Json, DataType::Utf8) if is_json(field) => Ok(()),
        (R::Str, DataType::Utf8) if !is_json(field) => Ok(()),
        (R::Int, DataType::Int64) | (R::Float, DataType::Float64) => Ok(()),
        (R::Bool, DataType::Boolean) => Ok(()),
        (R::List(item), DataType::List(f)) => check_field(item, f, &format!("{path}[]")),
        (R::Struct(fields), DataType::Struct(fs)) => {
            let want: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
            let got: Vec<&str> = fs.iter().map(|f| f.name().as_str()).collect();
            if want != got {
                return Err(format!(
                    "[schema] {path}: struct fields {got:?}, expected {want:?}"
                ));
            }
            for ((n, r), f) in fields.iter().zip(fs.iter()) {
                check_field(r, f, &format!("{path}.{n:?}"))?;
            }
            Ok(())
        }
        _ => bad(),
    }
}

fn check_schema(trees: &[J], encoder: &Encoder) -> Result<(), String> {
    let schema = encoder.schema();
    let fields = schema.fields();
    if fields.len() < 2
        || fields[0].name() != EVENT_ID_COLUMN
        || fields[0].data_type() != &DataType::Utf8
        || fields[1].name() != SENT_AT_COLUMN
        || fields[1].data_type() != &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
    {
        return Err(format!("[schema] fixed columns wrong: {fields:?}"));
    }
    let want = reference_columns(trees);
    let got: Vec<&str> = fields[2..].iter().map(|f| f.name().as_str()).collect();
    let want_names: Vec<&str> = want.iter().map(|(n, _)| n.as_str()).collect();
    if got != want_names {
        return Err(format!("[schema] columns {got:?}, expected {want_names:?}"));
    }
    for ((n, r), f) in want.iter().zip(fields[2..].iter()) {
        check_field(r, f, &format!("{n:?}"))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Comparing cells with payloads.

/// Reads the JSON text of a JSON-text column into a `Value`, exactly.
///
/// serde_json (built without `float_roundtrip`) does not always read back the exact `f64`
/// it wrote (`1.4129089017134051e-13` reads as `...054e-13`), so numbers are read here
/// with Rust's correctly rounded parser, classified as serde_json classifies them (`-0`
/// and integers beyond 64 bits are floats); strings go through serde_json. A repeated
/// key keeps its last value, as in a `Value`.
fn read_json(text: &str) -> Result<Value, String> {
    let mut at = 0;
    let value = read_value(text.as_bytes(), text, &mut at, 0)?;
    skip_ws(text.as_bytes(), &mut at);
    if at != text.len() {
        return Err(format!("trailing text at {at}"));
    }
    Ok(value)
}

fn skip_ws(b: &[u8], at: &mut usize) {
    while *at < b.len() && matches!(b[*at], b' ' | b'\t' | b'\n' | b'\r') {
        *at += 1;
    }
}

fn read_value(b: &[u8], text: &str, at: &mut usize, depth: usize) -> Result<Value, String> {
    if depth > 200 {
        return Err("too deep".into());
    }
    skip_ws(b, at);
    let rest = &text[*at..];
    for (word, value) in [
        ("null", Value::Null),
        ("true", Value::Bool(true)),
        ("false", Value::Bool(false)),
    ] {
        if rest.starts_with(word) {
            *at += word.len();
            return Ok(value);
        }
    }
    match b.get(*at) {
        Some(b'"') => {
            let start = *at;
            *at += 1;
            while *at < b.len() && b[*at] != b'"' {
                *at += if b[*at] == b'\\' { 2 } else { 1 };
            }
            *at += 1;
            let literal = text.get(start..*at).ok_or("unterminated string")?;
            serde_json::from_str::<String>(literal)
                .map(Value::String)
                .map_err(|e| format!("bad string {literal}: {e}"))
        }
        Some(b'[') => {
            *at += 1;
            let mut items = Vec::new();
            skip_ws(b, at);
            if b.get(*at) == Some(&b']') {
                *at += 1;
                return Ok(Value::Array(items));
            }
            loop {
                items.push(read_value(b, text, at, depth + 1)?);
                skip_ws(b, at);
                match b.get(*at) {
                    Some(b',') => *at += 1,
                    Some(b']') => {
                        *at += 1;
                        return Ok(Value::Array(items));
                    }
                    _ => return Err(format!("bad array at {at}")),
                }
            }
        }
        Some(b'{') => {
            *at += 1;
            let mut map = serde_json::Map::new();
            skip_ws(b, at);
            if b.get(*at) == Some(&b'}') {
                *at += 1;
                return Ok(Value::Object(map));
            }
            loop {
                let Value::String(key) = read_value(b, text, at, depth + 1)? else {
                    return Err(format!("bad key at {at}"));
                };
                skip_ws(b, at);
                if b.get(*at) != Some(&b':') {
                    return Err(format!("no colon at {at}"));
                }
                *at += 1;
                let value = read_value(b, text, at, depth + 1)?;
                map.insert(key, value);
                skip_ws(b, at);
                match b.get(*at) {
                    Some(b',') => *at += 1,
                    Some(b'}') => {
                        *at += 1;
                        return Ok(Value::Object(map));
                    }
                    _ => return Err(format!("bad object at {at}")),
                }
            }
        }
        Some(b'-' | b'0'..=b'9') => {
            let start = *at;
            while *at < b.len() && matches!(b[*at], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
            {
                *at += 1;
            }
            let n = &text[start..*at];
            let float = |n: &str| {
                n.parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number)
                    .ok_or_else(|| format!("bad number {n}"))
            };
            if n.contains(['.', 'e', 'E']) || n == "-0" {
                float(n)
            } else if let Ok(i) = n.parse::<i64>() {
                Ok(Value::from(i))
            } else if let Ok(u) = n.parse::<u64>() {
                Ok(Value::from(u))
            } else {
                float(n)
            }
        }
        _ => Err(format!("unexpected text at {at}")),
    }
}

fn check_cell(
    array: &dyn Array,
    row: usize,
    field: &Field,
    expected: &Value,
    path: &str,
) -> Result<(), String> {
    let shown = || {
        let mut s = expected.to_string();
        if s.len() > 200 {
            s.truncate(200);
            s.push_str("...");
        }
        s
    };
    if array.is_null(row) {
        return if expected.is_null() {
            Ok(())
        } else {
            Err(format!("[cell] {path}: null, payload has {}", shown()))
        };
    }
    if expected.is_null() {
        return Err(format!(
            "[cell] {path}: a value of {:?}, payload has null or no such key",
            field.data_type()
        ));
    }
    let mismatch = |got: String| Err(format!("[cell] {path}: {got}, payload has {}", shown()));
    match field.data_type() {
        DataType::Utf8 => {
            let text = array
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap()
                .value(row);
            if is_json(field) {
                match read_json(text) {
                    Ok(v) if v == *expected => Ok(()),
                    Ok(_) => mismatch(format!("JSON text {text:?}")),
                    Err(e) => mismatch(format!("JSON text {text:?} that does not parse ({e})")),
                }
            } else if expected.as_str() == Some(text) {
                Ok(())
            } else {
                mismatch(format!("string {text:?}"))
            }
        }
        DataType::Int64 => {
            let v = array
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .value(row);
            if expected.as_i64() == Some(v) && (expected.is_i64()) {
                Ok(())
            } else {
                mismatch(format!("int {v}"))
            }
        }
        DataType::Float64 => {
            let v = array
                .as_any()
                .downcast_ref::<Float64Array>()
                .unwrap()
                .value(row);
            match expected.as_f64() {
                Some(e) if e.to_bits() == v.to_bits() => Ok(()),
                _ => mismatch(format!("float {v:?}")),
            }
        }
        DataType::Boolean => {
            let v = array
                .as_any()
                .downcast_ref::<BooleanArray>()
                .unwrap()
                .value(row);
            if expected.as_bool() == Some(v) {
                Ok(())
            } else {
                mismatch(format!("bool {v}"))
            }
        }
        DataType::List(item) => {
            let list = array.as_any().downcast_ref::<ListArray>().unwrap();
            let Some(items) = expected.as_array() else {
                return mismatch("a list".into());
            };
            let values = list.value(row);
            if values.len() != items.len() {
                return mismatch(format!("a list of {} items", values.len()));
            }
            for (i, e) in items.iter().enumerate() {
                check_cell(values.as_ref(), i, item, e, &format!("{path}[{i}]"))?;
            }
            Ok(())
        }
        DataType::Struct(fields) => {
            let s = array.as_any().downcast_ref::<StructArray>().unwrap();
            let Some(object) = expected.as_object() else {
                return mismatch("a struct".into());
            };
            for key in object.keys() {
                if !fields.iter().any(|f| f.name() == key) {
                    return mismatch(format!("a struct without a field {key:?}"));
                }
            }
            for (i, f) in fields.iter().enumerate() {
                let e = object.get(f.name()).unwrap_or(&Value::Null);
                check_cell(
                    s.column(i).as_ref(),
                    row,
                    f,
                    e,
                    &format!("{path}.{:?}", f.name()),
                )?;
            }
            Ok(())
        }
        other => mismatch(format!("a value of unexpected type {other:?}")),
    }
}

/// Checks the rows of `batch` against `events`.
fn check_rows(batch: &RecordBatch, events: &[Event], first_row: usize) -> Result<(), String> {
    if batch.num_rows() != events.len() {
        return Err(format!(
            "[rows] {} rows for {} events",
            batch.num_rows(),
            events.len()
        ));
    }
    let schema = batch.schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let ids = batch.column(0).as_any().downcast_ref::<StringArray>();
    let sent = batch
        .column(1)
        .as_any()
        .downcast_ref::<TimestampMicrosecondArray>();
    let (Some(ids), Some(sent)) = (ids, sent) else {
        return Err("[schema] fixed columns of the wrong array type".into());
    };
    for (row, event) in events.iter().enumerate() {
        let at = format!("event {}", first_row + row);
        if ids.is_null(row) || ids.value(row) != event.id.to_string() {
            return Err(format!("[cell] {at}: wrong _event_id"));
        }
        if sent.is_null(row) || sent.value(row) != event.sent_at.timestamp_micros() {
            return Err(format!("[cell] {at}: wrong _sent_at"));
        }
        let payload = event.payload();
        match payload.as_object() {
            Some(object) => {
                for key in object.keys() {
                    if !names.contains(&column_name(key).as_str()) {
                        return Err(format!("[cell] {at}: no column for key {key:?}"));
                    }
                }
            }
            None if !names.contains(&VALUE_COLUMN) => {
                return Err(format!("[cell] {at}: no _value column for a non-object"));
            }
            None => {}
        }
        for (i, field) in schema.fields().iter().enumerate().skip(2) {
            let expected = match (field.name().as_str(), payload) {
                (VALUE_COLUMN, Value::Object(_)) => &Value::Null,
                (VALUE_COLUMN, other) => other,
                (name, Value::Object(object)) => {
                    object.get(&payload_key(name)).unwrap_or(&Value::Null)
                }
                _ => &Value::Null,
            };
            let path = format!("{at}, column {:?}", field.name());
            check_cell(batch.column(i).as_ref(), row, field, expected, &path)?;
        }
    }
    Ok(())
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "?".into())
}

/// Encodes through tapes of [`CHUNK`] events and checks schema and cells.
fn check_arrow(trees: &[J], events: &[Event]) -> Result<(), String> {
    let run = || -> Result<(), String> {
        let tapes: Vec<Tape<'_>> = events.chunks(CHUNK).map(Tape::of_events).collect();
        let encoder = Encoder::infer(&tapes);
        check_schema(trees, &encoder)?;
        for (n, (chunk, tape)) in events.chunks(CHUNK).zip(&tapes).enumerate() {
            let batch = encoder
                .encode(chunk, tape)
                .map_err(|e| format!("[encode-error] chunk {n}: {e}"))?;
            check_rows(&batch, chunk, n * CHUNK)?;
        }
        Ok(())
    };
    catch_unwind(AssertUnwindSafe(run))
        .unwrap_or_else(|p| Err(format!("[panic] {}", panic_text(p))))
}

/// Writes the events as one Parquet object through `format::write_parquet` (into an
/// in-memory store), reads it back and checks the cells.
///
/// The reader takes the Arrow schema stored in the file, or `supplied` instead.
fn check_parquet(
    events: &[Event],
    rt: &tokio::runtime::Runtime,
    supplied: Option<arrow_schema::SchemaRef>,
) -> Result<(), String> {
    use object_store::memory::InMemory;
    use object_store::path::Path;
    use object_store::{ObjectStore, ObjectStoreExt};
    use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};

    let run = || -> Result<(), String> {
        let store = Arc::new(InMemory::new());
        let path = Path::from("fuzz.parquet");
        let bytes = rt.block_on(async {
            let mut sink = crate::client::ObjectSink::new(
                Arc::clone(&store) as Arc<dyn ObjectStore>,
                path.clone(),
                8 << 20,
                Arc::default(),
            );
            crate::format::write_parquet(
                events,
                &Plan::Infer,
                Compression::Zstd,
                8 << 20,
                &mut sink,
            )
            .await
            .map_err(|e| format!("[parquet-write] {e:?}"))?;
            sink.finish().await.map_err(|e| format!("[store] {e}"))?;
            let got = store.get(&path).await.map_err(|e| format!("[store] {e}"))?;
            got.bytes().await.map_err(|e| format!("[store] {e}"))
        })?;
        let options = match supplied.clone() {
            Some(schema) => ArrowReaderOptions::new().with_schema(schema),
            None => ArrowReaderOptions::new(),
        };
        let reader = ParquetRecordBatchReaderBuilder::try_new_with_options(bytes, options)
            .and_then(|b| b.build())
            .map_err(|e| format!("[parquet-read] {e}"))?;
        let mut row = 0;
        for batch in reader {
            let batch = batch.map_err(|e| format!("[parquet-read] {e}"))?;
            let n = batch.num_rows();
            if row + n > events.len() {
                return Err("[parquet-read] more rows than events".into());
            }
            check_rows(&batch, &events[row..row + n], row).map_err(|e| format!("[parquet] {e}"))?;
            row += n;
        }
        if row != events.len() {
            return Err(format!(
                "[parquet-read] {row} rows for {} events",
                events.len()
            ));
        }
        Ok(())
    };
    catch_unwind(AssertUnwindSafe(run))
        .unwrap_or_else(|p| Err(format!("[panic] {}", panic_text(p))))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime")
}

/// Checks a batch given as trees, through Arrow and (if `rt` is given) Parquet.
fn check_trees(trees: &[J], seed: u64, rt: Option<&tokio::runtime::Runtime>) -> Result<(), String> {
    let (events, _) = events_of(trees, seed);
    check_arrow(trees, &events)?;
    if let Some(rt) = rt {
        check_parquet(&events, rt, None)?;
    }
    Ok(())
}

/// Shrinks a failing batch: drops events, then simplifies trees, while it still fails with
/// an error of the same class. Returns the smallest batch's texts and its error.
fn shrink(
    mut trees: Vec<J>,
    seed: u64,
    rt: Option<&tokio::runtime::Runtime>,
    error: String,
) -> (Vec<String>, String) {
    let class = |e: &str| e.split(']').next().unwrap_or_default().to_owned();
    let want = class(&error);
    let mut error = error;
    let mut budget = 3000;
    let fails = |t: &[J], budget: &mut i32| -> Option<String> {
        *budget -= 1;
        match check_trees(t, seed, rt) {
            Err(e) if class(&e) == want => Some(e),
            _ => None,
        }
    };
    'outer: loop {
        for i in 0..trees.len() {
            if trees.len() > 1 {
                let mut fewer = trees.clone();
                fewer.remove(i);
                if let Some(e) = fails(&fewer, &mut budget) {
                    (trees, error) = (fewer, e);
                    continue 'outer;
                }
            }
        }
        for i in 0..trees.len() {
            for s in trees[i].shrinks() {
                if budget <= 0 {
                    break 'outer;
                }
                let mut other = trees.clone();
                other[i] = s;
                if let Some(e) = fails(&other, &mut budget) {
                    (trees, error) = (other, e);
                    continue 'outer;
                }
            }
        }
        break;
    }
    let texts = trees
        .iter()
        .map(|t| {
            let mut s = String::new();
            t.render(&mut s, u64::MAX); // whitespace is irrelevant: render compactly-ish
            s
        })
        .collect();
    (texts, error)
}

/// Failures found, one (shrunk) reproducer per error class.
#[derive(Default)]
struct Findings {
    by_class: HashMap<String, (Vec<String>, String)>,
    total: usize,
}

impl Findings {
    fn add(
        &mut self,
        trees: Vec<J>,
        seed: u64,
        rt: Option<&tokio::runtime::Runtime>,
        error: String,
    ) {
        self.total += 1;
        // The class: the tag and what kind of mismatch, without row and value details.
        let key = classify(&error);
        if self.by_class.contains_key(&key) || self.by_class.len() >= 12 {
            return;
        }
        let shrunk = if trees.len() <= 64 {
            shrink(trees, seed, rt, error)
        } else {
            (vec![format!("<{} events>", trees.len())], error)
        };
        self.by_class.insert(key, shrunk);
    }

    fn report(&self) -> Result<(), String> {
        if self.by_class.is_empty() {
            return Ok(());
        }
        let mut out = format!("{} failing batches; reproducers:\n", self.total);
        let mut classes: Vec<_> = self.by_class.iter().collect();
        classes.sort_by(|a, b| a.0.cmp(b.0));
        for (class, (texts, error)) in classes {
            out.push_str(&format!("--- {class}\n    error: {error}\n"));
            for t in texts {
                out.push_str(&format!("    event: {t}\n"));
            }
        }
        Err(out)
    }
}

fn classify(error: &str) -> String {
    let tag = error.split(']').next().unwrap_or_default();
    let what = if error.contains("payload has null") {
        "value-for-null"
    } else if error.contains("JSON text") {
        "json-text"
    } else if error.contains(": null, payload has") {
        "null-for-value"
    } else if error.contains("float") {
        "float"
    } else if error.contains("int ") {
        "int"
    } else if error.contains("string") {
        "string"
    } else if error.contains("struct") {
        "struct"
    } else if error.contains("list") {
        "list"
    } else if error.contains("columns") {
        "column-order"
    } else {
        "other"
    };
    format!("{tag}] {what}")
}

// ---------------------------------------------------------------------------------------
// The tests.

#[test]
fn small_random_batches_match_serde_json() {
    let rt = runtime();
    // Deterministic by default; `TAPE_FUZZ_SEED` / `TAPE_FUZZ_ROUNDS` explore further.
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let mut rng = Rng(env("TAPE_FUZZ_SEED", 0x5EED_0001));
    let mut findings = Findings::default();
    let mut stats: HashMap<String, usize> = HashMap::new();
    for round in 0..env("TAPE_FUZZ_ROUNDS", 1500) {
        let n = 1 + rng.below(8);
        let plan = rng.next();
        let deviate = *rng.pick(&[0, 5, 15, 40]);
        let mut generator = Gen {
            rng: &mut rng,
            plan,
            deviate,
            max_depth: 4,
        };
        let trees: Vec<J> = (0..n).map(|_| generator.payload()).collect();
        // Parquet is slower: every fourth batch.
        let rt = (round % 4 == 0).then_some(&rt);
        for (_, r) in reference_columns(&trees) {
            count_shapes(&r, &mut stats);
        }
        if let Err(e) = check_trees(&trees, round, rt) {
            findings.add(trees, round, rt, e);
        }
    }
    if std::env::var_os("TAPE_FUZZ_STATS").is_some() {
        let mut stats: Vec<_> = stats.into_iter().collect();
        stats.sort();
        eprintln!("column shapes generated: {stats:?}");
    }
    if let Err(report) = findings.report() {
        panic!("{report}");
    }
}

/// Counts the shapes of a column, nested ones included (to see what the fuzzer covers).
fn count_shapes(r: &R, stats: &mut HashMap<String, usize>) {
    let name = match r {
        R::List(item) => {
            count_shapes(item, stats);
            "List"
        }
        R::Struct(fields) => {
            for (_, f) in fields {
                count_shapes(f, stats);
            }
            "Struct"
        }
        other => match other {
            R::Null => "Null",
            R::Bool => "Bool",
            R::Int => "Int",
            R::Float => "Float",
            R::Str => "Str",
            _ => "Json",
        },
    };
    *stats.entry(name.to_owned()).or_default() += 1;
}

#[test]
fn hand_picked_payloads_match_serde_json() {
    // Each inner list is one batch.
    let batches: &[&[&str]] = &[
        &[r#"{"a": 1, "a": "x"}"#, r#"{"a": 2}"#],
        &[r#"{"a": {"b": 1}, "a": {"c": 2}}"#],
        &[r#"{"a": 1, "\u0061": 2.5}"#],
        &[r#"{"a": -0}"#, r#"{"a": 1}"#],
        &[
            r#"{"a": 18446744073709551615}"#,
            r#"{"a": -9223372036854775809}"#,
        ],
        &[r#"{"a": 1e300, "b": [1, 1.5, 18446744073709551616]}"#],
        &[
            r#"{"_event_id": "mine", "_value": 1, "_payload_value": 2, "_sent_at": null}"#,
            "3",
        ],
        &[r#"{"": {"": {"": []}}}"#, r#"{"": {"": {"": [{}]}}}"#],
        &[r#"{"s": "nul\u0000 \ud83d\ude00 \" \\ \n"}"#],
        &[r#"{}"#, r#"[]"#, r#"null"#, r#""s""#, r#"{"a": {}}"#],
        &[r#"{"a": [[], [null], [[1]]]}"#],
        &[r#"{"a": {"x": 1}}"#, r#"{"a": null}"#, r#"{"a": {}}"#],
        &[r#"{"a": [{"x": 1, "x": null}]}"#],
        &[r#"{"b": 1, "a": 2}"#, r#"{"a": 3, "c": 4, "b": 5}"#],
        &[r#"{"a.b": 1, "item": {"element": [1]}, "list": [{"item": 2}]}"#],
    ];
    let rt = runtime();
    let mut failures = Vec::new();
    for texts in batches {
        let events: Vec<Event> = texts
            .iter()
            .map(|t| Event::from_json(EventId::new(), chrono::Utc::now(), Bytes::from(*t)).unwrap())
            .collect();
        let run = || -> Result<(), String> {
            let tapes: Vec<Tape<'_>> = events.chunks(CHUNK).map(Tape::of_events).collect();
            let encoder = Encoder::infer(&tapes);
            for (n, (chunk, tape)) in events.chunks(CHUNK).zip(&tapes).enumerate() {
                let batch = encoder
                    .encode(chunk, tape)
                    .map_err(|e| format!("[encode-error] {e}"))?;
                check_rows(&batch, chunk, n * CHUNK)?;
            }
            Ok(())
        };
        let arrow = catch_unwind(AssertUnwindSafe(run))
            .unwrap_or_else(|p| Err(format!("[panic] {}", panic_text(p))));
        if let Err(e) = arrow.and_then(|()| check_parquet(&events, &rt, None)) {
            failures.push(format!("{texts:?}: {e}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn deep_nesting_matches_serde_json() {
    // Payloads nested `levels` deep (the top-level object counts as one), up to as deep as
    // `Event::from_json` accepts: arrays, objects, and both alternating. Without the
    // encoder's nesting limit, 61 levels would be the deepest whose Parquet file the parquet
    // crate reads back with its stored schema.
    let arrays = |levels: usize| {
        let n = levels - 1;
        format!("{{\"a\":{}1{}}}", "[".repeat(n), "]".repeat(n))
    };
    let objects = |levels: usize| format!("{}1{}", "{\"k\":".repeat(levels), "}".repeat(levels));
    let mixed = |levels: usize| {
        let n = (levels - 1) / 2;
        format!("{{\"m\":{}null{}}}", "[{\"k\":".repeat(n), "}]".repeat(n))
    };
    let max = destination_core::MAX_PAYLOAD_DEPTH;
    assert_eq!(max, 127, "the labels below assume it");
    let texts = [
        ("arrays, 61 levels", arrays(61)),
        ("objects, 61 levels", objects(61)),
        ("mixed, 61 levels", mixed(61)),
        ("arrays, 62 levels", arrays(62)),
        ("objects, 62 levels", objects(62)),
        ("arrays, 127 levels", arrays(max)),
        ("objects, 127 levels", objects(max)),
        ("mixed, 127 levels", mixed(max)),
    ];
    let mut failures = Vec::new();
    for (label, text) in texts {
        let event = Event::from_json(
            EventId::new(),
            chrono::Utc::now(),
            Bytes::from(text.clone()),
        )
        .expect("within the depth limit");
        let events = vec![event];
        // Tape, inference and encoding on the test thread's ordinary stack.
        let run = || -> Result<(), String> {
            let tapes = [Tape::of_events(&events)];
            let encoder = Encoder::infer(&tapes);
            let batch = encoder
                .encode(&events, &tapes[0])
                .map_err(|e| format!("[encode-error] {e}"))?;
            check_rows(&batch, &events, 0)
        };
        let arrow = catch_unwind(AssertUnwindSafe(run))
            .unwrap_or_else(|p| Err(format!("[panic] {}", panic_text(p))));
        // Parquet's ArrowWriter recurses once per level with frames of about 32 KiB in an
        // unoptimised build: on a 2 MiB stack (a test thread, or a Tokio worker) writing
        // more than about 60 levels overflows the stack and aborts the process (a release
        // build writes all 127 levels on 2 MiB). That would abort this whole test binary,
        // so the Parquet round trips get a large stack.
        let in_big_stack = |supplied: Option<arrow_schema::SchemaRef>| {
            std::thread::scope(|scope| {
                std::thread::Builder::new()
                    .stack_size(256 << 20)
                    .spawn_scoped(scope, || check_parquet(&events, &runtime(), supplied))
                    .expect("a thread")
                    .join()
                    .unwrap_or_else(|p| Err(format!("[panic] {}", panic_text(p))))
            })
        };
        // The file as any reader opens it: with the Arrow schema stored in it.
        if let Err(e) = arrow.and_then(|()| in_big_stack(None)) {
            failures.push(format!("{label}: {e}"));
        }
        // The values, read with the schema given rather than the stored one.
        let schema = Encoder::infer(&[Tape::of_events(&events)]).schema();
        if let Err(e) = in_big_stack(Some(schema)) {
            failures.push(format!("{label} (schema supplied): {e}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn batches_of_several_tapes_match_serde_json() {
    let rt = runtime();
    let mut findings = Findings::default();
    // The last batch's first tape holds only non-objects: its key columns all come from
    // the later tapes, and `_value` comes first.
    for (seed, n, bare_first) in [
        (7u64, 1025usize, false),
        (8, 2049, false),
        (9, 2600, false),
        (10, 2100, true),
    ] {
        let mut rng = Rng(seed);
        let plan = rng.next();
        let mut trees = Vec::with_capacity(n);
        for i in 0..n {
            let chunk = i / CHUNK;
            let mut generator = Gen {
                rng: &mut rng,
                // Later chunks prefer other kinds for some paths: types change across tapes.
                plan: if i % 3 == 0 {
                    plan ^ chunk as u64
                } else {
                    plan
                },
                deviate: 3,
                max_depth: 3,
            };
            let mut tree = generator.payload();
            // Keys and shapes seen in one chunk only.
            if let J::Obj(entries) = &mut tree {
                match chunk {
                    0 => entries.push((r#""x""#.into(), J::Num("1".into()))),
                    1 => entries.push((
                        r#""y""#.into(),
                        J::Obj(vec![(r#""z""#.into(), J::Bool(true))]),
                    )),
                    _ => {
                        entries.push((r#""x""#.into(), J::Num("2.5".into())));
                        entries.push((
                            r#""late""#.into(),
                            J::Arr(vec![J::Str(r#""\u00e9""#.into())]),
                        ));
                        entries.push((r#""y""#.into(), J::Obj(vec![(r#""w""#.into(), J::Null)])));
                    }
                }
            }
            // More non-objects in the second chunk.
            if chunk == 1 && i % 97 == 0 {
                tree = J::Num("18446744073709551615".into());
            }
            if bare_first && chunk == 0 {
                tree = match i % 4 {
                    0 => J::Arr(vec![J::Num("1".into()), J::Null]),
                    1 => J::Null,
                    2 => J::Arr(Vec::new()),
                    _ => J::Arr(vec![J::Num((i as u64 * 7919).to_string())]),
                };
            }
            trees.push(tree);
        }
        if let Err(e) = check_trees(&trees, seed, Some(&rt)) {
            findings.add(trees, seed, Some(&rt), e);
        }
    }
    if let Err(report) = findings.report() {
        panic!("{report}");
    }
}

#[test]
fn the_checker_notices_differences() {
    // Encoded from the first text, compared with the second: must be told apart.
    let pairs = [
        (r#"{"a": 1}"#, r#"{"a": 2}"#),
        (r#"{"a": 1.5}"#, r#"{"a": 1.25}"#),
        (r#"{"a": 1, "b": 2.5}"#, r#"{"a": -0, "b": 2.5}"#),
        (r#"{"a": "x"}"#, r#"{"a": "y"}"#),
        (r#"{"a": [1, 2]}"#, r#"{"a": [1]}"#),
        (r#"{"a": {"b": 1}}"#, r#"{"a": {"b": null}}"#),
        (r#"{"a": {"b": 1}}"#, r#"{"a": null}"#),
        (r#"{"a": 1, "b": "x"}"#, r#"{"a": 1}"#),
        (r#"{"a": 1}"#, r#"{"a": 1, "b": "x"}"#),
        (r#""3""#, r#""4""#),
        (r#"{"a": [1, "x"]}"#, r#"{"a": [1, "y"]}"#),
        (r#"{"a": [1, "x"]}"#, r#"{"a": [1.0, "x"]}"#),
        (r#"{"_event_id": 1}"#, r#"{"_payload_event_id": 1}"#),
    ];
    for (encoded, compared) in pairs {
        let a = Event::from_json(EventId::new(), chrono::Utc::now(), Bytes::from(encoded)).unwrap();
        let b = Event::from_json(a.id, a.sent_at, Bytes::from(compared)).unwrap();
        let events = [a];
        let tapes = [Tape::of_events(&events)];
        let batch = Encoder::infer(&tapes).encode(&events, &tapes[0]).unwrap();
        assert_eq!(check_rows(&batch, &events, 0), Ok(()), "{encoded}");
        assert!(
            check_rows(&batch, &[b], 0).is_err(),
            "{encoded} encoded passed for {compared}"
        );
    }
}
