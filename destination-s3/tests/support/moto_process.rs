//! A moto server of the test's own, as a child process that can be killed with `SIGKILL`
//! and started again on the same port: a real server crash, not a cut connection.
//!
//! The shared peer (`DESTINATIONS_TEST_S3_ENDPOINT`) serves other tests at the same time,
//! so a test that kills its server must own it. moto keeps everything in memory: after a
//! kill, buckets, objects and open uploads are gone.

#![allow(dead_code, unreachable_pub)]

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a fresh moto may take to answer (it imports a lot of Python on start).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A moto server on `127.0.0.1:port`, killed when dropped (a panicking test included).
#[derive(Debug)]
pub struct MotoProcess {
    binary: PathBuf,
    port: u16,
    log_dir: tempfile::TempDir,
    child: Option<Child>,
}

impl MotoProcess {
    /// Starts `binary` (a `moto_server`) on a free loopback port and waits until it answers.
    pub async fn start(binary: &str) -> Self {
        let mut moto = Self {
            binary: PathBuf::from(binary),
            port: free_port(),
            log_dir: tempfile::tempdir().expect("a directory for the moto log"),
            child: None,
        };
        moto.spawn_and_wait().await;
        moto
    }

    /// `http://127.0.0.1:PORT`, the same before and after a restart.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Kills the server with `SIGKILL`, as a crash would: no request is finished, no
    /// connection closed cleanly, and everything it held is lost.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // `Child::kill` sends SIGKILL on Unix; `wait` reaps it, so the port is free.
            child.kill().expect("SIGKILL the moto server");
            child.wait().expect("reap the killed moto server");
        }
    }

    /// Starts a new, empty server on the same port.
    pub async fn restart(&mut self) {
        assert!(
            self.child.is_none(),
            "restart a moto server that is still running"
        );
        self.spawn_and_wait().await;
    }

    /// The last lines the server (every run of it) logged, for failure messages.
    pub fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = File::open(self.log_path()) {
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            let _ = file.seek(SeekFrom::Start(len.saturating_sub(4096)));
            let _ = file.read_to_string(&mut text);
        }
        text
    }

    fn log_path(&self) -> PathBuf {
        self.log_dir.path().join("moto.log")
    }

    async fn spawn_and_wait(&mut self) {
        let child = spawn(&self.binary, self.port, &self.log_path());
        self.child = Some(child);
        let started = Instant::now();
        while !answers(self.port).await {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok()?) {
                self.child = None;
                panic!(
                    "moto_server on port {} exited ({status}) before answering; its log:\n{}",
                    self.port,
                    self.log_tail()
                );
            }
            assert!(
                started.elapsed() < START_TIMEOUT,
                "moto_server on port {} did not answer within {START_TIMEOUT:?}; its log:\n{}",
                self.port,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for MotoProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A loopback port nothing listens on: bound, read, then released for moto to take.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free loopback port")
        .port()
}

fn spawn(binary: &Path, port: u16, log: &Path) -> Child {
    // Appended to, so the log of a killed run survives its restart.
    let open = || {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open the moto log")
    };
    Command::new(binary)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(open())
        .stderr(open())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()))
}

/// Whether something on the port answers HTTP, as `scripts/peers/s3.sh` checks it.
async fn answers(port: u16) -> bool {
    let probe = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream
            .write_all(b"GET /moto-api/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await?;
        let mut head = [0_u8; 7];
        stream.read_exact(&mut head).await?;
        Ok::<_, std::io::Error>(&head == b"HTTP/1.")
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), probe).await,
        Ok(Ok(true))
    )
}
