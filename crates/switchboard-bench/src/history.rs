//! The durable-publish scenario: acked messages/s into one channel, then
//! history query latency.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::client;
use crate::cpu::cpu_time;
use crate::{Report, fresh_channel, latency_histogram, latency_rows};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Publisher connections, all into one channel.
    #[arg(long, default_value_t = 4)]
    publishers: usize,
    /// Unacknowledged messages per publisher.
    #[arg(long, default_value_t = 256)]
    in_flight: usize,
    /// How long to publish.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Size of each `msg`, in bytes.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// History queries (`?limit=100`) to time afterwards.
    #[arg(long, default_value_t = 500)]
    queries: usize,
}

pub async fn run(
    server: SocketAddr,
    server_pid: Option<u32>,
    args: Args,
) -> anyhow::Result<Report> {
    let channel = fresh_channel("history");
    let acked = Arc::new(AtomicU64::new(0));
    let server_cpu_start = cpu_time(server_pid);
    let started = Instant::now();
    let deadline = started + args.duration;
    let progress = crate::progress::timed("publishing", args.duration);
    let msg = "x".repeat(args.size);
    let request =
        format!(r#"{{"type":"publish","channel":"{channel}","msg":"{msg}"}}"#).into_bytes();
    let mut publishers = Vec::new();
    for p in 0..args.publishers {
        let (reader, mut writer) = client::connect(server, &format!("/ws?user=writer{p}")).await?;
        let window = Arc::new(Semaphore::new(args.in_flight.max(1)));
        tokio::spawn(client::count_acks(reader, acked.clone(), window.clone()));
        let request = request.clone();
        publishers.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                window.acquire().await?.forget();
                writer.send_text(&request).await?;
            }
            anyhow::Ok(writer)
        }));
    }
    let mut writers = Vec::new();
    for p in publishers {
        writers.push(p.await??);
    }
    let elapsed = started.elapsed();
    drop(progress);
    let stored = acked.load(Ordering::Relaxed);
    let server_cpu = server_cpu_start
        .zip(cpu_time(server_pid))
        .map(|(a, b)| b - a);

    let mut latency = latency_histogram();
    let mut http = TcpStream::connect(server).await?;
    http.set_nodelay(true)?;
    let path = format!("/api/channels/{channel}/messages?limit=100");
    for _ in 0..args.queries {
        let t = Instant::now();
        get(&mut http, &path).await?;
        let _ = latency.record(t.elapsed().as_micros().max(1) as u64);
    }
    let mut rows = vec![
        ("publishers", args.publishers as f64, ""),
        ("acked_messages", stored as f64, ""),
        (
            "acked_per_sec",
            stored as f64 / elapsed.as_secs_f64(),
            "msgs/s",
        ),
    ];
    if let Some(cpu) = server_cpu {
        rows.push((
            "server_cpu_per_message",
            cpu.as_secs_f64() * 1e6 / stored.max(1) as f64,
            "µs",
        ));
    }
    latency_rows(
        &mut rows,
        [
            "query_p50",
            "query_p90",
            "query_p99",
            "query_p999",
            "query_max",
        ],
        &latency,
    );
    Ok(Report {
        scenario: "history",
        rows,
    })
}

/// One keep-alive GET; reads the body by Content-Length.
async fn get(stream: &mut TcpStream, path: &str) -> anyhow::Result<Vec<u8>> {
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n").as_bytes())
        .await?;
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end])?;
            if !head.starts_with("HTTP/1.1 200") {
                bail!("history query failed: {head}");
            }
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .context("no content-length")?
                .trim()
                .parse()?;
            while buf.len() < end + 4 + length {
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    bail!("connection closed mid-body");
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Ok(buf[end + 4..end + 4 + length].to_vec());
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
