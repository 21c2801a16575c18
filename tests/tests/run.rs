//! `destinations run`: the ingest API's answers, metrics, and `kill -9` after `202`.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{binary, free_port, lake_config, stored_ids, webhooks};

struct Service {
    child: Child,
    base: String,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(dir: &Path, port: u16, batch_events: usize) -> std::path::PathBuf {
    let path = lake_config(dir, batch_events, "");
    let text = std::fs::read_to_string(&path).unwrap();
    let server = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\ntoken = \"${{TEST_INGEST_TOKEN}}\"\nmax_event_bytes = 4096\n"
    );
    std::fs::write(&path, format!("{server}{text}")).unwrap();
    path
}

const TOKEN: &str = "test-token-1234";

fn payloads() -> Vec<Value> {
    std::fs::read_to_string(webhooks())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| serde_json::to_vec(v).unwrap().len() < 4096)
        .collect()
}

async fn wait_for_ids(lake: &Path, want: &[String]) -> std::collections::HashMap<String, usize> {
    let started = Instant::now();
    loop {
        let stored = stored_ids(lake);
        if want.iter().all(|id| stored.contains_key(id)) {
            return stored;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{} of {} acknowledged events stored",
            want.iter().filter(|id| stored.contains_key(*id)).count(),
            want.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn ingest_answers_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = config(dir.path(), port, 10);
    let service = start_with_env(&config, port, &[("TEST_INGEST_TOKEN", TOKEN)]).await;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/events/lake", service.base);

    let r = client.post(&url).body("{}").send().await.unwrap();
    assert_eq!(r.status(), 401);

    let r = client
        .post(&url)
        .header("authorization", format!("Basic {TOKEN}"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "only the bearer scheme");

    // The scheme's name is case-insensitive.
    let auth = format!("bearer {TOKEN}");
    let post = |body: Vec<u8>, to: &str| {
        client
            .post(format!("{}/v1/events/{to}", service.base))
            .header("authorization", &auth)
            .body(body)
            .send()
    };
    let r = post(b"{\"a\": ".to_vec(), "lake").await.unwrap();
    assert_eq!(r.status(), 400);
    let error: Value = r.json().await.unwrap();
    assert!(
        error["error"].as_str().unwrap().contains("invalid JSON"),
        "{error}"
    );

    let r = post(vec![b'{', 0xff, b'}'], "lake").await.unwrap();
    assert_eq!(r.status(), 400);

    let r = post(b"{}".to_vec(), "nowhere").await.unwrap();
    assert_eq!(r.status(), 404);

    let r = client
        .post(&url)
        .header("authorization", &auth)
        .header("content-encoding", "identity")
        .header("content-encoding", "gzip")
        .body(vec![0x1f, 0x8b, 0x08, 0x00])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415, "the second header counts too");
    let error: Value = r.json().await.unwrap();
    assert!(
        error["error"].as_str().unwrap().contains("`gzip`"),
        "{error}"
    );

    let big = serde_json::to_vec(&json!({"blob": "x".repeat(5000)})).unwrap();
    let r = post(big, "lake").await.unwrap();
    assert_eq!(r.status(), 413);
    let error: Value = r.json().await.unwrap();
    assert!(
        error["error"].as_str().unwrap().contains("max_event_bytes"),
        "{error}"
    );

    // One object, an array, and NDJSON.
    let events = payloads();
    let mut ids = Vec::new();
    let bodies = [
        serde_json::to_vec(&events[0]).unwrap(),
        serde_json::to_vec(&events[1..4]).unwrap(),
        events[4..8]
            .iter()
            .map(|e| serde_json::to_string(e).unwrap() + "\n")
            .collect::<String>()
            .into_bytes(),
    ];
    for body in bodies {
        let r = post(body, "lake").await.unwrap();
        assert_eq!(r.status(), 202);
        let answer: Value = r.json().await.unwrap();
        ids.extend(
            answer["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string()),
        );
    }
    assert_eq!(ids.len(), 8);
    let stored = wait_for_ids(&dir.path().join("lake"), &ids).await;
    assert_eq!(stored.len(), 8, "only the accepted events were stored");

    let metrics = client
        .get(format!("{}/metrics", service.base))
        .send()
        .await
        .unwrap();
    let text = metrics.text().await.unwrap();
    assert!(
        text.contains("destinations_events_queued_total{destination=\"lake\"} 8"),
        "{text}"
    );
    assert!(
        text.contains("destinations_events_delivered_total{destination=\"lake\"} 8"),
        "{text}"
    );
    assert!(
        text.contains("destinations_queue_depth{destination=\"lake\"} 0"),
        "{text}"
    );
}

async fn start_with_env(config: &Path, port: u16, env: &[(&str, &str)]) -> Service {
    let mut command = Command::new(binary());
    command
        .args(["run", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    let child = command.spawn().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let started = Instant::now();
    loop {
        if let Ok(r) = client.get(format!("{base}/healthz")).send().await
            && r.status() == 200
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "service did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Service { child, base }
}

#[tokio::test]
async fn kill_9_after_202_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = config(dir.path(), port, 1);
    let env = [("TEST_INGEST_TOKEN", TOKEN)];
    let mut service = start_with_env(&config, port, &env).await;
    let client = reqwest::Client::new();

    let mut acknowledged = Vec::new();
    for chunk in payloads().chunks(20) {
        let r = client
            .post(format!("{}/v1/events/lake", service.base))
            .header("authorization", format!("Bearer {TOKEN}"))
            .json(chunk)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let answer: Value = r.json().await.unwrap();
        acknowledged.extend(
            answer["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string()),
        );
    }
    service.child.kill().unwrap(); // SIGKILL, in the middle of one-event batches
    service.child.wait().unwrap();
    let before = stored_ids(&dir.path().join("lake")).len();
    if before == acknowledged.len() {
        eprintln!("note: delivery finished before the kill; only the restart path was tested");
    }

    let _service = start_with_env(&config, port, &env).await;
    let stored = wait_for_ids(&dir.path().join("lake"), &acknowledged).await;
    assert_eq!(stored.len(), acknowledged.len());
}

#[tokio::test]
async fn sigterm_flushes_open_batches_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // Large, slow batches: only the shutdown flush can deliver them in time.
    let path = config(dir.path(), port, 1000);
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("max_age = \"500ms\"", "max_age = \"1h\"");
    std::fs::write(&path, text).unwrap();
    let env = [("TEST_INGEST_TOKEN", TOKEN)];
    let mut service = start_with_env(&path, port, &env).await;
    let r = reqwest::Client::new()
        .post(format!("{}/v1/events/lake", service.base))
        .header("authorization", format!("Bearer {TOKEN}"))
        .json(&payloads()[..5])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        stored_ids(&dir.path().join("lake")).is_empty(),
        "nothing flushed before shutdown"
    );

    let pid = service.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = service.child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert_eq!(stored_ids(&dir.path().join("lake")).len(), 5);
}

#[tokio::test]
async fn a_second_process_on_the_same_queue_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let path = config(dir.path(), port, 10);
    let env = [("TEST_INGEST_TOKEN", TOKEN)];
    let _first = start_with_env(&path, port, &env).await;
    let output = Command::new(binary())
        .args(["send", "--config"])
        .arg(&path)
        .args(["--to", "lake"])
        .arg(webhooks())
        .env("TEST_INGEST_TOKEN", TOKEN)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("in use by another process"), "{stderr}");
    assert!(stored_ids(&dir.path().join("lake")).is_empty());
}

#[tokio::test]
async fn sigterm_does_not_wait_for_a_stalled_client() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let path = config(dir.path(), port, 10);
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("deadline = \"5s\"", "deadline = \"1s\"");
    std::fs::write(&path, text).unwrap();
    let env = [("TEST_INGEST_TOKEN", TOKEN)];
    let mut service = start_with_env(&path, port, &env).await;

    // A request that promises a body and never finishes it.
    let mut stalled = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let head = format!(
        "POST /v1/events/lake HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\n\
         content-length: 100\r\n\r\n{{\"a\""
    );
    tokio::io::AsyncWriteExt::write_all(&mut stalled, head.as_bytes())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let pid = service.child.id().to_string();
    let started = Instant::now();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = service.child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    drop(stalled);
}

#[tokio::test]
async fn sigterm_delivers_what_was_accepted_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = config(dir.path(), port, 10_000);
    let mut service = start_with_env(&config, port, &[("TEST_INGEST_TOKEN", TOKEN)]).await;
    let body: String = payloads()[..50]
        .iter()
        .map(|e| serde_json::to_string(e).unwrap() + "\n")
        .collect();
    let r = reqwest::Client::new()
        .post(format!("{}/v1/events/lake", service.base))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let answer: Value = r.json().await.unwrap();
    let ids: Vec<String> = answer["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    // At once: the batch of up to 10,000 events is still open.
    let pid = rustix::process::Pid::from_child(&service.child);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = service.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the service did not stop"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");
    let stored = stored_ids(&dir.path().join("lake"));
    assert!(
        ids.iter().all(|id| stored.get(id) == Some(&1)),
        "{} of 50 stored",
        stored.len()
    );
}
