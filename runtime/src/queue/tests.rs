//! Tests of the segment log and the memory queue against the [`Queue`] contract.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use destination_core::testing::sample_events;
use destination_core::{Event, EventId};
use serde_json::json;

use super::*;

fn config(dir: &Path) -> QueueConfig {
    QueueConfig {
        path: dir.to_path_buf(),
        ..QueueConfig::default()
    }
}

fn small(dir: &Path, segment_bytes: u64, max_bytes: u64, when_full: FullPolicy) -> QueueConfig {
    QueueConfig {
        path: dir.to_path_buf(),
        segment_bytes,
        max_bytes,
        when_full,
        full_timeout: Duration::from_millis(500),
        ..QueueConfig::default()
    }
}

fn to(dest: &str, events: &[Event]) -> Vec<(String, Event)> {
    events
        .iter()
        .map(|e| (dest.to_string(), e.clone()))
        .collect()
}

fn ids(records: &[Record]) -> Vec<EventId> {
    records.iter().map(|r| r.event.id).collect()
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir.join("segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    files.sort();
    files
}

/// Everything `dest` has pending, without waiting when there is nothing.
async fn drain(queue: &dyn Queue, dest: &str) -> Vec<Record> {
    let mut out = Vec::new();
    while queue.stats(dest).depth > out.len() as u64 {
        let next = tokio::time::timeout(Duration::from_secs(5), queue.next(dest, 1000));
        out.extend(next.await.expect("next timed out").unwrap());
    }
    out
}

async fn basic_contract(queue: &dyn Queue) {
    let events = sample_events(5);
    let entries = vec![
        ("a".to_string(), events[0].clone()),
        ("b".to_string(), events[1].clone()),
        ("a".to_string(), events[2].clone()),
        ("a".to_string(), events[3].clone()),
        ("b".to_string(), events[4].clone()),
    ];
    let seqs = queue.append(entries).await.unwrap();
    assert_eq!(seqs.len(), 5);
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "seqs increase: {seqs:?}"
    );
    assert_eq!(queue.stats("a").depth, 3);
    assert_eq!(queue.stats("a").oldest_sent_at, Some(events[0].sent_at));

    let first = queue.next("a", 2).await.unwrap();
    assert_eq!(ids(&first), vec![events[0].id, events[2].id]);
    assert_eq!(first[0].event, events[0]);
    assert_eq!((first[0].seq, first[1].seq), (seqs[0], seqs[2]));
    let rest = queue.next("a", 10).await.unwrap();
    assert_eq!(ids(&rest), vec![events[3].id]);
    let b = queue.next("b", 10).await.unwrap();
    assert_eq!(ids(&b), vec![events[1].id, events[4].id]);
    assert!(b.iter().all(|r| r.destination == "b"));

    // Out-of-order ack: depth counts what is left, the age is the oldest left.
    queue.ack("a", &[seqs[2], seqs[3]]).await.unwrap();
    assert_eq!(queue.stats("a").depth, 1);
    assert_eq!(queue.stats("a").oldest_sent_at, Some(events[0].sent_at));
    queue.ack("a", &[seqs[0]]).await.unwrap();
    assert_eq!(queue.stats("a"), QueueStats::default());
    assert_eq!(queue.stats("b").depth, 2);
    assert_eq!(queue.stats("unknown"), QueueStats::default());

    // A waiting `next` that is dropped takes nothing; a later one gets the record.
    let waited = tokio::time::timeout(Duration::from_millis(50), queue.next("a", 10)).await;
    assert!(waited.is_err(), "next returned with nothing queued");
    let late = sample_events(1);
    queue.append(to("a", &late)).await.unwrap();
    assert_eq!(ids(&queue.next("a", 10).await.unwrap()), vec![late[0].id]);
}

#[tokio::test]
async fn segment_log_keeps_the_queue_contract() {
    let dir = tempfile::tempdir().unwrap();
    let log = SegmentLog::open(config(dir.path())).await.unwrap();
    basic_contract(&log).await;
    log.close().await.unwrap();
}

#[tokio::test]
async fn segment_log_without_read_cache_keeps_the_queue_contract() {
    let dir = tempfile::tempdir().unwrap();
    let config = QueueConfig {
        read_cache_bytes: 0,
        ..config(dir.path())
    };
    let log = SegmentLog::open(config).await.unwrap();
    basic_contract(&log).await;
    log.close().await.unwrap();
}

