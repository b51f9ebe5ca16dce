//! The embedded chat page and the document root (`--static-dir`), over a
//! real HTTP client (reqwest) and, for paths a client would normalise away,
//! raw bytes.

use std::path::Path;

use reqwest::StatusCode;
use reqwest::header::{
    CONTENT_RANGE, CONTENT_TYPE, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED, RANGE,
};

use crate::common::{RawClient, TestServer};

const HELLO: &str = "hello, static world\n";

/// A document root with a few typed files, a private dotfile, a symlink that
/// stays inside and two that lead out; `secret.txt` lies outside it.
struct Site {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
}

impl Site {
    fn new() -> Site {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("www");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(root.join("css")).unwrap();
        std::fs::create_dir_all(root.join("docs")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(dir.path().join("secret.txt"), "TOP SECRET").unwrap();
        std::fs::write(outside.join("index.html"), "OUTSIDE").unwrap();
        std::fs::write(root.join("hello.txt"), HELLO).unwrap();
        std::fs::write(root.join("css/site.css"), "body { color: red }").unwrap();
        std::fs::write(
            root.join("logo.svg"),
            "<svg xmlns=\"http://www.w3.org/2000/svg\"/>",
        )
        .unwrap();
        std::fs::write(root.join("data.json"), "{\"ok\":true}").unwrap();
        std::fs::write(root.join("docs/index.html"), "<h1>docs</h1>").unwrap();
        std::fs::write(root.join(".env"), "PASSWORD=hunter2").unwrap();
        std::os::unix::fs::symlink(root.join("hello.txt"), root.join("alias.txt")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret.txt"), root.join("escape.txt")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("elsewhere")).unwrap();
        Site { _dir: dir, root }
    }

    async fn serve(&self) -> TestServer {
        let root = self.root.clone();
        TestServer::with_config(move |config| config.static_dir = Some(root)).await
    }
}

fn url(server: &TestServer, path: &str) -> String {
    format!("http://{}{path}", server.addr)
}

async fn get(server: &TestServer, path: &str) -> reqwest::Response {
    reqwest::get(url(server, path)).await.unwrap()
}

/// GET `path` with one extra request header.
async fn get_with(
    server: &TestServer,
    path: &str,
    name: reqwest::header::HeaderName,
    value: &str,
) -> reqwest::Response {
    reqwest::Client::new()
        .get(url(server, path))
        .header(name, value)
        .send()
        .await
        .unwrap()
}

fn header(response: &reqwest::Response, name: reqwest::header::HeaderName) -> &str {
    response
        .headers()
        .get(&name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

/// Sends `path` byte for byte, as no URL library would.
async fn raw_get(server: &TestServer, path: &str) -> (u16, String) {
    let mut client = RawClient::connect(server.addr).await;
    let response = client
        .request(&format!(
            "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
        ))
        .await;
    (response.status, response.body)
}

#[tokio::test]
async fn files_are_served_with_their_content_types() {
    let site = Site::new();
    let server = site.serve().await;
    for (path, content_type, body) in [
        ("/hello.txt", "text/plain", HELLO),
        ("/css/site.css", "text/css", "body { color: red }"),
        (
            "/logo.svg",
            "image/svg+xml",
            "<svg xmlns=\"http://www.w3.org/2000/svg\"/>",
        ),
        ("/data.json", "application/json", "{\"ok\":true}"),
        ("/docs/", "text/html", "<h1>docs</h1>"),
        ("/alias.txt", "text/plain", HELLO),
    ] {
        let response = get(&server, path).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert!(
            header(&response, CONTENT_TYPE).starts_with(content_type),
            "{path}: {}",
            header(&response, CONTENT_TYPE)
        );
        assert_eq!(response.text().await.unwrap(), body, "{path}");
    }
}

#[tokio::test]
async fn etag_and_last_modified_answer_conditional_requests_with_304() {
    let site = Site::new();
    let server = site.serve().await;
    let first = get(&server, "/hello.txt").await;
    let etag = header(&first, ETAG).to_string();
    let last_modified = header(&first, LAST_MODIFIED).to_string();
    assert!(
        etag.starts_with('"') && etag.ends_with('"'),
        "strong ETag: {etag}"
    );

    let revalidated = get_with(&server, "/hello.txt", IF_NONE_MATCH, &etag).await;
    assert_eq!(revalidated.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header(&revalidated, ETAG), etag);
    assert_eq!(revalidated.text().await.unwrap(), "");

    let other = get_with(&server, "/hello.txt", IF_NONE_MATCH, "\"something-else\"").await;
    assert_eq!(other.status(), StatusCode::OK);
    assert_eq!(other.text().await.unwrap(), HELLO);

    let by_date = get_with(&server, "/hello.txt", IF_MODIFIED_SINCE, &last_modified).await;
    assert_eq!(by_date.status(), StatusCode::NOT_MODIFIED);

    // A rewritten file gets a new validator.
    std::fs::write(
        site.root.join("hello.txt"),
        "changed, and longer than before\n",
    )
    .unwrap();
    let changed = get_with(&server, "/hello.txt", IF_NONE_MATCH, &etag).await;
    assert_eq!(changed.status(), StatusCode::OK);
    assert_ne!(header(&changed, ETAG), etag);
}

#[tokio::test]
async fn range_requests_get_partial_content() {
    let site = Site::new();
    let server = site.serve().await;
    let partial = get_with(&server, "/hello.txt", RANGE, "bytes=7-12").await;
    assert_eq!(partial.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        header(&partial, CONTENT_RANGE),
        format!("bytes 7-12/{}", HELLO.len())
    );
    assert!(partial.headers().contains_key(ETAG));
    assert_eq!(partial.text().await.unwrap(), &HELLO[7..=12]);

    let beyond = get_with(&server, "/hello.txt", RANGE, "bytes=500-600").await;
    assert_eq!(beyond.status(), StatusCode::RANGE_NOT_SATISFIABLE);
}

#[tokio::test]
async fn nothing_outside_the_root_or_private_is_served() {
    let site = Site::new();
    let server = site.serve().await;
    for path in [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/..%2fsecret.txt",
        "/%2e%2e%2fsecret.txt",
        "/css/../../secret.txt",
        "/css/%2e%2e/%2e%2e/secret.txt",
        "/..%5csecret.txt",
        "/%252e%252e/secret.txt",
        "//etc/passwd",
        "/escape.txt",
        "/elsewhere/",
        "/elsewhere/index.html",
        "/.env",
        "/%2eenv",
        "/missing.txt",
    ] {
        let (status, body) = raw_get(&server, path).await;
        assert_eq!(status, 404, "{path} answered {status}: {body}");
        assert!(!body.contains("SECRET") && !body.contains("OUTSIDE") && !body.contains("hunter2"));
        let error: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(error["error"]["code"], "not_found", "{path}");
    }
}

#[tokio::test]
async fn only_get_and_head_reach_static_files() {
    let site = Site::new();
    let server = site.serve().await;
    let client = reqwest::Client::new();
    let head = client
        .head(url(&server, "/hello.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    let post = client
        .post(url(&server, "/hello.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
    let body: serde_json::Value = post.json().await.unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed");
}

#[tokio::test]
async fn the_chat_page_is_at_root_unless_the_document_root_has_an_index() {
    // Without an index.html of the site's own: the chat page at `/`.
    let site = Site::new();
    let server = site.serve().await;
    let home = get(&server, "/").await;
    assert_eq!(home.status(), StatusCode::OK);
    assert!(home.text().await.unwrap().contains("/chat/app.js"));

    // With one: the site's page at `/`, the chat page still at `/chat/`.
    std::fs::write(site.root.join("index.html"), "<h1>our site</h1>").unwrap();
    let home = get(&server, "/").await;
    assert_eq!(home.status(), StatusCode::OK);
    assert!(home.headers().contains_key(ETAG));
    assert_eq!(home.text().await.unwrap(), "<h1>our site</h1>");
    let chat = get(&server, "/chat/").await;
    assert!(chat.text().await.unwrap().contains("/chat/app.js"));
    // And the server's own routes are never shadowed by files.
    std::fs::create_dir_all(site.root.join("api")).unwrap();
    std::fs::write(site.root.join("api/channels"), "shadow").unwrap();
    let api = get(&server, "/api/channels").await;
    assert_eq!(header(&api, CONTENT_TYPE), "application/json");
}

#[tokio::test]
async fn the_embedded_page_and_assets_are_typed_validated_and_locked_down() {
    let server = TestServer::start().await;
    let page = get(&server, "/").await;
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(header(&page, CONTENT_TYPE), "text/html; charset=utf-8");
    assert!(
        header(&page, "content-security-policy".parse().unwrap()).contains("default-src 'self'")
    );
    assert_eq!(
        header(&page, "x-content-type-options".parse().unwrap()),
        "nosniff"
    );
    let html = page.text().await.unwrap();
    for asset in ["/chat/style.css", "/chat/app.js"] {
        assert!(html.contains(asset), "index.html links {asset}");
    }

    for (path, content_type) in [
        ("/chat/app.js", "text/javascript; charset=utf-8"),
        (
            "/chat/channel-transport.js",
            "text/javascript; charset=utf-8",
        ),
        ("/chat/chat-socket.js", "text/javascript; charset=utf-8"),
        ("/chat/chat-sse.js", "text/javascript; charset=utf-8"),
        ("/chat/view.js", "text/javascript; charset=utf-8"),
        ("/chat/style.css", "text/css; charset=utf-8"),
    ] {
        let response = get(&server, path).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(header(&response, CONTENT_TYPE), content_type);
        let etag = header(&response, ETAG).to_string();
        let again = get_with(&server, path, IF_NONE_MATCH, &etag).await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{path}");
    }

    let missing = get(&server, "/chat/nope.js").await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    // Without --static-dir every other path is a JSON 404.
    let (status, body) = raw_get(&server, "/hello.txt").await;
    assert_eq!(status, 404);
    assert!(body.contains("not_found"));
}

#[tokio::test]
async fn a_missing_static_dir_stops_start_up_with_a_clear_error() {
    let data = tempfile::tempdir().unwrap();
    let config = switchboard_server::Config {
        data_dir: data.path().to_path_buf(),
        static_dir: Some(Path::new("/nonexistent/switchboard-www").to_path_buf()),
        ..switchboard_server::Config::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let error = switchboard_server::server::run(listener, config, std::future::pending())
        .await
        .expect_err("start-up fails");
    assert!(
        error.to_string().contains("/nonexistent/switchboard-www"),
        "{error}"
    );
}
