//! The opening handshake and HTTP errors on the WebSocket paths.

use crate::common::{RawClient, SAMPLE_KEY, TestServer};

#[tokio::test]
async fn answers_101_with_the_rfc_6455_accept_value() {
    let server = TestServer::start().await;
    let (_client, response) = RawClient::upgrade(server.addr, "/echo", "").await;
    assert_eq!(
        response.header("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    assert_eq!(response.header("upgrade"), Some("websocket"));
    assert_eq!(response.header("sec-websocket-extensions"), None);
}

#[tokio::test]
async fn plain_http_on_a_websocket_path_gets_426() {
    let server = TestServer::start().await;
    let mut client = RawClient::connect(server.addr).await;
    let response = client
        .request("GET /echo HTTP/1.1\r\nHost: test\r\n\r\n")
        .await;
    assert_eq!(response.status, 426);
    assert_eq!(response.header("upgrade"), Some("websocket"));
    assert_eq!(response.json()["error"]["code"], "upgrade_required");
}

#[tokio::test]
async fn an_unsupported_version_gets_426_naming_version_13() {
    let server = TestServer::start().await;
    let mut client = RawClient::connect(server.addr).await;
    let response = client
        .request(&format!(
            "GET /echo HTTP/1.1\r\nHost: test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: {SAMPLE_KEY}\r\n\r\n"
        ))
        .await;
    assert_eq!(response.status, 426);
    assert_eq!(response.header("sec-websocket-version"), Some("13"));
    assert_eq!(
        response.json()["error"]["code"],
        "unsupported_websocket_version"
    );
}

#[tokio::test]
async fn a_missing_or_malformed_key_gets_400() {
    let server = TestServer::start().await;
    for key_line in ["", "Sec-WebSocket-Key: c2hvcnQ=\r\n"] {
        let mut client = RawClient::connect(server.addr).await;
        let response = client
            .request(&format!(
                "GET /echo HTTP/1.1\r\nHost: test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                 Sec-WebSocket-Version: 13\r\n{key_line}\r\n"
            ))
            .await;
        assert_eq!(response.status, 400, "{key_line:?}");
        assert_eq!(response.json()["error"]["code"], "bad_websocket_key");
    }
}

#[tokio::test]
async fn unknown_paths_get_404_with_a_json_body() {
    let server = TestServer::start().await;
    let mut client = RawClient::connect(server.addr).await;
    let response = client
        .request("GET /nowhere HTTP/1.1\r\nHost: test\r\n\r\n")
        .await;
    assert_eq!(response.status, 404);
    assert_eq!(response.header("content-type"), Some("application/json"));
    let body = response.json();
    assert_eq!(body["error"]["code"], "not_found");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/nowhere")
    );
}

#[tokio::test]
async fn other_methods_on_echo_get_405() {
    let server = TestServer::start().await;
    let mut client = RawClient::connect(server.addr).await;
    let response = client
        .request("POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\n\r\n")
        .await;
    assert_eq!(response.status, 405);
    assert_eq!(response.json()["error"]["code"], "method_not_allowed");
}
