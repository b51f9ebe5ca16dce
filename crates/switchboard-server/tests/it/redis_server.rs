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

    /// A server that also speaks TLS, with a certificate for 127.0.0.1
    /// signed by a CA made for it; returns the server, its TLS address and
    /// the CA's PEM file.
    pub fn start_tls() -> (RedisServer, SocketAddr, PathBuf) {
        let certs = tempfile::tempdir().unwrap().keep();
        let run = |args: &str| {
            let status = Command::new("openssl")
                .args(args.split_whitespace())
                .current_dir(&certs)
                .stderr(Stdio::null())
                .status()
                .expect("openssl runs");
            assert!(status.success(), "openssl {args}");
        };
        let new_key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
        run(&format!(
            "req -x509 {new_key} -keyout ca.key -out ca.pem -days 1 -subj /CN=switchboard-test-CA"
        ));
        run(&format!(
            "req {new_key} -keyout redis.key -out redis.csr -subj /CN=127.0.0.1"
        ));
        std::fs::write(certs.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
        run(
            "x509 -req -in redis.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out redis.pem \
             -days 1 -extfile san.ext",
        );
        let path = |name: &str| certs.join(name).display().to_string();
        let (cert, key, ca) = (path("redis.pem"), path("redis.key"), path("ca.pem"));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
            .to_string();
        let server = RedisServer::start_with(&[
            "--tls-port",
            &port,
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &ca,
            "--tls-auth-clients",
            "no",
        ]);
        let tls = SocketAddr::from(([127, 0, 0, 1], port.parse().unwrap()));
        (server, tls, certs.join("ca.pem"))
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
