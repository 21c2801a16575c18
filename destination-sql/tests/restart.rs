//! A real PostgreSQL restart in the middle of a bulk write, on a private cluster that
//! scripts/peers/sql.sh creates for this test alone (the shared server is never touched).

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use destination_core::testing::peer;
use destination_core::{Batch, Destination};
use destination_sql::{SqlConfig, SqlDestination};
use support::proxy::{Proxy, retarget};
use support::{Db, assert_payloads_stored, github_events};

const TEST: &str = "postgres_restart_mid_batch";

/// `pg_ctl restart -m immediate` of the private cluster, as its owner. The server's output
/// goes to the cluster's log file, never to the test's pipes, which it would keep open.
fn restart(pg_ctl: &str, data: &str) {
    let log = Path::new(data).with_file_name("log");
    let status = Command::new("runuser")
        .args(["-u", "postgres", "--", pg_ctl, "-D", data, "-l"])
        .arg(&log)
        .args(["restart", "-m", "immediate", "-w", "-t", "60"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run pg_ctl");
    assert!(status.success(), "pg_ctl restart failed: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_mid_batch() {
    let Some(url) = peer("DESTINATIONS_TEST_POSTGRES_RESTART_URL", TEST) else {
        return;
    };
    let pg_ctl = peer("DESTINATIONS_TEST_POSTGRES_RESTART_PGCTL", TEST).expect("pg_ctl path");
    let data = peer("DESTINATIONS_TEST_POSTGRES_RESTART_DATA", TEST).expect("data directory");
    let db = Db::postgres_at(url.clone()).await;

    // The destination talks through a proxy, so that the restart can be timed to land
    // while the batch is on the wire: the proxy holds the connection after 256 KiB.
    let (target, _) = retarget(&url, "127.0.0.1:1".parse().expect("addr"));
    let proxy = Proxy::start(target).await;
    let table = db.table("restart");
    let config = SqlConfig::new(retarget(&url, proxy.addr).1).with_table(&table);
    let dest = Arc::new(SqlDestination::new("restart", config).expect("config"));

    let events = github_events();
    let batch = Batch::new(None, events.clone());
    dest.deliver(&Batch::new(None, events[..100].to_vec()))
        .await
        .expect("warm-up");

    proxy.hold_after(256 * 1024);
    let attempt = tokio::spawn({
        let (dest, batch) = (Arc::clone(&dest), batch.clone());
        async move { dest.deliver(&batch).await }
    });
    tokio::time::timeout(Duration::from_secs(60), proxy.held())
        .await
        .expect("the bulk write reached the proxy's limit");
    tokio::task::spawn_blocking(move || restart(&pg_ctl, &data))
        .await
        .expect("restart task");

    let err = attempt
        .await
        .expect("delivery task")
        .expect_err("the server restarted mid-batch");
    assert!(err.is_retryable(), "{}", err.chain());
    assert_eq!(
        db.ids(&table).await.expect("ids").len(),
        100,
        "nothing of the batch"
    );

    dest.deliver(&batch)
        .await
        .expect("the retry after the restart");
    let rows = db.rows_by_id(&table).await;
    assert_eq!(rows.len(), 420);
    assert_payloads_stored(db.dialect, &events, &rows);
    db.drop_table(&table).await;
}
