//! `destinations send` end to end: real GitHub webhook events into Parquet, bad lines,
//! `kill -9` in the middle of delivery, and a damaged queue tail.

mod support;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{binary, lake_config, stored_ids, string_column, webhooks};

fn input_lines() -> Vec<String> {
    std::fs::read_to_string(webhooks())
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// Runs `send` of `input` to `lake` and checks that it reports the 420 real events
/// delivered and that each is stored once under `dir/lake`.
fn send_every_real_event(config: &std::path::Path, input: &std::path::Path, dir: &std::path::Path) {
    let output = Command::new(binary())
        .args(["send", "--config"])
        .arg(config)
        .args(["--to", "lake"])
        .arg(input)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(
        stdout.contains("queued 420, delivered 420, dead-lettered 0, invalid lines 0"),
        "{stdout}"
    );
    let ids = stored_ids(&dir.join("lake"));
    assert_eq!(ids.len(), 420, "every event stored");
    assert!(ids.values().all(|n| *n == 1), "no event stored twice");
}

#[test]
fn send_delivers_every_real_event_to_parquet() {
    let dir = tempfile::tempdir().unwrap();
    let config = lake_config(dir.path(), 25, "");
    send_every_real_event(&config, &webhooks(), dir.path());

    // The rows are the input's: every `example` name of the input is in the output.
    let want: HashSet<String> = input_lines()
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["example"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let got: HashSet<String> = string_column(&dir.path().join("lake"), "example")
        .into_iter()
        .collect();
    assert_eq!(got, want);
}

#[test]
fn bad_lines_are_reported_and_the_rest_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let config = lake_config(dir.path(), 25, "");
    let lines = input_lines();
    let input = format!(
        "{}\n{{\"broken\": \n[1, 2]\n{}\n\n{}\n{{\"huge\": \"{}\"}}\n{{\"cr\":\r1}}\n\t {{\"x\": tru}}\n\r{{\"after_cr\":1}}\n\u{a0}\n",
        lines[0],
        lines[1],
        lines[2],
        "x".repeat(2 << 20)
    );
    let mut child = Command::new(binary())
        .args(["send", "--config"])
        .arg(&config)
        .args(["--to", "lake", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(1),
        "bad lines make the exit code non-zero"
    );
    assert!(stderr.contains("line 2: invalid JSON"), "{stderr}");
    assert!(stderr.contains("line 3: not a JSON object"), "{stderr}");
    assert!(
        stderr.contains("line 7: event of") && stderr.contains("exceeds the limit"),
        "{stderr}"
    );
    // A carriage return inside a line is JSON whitespace; columns count the indent.
    assert!(
        stderr.contains("line 9: invalid JSON at column 12"),
        "{stderr}"
    );
    assert!(!stderr.contains("line 8"), "{stderr}");
    assert!(!stderr.contains("line 10"), "{stderr}");
    // A no-break space is not JSON whitespace: the line is not blank but invalid.
    assert!(stderr.contains("line 11: invalid JSON"), "{stderr}");
    assert!(
        stdout.contains("delivered 5") && stdout.contains("invalid lines 5"),
        "{stdout}"
    );
    assert_eq!(stored_ids(&dir.path().join("lake")).len(), 5);
}

#[test]
fn an_input_many_times_the_queue_cap_is_sent_in_parts() {
    for when_full in ["block", "reject"] {
        input_many_times_the_queue_cap(when_full);
    }
}

fn input_many_times_the_queue_cap(when_full: &str) {
    let dir = tempfile::tempdir().unwrap();
    // The 420 events are about 4 MB of JSON; the queue may hold 1 MB.
    let text = format!(
        r#"
[queue]
path = "{queue}"
max_bytes = 1000000
when_full = "{when_full}"

[server]
max_event_bytes = 200000

[destinations.lake]
type = "s3"
url = "file://{lake}"

[destinations.lake.batch]
max_events = 25
max_age = "200ms"
"#,
        queue = dir.path().join("queue").display(),
        lake = dir.path().join("lake").display(),
    );
    let config = dir.path().join("config.toml");
    std::fs::write(&config, text).unwrap();
    // A byte-order mark before the first line, as some editors write, is not an error.
    let mut input = String::from("\u{feff}");
    input.push_str(&std::fs::read_to_string(webhooks()).unwrap());
    let input_path = dir.path().join("input.ndjson");
    std::fs::write(&input_path, input).unwrap();
    send_every_real_event(&config, &input_path, dir.path());
}

#[test]
fn unknown_destination_and_bad_config_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let config = lake_config(dir.path(), 25, "");
    let output = Command::new(binary())
        .args(["send", "--config"])
        .arg(&config)
        .args(["--to", "nope"])
        .arg(webhooks())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown destination `nope`"), "{stderr}");

    let config = lake_config(dir.path(), 25, "colour = \"blue\"");
    let output = Command::new(binary())
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("colour") && stdout.contains("line 11"),
        "{stdout}"
    );
}

