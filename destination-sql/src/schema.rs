//! Column names and column types inferred from payloads, and how types widen.

use std::collections::{BTreeMap, HashMap};

use chrono::DateTime;
use serde_json::Value;

use crate::config::Dialect;

/// The column that holds the event id, the table's primary key.
pub const ID_COLUMN: &str = "_event_id";

/// The column that holds the time the event was sent, in UTC.
pub const SENT_AT_COLUMN: &str = "_sent_at";

/// Hex digits of the hash appended to a changed or shortened column name.
const HASH_LEN: usize = 8;

/// The type of a payload column, from the narrowest to the widest.
///
/// Types only ever widen: [`Kind::join`] gives the narrowest type that holds values of both.
/// Integers widen to floats; booleans and numbers widen to JSON; everything widens to text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Bool,
    Int,
    Float,
    Timestamp,
    Json,
    Text,
}

impl Kind {
    /// The type a value asks for; `None` for JSON `null`, which fits any column.
    pub(crate) fn of(value: &Value) -> Option<Self> {
        Some(match value {
            Value::Null => return None,
            Value::Bool(_) => Self::Bool,
            Value::Number(n) if n.is_i64() => Self::Int,
            // Above `i64::MAX`: text keeps every digit, a float would not.
            Value::Number(n) if n.is_u64() => Self::Text,
            Value::Number(_) => Self::Float,
            Value::String(s) if is_timestamp(s) => Self::Timestamp,
            Value::String(_) => Self::Text,
            Value::Array(_) | Value::Object(_) => Self::Json,
        })
    }

    /// Whether a column of type `self` holds every value of type `other` unchanged.
    pub(crate) fn covers(self, other: Self) -> bool {
        use Kind::*;
        self == other
            || self == Text
            || matches!((self, other), (Float, Int) | (Json, Bool | Int | Float))
    }

    /// The narrowest type that covers both.
    pub(crate) fn join(self, other: Self) -> Self {
        use Kind::*;
        if self.covers(other) {
            self
        } else if other.covers(self) {
            other
        } else if matches!(self, Bool | Int | Float) && matches!(other, Bool | Int | Float) {
            Json
        } else {
            Text
        }
    }
}

/// Whether a string is an RFC 3339 timestamp such as `2024-05-01T12:00:00Z`.
pub(crate) fn is_timestamp(s: &str) -> bool {
    // Cheap shape test first: most strings are not timestamps.
    s.len() >= 20 && s.as_bytes()[4] == b'-' && DateTime::parse_from_rfc3339(s).is_ok()
}

/// The columns a table has, beside the id and sent-at columns, with their types.
pub(crate) type Columns = HashMap<String, Kind>;

/// The columns a batch needs, with the narrowest type that holds all of its values.
pub(crate) type Needs = BTreeMap<String, Kind>;

/// Whether `have` already holds every column of `needs` with a wide enough type.
pub(crate) fn satisfies(have: &Columns, needs: &Needs) -> bool {
    needs
        .iter()
        .all(|(name, kind)| have.get(name).is_some_and(|k| k.covers(*kind)))
}

