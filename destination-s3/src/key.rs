//! Object keys: a template filled from one timestamp, the partition and the batch key.

use chrono::{DateTime, Utc};
use object_store::path::Path;

/// The key template used when none is configured.
pub const DEFAULT_KEY_TEMPLATE: &str = "{prefix}/{yyyy}/{mm}/{dd}/{hh}/{batch}.{ext}";
/// The Hive-style key template, selected with `key_template = "hive"`.
pub const HIVE_KEY_TEMPLATE: &str = "{prefix}/dt={yyyy}-{mm}-{dd}/{batch}.{ext}";

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Literal(String),
    Prefix,
    Year,
    Month,
    Day,
    Hour,
    Batch,
    Ext,
}

/// A parsed key template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeyTemplate {
    parts: Vec<Part>,
}

impl KeyTemplate {
    /// Parses a template, or one of the names `default` and `hive`.
    ///
    /// # Errors
    ///
    /// A message when a placeholder is unknown or unclosed, or `{batch}` is missing (without
    /// it every batch of an hour would overwrite the same object).
    pub(crate) fn parse(template: &str) -> Result<Self, String> {
        let template = match template {
            "default" => DEFAULT_KEY_TEMPLATE,
            "hive" => HIVE_KEY_TEMPLATE,
            other => other,
        };
        let mut parts = Vec::new();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_owned()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("key_template has an unclosed `{{` in {template:?}"))?;
            let name = &rest[open + 1..open + close];
            parts.push(match name {
                "prefix" => Part::Prefix,
                "yyyy" => Part::Year,
                "mm" => Part::Month,
                "dd" => Part::Day,
                "hh" => Part::Hour,
                "batch" => Part::Batch,
                "ext" => Part::Ext,
                other => {
                    return Err(format!(
                        "key_template placeholder {{{other}}} is unknown (known: prefix, yyyy, \
                         mm, dd, hh, batch, ext)"
                    ));
                }
            });
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        if !parts.contains(&Part::Batch) {
            return Err("key_template must contain {batch}".into());
        }
        Ok(Self { parts })
    }

    /// The object path under `root` for a batch.
    ///
    /// Every date part comes from the single timestamp `at`. Empty segments (an unset
    /// `prefix`, doubled slashes) are dropped.
    ///
    /// # Errors
    ///
    /// A message when `prefix` holds a `.` or `..` segment.
    pub(crate) fn render(
        &self,
        root: &Path,
        prefix: Option<&str>,
        at: DateTime<Utc>,
        batch: &str,
        ext: &str,
    ) -> Result<Path, String> {
        let prefix = prefix.unwrap_or("");
        if prefix.split('/').any(|s| s == "." || s == "..") {
            return Err(format!("{prefix:?} has a `.` or `..` segment"));
        }
        let mut key = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => key.push_str(text),
                Part::Prefix => key.push_str(prefix),
                Part::Year => key.push_str(&at.format("%Y").to_string()),
                Part::Month => key.push_str(&at.format("%m").to_string()),
                Part::Day => key.push_str(&at.format("%d").to_string()),
                Part::Hour => key.push_str(&at.format("%H").to_string()),
                Part::Batch => key.push_str(batch),
                Part::Ext => key.push_str(ext),
            }
        }
        let mut path = root.as_ref().to_owned();
        for segment in key.split('/') {
            if segment.is_empty() || segment == "." || segment == ".." {
                continue;
            }
            if !path.is_empty() {
                path.push('/');
            }
            push_segment(&mut path, segment);
        }
        Path::parse(&path).map_err(|e| format!("{prefix:?} makes an invalid object key: {e}"))
    }
}

/// The ASCII characters escaped in key segments: those object_store does not accept in a
/// segment (control characters) and those AWS and Google advise against in object names.
const ESCAPED: &str = "\\{^}%`]\">[~<#|*?";

/// Appends one key segment: UTF-8 as it is, and the [`ESCAPED`] characters and ASCII
/// control characters percent-encoded (`?` becomes `%3F`, `%` becomes `%25`), which is
/// also how object_store escapes them.
fn push_segment(path: &mut String, segment: &str) {
    for c in segment.chars() {
        if c.is_ascii_control() || ESCAPED.contains(c) {
            path.push_str(&format!("%{:02X}", u32::from(c)));
        } else {
            path.push(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 12, 31, 23, 59, 59).unwrap()
    }

    #[test]
    fn default_template_uses_one_timestamp() {
        let t = KeyTemplate::parse("default").unwrap();
        let root = Path::from("events/raw");
        let key = t
            .render(&root, Some("github"), at(), "a-b", "parquet")
            .unwrap();
        assert_eq!(key.as_ref(), "events/raw/github/2024/12/31/23/a-b.parquet");
    }

    #[test]
    fn missing_prefix_leaves_no_empty_segment() {
        let t = KeyTemplate::parse(DEFAULT_KEY_TEMPLATE).unwrap();
        let key = t
            .render(&Path::default(), None, at(), "x", "ndjson.gz")
            .unwrap();
        assert_eq!(key.as_ref(), "2024/12/31/23/x.ndjson.gz");
    }

    #[test]
    fn hive_style() {
        let t = KeyTemplate::parse("hive").unwrap();
        let key = t
            .render(&Path::from("r"), Some("p/q"), at(), "x", "parquet")
            .unwrap();
        assert_eq!(key.as_ref(), "r/p/q/dt=2024-12-31/x.parquet");
    }

    #[test]
    fn custom_templates_are_checked() {
        assert!(KeyTemplate::parse("{yyyy}/{batch}.{ext}").is_ok());
        let unknown = KeyTemplate::parse("{year}/{batch}").unwrap_err();
        assert!(unknown.contains("{year}"), "{unknown}");
        assert!(
            KeyTemplate::parse("{yyyy}/{hh}.parquet")
                .unwrap_err()
                .contains("{batch}")
        );
        assert!(
            KeyTemplate::parse("{batch")
                .unwrap_err()
                .contains("unclosed")
        );
    }

    #[test]
    fn unicode_is_kept_and_unsafe_characters_escaped() {
        let t = KeyTemplate::parse("{prefix}/{batch}.{ext}").unwrap();
        let root = Path::from("r");
        let key = |prefix: &str| t.render(&root, Some(prefix), at(), "x", "e").unwrap();
        assert_eq!(key("ünï/çødé").as_ref(), "r/ünï/çødé/x.e");
        assert_eq!(key("q?x#y").as_ref(), "r/q%3Fx%23y/x.e");
        assert_eq!(key("new\nline").as_ref(), "r/new%0Aline/x.e");
        // An escaped dot-dot is kept as text, never decoded into a parent folder.
        assert_eq!(key("%2e%2e/enc").as_ref(), "r/%252e%252e/enc/x.e");
        assert_eq!(
            key("a b+c=d,e;f@g$h&i'j(k)l!").as_ref(),
            "r/a b+c=d,e;f@g$h&i'j(k)l!/x.e"
        );
        // The same characters object_store's own path parts escape, escaped the same way.
        for c in (0u8..0x80).map(char::from) {
            let text = format!("a{c}b");
            let ours = key(&text);
            let theirs = object_store::path::PathPart::from(text.as_str());
            if c != '/' {
                assert_eq!(ours.as_ref(), format!("r/{}/x.e", theirs.as_ref()), "{c:?}");
            }
        }
    }

    #[test]
    fn dot_segments_in_prefix_are_refused() {
        let t = KeyTemplate::parse("default").unwrap();
        assert!(
            t.render(&Path::default(), Some("a/../b"), at(), "x", "e")
                .is_err()
        );
    }
}
