//! The document root (`--static-dir`): an operator's own files, served beside
//! the chat.
//!
//! tower-http's `ServeDir` does the serving (content types, `Last-Modified`,
//! conditional and range requests, `..` rejection). In front of it we resolve
//! the path ourselves to add what it lacks: symlinks that lead out of the
//! root are refused, dotfiles stay private (but `.well-known`), and every file
//! gets an `ETag` answered with 304 on `If-None-Match`.

use std::io;
use std::path::{Component, Path, PathBuf};
use std::time::UNIX_EPOCH;

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method, StatusCode, header};
use percent_encoding::percent_decode_str;
use tower::ServiceExt as _;
use tower_http::services::ServeDir;

use super::page::if_none_match;
use crate::error::ApiError;

/// A directory whose files are served over HTTP.
#[derive(Debug, Clone)]
pub struct DocumentRoot {
    /// Canonical: every resolved file must lie under it.
    root: PathBuf,
    files: ServeDir,
}

impl DocumentRoot {
    /// Opens `dir`, which must exist and be a directory.
    pub fn open(dir: &Path) -> io::Result<Self> {
        let root = dir.canonicalize()?;
        if !root.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                "not a directory",
            ));
        }
        let files = ServeDir::new(&root).append_index_html_on_directories(true);
        Ok(DocumentRoot { root, files })
    }

    /// Whether the operator put an `index.html` at the top, which then
    /// replaces the chat page at `/`.
    pub async fn has_index(&self) -> bool {
        let index = self.root.join("index.html");
        matches!(self.resolve_file(&index).await, Ok(Some(_)))
    }

    /// Answers `request` from the directory: the file, 304, 404 or 405.
    pub async fn serve(&self, request: Request) -> Response {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{} is not allowed on static files", request.method()),
            )
            .into_response();
        }
        let etag = match self.resolve(request.uri().path()).await {
            Ok(Some(file)) => Some(file.etag),
            // A directory without its trailing slash: ServeDir redirects.
            Ok(None) => None,
            Err(e) => return e.into_response(),
        };
        if let Some(etag) = &etag
            && if_none_match(request.headers(), etag)
        {
            let mut response = StatusCode::NOT_MODIFIED.into_response();
            response.headers_mut().insert(header::ETAG, etag.clone());
            return response;
        }
        let response = match self.files.clone().oneshot(request).await {
            Ok(response) => response.map(Body::new),
            Err(never) => match never {},
        };
        with_etag(response, etag)
    }

    /// Maps a request path to a file under the root. `Ok(None)` is a
    /// directory named without its trailing slash.
    async fn resolve(&self, request_path: &str) -> Result<Option<ResolvedFile>, ApiError> {
        let not_found = || ApiError::not_found(format!("no such file: {request_path}"));
        let decoded = percent_decode_str(request_path)
            .decode_utf8()
            .map_err(|_| not_found())?;
        let mut path = self.root.clone();
        for component in Path::new(decoded.as_ref()).components() {
            match component {
                Component::RootDir | Component::CurDir => {}
                Component::Normal(name) if is_public(name) => path.push(name),
                _ => return Err(not_found()),
            }
        }
        let is_dir = tokio::fs::metadata(&path)
            .await
            .is_ok_and(|metadata| metadata.is_dir());
        if is_dir {
            let real = tokio::fs::canonicalize(&path)
                .await
                .map_err(|_| not_found())?;
            if !real.starts_with(&self.root) {
                return Err(not_found());
            }
            if !request_path.ends_with('/') {
                return Ok(None);
            }
            path.push("index.html");
        }
        match self.resolve_file(&path).await {
            Ok(Some(file)) => Ok(Some(file)),
            _ => Err(not_found()),
        }
    }

    /// The file at `path` if it exists, is a regular file once symlinks are
    /// followed, and lies under the root.
    async fn resolve_file(&self, path: &Path) -> io::Result<Option<ResolvedFile>> {
        let real = tokio::fs::canonicalize(path).await?;
        if !real.starts_with(&self.root) {
            tracing::debug!(path = %path.display(), "refused: resolves outside the document root");
            return Ok(None);
        }
        let metadata = tokio::fs::metadata(&real).await?;
        if !metadata.is_file() {
            return Ok(None);
        }
        Ok(Some(ResolvedFile {
            etag: etag_of(&metadata),
        }))
    }
}

struct ResolvedFile {
    etag: HeaderValue,
}

/// Dotfiles (`.git`, `.env`) are never served; `.well-known` is public by
/// definition (RFC 8615).
fn is_public(name: &std::ffi::OsStr) -> bool {
    let name = name.to_string_lossy();
    !name.starts_with('.') || name == ".well-known"
}

/// A strong validator from size and modification time, as nginx does:
/// a rewritten file gets a new one without hashing its contents.
fn etag_of(metadata: &std::fs::Metadata) -> HeaderValue {
    let modified = metadata
        .modified()
        .ok()
        .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |age| age.as_nanos());
    HeaderValue::try_from(format!("\"{modified:x}-{:x}\"", metadata.len()))
        .expect("hex digits are a valid header value")
}

fn with_etag(mut response: Response, etag: Option<HeaderValue>) -> Response {
    let status = response.status();
    if let Some(etag) = etag
        && (status == StatusCode::OK || status == StatusCode::PARTIAL_CONTENT)
    {
        response.headers_mut().insert(header::ETAG, etag);
    }
    if status == StatusCode::NOT_FOUND {
        // The file vanished between our check and ServeDir's open.
        return ApiError::not_found("no such file").into_response();
    }
    response
}
