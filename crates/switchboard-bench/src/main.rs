//! `switchboard-bench`: loopback load for a running switchboard server.
//!
//! Scenarios:
//! - `fanout`: N subscribers in one channel, P publishers at a fixed rate or
//!   flat out; deliveries/s, loss, duplicates, order, latency percentiles
//!   (publisher send → subscriber receive), server CPU per delivery and
//!   share of a core, bytes per delivery, and the server's own per-hop
//!   histograms where it has them (`GET /api/pipeline`). `--client
//!   tungstenite` swaps this tool's lean client for tokio-tungstenite and
//!   serde_json, a second generator.
//! - `history`: durable publish throughput (acked messages/s) and the
//!   latency of history queries.
//! - `echo`: round trips/s and latency through `/echo`.
//! - `idle`: the server's resident memory per idle subscribed connection
//!   (WebSocket or SSE).
//! - `soak`: minutes of clients joining, leaving, dropping and resuming on
//!   every transport while publishers publish on every transport; then
//!   checks gap-free views, acked messages in history, and no leak of
//!   memory or file descriptors.
//! - `floor`: no server: the CPU one loopback `write` per delivery costs,
//!   the least any server can spend per delivery at a fixed rate.
//!
//! The server must allow the publish rate used here:
//! `switchboard --publish-rate 1000000 --publish-burst 1000000`.

mod client;
mod common_client;
mod cpu;
mod echo;
mod fanout;
mod floor;
mod history;
mod idle;
mod pipeline;
mod progress;
mod redis_stats;
mod report;
mod soak;
mod socketio;
mod sse;

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// The server to load.
    #[arg(long, global = true, default_value = "127.0.0.1:8080")]
    server: SocketAddr,
    /// The server's process id, to report its CPU time (from /proc/PID/stat).
    #[arg(long, global = true)]
    server_pid: Option<u32>,
    /// Print the result as JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// Worker threads of the load generator.
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Fan-out to many subscribers of one channel.
    Fanout(fanout::Args),
    /// Durable publish throughput and history query latency.
    History(history::Args),
    /// Round trips through `/echo`.
    Echo(echo::Args),
    /// Server memory per idle subscribed connection.
    Idle(idle::Args),
    /// The kernel's share alone: one loopback write per delivery, no server.
    Floor(floor::Args),
    /// Long churn on every transport, then checks for leaks and loss.
    Soak(soak::Args),
    /// Merge runs into report.json (medians, ratios) and report.svg.
    Report(report::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Scenario::Report(args) = cli.scenario {
        return report::run(args);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.max(1))
        .enable_all()
        .build()?;
    let report = runtime.block_on(async {
        match cli.scenario {
            Scenario::Fanout(args) => fanout::run(cli.server, cli.server_pid, args).await,
            Scenario::History(args) => history::run(cli.server, cli.server_pid, args).await,
            Scenario::Echo(args) => echo::run(cli.server, cli.server_pid, args).await,
            Scenario::Idle(args) => idle::run(cli.server, cli.server_pid, args).await,
            Scenario::Floor(args) => floor::run(args).await,
            Scenario::Soak(args) => soak::run(cli.server, cli.server_pid, args).await,
            Scenario::Report(_) => unreachable!("handled above"),
        }
    })?;
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        report.print();
    }
    Ok(())
}

/// Named figures, printed as a table or JSON.
pub struct Report {
    pub scenario: &'static str,
    pub rows: Vec<(&'static str, f64, &'static str)>,
}

impl Report {
    fn print(&self) {
        println!("scenario: {}", self.scenario);
        for (name, value, unit) in &self.rows {
            println!("  {name:<28} {value:>14.2} {unit}");
        }
    }

    fn to_json(&self) -> serde_json::Value {
        let mut fields = serde_json::Map::new();
        fields.insert("scenario".into(), self.scenario.into());
        for (name, value, _) in &self.rows {
            fields.insert((*name).into(), (*value).into());
        }
        fields.into()
    }
}

/// A latency histogram in microseconds, 1 µs to 60 s.
pub fn latency_histogram() -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

/// Latency samples from many tasks, recorded into one histogram per
/// runtime thread. A histogram per subscriber would scatter a thousand
/// connections' counters over the cache and make each record a miss.
pub struct SharedLatency {
    shards: Vec<std::sync::Mutex<hdrhistogram::Histogram<u64>>>,
}

impl SharedLatency {
    pub fn new(threads: usize) -> SharedLatency {
        SharedLatency {
            shards: (0..threads.max(1))
                .map(|_| std::sync::Mutex::new(latency_histogram()))
                .collect(),
        }
    }

    /// The calling thread's histogram (uncontended unless threads outnumber shards).
    pub fn local(&self) -> std::sync::MutexGuard<'_, hdrhistogram::Histogram<u64>> {
        static NEXT_SLOT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        thread_local! {
            static SLOT: usize = NEXT_SLOT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let slot = SLOT.with(|slot| *slot) % self.shards.len();
        self.shards[slot].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every thread's samples in one histogram.
    pub fn merged(&self) -> anyhow::Result<hdrhistogram::Histogram<u64>> {
        let mut all = latency_histogram();
        for shard in &self.shards {
            all.add(&*shard.lock().unwrap_or_else(|e| e.into_inner()))?;
        }
        Ok(all)
    }
}

/// Row names of a delivery or round-trip latency distribution.
pub const LATENCY_ROWS: [&str; 5] = [
    "latency_p50",
    "latency_p90",
    "latency_p99",
    "latency_p999",
    "latency_max",
];

/// Adds p50/p90/p99/p99.9/max rows (in milliseconds).
pub fn latency_rows(
    rows: &mut Vec<(&'static str, f64, &'static str)>,
    prefix: [&'static str; 5],
    h: &hdrhistogram::Histogram<u64>,
) {
    let ms = |us: u64| us as f64 / 1000.0;
    rows.push((prefix[0], ms(h.value_at_quantile(0.50)), "ms"));
    rows.push((prefix[1], ms(h.value_at_quantile(0.90)), "ms"));
    rows.push((prefix[2], ms(h.value_at_quantile(0.99)), "ms"));
    rows.push((prefix[3], ms(h.value_at_quantile(0.999)), "ms"));
    rows.push((prefix[4], ms(h.max()), "ms"));
}

/// A channel name of its own for each run, so runs never mix.
pub fn fresh_channel(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .subsec_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::SharedLatency;

    #[test]
    fn shared_latency_merges_every_threads_samples() {
        let latency = std::sync::Arc::new(SharedLatency::new(2));
        let threads: Vec<_> = (1..=4u64)
            .map(|t| {
                let latency = latency.clone();
                std::thread::spawn(move || {
                    for us in 1..=100 {
                        latency.local().record(us * t).expect("in range");
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("recording thread");
        }
        let merged = latency.merged().expect("same bounds");
        assert_eq!(merged.len(), 400);
        assert_eq!(merged.max(), 400);
        assert_eq!(merged.min(), 1);
    }
}
