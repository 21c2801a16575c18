//! The log's writer thread: group commit, segment rolling, progress and segment removal.
//!
//! Every file change of the log happens on this one thread, so rolling, removing and
//! appending never race. Appends queue up in a channel while the previous group is being
//! written and synced; the thread takes everything queued as the next group, writes it
//! with one `write` per segment and syncs once, then publishes the entries and answers
//! every caller of the group.

use std::fs::File;
use std::io::{self, Write};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant};

use destination_core::Event;
use tokio::sync::oneshot;

use super::cursor::{Progress, Slot, io_error, sync_dir};
use super::record::{self, HEADER_LEN, SEQ_FIELD};
use super::segment::{self, SegmentMeta};
use super::state::{Shared, State};
use super::{QueueError, Seq};

/// How often acknowledged progress is persisted and finished segments removed.
pub(crate) const PERSIST_EVERY: Duration = Duration::from_millis(200);
/// The most appends written as one group.
const MAX_GROUP: usize = 1024;

/// A request to the writer thread.
#[derive(Debug)]
pub(crate) enum Command {
    /// Write one encoded `append` call.
    Append {
        /// The body with a placeholder seq.
        body: Vec<u8>,
        /// Bytes reserved against the disk cap for it.
        reserved: u64,
        /// The events the body encodes, in order, for the read cache.
        events: Vec<Event>,
        /// Where to send the seqs.
        reply: oneshot::Sender<Result<Vec<Seq>, QueueError>>,
    },
    /// Persist progress and remove finished segments now: appends wait for space.
    Maintain,
    /// Persist progress, mark the log closed and stop.
    Close(oneshot::Sender<Result<(), QueueError>>),
    /// Stop without persisting anything, as a crash would (tests only).
    #[cfg(test)]
    Crash(oneshot::Sender<()>),
}

struct Pending {
    reply: oneshot::Sender<Result<Vec<Seq>, QueueError>>,
    seqs: std::ops::Range<Seq>,
    slots: Vec<(String, Slot)>,
    events: Vec<Event>,
    reserved: u64,
}

/// One `append` call waiting to be written.
struct Append {
    body: Vec<u8>,
    reserved: u64,
    events: Vec<Event>,
    reply: AppendReply,
}

/// The state owned by the writer thread.
pub(crate) struct Writer {
    pub(crate) shared: Arc<Shared>,
    pub(crate) file: File,
    pub(crate) active: u64,
    pub(crate) size: u64,
    pub(crate) next_seq: Seq,
    pub(crate) persisted: Progress,
    pub(crate) needs_roll: bool,
    /// The bytes of the group being written, kept between groups so that each group does
    /// not fault in fresh memory for its buffer.
    pub(crate) buf: Vec<u8>,
}

/// The most buffer capacity kept between groups; a larger group's buffer is released.
const KEEP_BUFFER_BYTES: usize = 16 << 20;

