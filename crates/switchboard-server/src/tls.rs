//! HTTPS and WSS on the listening port (`--tls-cert`, `--tls-key`), with
//! rustls. The certificate is read again on SIGHUP: new connections get
//! the new one, open ones keep theirs.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Why the certificate could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("--tls-cert {path}: {reason}")]
    Certificate { path: PathBuf, reason: String },
    #[error("--tls-key {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("--tls-key does not belong to --tls-cert's certificate: {0}")]
    Mismatch(String),
    #[error("TLS set-up: {0}")]
    Setup(#[from] rustls::Error),
}

/// Accepts TLS connections with the current certificate.
#[derive(Clone)]
pub struct Tls {
    acceptor: tokio_rustls::TlsAcceptor,
    certificate: Arc<ReloadableCertificate>,
}

impl Tls {
    /// Reads the certificate and key; a bad one stops the start.
    pub fn new(cert: &Path, key: &Path) -> Result<Tls, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certificate = Arc::new(ReloadableCertificate {
            current: RwLock::new(Arc::new(load(cert, key, &provider)?)),
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            provider: provider.clone(),
        });
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(certificate.clone());
        // WebSocket upgrades and event streams are HTTP/1.1.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            certificate,
        })
    }

    /// Reads the files again; on failure the current certificate stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = load(
            &self.certificate.cert,
            &self.certificate.key,
            &self.certificate.provider,
        )?;
        *self.certificate.current.write() = Arc::new(fresh);
        Ok(())
    }

    /// Reloads the certificate on every SIGHUP, for as long as the runtime runs.
    pub fn reload_on_sighup(&self) -> io::Result<()> {
        let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let tls = self.clone();
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                match tls.reload() {
                    Ok(()) => tracing::info!("SIGHUP: TLS certificate reloaded"),
                    Err(e) => {
                        tracing::error!(
                            "SIGHUP: TLS certificate not reloaded, keeping the current one: {e}"
                        )
                    }
                }
            }
        });
        Ok(())
    }

    /// The TLS handshake on a new connection. A client that speaks plain
    /// HTTP to this port gets a plain `400` saying so, and is closed.
    pub async fn accept(
        &self,
        stream: TcpStream,
    ) -> io::Result<Option<tokio_rustls::server::TlsStream<TcpStream>>> {
        let mut first = [0u8; 1];
        if stream.peek(&mut first).await? == 0 {
            return Ok(None);
        }
        // Every TLS connection opens with a handshake record.
        if first[0] != 0x16 {
            refuse_plain_text(stream).await;
            return Ok(None);
        }
        self.acceptor.accept(stream).await.map(Some)
    }
}

/// Answers a plain-text client and closes, reading what it sent first:
/// closing with its request unread would reset the connection, and the
/// answer could be lost.
async fn refuse_plain_text(mut stream: TcpStream) {
    let _ = stream.write_all(&plain_http_refusal()).await;
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 1024];
    let drained = async {
        let mut left: usize = 64 * 1024;
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(PLAIN_TEXT_LINGER, drained).await;
}

/// How long a refused plain-text client has to take its answer.
const PLAIN_TEXT_LINGER: std::time::Duration = std::time::Duration::from_secs(1);

/// The answer to plain HTTP on the TLS port.
fn plain_http_refusal() -> Vec<u8> {
    let body = r#"{"error":{"code":"tls_required","message":"this port speaks HTTPS: use https:// or wss://"}}"#;
    format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nconnection: close\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The certificate every new handshake is given.
#[derive(Debug)]
struct ReloadableCertificate {
    current: RwLock<Arc<CertifiedKey>>,
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
}

impl ResolvesServerCert for ReloadableCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().clone())
    }
}

fn load(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let cert_error = |reason: String| TlsError::Certificate {
        path: cert.to_path_buf(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_error(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_error(
            "no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    let private_key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.to_path_buf(),
        reason: e.to_string(),
    })?;
    let signing_key = provider
        .key_provider
        .load_private_key(private_key)
        .map_err(|e| TlsError::Key {
            path: key.to_path_buf(),
            reason: e.to_string(),
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified
        .keys_match()
        .map_err(|e| TlsError::Mismatch(e.to_string()))?;
    Ok(certified)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_plain_http_refusal_says_its_length() {
        let answer = String::from_utf8(super::plain_http_refusal()).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        serde_json::from_str::<serde_json::Value>(body).unwrap();
    }
}