/// Maps the top-level keys of one payload to the column names they are stored in.
///
/// The rules, applied per key:
///
/// 1. A *plain* key (a letter or `_`, then letters, digits or `_`; non-ASCII letters of the
///    Basic Multilingual Plane count as letters) is stored in the column named after it in
///    lower case: `userName` goes to `username`, `select` to `select` (names are always
///    quoted, so SQL keywords are fine).
/// 2. Any other key, a plain key longer than the dialect's identifier limit, and a key that
///    would take the name of the id or sent-at column get a *hashed* name: the key in
///    lower case with every other character replaced by `_`, cut to fit, then `_` and eight
///    hex digits of a hash of the whole key (`"with space"` goes to `with_space_` and the
///    hash). The same key always gets the same name.
/// 3. When plain keys of one payload fold to the same name (`id` and `ID`), the key equal to
///    the name (else the smallest key) keeps it and the others get hashed names. Keys of
///    different payloads that fold to the same name share the column.
///
/// # Examples
///
/// ```
/// use destination_sql::{Dialect, column_names};
///
/// let names = column_names(Dialect::Postgres, ["select", "id", "ID"]);
/// assert_eq!(names[0], ("select", "select".to_owned()));
/// assert_eq!(names[1], ("id", "id".to_owned()));
/// assert!(names[2].1.starts_with("id_") && names[2].1.len() == 11);
/// ```
pub fn column_names<'a, I>(dialect: Dialect, keys: I) -> Vec<(&'a str, String)>
where
    I: IntoIterator<Item = &'a str>,
{
    let mut named: Vec<(&str, String, bool)> = keys
        .into_iter()
        .map(|key| match plain_name(dialect, key) {
            Some(name) => (key, name, true),
            None => (key, hashed_name(dialect, key), false),
        })
        .collect();

    // Resolve plain keys that fold to the same name: one keeps it, the others are hashed.
    let mut winners: HashMap<String, &str> = HashMap::new();
    for (key, name, plain) in &named {
        if !*plain {
            continue;
        }
        winners
            .entry(name.clone())
            .and_modify(|best| {
                let exact = |k: &str| k == name.as_str();
                if exact(key) || (!exact(best) && *key < *best) {
                    *best = key;
                }
            })
            .or_insert(key);
    }
    for (key, name, plain) in &mut named {
        if *plain && winners.get(name.as_str()) != Some(key) {
            *name = hashed_name(dialect, key);
        }
    }
    named
        .into_iter()
        .map(|(key, name, _)| (key, name))
        .collect()
}

/// The lower-case name of a plain key, if it is plain and fits.
fn plain_name(dialect: Dialect, key: &str) -> Option<String> {
    let mut chars = key.chars();
    let first = chars.next()?;
    let word = |c: char| c == '_' || (c.is_alphanumeric() && (c as u32) < 0x1_0000);
    if !(first == '_' || (first.is_alphabetic() && (first as u32) < 0x1_0000)) {
        return None;
    }
    if !chars.all(word) {
        return None;
    }
    let name = key.to_lowercase();
    let reserved = name == ID_COLUMN || name == SENT_AT_COLUMN;
    (!reserved && name.chars().all(word) && fits(dialect, &name)).then_some(name)
}

/// The hashed name of any key: sanitized, cut to fit, then `_` and the key's hash.
fn hashed_name(dialect: Dialect, key: &str) -> String {
    let mut name = String::new();
    if key.chars().next().is_none_or(|c| c.is_ascii_digit()) {
        name.push('_');
    }
    for c in key.chars().flat_map(char::to_lowercase) {
        let keep = c.is_alphanumeric() && (c as u32) < 0x1_0000;
        name.push(if keep { c } else { '_' });
    }
    let suffix = format!("_{:0width$x}", fnv1a(key.as_bytes()), width = HASH_LEN);
    while !fits_with(dialect, &name, suffix.len()) {
        name.pop();
    }
    name.push_str(&suffix);
    name
}

/// Whether a name fits the dialect's identifier limit.
fn fits(dialect: Dialect, name: &str) -> bool {
    fits_with(dialect, name, 0)
}

fn fits_with(dialect: Dialect, name: &str, extra: usize) -> bool {
    match dialect {
        // MySQL counts characters; PostgreSQL counts bytes, and SQLite (which has no limit)
        // follows it so that tables move between the two.
        Dialect::MySql => name.chars().count() + extra <= dialect.identifier_limit(),
        Dialect::Postgres | Dialect::Sqlite => name.len() + extra <= dialect.identifier_limit(),
    }
}

