//! Record framing shared by the segment log and the dead-letter file.
//!
//! A record is a 12-byte header followed by its body:
//!
//! ```text
//! magic [FF 'D' 'Q' 01] | body length u32 LE | crc32 of body u32 LE | body
//! ```
//!
//! The magic starts with `0xFF`, a byte that never occurs in UTF-8 text, so it cannot show
//! up inside a JSON payload or a destination name; recovery uses it to find the next record
//! after damaged bytes, and the checksum rules out a chance match in binary fields.
//!
//! The body of a log record holds the entries of one `append` call:
//!
//! ```text
//! first seq u64 | entry count u32 | entries
//! entry: name length u16 | name | sent_at i64 | event length u32 | event JSON
//! ```
//!
//! `sent_at` is in nanoseconds since the Unix epoch, clamped to the range of an i64. The
//! n-th entry (from 0) has seq `first seq + n`. The event is stored in parts, so that its
//! payload's JSON text can be handed on without being parsed:
//!
//! ```text
//! event: 00 | id [16] | sent_at seconds i64 | nanoseconds u32 | attributes length u32
//!        | attributes JSON (empty when there are none) | payload JSON
//! ```
//!
//! An event that starts with `{` instead of `00` is the whole event as one JSON object, as
//! logs written before this layout hold it; both are read.

use bytes::Bytes;
use chrono::{DateTime, Timelike};
use destination_core::{Attributes, Event, EventId};
use uuid::Uuid;

use super::{QueueError, Seq};

/// The bytes every record starts with.
pub(crate) const MAGIC: [u8; 4] = [0xFF, b'D', b'Q', 0x01];
/// Magic, body length and checksum.
pub(crate) const HEADER_LEN: usize = 12;
/// The largest body recovery accepts; a longer length field is damage.
pub(crate) const MAX_BODY: usize = 1 << 30;

/// Frames `body` into `out`: header, then body.
pub(crate) fn frame_into(body: &[u8], out: &mut Vec<u8>) {
    let crc = crc32fast::hash(body);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(body);
}

/// One step of a scan over a buffer of records.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Scanned<'a> {
    /// A record whose checksum matched, starting at `offset`.
    Record {
        /// Where the header starts.
        offset: usize,
        /// The body.
        body: &'a [u8],
    },
    /// Bytes that hold no valid record.
    Damaged {
        /// Where the damage starts.
        offset: usize,
        /// How many bytes are skipped.
        len: usize,
        /// Whether the damage runs to the end of the buffer (a torn tail).
        tail: bool,
    },
}

/// Walks the records of a buffer, skipping damaged bytes up to the next valid record.
#[derive(Debug)]
pub(crate) struct Scanner<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Scanner<'a> {
    /// A scan from the start of `buf`.
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn record_at(&self, pos: usize) -> Option<&'a [u8]> {
        let header = self.buf.get(pos..pos + HEADER_LEN)?;
        if header[..4] != MAGIC {
            return None;
        }
        let len = u32::from_le_bytes(header[4..8].try_into().ok()?) as usize;
        let crc = u32::from_le_bytes(header[8..12].try_into().ok()?);
        if len > MAX_BODY {
            return None;
        }
        let body = self.buf.get(pos + HEADER_LEN..pos + HEADER_LEN + len)?;
        (crc32fast::hash(body) == crc).then_some(body)
    }

    fn resync(&self, from: usize) -> Option<usize> {
        let mut pos = from;
        while pos + HEADER_LEN <= self.buf.len() {
            let found = self.buf[pos..].windows(4).position(|w| w == MAGIC)?;
            pos += found;
            if self.record_at(pos).is_some() {
                return Some(pos);
            }
            pos += 1;
        }
        None
    }
}

impl<'a> Iterator for Scanner<'a> {
    type Item = Scanned<'a>;