impl Writer {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }

    /// Runs until closed or until every sender is gone.
    pub(crate) fn run(mut self, rx: Receiver<Command>) {
        let mut last_persist = Instant::now() - PERSIST_EVERY;
        loop {
            let wait = PERSIST_EVERY.saturating_sub(last_persist.elapsed());
            let mut maintain_now = false;
            let first = match rx.recv_timeout(wait) {
                Ok(command) => Some(command),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => {
                    // The log was dropped without `close`: keep what progress there is.
                    self.maintain_or_warn(true);
                    return;
                }
            };
            if let Some(first) = first {
                let mut appends = Vec::new();
                let mut stop = None;
                for command in std::iter::once(first).chain(rx.try_iter().take(MAX_GROUP)) {
                    match command {
                        Command::Append {
                            body,
                            reserved,
                            events,
                            reply,
                        } => {
                            appends.push(Append {
                                body,
                                reserved,
                                events,
                                reply,
                            });
                        }
                        Command::Maintain => maintain_now = true,
                        other => {
                            stop = Some(other);
                            break;
                        }
                    }
                }
                self.write_group(appends);
                match stop {
                    Some(Command::Close(reply)) => {
                        let result = self.maintain(true);
                        self.shared.close();
                        answer(reply, result);
                        return;
                    }
                    #[cfg(test)]
                    Some(Command::Crash(reply)) => {
                        self.shared.close();
                        answer(reply, ());
                        return;
                    }
                    _ => {}
                }
            }
            if maintain_now || last_persist.elapsed() >= PERSIST_EVERY {
                last_persist = Instant::now();
                self.maintain_or_warn(false);
            }
        }
    }

    fn write_group(&mut self, appends: Vec<Append>) {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        buf.reserve(appends.iter().map(|a| HEADER_LEN + a.body.len()).sum());
        let mut pending = Vec::new();
        for Append {
            mut body,
            reserved,
            events,
            reply,
        } in appends
        {
            let frame_len = (HEADER_LEN + body.len()) as u64;
            let base = self.size + buf.len() as u64;
            if self.needs_roll || (base > 0 && base + frame_len > self.shared.config.segment_bytes)
            {
                self.flush(&mut buf, &mut pending);
                if let Err(error) = self.roll() {
                    self.release(reserved);
                    answer(reply, Err(error));
                    continue;
                }
            }
            let first = self.next_seq;
            body[SEQ_FIELD].copy_from_slice(&first.to_le_bytes());
            let entries = match record::decode_body(&body) {
                Ok((_, entries)) => entries,
                Err(message) => {
                    self.release(reserved);
                    answer(reply, Err(QueueError::Codec(message)));
                    continue;
                }
            };
            self.next_seq += entries.len() as u64;
            let body_at = self.size + buf.len() as u64 + HEADER_LEN as u64;
            let slots = entries
                .iter()
                .enumerate()
                .map(|(i, entry)| {
                    let slot = Slot {
                        seq: first + i as u64,
                        segment: self.active,
                        offset: body_at + entry.event_at as u64,
                        len: entry.event_len,
                        sent_at: entry.sent_at,
                    };
                    (entry.destination.to_string(), slot)
                })
                .collect();
            record::frame_into(&body, &mut buf);
            pending.push(Pending {
                reply,
                seqs: first..self.next_seq,
                slots,
                events,
                reserved,
            });
        }
        self.flush(&mut buf, &mut pending);
        if buf.capacity() <= KEEP_BUFFER_BYTES {
            self.buf = buf;
        }
    }

    /// Writes and syncs `buf`, then publishes and answers `pending`.
    fn flush(&mut self, buf: &mut Vec<u8>, pending: &mut Vec<Pending>) {
        if pending.is_empty() {
            return;
        }
        let written = self
            .file
            .write_all(buf)
            .and_then(|()| self.file.sync_data());
        let path = segment::segment_path(&self.shared.segments_dir, self.active);
        match written {
            Ok(()) => {
                self.size += buf.len() as u64;
                self.publish(pending.drain(..), buf.len() as u64);
            }
            Err(error) => {
                tracing::error!(path = %path.display(), %error, "queue append failed");
                // Cut off what may have reached the file and continue in a fresh segment,
                // so that offsets stay exact even if the cut fails.
                if let Err(error) = self.file.set_len(self.size) {
                    tracing::warn!(path = %path.display(), %error, "failed append not cut off");
                }
                self.needs_roll = true;
                let reserved: u64 = pending.iter().map(|p| p.reserved).sum();
                self.release(reserved);
                for p in pending.drain(..) {
                    let copy = io::Error::new(error.kind(), error.to_string());
                    answer(p.reply, Err(io_error(&path, copy)));
                }
            }
        }
        buf.clear();
    }

    fn publish(&self, pending: std::vec::Drain<'_, Pending>, bytes: u64) {
        let mut replies = Vec::new();
        let mut notify = Vec::new();
        {
            let mut state = self.lock();
            let state = &mut *state;
            state.next_seq = self.next_seq;
            let segment = state
                .segments
                .get_mut(&self.active)
                .expect("active segment is live");
            segment.size += bytes;
            // The reservation made by `append` is exactly the framed size: `used` already
            // counts these bytes.
            // Events go into the read cache in the same step that makes them readable, so
            // that a worker woken by this append finds them in memory, not on disk.
            let cap = self.shared.config.read_cache_bytes;
            for p in pending {
                for ((dest, slot), event) in p.slots.into_iter().zip(p.events) {
                    segment.last_seq.insert(dest.clone(), slot.seq);
                    let cursor = state.dests.entry(dest).or_default();
                    if cursor.unread.is_empty() {
                        notify.push(Arc::clone(&cursor.notify));
                    }
                    cursor.unread.push_back(slot);
                    if state.cache_bytes + u64::from(slot.len) <= cap {
                        state.cache_bytes += u64::from(slot.len);
                        state.cache.insert(slot.seq, event);
                    }
                }
                replies.push((p.reply, p.seqs.collect::<Vec<_>>()));
            }
        }
        for n in notify {
            n.notify_waiters();
        }
        for (reply, seqs) in replies {
            answer(reply, Ok(seqs));
        }
    }

    fn release(&self, reserved: u64) {
        self.lock().used -= reserved;
        self.shared.space.notify_waiters();
    }

    fn roll(&mut self) -> Result<(), QueueError> {
        let id = self.active + 1;
        let (file, path) = segment::create(&self.shared.segments_dir, id)?;
        self.file = file;
        self.active = id;
        self.size = 0;
        self.needs_roll = false;
        let mut state = self.lock();
        state.segments.insert(id, SegmentMeta::new(path, 0));
        state.active = id;
        Ok(())
    }

    fn maintain_or_warn(&mut self, force: bool) {
        if let Err(error) = self.maintain(force) {
            tracing::warn!(error = %destination_core::error_chain(&error), "queue progress not persisted");
        }
    }

    /// Persists progress when it changed (or when `force`d), then removes finished
    /// segments; rolls a finished active segment when appends wait for space.
    pub(crate) fn maintain(&mut self, force: bool) -> Result<(), QueueError> {
        let snapshot = {
            let mut state = self.lock();
            if state.dirty || force {
                state.dirty = false;
                let next = state.next_seq;
                let lows = state
                    .dests
                    .iter()
                    .map(|(d, c)| (d.clone(), c.low(next)))
                    .collect();
                Some(Progress {
                    next_seq: next,
                    acked_below: lows,
                })
            } else {
                None
            }
        };
        if let Some(progress) = snapshot {
            if let Err(error) = progress.store(&self.shared.progress_path) {
                self.lock().dirty = true;
                return Err(error);
            }
            self.persisted = progress;
        }

        let low = |dest: &str| self.persisted.acked_below.get(dest).copied();
        let roll = {
            let state = self.lock();
            (state.space_waiters > 0 || state.space_wanted)
                && self.size > 0
                && state.segments[&self.active].is_done(low)
        };
        if roll {
            self.roll()?;
            self.lock().space_wanted = false;
        }
        let low = |dest: &str| self.persisted.acked_below.get(dest).copied();
        let doomed: Vec<SegmentMeta> = {
            let mut state = self.lock();
            let ids: Vec<u64> = (state.segments.iter())
                .filter(|(id, meta)| **id != self.active && meta.is_done(low))
                .map(|(id, _)| *id)
                .collect();
            let doomed: Vec<_> = ids
                .iter()
                .filter_map(|id| state.segments.remove(id))
                .collect();
            state.used -= doomed.iter().map(|m| m.size).sum::<u64>();
            doomed
        };
        if doomed.is_empty() {
            return Ok(());
        }
        for meta in &doomed {
            if let Err(error) = std::fs::remove_file(&meta.path) {
                tracing::warn!(path = %meta.path.display(), %error, "finished segment not removed");
            }
            tracing::debug!(path = %meta.path.display(), bytes = meta.size, "segment removed");
        }
        self.shared.space.notify_waiters();
        sync_dir(&self.shared.segments_dir)
    }
}

/// Answers a caller that may have stopped waiting (its future was dropped).
fn answer<T>(reply: oneshot::Sender<T>, value: T) {
    if reply.send(value).is_err() {
        tracing::trace!("queue caller went away before the answer");
    }
}

type AppendReply = oneshot::Sender<Result<Vec<Seq>, QueueError>>;
