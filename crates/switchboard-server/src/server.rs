//! The accept loop and graceful shutdown.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use switchboard_ws::{CloseCode, CloseFrame};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;

use std::path::PathBuf;
use std::sync::Arc;

use switchboard_core::history::HistoryError;

use crate::access::{Access, AccessSetupError};
use crate::app::AppState;
use crate::config::Config;
use crate::http::{self, DocumentRoot};
use crate::metrics::Limit;
use crate::socket::{AbortConnection, HttpSocket};
use crate::tls::{Tls, TlsError};
use crate::transport::socketio::SocketIo;
use crate::transport::socketio::forward::Forwarder;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    History(#[from] HistoryError),
    #[error("static directory {path}: {source}")]
    StaticDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    SocketIoClient(std::io::Error),
    #[error(transparent)]
    Access(#[from] AccessSetupError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("SIGHUP handler: {0}")]
    Signal(std::io::Error),
    #[error("--metrics-listen {addr}: {source}")]
    MetricsListen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// `--metrics-listen`, if given: `/metrics` on its own port.
async fn serve_metrics(
    state: &AppState,
) -> Result<Option<tokio::task::JoinHandle<()>>, StartError> {
    let Some(addr) = state.config.metrics_listen else {
        return Ok(None);
    };
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::MetricsListen { addr, source })?;
    if let Ok(addr) = listener.local_addr() {
        tracing::info!("metrics on http://{addr}/metrics");
    }
    let router = http::metrics_router(state.clone());
    Ok(Some(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::warn!("the metrics listener stopped: {e}");
        }
    })))
}

/// `--tls-cert` and `--tls-key`, loaded, if given.
fn open_tls(config: &Config) -> Result<Option<Tls>, StartError> {
    let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else {
        return Ok(None);
    };
    let tls = Tls::new(cert, key)?;
    tls.reload_on_sighup().map_err(StartError::Signal)?;
    Ok(Some(tls))
}

/// `--static-dir`, opened, if given.
fn open_document_root(config: &Config) -> Result<Option<Arc<DocumentRoot>>, StartError> {
    let Some(dir) = config.static_dir.as_deref() else {
        return Ok(None);
    };
    let root = DocumentRoot::open(dir).map_err(|source| StartError::StaticDir {
        path: dir.to_path_buf(),
        source,
    })?;
    Ok(Some(Arc::new(root)))
}

/// Pause after a failed `accept` (e.g. out of file descriptors), so the loop
/// does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves HTTP and WebSocket on `listener` until `shutdown` completes, then
/// closes every WebSocket with 1001 and waits (bounded by
/// `config.shutdown_timeout`) for connections to finish. Fails only if the
/// history store cannot be opened.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let document_root = open_document_root(&config)?;
    let tls = open_tls(&config)?;
    let access = Access::new(&config, tls.is_some())?;
    let state = AppState::new(config, access).await?;
    let socketio = SocketIo::new(&state).map_err(StartError::SocketIoClient)?;
    if state.config.socketio_conformance {
        tracing::warn!(
            "--socketio-conformance: /engine.io/ and /socket.io/ run the protocol suites' \
             reference servers, not the channels; for testing only"
        );
    }
    let socketio = Arc::new(socketio);
    Forwarder::start(socketio.clone(), state.clone()).await;
    let router = http::router(state.clone(), document_root, socketio);
    let metrics_server = serve_metrics(&state).await?;
    let stop = CancellationToken::new();
    let http_tasks = TaskTracker::new();
    if let Ok(addr) = listener.local_addr() {
        let scheme = if tls.is_some() { "https" } else { "http" };
        tracing::info!("listening on {scheme}://{addr}");
    }
    if state.access.tokens_required() {
        tracing::info!("--auth token: connections need a signed token");
    } else if state.config.api_key.is_some() || state.config.token_hmac_secret.is_some() {
        tracing::warn!(
            "--api-key and --token-* take effect with --auth token only: anyone may connect"
        );
    }

    tokio::select! {
        () = accept_loop(&listener, &router, &state, tls.as_ref(), &stop, &http_tasks) => {}
        () = shutdown => {}
    }
    drop(listener);
    state
        .shutting_down
        .store(true, std::sync::atomic::Ordering::Relaxed);

    tracing::info!(
        websockets = state.connections.len(),
        "shutting down: no new connections; closing open ones with 1001"
    );
    stop.cancel();
    state.connections.close_all(CloseFrame::new(
        CloseCode::GOING_AWAY,
        "server shutting down",
    ));
    http_tasks.close();
    state.connections.tasks.close();
    let drained = tokio::time::timeout(state.config.shutdown_timeout, async {
        http_tasks.wait().await;
        state.connections.tasks.wait().await;
    })
    .await;
    match drained {
        Ok(()) => tracing::info!("all connections closed"),
        Err(_) => tracing::warn!(
            websockets = state.connections.len(),
            "shutdown timeout: dropping the connections still open"
        ),
    }
    // Under `--sync before-ack`: what was delivered is fsynced and the next
    // start keeps counting offsets where this one stopped.
    match tokio::time::timeout(state.config.shutdown_timeout, state.node.settle_history()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("history not settled at shutdown: {e}"),
        Err(_) => tracing::warn!("history not settled within the shutdown timeout"),
    }
    if tokio::time::timeout(state.config.shutdown_timeout, state.node.stop())
        .await
        .is_err()
    {
        tracing::warn!("the engine did not stop within the shutdown timeout");
    }
    if let Some(task) = metrics_server {
        task.abort();
    }
    Ok(())
}