#[tokio::test]
async fn read_cache_overflow_falls_back_to_disk_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let config = QueueConfig {
        read_cache_bytes: 2_000,
        ..config(dir.path())
    };
    let log = SegmentLog::open(config).await.unwrap();
    let events = sample_events(30);
    for chunk in events.chunks(7) {
        log.append(to("a", chunk)).await.unwrap();
    }
    let got = drain(&log, "a").await;
    assert_eq!(ids(&got), events.iter().map(|e| e.id).collect::<Vec<_>>());
    assert_eq!(
        got.iter().map(|r| &r.event).collect::<Vec<_>>(),
        events.iter().collect::<Vec<_>>()
    );
    log.close().await.unwrap();
}

#[tokio::test]
async fn memory_queue_keeps_the_queue_contract() {
    basic_contract(&MemoryQueue::new()).await;
}

#[tokio::test]
async fn close_wakes_waiting_readers_and_refuses_work() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(SegmentLog::open(config(dir.path())).await.unwrap());
    let waiting = tokio::spawn({
        let log = Arc::clone(&log);
        async move { log.next("a", 1).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    log.close().await.unwrap();
    let woken = tokio::time::timeout(Duration::from_secs(2), waiting)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(woken, Err(QueueError::Closed)), "{woken:?}");
    let append = log.append(to("a", &sample_events(1))).await;
    assert!(matches!(append, Err(QueueError::Closed)), "{append:?}");
}

#[tokio::test]
async fn restart_hands_out_everything_from_the_lowest_unacked_entry() {
    let dir = tempfile::tempdir().unwrap();
    let a = sample_events(10);
    let b = sample_events(3);
    let log = SegmentLog::open(config(dir.path())).await.unwrap();
    let seqs = log.append(to("a", &a)).await.unwrap();
    log.append(to("b", &b)).await.unwrap();
    assert_eq!(log.next("a", 100).await.unwrap().len(), 10);
    log.ack("a", &[seqs[0], seqs[1], seqs[2], seqs[5]])
        .await
        .unwrap();
    log.close().await.unwrap();

    let log = SegmentLog::open(config(dir.path())).await.unwrap();
    assert!(log.recovery_report().damaged.is_empty());
    assert_eq!(log.recovery_report().pending, 7 + 3);
    let again = drain(&log, "a").await;
    // Seq 5 was acked above the unacked seq 3, so it comes again (at least once).
    assert_eq!(ids(&again), a[3..].iter().map(|e| e.id).collect::<Vec<_>>());
    assert_eq!(again[0].seq, seqs[3]);
    assert_eq!(
        ids(&drain(&log, "b").await),
        b.iter().map(|e| e.id).collect::<Vec<_>>()
    );
    let later = log.append(to("a", &sample_events(1))).await.unwrap();
    assert!(later[0] > *seqs.last().unwrap() + 3, "seqs never go back");
    log.close().await.unwrap();
}

#[tokio::test]
async fn crash_keeps_every_acknowledged_append_and_periodic_progress() {
    let dir = tempfile::tempdir().unwrap();
    let events = sample_events(6);
    let log = SegmentLog::open(config(dir.path())).await.unwrap();
    let seqs = log.append(to("a", &events[..4])).await.unwrap();
    log.next("a", 2).await.unwrap();
    log.ack("a", &seqs[..2]).await.unwrap();
    // Progress is persisted in the background within the period.
    tokio::time::sleep(writer::PERSIST_EVERY * 3).await;
    log.append(to("a", &events[4..])).await.unwrap();
    log.crash().await;

    let log = SegmentLog::open(config(dir.path())).await.unwrap();
    let again = drain(&log, "a").await;
    assert_eq!(
        ids(&again),
        events[2..].iter().map(|e| e.id).collect::<Vec<_>>()
    );
}

/// Writes five one-event records to `a`, closes, and returns them with the segment path.
/// Where `event`'s id is stored in a segment's bytes.
fn position_of(bytes: &[u8], event: &Event) -> usize {
    let id = event.id.as_uuid().as_bytes();
    bytes
        .windows(id.len())
        .position(|w| w == id)
        .expect("the event's id is in the segment")
}

async fn five_records(dir: &Path) -> (Vec<Event>, PathBuf) {
    let events = sample_events(5);
    let log = SegmentLog::open(config(dir)).await.unwrap();
    for event in &events {
        log.append(to("a", std::slice::from_ref(event)))
            .await
            .unwrap();
    }
    log.close().await.unwrap();
    let files = segment_files(dir);
    assert_eq!(files.len(), 1);
    (events, files[0].clone())
}

#[tokio::test]
async fn torn_tail_is_cut_kept_aside_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (events, segment) = five_records(dir.path()).await;
    let full = std::fs::read(&segment).unwrap();
    let torn_len = full.len() as u64 - 3;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(torn_len)
        .unwrap();

    let log = SegmentLog::open(config(dir.path())).await.unwrap();
    let report = log.recovery_report().clone();
    assert_eq!(report.records, 4);
    assert_eq!(report.damaged.len(), 1);
    let damage = &report.damaged[0];
    assert!(damage.torn_tail);
    assert_eq!(damage.offset + damage.bytes, torn_len);
    let kept = std::fs::read(damage.kept_at.as_ref().unwrap()).unwrap();
    assert_eq!(kept, full[damage.offset as usize..torn_len as usize]);
    assert_eq!(std::fs::metadata(&segment).unwrap().len(), damage.offset);
    let got = drain(&log, "a").await;
    assert_eq!(
        ids(&got),
        events[..4].iter().map(|e| e.id).collect::<Vec<_>>()
    );

    // Appends after the repair land cleanly: the next open finds no damage.
    let more = sample_events(2);
    log.append(to("a", &more)).await.unwrap();
    log.close().await.unwrap();
    let log = SegmentLog::open(config(dir.path())).await.unwrap();
    assert!(log.recovery_report().damaged.is_empty());
    let got = drain(&log, "a").await;
    let want: Vec<_> = events[..4].iter().chain(&more).map(|e| e.id).collect();
    assert_eq!(ids(&got), want);
}

