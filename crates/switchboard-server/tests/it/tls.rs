//! HTTPS and WSS on the listening port (`--tls-cert`, `--tls-key`): the
//! built binary with a certificate made by the test (rcgen), real TLS
//! clients (rustls), a plain-text client refused, and a reload on SIGHUP
//! that new connections see while open ones stay up.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::Message;

use crate::common::{RawClient, ServerProcess, WAIT};

/// A self-signed certificate for `localhost` and 127.0.0.1, written as
/// PEM files; returns its DER.
fn write_certificate(dir: &Path, name: &str) -> (PathBuf, PathBuf, CertificateDer<'static>) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    (cert, key, certified.cert.der().clone())
}

/// A TLS client that trusts `certificates` only.
fn connector(certificates: &[&CertificateDer<'static>]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in certificates {
        roots.add((*certificate).clone()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

async fn tls_connect(addr: SocketAddr, connector: &TlsConnector) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(WAIT, connector.connect(name, tcp))
        .await
        .expect("handshake in time")
        .expect("TLS handshake")
}

/// `GET path` over HTTPS; the status line and the body.
async fn https_get(addr: SocketAddr, connector: &TlsConnector, path: &str) -> (String, String) {
    let mut stream = tls_connect(addr, connector).await;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut answer))
        .await
        .expect("answer in time")
        .unwrap();
    let answer = String::from_utf8(answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

type Wss = tokio_tungstenite::WebSocketStream<TlsStream<TcpStream>>;

async fn wss_connect(addr: SocketAddr, connector: &TlsConnector, path: &str) -> Wss {
    let stream = tls_connect(addr, connector).await;
    let url = format!("wss://localhost:{}{path}", addr.port());
    let (ws, response) = tokio_tungstenite::client_async(url, stream).await.unwrap();
    assert_eq!(response.status(), 101);
    ws
}

async fn next_json(ws: &mut Wss) -> serde_json::Value {
    loop {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a message in time")
            .expect("open")
            .unwrap();
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

fn start_tls_server(data: &Path, cert: &Path, key: &Path) -> ServerProcess {
    ServerProcess::start(
        data,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    )
}

#[tokio::test]
async fn wss_and_https_share_the_port_and_plain_text_is_refused_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, der) = write_certificate(dir.path(), "server");
    let server = start_tls_server(dir.path(), &cert, &key);
    let connector = connector(&[&der]);

    let mut ws = wss_connect(server.addr, &connector, "/ws?user=ann&channel=lobby").await;
    assert_eq!(next_json(&mut ws).await["type"], "welcome");
    ws.send(Message::text(
        r#"{"type":"publish","channel":"lobby","msg":"over tls","id":1}"#,
    ))
    .await
    .unwrap();
    loop {
        if next_json(&mut ws).await["type"] == "ack" {
            break;
        }
    }
    let (status, body) = https_get(server.addr, &connector, "/api/channels/lobby/messages").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.contains("over tls"), "{body}");

    // Plain HTTP on the TLS port: a clear answer, then the connection ends.
    let mut plain = RawClient::connect(server.addr).await;
    let response = plain
        .request("GET /api/channels HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await;
    assert_eq!(response.status, 400);
    assert_eq!(response.json()["error"]["code"], "tls_required");
    assert!(plain.at_eof().await);

    // A client that does not trust the certificate cannot connect, and
    // the server goes on.
    let (_, _, stranger) = write_certificate(dir.path(), "stranger");
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let refused = connector_for(&stranger)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await;
    assert!(refused.is_err());
    let (status, _) = https_get(server.addr, &connector, "/api/channels").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
}

fn connector_for(certificate: &CertificateDer<'static>) -> TlsConnector {
    connector(&[certificate])
}

#[tokio::test]
async fn sighup_serves_a_new_certificate_to_new_connections_and_keeps_old_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, first) = write_certificate(dir.path(), "server");
    let server = start_tls_server(dir.path(), &cert, &key);
    let old_and_new = {
        let (_, _, second) = write_certificate(dir.path(), "next");
        // Written over the files the server was started with.
        std::fs::copy(dir.path().join("next.crt"), &cert).unwrap();
        std::fs::copy(dir.path().join("next.key"), &key).unwrap();
        (first.clone(), second)
    };
    let (first, second) = old_and_new;
    // Connected before the reload, on the first certificate.
    let trusting_both = connector(&[&first, &second]);
    let mut old = wss_connect(server.addr, &connector(&[&first]), "/ws?user=old").await;
    assert_eq!(next_json(&mut old).await["type"], "welcome");

    server.signal("-HUP");
    let deadline = Instant::now() + WAIT;
    loop {
        let stream = tls_connect(server.addr, &trusting_both).await;
        let presented = stream.get_ref().1.peer_certificates().unwrap()[0].clone();
        if presented == second {
            break;
        }
        assert_eq!(presented, first);
        assert!(
            Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The connection made before the reload is still up.
    old.send(Message::text(r#"{"type":"ping","id":7}"#))
        .await
        .unwrap();
    assert_eq!(next_json(&mut old).await["type"], "pong");

    // A bad certificate on reload keeps the current one.
    std::fs::write(&cert, "not a certificate").unwrap();
    server.signal("-HUP");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stream = tls_connect(server.addr, &trusting_both).await;
    assert_eq!(stream.get_ref().1.peer_certificates().unwrap()[0], second);
}

#[test]
fn a_bad_certificate_stops_the_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, _key, _) = write_certificate(dir.path(), "server");
    let (_, other_key, _) = write_certificate(dir.path(), "other");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\nnope\n").unwrap();
    let cases = [
        (garbage.clone(), other_key.clone(), "--tls-cert"),
        (cert.clone(), garbage.clone(), "--tls-key"),
        (cert.clone(), other_key.clone(), "does not belong"),
    ];
    for (cert, key, expected) in cases {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .output()
            .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{expected}: {stderr}");
    }
}
