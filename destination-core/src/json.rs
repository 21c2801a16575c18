//! Compact JSON text of a [`Value`], written in one walk that also measures its nesting.
//!
//! The output is byte for byte what `serde_json::to_writer` writes for the same value (the
//! tests compare the two). Writing it here instead saves two things on every `send`: a
//! separate walk of the tree to check its depth, and serde_json's byte-at-a-time search
//! for characters to escape, which is most of the cost of serialising text-heavy payloads;
//! strings are scanned a word (eight bytes) at a time instead.

use serde_json::Value;

/// The value nests more arrays and objects than allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooDeep;

/// Appends the compact JSON text of `value` to `out`, refusing a value that nests more
/// than `max_depth` arrays and objects (what is appended up to the refusal is left).
pub(crate) fn write_value(
    value: &Value,
    out: &mut Vec<u8>,
    max_depth: usize,
) -> Result<(), TooDeep> {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        // Numbers keep serde_json's own formatting (itoa and ryu), so the text stays
        // identical; they are a small part of any payload.
        Value::Number(number) => {
            // Writing to memory cannot fail.
            let _ = serde_json::to_writer(&mut *out, number);
        }
        Value::String(text) => write_str(text, out),
        Value::Array(items) => {
            let inner = max_depth.checked_sub(1).ok_or(TooDeep)?;
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item, out, inner)?;
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let inner = max_depth.checked_sub(1).ok_or(TooDeep)?;
            out.push(b'{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(key, out);
                out.push(b':');
                write_value(item, out, inner)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

/// Appends `text` as a JSON string: quoted, with `"`, `\` and control characters escaped
/// as serde_json escapes them, and every other character (non-ASCII included) as it is.
fn write_str(text: &str, out: &mut Vec<u8>) {
    let bytes = text.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    while let Some(found) = find_escape(&bytes[start..]) {
        let at = start + found;
        out.extend_from_slice(&bytes[start..at]);
        write_escape(bytes[at], out);
        start = at + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Whether `byte` must be escaped inside a JSON string.
fn needs_escape(byte: u8) -> bool {
    byte < 0x20 || byte == b'"' || byte == b'\\'
}

/// The position of the first byte of `bytes` that must be escaped.
fn find_escape(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH_BITS: u64 = u64::from_ne_bytes([0x80; 8]);
    let mut words = bytes.chunks_exact(8);
    let mut offset = 0;
    for word in &mut words {
        let v = u64::from_le_bytes(word.try_into().expect("eight bytes"));
        // A byte's high bit survives `x - 0x01` (with `x = byte ^ c`) only when the byte
        // equals `c`, and `v - 0x20` only when the byte is below 0x20; `& !v` drops bytes
        // at or above 0x80, which never need escaping. A borrow can only flag bytes after
        // a true match, so the lowest flagged byte is always a true one.
        let below_space = v.wrapping_sub(ONES * 0x20);
        let quote = (v ^ (ONES * u64::from(b'"'))).wrapping_sub(ONES);
        let backslash = (v ^ (ONES * u64::from(b'\\'))).wrapping_sub(ONES);
        let flags = (below_space | quote | backslash) & !v & HIGH_BITS;
        if flags != 0 {
            return Some(offset + (flags.trailing_zeros() / 8) as usize);
        }
        offset += 8;
    }
    let tail = words.remainder();
    tail.iter()
        .position(|&b| needs_escape(b))
        .map(|i| offset + i)
}

/// Appends the escape sequence of `byte`, one of the bytes [`needs_escape`] names.
fn write_escape(byte: u8, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let short = match byte {
        b'"' => b'"',
        b'\\' => b'\\',
        0x08 => b'b',
        0x09 => b't',
        0x0a => b'n',
        0x0c => b'f',
        0x0d => b'r',
        _ => {
            let hex = [HEX[usize::from(byte >> 4)], HEX[usize::from(byte & 0xf)]];
            out.extend_from_slice(b"\\u00");
            out.extend_from_slice(&hex);
            return;
        }
    };
    out.extend_from_slice(&[b'\\', short]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Map, Number, json};

    fn written(value: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        write_value(value, &mut out, usize::MAX).expect("no depth limit");
        out
    }

    #[test]
    fn every_byte_is_escaped_as_serde_json_escapes_it() {
        for byte in 0u8..=0x7f {
            let text = format!("a{}b", byte as char);
            let value = Value::String(text.repeat(3));
            assert_eq!(
                written(&value),
                serde_json::to_vec(&value).unwrap(),
                "byte {byte:#04x}"
            );
        }
    }

    #[test]
    fn escapes_are_found_at_every_position_of_a_word() {
        for len in 0..40 {
            for at in 0..len {
                for special in ['"', '\\', '\n', '\u{1}', '\u{1f}'] {
                    let mut text: Vec<char> = "xé€😀".chars().cycle().take(len).collect();
                    text[at] = special;
                    let value = Value::String(text.into_iter().collect());
                    assert_eq!(written(&value), serde_json::to_vec(&value).unwrap());
                }
            }
        }
    }

    #[test]
    fn numbers_keep_serde_jsons_formatting() {
        let numbers = json!([
            0,
            -0.0,
            1e21,
            1.5e-7,
            u64::MAX,
            i64::MIN,
            0.1,
            123456789.125
        ]);
        assert_eq!(written(&numbers), serde_json::to_vec(&numbers).unwrap());
    }

    #[test]
    fn nesting_beyond_the_limit_is_refused() {
        fn nested(depth: usize) -> Value {
            (0..depth).fold(json!(1), |inner, i| {
                if i % 2 == 0 {
                    json!([inner])
                } else {
                    json!({ "k": inner })
                }
            })
        }
        for depth in 0..6 {
            let value = nested(depth);
            let mut out = Vec::new();
            assert_eq!(write_value(&value, &mut out, depth), Ok(()));
            assert_eq!(out, serde_json::to_vec(&value).unwrap());
            if depth > 0 {
                assert_eq!(
                    write_value(&value, &mut Vec::new(), depth - 1),
                    Err(TooDeep)
                );
            }
        }
        // Empty containers count as a level too.
        assert_eq!(write_value(&json!([]), &mut Vec::new(), 0), Err(TooDeep));
        assert_eq!(write_value(&json!({}), &mut Vec::new(), 0), Err(TooDeep));
        assert_eq!(write_value(&json!("x"), &mut Vec::new(), 0), Ok(()));
    }

    fn any_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(|f| Number::from_f64(f).map_or(Value::Null, Value::Number)),
            ".*".prop_map(Value::String),
            "[\"\\\\\\x00-\\x1f a-z\\u{80}-\\u{10ffff}]{0,40}".prop_map(Value::String),
        ];
        leaf.prop_recursive(5, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::vec((".*", inner), 0..8)
                    .prop_map(|entries| Value::Object(entries.into_iter().collect::<Map<_, _>>())),
            ]
        })
    }

    proptest! {
        #[test]
        fn text_is_what_serde_json_writes(value in any_value()) {
            prop_assert_eq!(written(&value), serde_json::to_vec(&value).unwrap());
        }
    }
}