#[tokio::test]
async fn garbage_after_the_last_record_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let (events, segment) = five_records(dir.path()).await;
    let clean_len = std::fs::metadata(&segment).unwrap().len();
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes.extend_from_slice(&[0xFF, b'D', b'Q', 0x01, 200, 0, 0, 0, 1, 2, 3, 4, 9, 9, 9]);
    bytes.extend_from_slice(b"not a record at all");
    std::fs::write(&segment, &bytes).unwrap();

    let log = SegmentLog::open(config(dir.path())).await.unwrap();
    let report = log.recovery_report();
    assert_eq!(report.damaged.len(), 1);
    assert_eq!(report.damaged[0].offset, clean_len);
    assert!(report.damaged[0].torn_tail);
    assert_eq!(
        ids(&drain(&log, "a").await),
        events.iter().map(|e| e.id).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn corrupt_middle_record_costs_only_that_record() {
    let dir = tempfile::tempdir().unwrap();
    let (events, segment) = five_records(dir.path()).await;
    let mut bytes = std::fs::read(&segment).unwrap();
    let at = position_of(&bytes, &events[2]);
    bytes[at] ^= 0x01;
    std::fs::write(&segment, &bytes).unwrap();

    let log = SegmentLog::open(config(dir.path())).await.unwrap();
    let report = log.recovery_report();
    assert_eq!(report.records, 4);
    assert_eq!(report.damaged.len(), 1);
    assert!(!report.damaged[0].torn_tail);
    assert!(report.damaged[0].kept_at.as_ref().unwrap().exists());
    let got = drain(&log, "a").await;
    let want: Vec<_> = [0, 1, 3, 4].iter().map(|i| events[*i].id).collect();
    assert_eq!(ids(&got), want);
    // The segment stays whole: the damage is skipped again, not cut.
    assert_eq!(
        std::fs::metadata(&segment).unwrap().len(),
        bytes.len() as u64
    );
}

#[tokio::test]
async fn an_entry_that_does_not_decode_is_set_aside_and_the_rest_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let (events, segment) = five_records(dir.path()).await;
    let mut bytes = std::fs::read(&segment).unwrap();
    // Break the third event's layout tag, then give its record a matching checksum: the
    // bytes are as the writer left them as far as recovery can tell, yet do not decode.
    let at = position_of(&bytes, &events[2]);
    let (offset, len) = record::Scanner::new(&bytes)
        .find_map(|scanned| match scanned {
            record::Scanned::Record { offset, body }
                if (offset..offset + record::HEADER_LEN + body.len()).contains(&at) =>
            {
                Some((offset, body.len()))
            }
            _ => None,
        })
        .expect("the record holding it");
    bytes[at - 1] = 0x7F;
    let body = offset + record::HEADER_LEN..offset + record::HEADER_LEN + len;
    let crc = crc32fast::hash(&bytes[body]);
    bytes[offset + 8..offset + 12].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&segment, &bytes).unwrap();

    let log = SegmentLog::open(config(dir.path())).await.unwrap();
    assert!(
        log.recovery_report().damaged.is_empty(),
        "the record checks out"
    );
    let got = drain(&log, "a").await;
    let want: Vec<_> = [0, 1, 3, 4].iter().map(|i| events[*i].id).collect();
    assert_eq!(ids(&got), want, "the entries after it are not held up");
    let kept: Vec<_> = std::fs::read_dir(segment.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".corrupt"))
        .collect();
    assert_eq!(kept.len(), 1, "its bytes are kept aside: {kept:?}");
    log.ack("a", &got.iter().map(|r| r.seq).collect::<Vec<_>>())
        .await
        .unwrap();
    log.close().await.unwrap();

    let reopened = SegmentLog::open(config(dir.path())).await.unwrap();
    assert_eq!(
        reopened.stats("a").depth,
        0,
        "nothing comes back after a restart"
    );
    reopened.close().await.unwrap();
}

