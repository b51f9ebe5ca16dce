//! A real `redis-server` on a free loopback port, with its own directory
//! and an append-only file fsynced at every write, for the Redis engine's
//! tests; stopped and started again on the same port and data when a test
//! wants Redis to go away and come back.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use switchboard_server::Config;
use switchboard_server::config::Engine;

use crate::common::WAIT;

pub struct RedisServer {
    pub addr: SocketAddr,
    child: Option<Child>,
    dir: tempfile::TempDir,
    extra: Vec<String>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// A server started with extra `redis-server` arguments.
    pub fn start_with(extra: &[&str]) -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = RedisServer {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child: None,
            dir: tempfile::tempdir().unwrap(),
            extra: extra.iter().map(|a| a.to_string()).collect(),
        };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://{}/0", self.addr)
    }

    /// Points `config` at this server with the Redis engine.
    pub fn configure(&self, config: &mut Config) {
        config.engine = Engine::Redis;
        config.redis_url = self.url();
    }

    /// The flags that do the same for the built binary.
    pub fn args(&self) -> Vec<String> {
        vec![
            "--engine".into(),
            "redis".into(),
            "--redis-url".into(),
            self.url(),
        ]
    }

    /// Starts (again) on the same port and data, and waits until it answers.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let binary = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let child = Command::new(&binary)
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(self.addr.port().to_string())
            .arg("--dir")
            .arg(self.dir.path())
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--protected-mode",
                "no",
                "--daemonize",
                "no",
            ])
            .args(&self.extra)
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {binary} (install redis-server): {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        while self.command(&["PING"]).as_deref() != Some("+PONG") {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server (SIGTERM: it finishes its append-only file first).
    pub fn stop(&mut self) {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        child.wait().unwrap();
    }

    /// Sends one inline command; the first line of the answer.
    pub fn command(&self, words: &[&str]) -> Option<String> {
        use std::io::{BufRead, BufReader, Write};
        let mut stream = std::net::TcpStream::connect(self.addr).ok()?;
        stream.set_read_timeout(Some(WAIT)).ok()?;
        stream
            .write_all(format!("{}\r\n", words.join(" ")).as_bytes())
            .ok()?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).ok()?;
        Some(line.trim_end().to_owned())
    }

    #[allow(dead_code)]
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