    fn next(&mut self) -> Option<Scanned<'a>> {
        let offset = self.pos;
        if offset >= self.buf.len() {
            return None;
        }
        if let Some(body) = self.record_at(offset) {
            self.pos += HEADER_LEN + body.len();
            return Some(Scanned::Record { offset, body });
        }
        match self.resync(offset + 1) {
            Some(next) => {
                self.pos = next;
                Some(Scanned::Damaged {
                    offset,
                    len: next - offset,
                    tail: false,
                })
            }
            None => {
                self.pos = self.buf.len();
                Some(Scanned::Damaged {
                    offset,
                    len: self.buf.len() - offset,
                    tail: true,
                })
            }
        }
    }
}

/// One entry of a decoded log body, pointing into the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EntryRef<'a> {
    /// The destination's name.
    pub(crate) destination: &'a str,
    /// When the event was sent, in nanoseconds since the Unix epoch.
    pub(crate) sent_at: i64,
    /// Where the event's JSON starts, relative to the start of the body.
    pub(crate) event_at: usize,
    /// The length of the event's JSON.
    pub(crate) event_len: u32,
}

/// Where the first seq sits in a log body; the writer fills it in.
pub(crate) const SEQ_FIELD: std::ops::Range<usize> = 0..8;

/// Encodes the entries of one `append` call as a log body with seq 0 as placeholder.
///
/// # Errors
///
/// [`QueueError::Codec`] when an event cannot be serialized, a destination name is longer
/// than 65535 bytes or the body would exceed the record size limit.
pub(crate) fn encode_body(entries: &[(String, Event)]) -> Result<Vec<u8>, QueueError> {
    let count = u32::try_from(entries.len())
        .map_err(|_| QueueError::Codec("too many entries in one append".into()))?;
    let size: usize = (entries.iter())
        .map(|(d, e)| d.len() + e.encoded_len() + 64)
        .sum();
    let mut body = Vec::with_capacity(12 + size);
    body.extend_from_slice(&0u64.to_le_bytes());
    body.extend_from_slice(&count.to_le_bytes());
    for (destination, event) in entries {
        let name_len = u16::try_from(destination.len())
            .map_err(|_| QueueError::Codec("destination name is longer than 65535 bytes".into()))?;
        body.extend_from_slice(&name_len.to_le_bytes());
        body.extend_from_slice(destination.as_bytes());
        let sent_at =
            event
                .sent_at
                .timestamp_nanos_opt()
                .unwrap_or(if event.sent_at.timestamp() < 0 {
                    i64::MIN
                } else {
                    i64::MAX
                });
        body.extend_from_slice(&sent_at.to_le_bytes());
        let len_at = body.len();
        body.extend_from_slice(&0u32.to_le_bytes());
        encode_event(event, &mut body)?;
        let event_len = u32::try_from(body.len() - len_at - 4)
            .map_err(|_| QueueError::Codec("event is larger than 4 GiB".into()))?;
        body[len_at..len_at + 4].copy_from_slice(&event_len.to_le_bytes());
    }
    if body.len() > MAX_BODY {
        return Err(QueueError::Codec(format!(
            "one append encodes to {} bytes, more than the record limit of {MAX_BODY}",
            body.len()
        )));
    }
    Ok(body)
}

/// The first byte of an event stored in parts.
const EVENT_PARTS: u8 = 0x00;

/// Appends the stored form of `event` (see the module docs) to `out`.
fn encode_event(event: &Event, out: &mut Vec<u8>) -> Result<(), QueueError> {
    out.push(EVENT_PARTS);
    out.extend_from_slice(event.id.as_uuid().as_bytes());
    out.extend_from_slice(&event.sent_at.timestamp().to_le_bytes());
    out.extend_from_slice(&event.sent_at.timestamp_subsec_nanos().to_le_bytes());
    let len_at = out.len();
    out.extend_from_slice(&0u32.to_le_bytes());
    if !event.attributes.is_empty() {
        serde_json::to_writer(&mut *out, &event.attributes)
            .map_err(|e| QueueError::Codec(e.to_string()))?;
        let len = u32::try_from(out.len() - len_at - 4)
            .map_err(|_| QueueError::Codec("attributes are larger than 4 GiB".into()))?;
        out[len_at..len_at + 4].copy_from_slice(&len.to_le_bytes());
    }
    out.extend_from_slice(event.payload_json());
    Ok(())
}