#[tokio::test]
async fn full_queue_rejects_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let log = SegmentLog::open(small(dir.path(), 1000, 3000, FullPolicy::Reject))
        .await
        .unwrap();
    let mut written = 0;
    let error = loop {
        match log.append(to("a", &sample_events(2))).await {
            Ok(_) => written += 2,
            Err(error) => break error,
        }
    };
    assert!(
        matches!(error, QueueError::Full { cap: 3000, used } if used <= 3000),
        "{error:?}"
    );
    assert!(written > 0);
    assert_eq!(log.stats("a").depth, written);
    assert!(log.disk_usage() <= 3000);
    log.close().await.unwrap();
    let log = SegmentLog::open(config(dir.path())).await.unwrap();
    assert_eq!(log.recovery_report().pending, written);
}

#[tokio::test]
async fn full_queue_blocks_until_timeout_or_until_acks_free_space() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(
        SegmentLog::open(small(dir.path(), 1000, 3000, FullPolicy::Block))
            .await
            .unwrap(),
    );
    while log.disk_usage() + 1200 < 3000 {
        log.append(to("a", &sample_events(2))).await.unwrap();
    }
    let started = tokio::time::Instant::now();
    let timed_out = log.append(to("a", &sample_events(4))).await;
    assert!(
        matches!(timed_out, Err(QueueError::Full { .. })),
        "{timed_out:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(500));

    let blocked = tokio::spawn({
        let log = Arc::clone(&log);
        async move { log.append(to("a", &sample_events(4))).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!blocked.is_finished());
    let records = drain(&*log, "a").await;
    let seqs: Vec<_> = records.iter().map(|r| r.seq).collect();
    log.ack("a", &seqs).await.unwrap();
    let appended = tokio::time::timeout(Duration::from_secs(2), blocked)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(appended.unwrap().len(), 4);
    assert_eq!(log.stats("a").depth, 4);
}

#[tokio::test]
async fn finished_segments_are_removed_once_every_destination_acked() {
    let dir = tempfile::tempdir().unwrap();
    let log = SegmentLog::open(small(dir.path(), 2000, 1 << 30, FullPolicy::Block))
        .await
        .unwrap();
    for event in sample_events(30) {
        log.append(vec![("a".into(), event.clone()), ("b".into(), event)])
            .await
            .unwrap();
    }
    let before = segment_files(dir.path()).len();
    assert!(before > 3, "{before} segments");
    let usage = log.disk_usage();

    let a: Vec<_> = drain(&log, "a").await.iter().map(|r| r.seq).collect();
    log.ack("a", &a).await.unwrap();
    tokio::time::sleep(writer::PERSIST_EVERY * 3).await;
    assert_eq!(
        segment_files(dir.path()).len(),
        before,
        "b still needs every segment"
    );

    let b: Vec<_> = drain(&log, "b").await.iter().map(|r| r.seq).collect();
    log.ack("b", &b).await.unwrap();
    tokio::time::sleep(writer::PERSIST_EVERY * 3).await;
    assert_eq!(
        segment_files(dir.path()).len(),
        1,
        "only the active segment is left"
    );
    assert!(log.disk_usage() < usage / 2);
    log.close().await.unwrap();
    let log = SegmentLog::open(config(dir.path())).await.unwrap();
    assert_eq!(log.stats("a").depth + log.stats("b").depth, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_are_all_durable() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(
        SegmentLog::open(small(dir.path(), 64 << 10, 1 << 30, FullPolicy::Block))
            .await
            .unwrap(),
    );
    let tasks: Vec<_> = (0..16)
        .map(|task| {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let mut sent = Vec::new();
                for i in 0..25 {
                    let event = Event::new(json!({"task": task, "i": i}));
                    let dest = if i % 2 == 0 { "even" } else { "odd" };
                    log.append(vec![
                        (dest.into(), event.clone()),
                        ("all".into(), event.clone()),
                    ])
                    .await
                    .unwrap();
                    sent.push(event.id);
                }
                sent
            })
        })
        .collect();
    let mut sent = HashSet::new();
    for task in tasks {
        sent.extend(task.await.unwrap());
    }
    assert_eq!(sent.len(), 400);
    let log = Arc::into_inner(log).unwrap();
    log.crash().await;

    let log = SegmentLog::open(config(dir.path())).await.unwrap();
    assert_eq!(log.recovery_report().pending, 800);
    let all = drain(&log, "all").await;
    assert_eq!(all.iter().map(|r| r.event.id).collect::<HashSet<_>>(), sent);
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    let split = drain(&log, "even").await.len() + drain(&log, "odd").await.len();
    assert_eq!(split, 400);
}

#[tokio::test]
async fn rejecting_queue_frees_space_once_everything_is_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    // One large segment: the space comes back only if the active segment is rolled.
    let log = SegmentLog::open(small(dir.path(), 1 << 20, 3000, FullPolicy::Reject))
        .await
        .unwrap();
    while log.append(to("a", &sample_events(2))).await.is_ok() {}
    let records = drain(&log, "a").await;
    let seqs: Vec<_> = records.iter().map(|r| r.seq).collect();
    log.ack("a", &seqs).await.unwrap();

    let started = tokio::time::Instant::now();
    loop {
        match log.append(to("a", &sample_events(2))).await {
            Ok(_) => break,
            Err(QueueError::Full { .. }) if started.elapsed() < Duration::from_secs(5) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => panic!("space never came back: {error}"),
        }
    }
    log.close().await.unwrap();
}

