//! The echo scenario: C connections × K messages in flight against `/echo`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::client::{self, number_after};
use crate::cpu::cpu_time;
use crate::{LATENCY_ROWS, Report, latency_histogram, latency_rows};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Connections.
    #[arg(long, default_value_t = 100)]
    connections: usize,
    /// Messages in flight per connection.
    #[arg(long, default_value_t = 1)]
    in_flight: usize,
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Message size in bytes.
    #[arg(long, default_value_t = 64)]
    size: usize,
}

pub async fn run(
    server: SocketAddr,
    server_pid: Option<u32>,
    args: Args,
) -> anyhow::Result<Report> {
    let base = Instant::now();
    let round_trips = Arc::new(AtomicU64::new(0));
    let mut connections = Vec::new();
    for _ in 0..args.connections {
        connections.push(client::connect(server, "/echo").await?);
    }
    let server_cpu_start = cpu_time(server_pid);
    let started = Instant::now();
    let deadline = started + args.duration;
    let _progress = crate::progress::timed("echo", args.duration);
    let mut tasks = Vec::new();
    for (mut reader, mut writer) in connections {
        let round_trips = round_trips.clone();
        let (size, in_flight) = (args.size, args.in_flight);
        tasks.push(tokio::spawn(async move {
            let mut latency = latency_histogram();
            let message = |base: Instant| {
                let mut text = format!("t={};", base.elapsed().as_micros());
                text.extend(std::iter::repeat_n('x', size.saturating_sub(text.len())));
                text
            };
            for _ in 0..in_flight {
                writer.send_text(message(base).as_bytes()).await?;
            }
            while Instant::now() < deadline {
                let Some(echoed) = reader.next_text().await? else {
                    break;
                };
                let now = base.elapsed().as_micros() as u64;
                if let Some(sent) = number_after(&echoed, b"t=") {
                    let _ = latency.record(now.saturating_sub(sent).max(1));
                }
                round_trips.fetch_add(1, Ordering::Relaxed);
                writer.send_text(message(base).as_bytes()).await?;
            }
            anyhow::Ok((latency, writer))
        }));
    }
    let mut latency = latency_histogram();
    let mut writers = Vec::new();
    for task in tasks {
        let (h, writer) = task.await??;
        latency.add(&h)?;
        writers.push(writer);
    }
    let elapsed = started.elapsed();
    let server_cpu = server_cpu_start
        .zip(cpu_time(server_pid))
        .map(|(a, b)| b - a);
    let total = round_trips.load(Ordering::Relaxed);
    let mut rows = vec![
        ("connections", args.connections as f64, ""),
        ("in_flight", args.in_flight as f64, ""),
        ("round_trips", total as f64, ""),
        (
            "round_trips_per_sec",
            total as f64 / elapsed.as_secs_f64(),
            "/s",
        ),
    ];
    latency_rows(&mut rows, LATENCY_ROWS, &latency);
    if let Some(cpu) = server_cpu {
        rows.push((
            "server_cpu_per_round_trip",
            cpu.as_secs_f64() * 1e6 / total.max(1) as f64,
            "µs",
        ));
    }
    Ok(Report {
        scenario: "echo",
        rows,
    })
}
