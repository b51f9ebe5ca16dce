//! The server's own account of a run: `GET /api/pipeline`, switchboard's
//! histograms of each hop from publish to the last subscriber's write,
//! reset when the publishing window opens (`DELETE /api/pipeline`). A
//! server without it (the baseline) just has no such rows.

use std::net::SocketAddr;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The hops reported: the answer's field, and the rows for its p50 and p99.
const HOPS: [(&str, &str, &str); 4] = [
    (
        "publish_to_commit_us",
        "hop_publish_to_commit_p50",
        "hop_publish_to_commit_p99",
    ),
    ("commit_us", "hop_commit_p50", "hop_commit_p99"),
    (
        "commit_to_first_write_us",
        "hop_commit_to_first_write_p50",
        "hop_commit_to_first_write_p99",
    ),
    (
        "first_to_last_write_us",
        "hop_first_to_last_write_p50",
        "hop_first_to_last_write_p99",
    ),
];

/// Starts the server's histograms over; false if it has none.
pub async fn reset(server: SocketAddr) -> bool {
    matches!(request(server, "DELETE").await, Some((204, _)))
}

/// Rows for the hops (p50, p99 in ms) and the mean batch size.
pub async fn rows(server: SocketAddr) -> Vec<(&'static str, f64, &'static str)> {
    let Some((200, body)) = request(server, "GET").await else {
        return Vec::new();
    };
    let Ok(answer) = serde_json::from_str::<Value>(&body) else {
        return Vec::new();
    };
    let mut rows = Vec::new();
    for (field, p50, p99) in HOPS {
        let ms = |quantile: &str| answer[field][quantile].as_f64().unwrap_or(0.0) / 1000.0;
        rows.push((p50, ms("p50"), "ms"));
        rows.push((p99, ms("p99"), "ms"));
    }
    let batch = answer["batch_size"]["mean"].as_f64().unwrap_or(0.0);
    rows.push(("batch_size_mean", batch, "messages per commit"));
    rows
}

/// How long a server may take to answer: one that never answers unknown
/// paths (a bare Node HTTP server) has no histograms.
const ANSWER_WITHIN: std::time::Duration = std::time::Duration::from_secs(2);

/// One HTTP/1.1 request on a fresh connection: status and body.
async fn request(server: SocketAddr, method: &str) -> Option<(u16, String)> {
    tokio::time::timeout(ANSWER_WITHIN, request_unbounded(server, method))
        .await
        .ok()?
}

async fn request_unbounded(server: SocketAddr, method: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(server).await.ok()?;
    let head =
        format!("{method} /api/pipeline HTTP/1.1\r\nHost: {server}\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.ok()?;
    let response = String::from_utf8_lossy(&response);
    let status = response.get(9..12)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}