/// 32-bit FNV-1a: small, stable across platforms and releases.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |hash, b| {
        (hash ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const ALL: [Dialect; 3] = [Dialect::Postgres, Dialect::MySql, Dialect::Sqlite];

    fn name(dialect: Dialect, key: &str) -> String {
        column_names(dialect, [key]).remove(0).1
    }

    #[test]
    fn plain_keys_keep_their_lower_case_name() {
        for d in ALL {
            assert_eq!(name(d, "select"), "select");
            assert_eq!(name(d, "userName"), "username");
            assert_eq!(name(d, "_private"), "_private");
            assert_eq!(name(d, "ünïcödé"), "ünïcödé");
        }
    }

    #[test]
    fn other_keys_are_sanitized_and_hashed() {
        let d = Dialect::Postgres;
        let spaced = name(d, "with space");
        assert!(spaced.starts_with("with_space_"), "{spaced}");
        assert_eq!(spaced.len(), "with_space_".len() + HASH_LEN);
        assert_ne!(name(d, "with space"), name(d, "with-space"));
        assert!(name(d, "1st").starts_with("_1st_"));
        assert!(name(d, "").starts_with('_'));
        assert!(name(d, "a\"b;--").starts_with("a_b___"));
        assert!(name(d, "rocket🚀").starts_with("rocket__"));
        assert!(name(d, "_event_id").starts_with("_event_id_"));
        assert!(name(d, "_SENT_AT").starts_with("_sent_at_"));
        assert_eq!(
            name(d, "with space"),
            name(d, "with space"),
            "deterministic"
        );
    }

    #[test]
    fn long_names_fit_the_dialect_limit() {
        let ascii = "k".repeat(100);
        let wide = "é".repeat(70);
        for d in ALL {
            for key in [ascii.as_str(), wide.as_str()] {
                let n = name(d, key);
                assert!(fits(d, &n), "{d:?} {n}");
            }
            let a = name(d, &format!("{ascii}a"));
            let b = name(d, &format!("{ascii}b"));
            assert_ne!(a, b, "keys sharing a long prefix stay distinct");
        }
        assert_eq!(name(Dialect::Postgres, &wide).len(), 63);
        assert_eq!(name(Dialect::MySql, &wide).chars().count(), 64);
        assert_eq!(name(Dialect::MySql, &"é".repeat(64)), "é".repeat(64));
        assert_ne!(name(Dialect::Postgres, &"é".repeat(64)), "é".repeat(64));
    }

    #[test]
    fn case_collisions_in_one_payload_keep_both_values() {
        let names = column_names(Dialect::MySql, ["ID", "id", "Id"]);
        assert_eq!(names[1].1, "id");
        assert!(names[0].1.starts_with("id_") && names[2].1.starts_with("id_"));
        assert_ne!(names[0].1, names[2].1);
        // Without an exact match, the smallest key wins.
        let names = column_names(Dialect::MySql, ["Id", "ID"]);
        assert_eq!(names[1].1, "id");
        assert!(names[0].1.starts_with("id_"));
    }

    #[test]
    fn kinds_are_inferred() {
        assert_eq!(Kind::of(&json!(null)), None);
        assert_eq!(Kind::of(&json!(true)), Some(Kind::Bool));
        assert_eq!(Kind::of(&json!(-3)), Some(Kind::Int));
        assert_eq!(Kind::of(&json!(u64::MAX)), Some(Kind::Text));
        assert_eq!(Kind::of(&json!(1.5)), Some(Kind::Float));
        assert_eq!(
            Kind::of(&json!("2019-05-15T15:20:30Z")),
            Some(Kind::Timestamp)
        );
        assert_eq!(
            Kind::of(&json!("2019-05-15T15:20:30.5+02:00")),
            Some(Kind::Timestamp)
        );
        assert_eq!(Kind::of(&json!("2019-05-15")), Some(Kind::Text));
        assert_eq!(Kind::of(&json!("not a timestamp at all")), Some(Kind::Text));
        assert_eq!(Kind::of(&json!([1])), Some(Kind::Json));
        assert_eq!(Kind::of(&json!({"a": 1})), Some(Kind::Json));
    }

    #[test]
    fn join_is_a_lattice() {
        use Kind::*;
        let all = [Bool, Int, Float, Timestamp, Json, Text];
        for a in all {
            for b in all {
                let j = a.join(b);
                assert_eq!(j, b.join(a), "commutative");
                assert!(j.covers(a) && j.covers(b), "upper bound");
                for c in all {
                    assert_eq!(a.join(b).join(c), a.join(b.join(c)), "associative");
                }
            }
        }
        assert_eq!(Int.join(Float), Float);
        assert_eq!(Bool.join(Int), Json);
        assert_eq!(Json.join(Float), Json);
        assert_eq!(Json.join(Timestamp), Text);
        assert_eq!(Timestamp.join(Int), Text);
    }
}
