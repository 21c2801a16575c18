//! A TCP proxy on 127.0.0.1 that can drop every connection it carries, as a database
//! restart or a network failure would, without touching the real server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

const UNLIMITED: usize = usize::MAX;

/// Forwards connections to `target` until told to cut them.
pub struct Proxy {
    pub addr: SocketAddr,
    limit: Arc<Limit>,
    task: JoinHandle<()>,
}

/// What happens once the byte budget is spent.
struct Limit {
    budget: AtomicUsize,
    /// Hold the connection (forward nothing more) instead of cutting it.
    hold: AtomicBool,
    cuts: watch::Sender<u64>,
    holds: watch::Sender<u64>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let limit = Arc::new(Limit {
            budget: AtomicUsize::new(UNLIMITED),
            hold: AtomicBool::new(false),
            cuts: watch::channel(0).0,
            holds: watch::channel(0).0,
        });
        let task = tokio::spawn({
            let limit = Arc::clone(&limit);
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    tokio::spawn(forward(client, target, Arc::clone(&limit)));
                }
            }
        });
        Self { addr, limit, task }
    }

    /// Drops every open connection once `bytes` more bytes went from clients to the
    /// server; connections opened afterwards work again.
    pub fn cut_after(&self, bytes: usize) {
        self.limit.hold.store(false, Ordering::SeqCst);
        self.limit.budget.store(bytes, Ordering::SeqCst);
    }

    /// Stops forwarding the connection that sends `bytes` more bytes to the server, leaving
    /// it open: the server sees a client in the middle of a statement.
    pub fn hold_after(&self, bytes: usize) {
        self.limit.hold.store(true, Ordering::SeqCst);
        self.limit.budget.store(bytes, Ordering::SeqCst);
    }

    /// Waits until a connection is held.
    pub async fn held(&self) {
        let mut holds = self.limit.holds.subscribe();
        holds.wait_for(|n| *n > 0).await.expect("proxy alive");
    }

    /// How many times the connections were cut.
    pub fn cuts(&self) -> u64 {
        *self.limit.cuts.borrow()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(client: TcpStream, target: SocketAddr, limit: Arc<Limit>) {
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    let mut cut = limit.cuts.subscribe();
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();

    let up = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let left = limit.budget.load(Ordering::SeqCst);
            if left != UNLIMITED {
                if n >= left {
                    limit.budget.store(UNLIMITED, Ordering::SeqCst);
                    if limit.hold.load(Ordering::SeqCst) {
                        limit.holds.send_modify(|count| *count += 1);
                        // Until the server closes its side.
                        std::future::pending::<()>().await;
                    }
                    limit.cuts.send_modify(|count| *count += 1);
                    return;
                }
                limit.budget.fetch_sub(n, Ordering::SeqCst);
            }
            if server_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let down = tokio::io::copy(&mut server_read, &mut client_write);
    tokio::select! {
        _ = up => {}
        _ = down => {}
        _ = cut.changed() => {}
    }
    // Dropping the halves closes both sockets.
}

/// The `host:port` of a URL such as `postgres://user@127.0.0.1:5432/db`, and the URL
/// pointed at `addr` instead.
pub fn retarget(url: &str, addr: SocketAddr) -> (SocketAddr, String) {
    let after_scheme = url.find("://").expect("url has a scheme") + 3;
    let authority_end = url[after_scheme..]
        .find('/')
        .map_or(url.len(), |i| after_scheme + i);
    let host_start = url[after_scheme..authority_end]
        .rfind('@')
        .map_or(after_scheme, |i| after_scheme + i + 1);
    let target: SocketAddr = url[host_start..authority_end]
        .parse()
        .expect("numeric host:port");
    let rewritten = format!("{}{addr}{}", &url[..host_start], &url[authority_end..]);
    (target, rewritten)
}