async fn accept_loop(
    listener: &TcpListener,
    router: &Router,
    state: &AppState,
    tls: Option<&Tls>,
    stop: &CancellationToken,
    tasks: &TaskTracker,
) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let connection = HttpConnection {
                    peer,
                    router: router.clone(),
                    state: state.clone(),
                    stop: stop.clone(),
                };
                match tls {
                    Some(tls) => tasks.spawn(serve_https(tls.clone(), stream, connection)),
                    None => tasks.spawn(serve_http(stream, connection)),
                };
            }
            Err(e) if is_per_connection_error(&e) => {}
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// Errors that concern only the connection being accepted, not the listener.
fn is_per_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
    )
}

/// What serving one accepted connection needs.
struct HttpConnection {
    peer: SocketAddr,
    router: Router,
    state: AppState,
    stop: CancellationToken,
}

/// Serves one HTTP/1.1 connection; a WebSocket upgrade leaves it and carries
/// on in its own task.
async fn serve_http(stream: TcpStream, connection: HttpConnection) {
    // Small frames go out at once; batching happens in our write queue.
    let _ = stream.set_nodelay(true);
    let socket = HttpSocket::new(stream);
    let loan = socket.lend();
    serve_connection(socket, Some(loan), connection).await;
}

/// [`serve_http`] inside TLS, once the handshake is done (within
/// `--header-timeout`). Nothing writes past the TLS layer: no socket is lent.
async fn serve_https(tls: Tls, stream: TcpStream, connection: HttpConnection) {
    let _ = stream.set_nodelay(true);
    let HttpConnection { peer, stop, .. } = &connection;
    let timeout = connection.state.config.header_timeout;
    let handshake = tokio::time::timeout(timeout, tls.accept(stream));
    let stream = tokio::select! {
        accepted = handshake => match accepted {
            Ok(Ok(Some(stream))) => stream,
            Ok(Ok(None)) => return,
            Ok(Err(e)) => return tracing::debug!(%peer, "TLS handshake failed: {e}"),
            Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
        },
        () = stop.cancelled() => return,
    };
    serve_connection(stream, None, connection).await;
}

async fn serve_connection<I>(
    io: I,
    loan: Option<crate::socket::SocketLoan>,
    HttpConnection {
        peer,
        router,
        state,
        stop,
    }: HttpConnection,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let abort = AbortConnection::default();
    let service_abort = abort.clone();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        request.extensions_mut().insert(service_abort.clone());
        if let Some(loan) = &loan {
            request.extensions_mut().insert(loan.clone());
        }
        router.clone().call(request)
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(state.config.header_timeout)
        .max_buf_size(state.config.max_header_bytes)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(connection);
    let aborted = abort.aborted();
    tokio::pin!(aborted);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = aborted.as_mut() => return,
        () = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            tokio::select! {
                result = connection.as_mut() => result,
                () = aborted => return,
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, "http connection ended: {e}");
        // hyper has answered 431 (or 414), or dropped a slow request head.
        if e.is_parse_too_large() {
            state.metrics.rejected(Limit::MaxHeaderBytes);
        } else if e.is_timeout() {
            state.metrics.rejected(Limit::HeaderTimeout);
        }
    }
}