#[tokio::test]
async fn an_append_larger_than_the_cap_is_its_own_error() {
    let dir = tempfile::tempdir().unwrap();
    let log = SegmentLog::open(small(dir.path(), 1000, 3000, FullPolicy::Block))
        .await
        .unwrap();
    let error = log.append(to("a", &sample_events(40))).await.unwrap_err();
    assert!(
        matches!(error, QueueError::TooLarge { cap: 3000, .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("queue.max_bytes"));
    let memory = MemoryQueue::with_limits(3000, FullPolicy::Block, Duration::from_secs(1));
    let error = memory
        .append(to("a", &sample_events(40)))
        .await
        .unwrap_err();
    assert!(matches!(error, QueueError::TooLarge { .. }), "{error:?}");
    log.close().await.unwrap();
}

#[tokio::test]
async fn a_folder_in_use_is_refused_until_closed() {
    let dir = tempfile::tempdir().unwrap();
    let first = SegmentLog::open(config(dir.path())).await.unwrap();
    let error = SegmentLog::open(config(dir.path())).await.unwrap_err();
    assert!(matches!(error, QueueError::Locked { .. }), "{error:?}");
    assert!(error.to_string().contains("in use by another process"));
    first.close().await.unwrap();
    let second = SegmentLog::open(config(dir.path())).await.unwrap();
    second.close().await.unwrap();
}