#[test]
fn reading_commands_need_no_secret_but_the_queue_path() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let write = |queue: &str| {
        let text = format!(
            "[queue]\npath = \"{queue}\"\n\n[server]\ntoken = \"${{DEST_TEST_UNSET_TOKEN}}\"\n\
             listen = \"${{DEST_TEST_UNSET_LISTEN}}\"\n\n[destinations.lake]\ntype = \"s3\"\n\
             url = \"file://{}\"\nattempt_timeout = \"${{DEST_TEST_UNSET_TIMEOUT}}\"\n",
            dir.path().join("lake").display()
        );
        std::fs::write(&config, text).unwrap();
    };
    let run = |args: &[&str]| {
        Command::new(binary())
            .args(args)
            .arg("--config")
            .arg(&config)
            .env_remove("DEST_TEST_UNSET_TOKEN")
            .env_remove("DEST_TEST_UNSET_LISTEN")
            .env_remove("DEST_TEST_UNSET_TIMEOUT")
            .env_remove("DEST_TEST_UNSET_DIR")
            .output()
            .unwrap()
    };
    write(&dir.path().join("queue").display().to_string());
    for args in [&["dlq", "list"][..], &["deliveries"][..]] {
        let output = run(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{args:?}: {stderr}");
    }
    // Commands that deliver still need every variable.
    let output = run(&["dlq", "replay"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("is not set"), "{stderr}");
    // The queue folder itself must be known.
    write("${DEST_TEST_UNSET_DIR}/queue");
    let output = run(&["dlq", "list"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("queue.path: environment variable DEST_TEST_UNSET_DIR is not set"),
        "{stderr}"
    );
}

/// Starts `send`, feeds it every event, waits until it says they are queued, and kills it.
fn send_and_kill(config: &std::path::Path) {
    let mut child = Command::new(binary())
        .args(["send", "--config"])
        .arg(config)
        .args(["--to", "lake", "-"])
        .env("RUST_LOG", "destinations=debug")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(std::fs::read_to_string(webhooks()).unwrap().as_bytes())
        .unwrap();
    drop(stdin);
    // Logged at debug once the input is read to the end: every event is durably queued,
    // and with one-event batches delivery is still under way.
    let stderr = BufReader::new(child.stderr.take().unwrap());
    for line in stderr.lines() {
        if line.unwrap().contains("input read to the end and queued") {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

/// One event a batch, one batch at a time: delivery takes long enough to be interrupted.
const SLOW: &str = "concurrency = 1";

fn resume(config: &std::path::Path) -> std::process::Output {
    let mut child = Command::new(binary())
        .args(["send", "--config"])
        .arg(config)
        .args(["--to", "lake", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

#[test]
fn kill_9_in_the_middle_of_delivery_loses_no_event() {
    let dir = tempfile::tempdir().unwrap();
    let config = lake_config(dir.path(), 1, SLOW);
    send_and_kill(&config);
    let before = stored_ids(&dir.path().join("lake")).len();
    if before == 420 {
        eprintln!("note: delivery finished before the kill; only the restart path was tested");
    }

    let output = resume(&config);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("left queued by an earlier run"), "{stdout}");
    let ids = stored_ids(&dir.path().join("lake"));
    assert_eq!(
        ids.len(),
        420,
        "every queued event delivered after the restart"
    );
}

#[test]
fn a_damaged_queue_tail_is_reported_and_the_events_before_it_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let config = lake_config(dir.path(), 1, SLOW);
    send_and_kill(&config);

    // A torn write: garbage after the last good record of the newest segment.
    let queue = dir.path().join("queue");
    let mut segments: Vec<_> = walk(&queue)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .filter(|p| !p.to_string_lossy().contains("dead-letters"))
        .collect();
    segments.sort();
    let newest = segments.last().expect("a queue segment");
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(newest)
        .unwrap();
    file.write_all(b"\x00\x17garbage from a torn write")
        .unwrap();
    drop(file);

    let output = resume(&config);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("queue segment damaged"), "{stderr}");
    assert!(output.status.success(), "{stderr}");
    assert_eq!(stored_ids(&dir.path().join("lake")).len(), 420);
    std::thread::sleep(Duration::from_millis(10));
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn an_unreadable_input_stops_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = lake_config(dir.path(), 25, "");
    let output = Command::new(binary())
        .args(["send", "--config"])
        .arg(&config)
        .args(["--to", "lake"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("cannot read the input at line 1"),
        "{stderr}"
    );
    assert!(stderr.lines().count() < 5, "{stderr}");
}
