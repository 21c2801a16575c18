//! Tiny raw HTTP requests to the moto test server (which does not check signatures):
//! creating buckets and listing open multipart uploads and their parts, which object_store
//! cannot do.

#![allow(dead_code, unreachable_pub)]

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends one request and returns the status code and body.
pub async fn request(endpoint: &str, method: &str, target: &str) -> (u16, String) {
    let host = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = TcpStream::connect(host)
        .await
        .expect("connect to the s3 peer");
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n\
         Connection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A bucket name no other test uses.
pub fn unique_bucket(test: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{test}-{}-{nanos}-{n}", std::process::id()).replace('_', "-")
}

/// Creates a bucket.
pub async fn create_bucket(endpoint: &str, bucket: &str) {
    let (status, body) = request(endpoint, "PUT", &format!("/{bucket}")).await;
    assert_eq!(status, 200, "creating bucket {bucket}: {body}");
}

/// How many multipart uploads are open in a bucket.
pub async fn open_uploads(endpoint: &str, bucket: &str) -> usize {
    let (status, body) = request(endpoint, "GET", &format!("/{bucket}?uploads")).await;
    assert_eq!(status, 200, "listing uploads of {bucket}: {body}");
    body.matches("<UploadId>").count()
}

/// The open multipart uploads of a bucket, as `(key, upload id)`.
pub async fn uploads(endpoint: &str, bucket: &str) -> Vec<(String, String)> {
    let (status, body) = request(endpoint, "GET", &format!("/{bucket}?uploads")).await;
    assert_eq!(status, 200, "listing uploads of {bucket}: {body}");
    body.split("<Upload>")
        .skip(1)
        .map(|upload| (element(upload, "Key"), element(upload, "UploadId")))
        .collect()
}

/// The open multipart uploads of a bucket, as `(key, parts stored so far)`.
pub async fn stored_parts(endpoint: &str, bucket: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    for (key, id) in uploads(endpoint, bucket).await {
        let id: String = url::form_urlencoded::byte_serialize(id.as_bytes()).collect();
        let target = format!("/{bucket}/{key}?uploadId={id}");
        let (status, body) = request(endpoint, "GET", &target).await;
        // The upload may have been completed or aborted since it was listed.
        if status == 404 {
            continue;
        }
        assert_eq!(status, 200, "listing the parts of {key}: {body}");
        out.push((key, body.matches("<PartNumber>").count()));
    }
    out
}

/// The text of the first `<name>` element in `xml` (no entity decoding: keys and ids
/// here are plain).
fn element(xml: &str, name: &str) -> String {
    let open = format!("<{name}>");
    xml.split_once(&open)
        .and_then(|(_, rest)| rest.split_once(&format!("</{name}>")))
        .map(|(text, _)| text.to_owned())
        .unwrap_or_else(|| panic!("no <{name}> in {xml}"))
}
