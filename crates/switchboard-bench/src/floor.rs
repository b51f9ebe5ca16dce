//! The `floor` scenario: what the kernel alone charges for one delivery.
//!
//! One thread writes every message to N loopback TCP connections, one
//! `write` per connection, at the fixed-rate fan-out's pace, while another
//! thread reads them with the same socket options as `fanout`'s
//! subscribers. No server, framing, runtime or task wake-up is involved: it
//! is the cheapest fan-out there can be, so its CPU per write is the floor
//! under any server's CPU per delivery at that pace, on this machine.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::Report;
use crate::client::delay_acks;
use crate::cpu::thread_cpu_time;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Loopback connections, each written once per message.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Messages per second, each written to every connection.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// How long to write.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Bytes per write: a 64-byte `msg` makes a `message` frame about this long.
    #[arg(long, default_value_t = 192)]
    size: usize,
}

pub async fn run(args: Args) -> anyhow::Result<Report> {
    anyhow::ensure!(args.rate > 0.0, "--rate must be above 0");
    let (writers, readers) = connect_pairs(args.connections).await?;
    let rounds = (args.rate * args.duration.as_secs_f64()).ceil() as usize;
    let size = args.size;
    let reading = std::thread::spawn(move || read_rounds(readers, rounds, size));
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    let writing = std::thread::spawn(move || write_rounds(writers, rounds, size, interval));
    let (writes, write_cpu) = writing.join().expect("writer thread")?;
    let read_cpu = reading.join().expect("reader thread")?;
    let per_write = |cpu: Duration| cpu.as_secs_f64() * 1e6 / writes.max(1) as f64;
    Ok(Report {
        scenario: "floor",
        rows: vec![
            ("connections", args.connections as f64, ""),
            ("target_rate", args.rate, "msgs/s"),
            ("writes", writes as f64, ""),
            ("cpu_per_write", per_write(write_cpu), "µs (writing thread)"),
            ("reader_cpu_per_read", per_write(read_cpu), "µs"),
        ],
    })
}

/// `count` connected pairs: the accepted (writing) side and the connecting
/// (reading) side, as blocking sockets.
async fn connect_pairs(count: usize) -> anyhow::Result<(Vec<TcpStream>, Vec<TcpStream>)> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let addr = listener.local_addr()?;
    let (mut writers, mut readers) = (Vec::with_capacity(count), Vec::with_capacity(count));
    for _ in 0..count {
        let (reader, accepted) =
            tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        let reader = reader.context("connect")?;
        let (writer, _) = accepted.context("accept")?;
        writer.set_nodelay(true)?;
        delay_acks(&reader)?;
        writers.push(blocking(writer)?);
        readers.push(blocking(reader)?);
    }
    Ok((writers, readers))
}

fn blocking(stream: tokio::net::TcpStream) -> std::io::Result<TcpStream> {
    let stream = stream.into_std()?;
    stream.set_nonblocking(false)?;
    Ok(stream)
}

/// Writes `rounds` messages to every connection, one every `interval`;
/// returns the writes made and this thread's CPU time.
fn write_rounds(
    mut writers: Vec<TcpStream>,
    rounds: usize,
    size: usize,
    interval: Duration,
) -> anyhow::Result<(u64, Duration)> {
    let message = vec![b'x'; size];
    let start_cpu = thread_cpu_time().context("no /proc/thread-self/stat")?;
    let start = Instant::now();
    let mut writes = 0;
    for round in 0..rounds {
        if let Some(wait) = (start + interval * round as u32).checked_duration_since(Instant::now())
        {
            std::thread::sleep(wait);
        }
        for writer in &mut writers {
            writer.write_all(&message)?;
            writes += 1;
        }
    }
    let cpu = thread_cpu_time().context("no /proc/thread-self/stat")? - start_cpu;
    Ok((writes, cpu))
}

/// Reads every message from every connection, in the order they were written.
fn read_rounds(
    mut readers: Vec<TcpStream>,
    rounds: usize,
    size: usize,
) -> anyhow::Result<Duration> {
    let mut message = vec![0; size];
    let start_cpu = thread_cpu_time().context("no /proc/thread-self/stat")?;
    for _ in 0..rounds {
        for reader in &mut readers {
            reader.read_exact(&mut message)?;
        }
    }
    Ok(thread_cpu_time().context("no /proc/thread-self/stat")? - start_cpu)
}