/// Reads back an event written by `encode_event`, or one stored as a whole JSON object.
///
/// # Errors
///
/// A message when the bytes do not hold an event.
pub(crate) fn decode_event(bytes: &[u8]) -> Result<Event, String> {
    match bytes.first() {
        Some(&EVENT_PARTS) => {}
        Some(b'{') => return serde_json::from_slice(bytes).map_err(|e| e.to_string()),
        _ => return Err("not a stored event".into()),
    }
    let mut reader = Reader {
        body: bytes,
        pos: 1,
    };
    let id = EventId::from_uuid(Uuid::from_bytes(reader.array()?));
    let secs = i64::from_le_bytes(reader.array()?);
    let nanos = u32::from_le_bytes(reader.array()?);
    // Nanoseconds past 1e9 mark a leap second, which chrono lets any second carry.
    let sent_at = DateTime::from_timestamp(secs, 0)
        .and_then(|t| t.with_nanosecond(nanos))
        .ok_or_else(|| format!("sent_at out of range: {secs}.{nanos:09}"))?;
    let attributes_len = u32::from_le_bytes(reader.array()?) as usize;
    let attributes = match reader.take(attributes_len)? {
        [] => Attributes::new(),
        json => serde_json::from_slice(json).map_err(|e| format!("attributes: {e}"))?,
    };
    // The text passed `Event::from_json` (or was written from a value) before it was
    // stored, and the record's checksum guards it since: checking it again would parse every
    // event a second time.
    let payload = Bytes::copy_from_slice(&bytes[reader.pos..]);
    let mut event = Event::from_trusted_json(id, sent_at, payload);
    event.attributes = attributes;
    Ok(event)
}

/// Decodes a log body into its first seq and entries.
///
/// # Errors
///
/// A message when the body is malformed (which a matching checksum makes a bug, not damage).
pub(crate) fn decode_body(body: &[u8]) -> Result<(Seq, Vec<EntryRef<'_>>), String> {
    let mut reader = Reader { body, pos: 0 };
    let first_seq = u64::from_le_bytes(reader.array()?);
    let count = u32::from_le_bytes(reader.array()?);
    let mut entries = Vec::with_capacity(count.min(1 << 16) as usize);
    for _ in 0..count {
        let name_len = u16::from_le_bytes(reader.array()?) as usize;
        let destination = std::str::from_utf8(reader.take(name_len)?)
            .map_err(|_| "destination name is not UTF-8".to_string())?;
        let sent_at = i64::from_le_bytes(reader.array()?);
        let event_len = u32::from_le_bytes(reader.array()?);
        let event_at = reader.pos;
        reader.take(event_len as usize)?;
        entries.push(EntryRef {
            destination,
            sent_at,
            event_at,
            event_len,
        });
    }
    if reader.pos != body.len() {
        return Err("trailing bytes after the last entry".into());
    }
    Ok((first_seq, entries))
}

