//! Command counts of a Redis server (`INFO commandstats`), read over a
//! plain TCP connection: how many round trips a deployment's nodes cost
//! Redis per published message.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Commands Redis has run since it started.
#[derive(Debug, Clone, Copy, Default)]
pub struct CommandCounts {
    /// Script calls (`EVAL`, `EVALSHA`): one per group commit of a node.
    pub scripts: u64,
    /// Every command.
    pub all: u64,
}

impl CommandCounts {
    pub fn since(&self, start: &CommandCounts) -> CommandCounts {
        CommandCounts {
            scripts: self.scripts.saturating_sub(start.scripts),
            all: self.all.saturating_sub(start.all),
        }
    }
}

pub async fn command_counts(redis: SocketAddr) -> anyhow::Result<CommandCounts> {
    let mut stream = TcpStream::connect(redis).await?;
    stream.write_all(b"INFO commandstats\r\n").await?;
    // A bulk string: `$LEN\r\n` then LEN bytes.
    let mut reply = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        let n = stream.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "Redis closed the connection mid-reply");
        reply.extend_from_slice(&chunk[..n]);
        if let Some(end) = reply.windows(2).position(|w| w == b"\r\n") {
            let len: usize = std::str::from_utf8(&reply[1..end])?.parse()?;
            if reply.len() >= end + 2 + len {
                return Ok(parse(std::str::from_utf8(&reply[end + 2..end + 2 + len])?));
            }
        }
    }
}

/// `cmdstat_NAME:calls=N,…` lines.
fn parse(info: &str) -> CommandCounts {
    let mut counts = CommandCounts::default();
    for line in info.lines() {
        let Some((name, stats)) = line
            .strip_prefix("cmdstat_")
            .and_then(|l| l.split_once(':'))
        else {
            continue;
        };
        let calls = stats
            .split(',')
            .find_map(|f| f.strip_prefix("calls="))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        counts.all += calls;
        if name == "eval" || name == "evalsha" {
            counts.scripts += calls;
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_scripts_and_all_commands() {
        let info = "# Commandstats\r\ncmdstat_evalsha:calls=12,usec=30,usec_per_call=2.5\r\n\
                    cmdstat_publish:calls=3,usec=1\r\ncmdstat_eval:calls=1,usec=9\r\n";
        let counts = super::parse(info);
        assert_eq!((counts.scripts, counts.all), (13, 16));
    }
}