struct Reader<'a> {
    body: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.body.len());
        let end = end.ok_or_else(|| "entry runs past the end of the record".to_string())?;
        let bytes = &self.body[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let bytes = self.take(N)?;
        Ok(bytes.try_into().expect("take returned N bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn framed(bodies: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for body in bodies {
            frame_into(body, &mut out);
        }
        out
    }

    #[test]
    fn scans_back_what_was_framed() {
        let buf = framed(&[b"one", b"", b"three"]);
        let bodies: Vec<_> = Scanner::new(&buf)
            .map(|s| match s {
                Scanned::Record { body, .. } => body.to_vec(),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(bodies, vec![b"one".to_vec(), vec![], b"three".to_vec()]);
    }

    #[test]
    fn skips_a_damaged_middle_record_and_flags_a_torn_tail() {
        let mut buf = framed(&[b"first", b"second", b"third"]);
        let second_at = HEADER_LEN + 5;
        buf[second_at + HEADER_LEN + 2] ^= 0x40;
        buf.extend_from_slice(&framed(&[b"fourth"])[..HEADER_LEN + 3]);
        let scanned: Vec<_> = Scanner::new(&buf).collect();
        assert_eq!(scanned.len(), 4);
        assert_eq!(
            scanned[1],
            Scanned::Damaged {
                offset: second_at,
                len: 18,
                tail: false
            }
        );
        assert!(matches!(scanned[2], Scanned::Record { body: b"third", .. }));
        assert!(matches!(
            scanned[3],
            Scanned::Damaged {
                len: 15,
                tail: true,
                ..
            }
        ));
    }

    #[test]
    fn body_round_trip() {
        let events = vec![
            ("a".to_string(), Event::new(json!({"x": 1}))),
            ("bb".to_string(), Event::new(json!("ünï"))),
        ];
        let mut body = encode_body(&events).unwrap();
        body[SEQ_FIELD].copy_from_slice(&42u64.to_le_bytes());
        let (first, entries) = decode_body(&body).unwrap();
        assert_eq!(first, 42);
        assert_eq!(entries.len(), 2);
        for ((dest, event), entry) in events.iter().zip(&entries) {
            assert_eq!(entry.destination, dest);
            assert_eq!(Some(entry.sent_at), event.sent_at.timestamp_nanos_opt());
            let stored = &body[entry.event_at..entry.event_at + entry.event_len as usize];
            assert_eq!(&decode_event(stored).unwrap(), event);
        }
    }

    #[test]
    fn events_keep_their_time_attributes_and_payload_text() {
        let sent_at = DateTime::from_timestamp(-12_345_678_901, 123_456_789).unwrap();
        let mut event = Event::with_id(EventId::new(), sent_at, json!({"b": [1, "x"], "a": null}))
            .with_attribute("url", "http://127.0.0.1/x");
        let text = event.payload_json().clone();
        let mut out = Vec::new();
        encode_event(&event, &mut out).unwrap();
        let back = decode_event(&out).unwrap();
        assert_eq!(back, event);
        assert_eq!(back.payload_json(), &text);
        event.attributes.clear();
        out.clear();
        encode_event(&event, &mut out).unwrap();
        assert_eq!(decode_event(&out).unwrap(), event);
    }

    #[test]
    fn events_stored_as_one_json_object_are_still_read() {
        let event = Event::new(json!({"x": 1})).with_attribute("prefix", "p");
        let old = serde_json::to_vec(&event).unwrap();
        assert_eq!(decode_event(&old).unwrap(), event);
        assert!(decode_event(b"").is_err());
        assert!(decode_event(&[EVENT_PARTS, 1, 2]).is_err());
    }

    proptest::proptest! {
        #[test]
        fn one_flipped_byte_costs_at_most_its_own_record(
            bodies in proptest::collection::vec(proptest::collection::vec(0u8..=255, 0..64), 1..12),
            at in 0usize..10_000,
            bit in 0u8..8,
        ) {
            let refs: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
            let mut buf = framed(&refs);
            let at = at % buf.len();
            buf[at] ^= 1 << bit;
            let mut starts = Vec::new();
            let mut pos = 0;
            for body in &bodies {
                starts.push(pos);
                pos += HEADER_LEN + body.len();
            }
            let hit = starts.iter().rposition(|s| *s <= at).unwrap();
            let got: Vec<Vec<u8>> = Scanner::new(&buf)
                .filter_map(|s| match s {
                    Scanned::Record { body, .. } => Some(body.to_vec()),
                    Scanned::Damaged { .. } => None,
                })
                .collect();
            let mut want = bodies.clone();
            want.remove(hit);
            proptest::prop_assert_eq!(got, want);
        }
    }
}
