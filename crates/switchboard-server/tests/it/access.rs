//! Access control end to end: connection tokens on `/ws`, `/sse` and the
//! HTTP API (`--auth token`), channel permissions, refresh and expiry, the
//! API key, and origin checks in both modes.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use switchboard_server::config::AuthMode;

use crate::common::{ChatClient, RawClient, RawResponse, TestServer, WAIT};

const SECRET: &str = "a test secret that signs every token";
const API_KEY: &str = "k3y-of-the-back-end-0123456789";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims for `sub`, valid for `ttl` seconds, with these patterns.
fn claims(sub: &str, ttl: u64, subscribe: &[&str], publish: &[&str]) -> Value {
    json!({"sub": sub, "exp": now() + ttl, "subscribe": subscribe, "publish": publish})
}

fn hs256(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn token(sub: &str, subscribe: &[&str], publish: &[&str]) -> String {
    hs256(&claims(sub, 3600, subscribe, publish), SECRET)
}

async fn token_server() -> TestServer {
    TestServer::with_config(|config| {
        config.auth = AuthMode::Token;
        config.token_hmac_secret = Some(SECRET.into());
        config.api_key = Some(API_KEY.into());
    })
    .await
}

/// A WebSocket upgrade of `path` with `extra` header lines, answered
/// however the server answers it.
async fn try_upgrade(addr: SocketAddr, path: &str, extra: &str) -> (RawClient, RawResponse) {
    let mut client = RawClient::connect(addr).await;
    let response = client
        .request(&format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {}\r\n{extra}\r\n",
            crate::common::SAMPLE_KEY
        ))
        .await;
    (client, response)
}

/// The status and error code of a refused upgrade.
async fn refusal(addr: SocketAddr, path: &str, extra: &str) -> (u16, String) {
    let (_, response) = try_upgrade(addr, path, extra).await;
    assert_ne!(response.status, 101, "{path} was upgraded");
    let code = response.json()["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    (response.status, code)
}

async fn chat(addr: SocketAddr, token: &str, query: &str) -> (ChatClient, Value) {
    ChatClient::connect(addr, &format!("/ws?token={token}{query}")).await
}

/// The answer to `request` on `client`, past presence notices and
/// broadcasts.
async fn answer(client: &mut ChatClient, request: Value) -> Value {
    client.send(request).await;
    loop {
        let message = client.recv().await;
        if !["join", "leave", "message"].contains(&message["type"].as_str().unwrap_or("")) {
            return message;
        }
    }
}

async fn api(
    addr: SocketAddr,
    method: reqwest::Method,
    path: &str,
    authorization: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new().request(method, format!("http://{addr}{path}"));
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn stored_offset(addr: SocketAddr, channel: &str) -> u64 {
    let (status, body) = api(
        addr,
        reqwest::Method::GET,
        &format!("/api/channels/{channel}/messages"),
        Some(&format!("apikey {API_KEY}")),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["messages"]
        .as_array()
        .unwrap()
        .last()
        .map_or(0, |m| m["offset"].as_u64().unwrap())
}

#[tokio::test]
async fn a_websocket_needs_a_valid_token_and_is_the_token_s_user() {
    let server = token_server().await;
    let addr = server.addr;
    let good = token("ann", &["lobby"], &["lobby"]);

    assert_eq!(
        refusal(addr, "/ws", "").await,
        (401, "missing_token".into())
    );
    assert_eq!(
        refusal(addr, "/ws?token=not.a.jwt", "").await,
        (401, "invalid_token".into())
    );
    let forged = hs256(&claims("ann", 3600, &["*"], &["*"]), "another secret");
    assert_eq!(
        refusal(addr, &format!("/ws?token={forged}"), "").await,
        (401, "invalid_token".into())
    );
    let expired = hs256(&claims("ann", 0, &["*"], &["*"]), SECRET);
    assert_eq!(
        refusal(addr, &format!("/ws?token={expired}"), "").await,
        (401, "token_expired".into())
    );
    // Expired and wrongly signed: the signature is checked first.
    let expired_forged = hs256(&claims("ann", 0, &["*"], &["*"]), "another secret");
    assert_eq!(
        refusal(addr, &format!("/ws?token={expired_forged}"), "").await,
        (401, "invalid_token".into())
    );
    let nameless = hs256(&json!({"exp": now() + 60, "subscribe": ["*"]}), SECRET);
    assert_eq!(
        refusal(addr, &format!("/ws?token={nameless}"), "").await,
        (401, "invalid_token".into())
    );
    let bad_sub = hs256(&claims(" padded ", 60, &[], &[]), SECRET);
    assert_eq!(
        refusal(addr, &format!("/ws?token={bad_sub}"), "").await,
        (401, "invalid_token".into())
    );
    let not_a_list = hs256(
        &json!({"sub": "ann", "exp": now() + 60, "subscribe": "lobby"}),
        SECRET,
    );
    assert_eq!(
        refusal(addr, &format!("/ws?token={not_a_list}"), "").await,
        (401, "invalid_token".into())
    );
    let no_exp = hs256(&json!({"sub": "ann", "subscribe": ["*"]}), SECRET);
    assert_eq!(
        refusal(addr, &format!("/ws?token={no_exp}"), "").await,
        (401, "invalid_token".into())
    );
    let not_yet = hs256(
        &json!({"sub": "ann", "exp": now() + 600, "nbf": now() + 300}),
        SECRET,
    );
    assert_eq!(
        refusal(addr, &format!("/ws?token={not_yet}"), "").await,
        (401, "invalid_token".into())
    );

    // `?user=` cannot speak for someone else: the name is the token's.
    let (_ann, welcome) = chat(addr, &good, "&user=mallory").await;
    assert_eq!(welcome["username"], "ann");
    let (_ann, welcome) = ChatClient::connect(addr, &format!("/ws/mallory?token={good}")).await;
    assert_eq!(welcome["username"], "ann");
}

#[tokio::test]
async fn the_authorization_header_wins_over_the_query_token() {
    let server = token_server().await;
    let good = token("ann", &["lobby"], &[]);
    let (_, response) = try_upgrade(
        server.addr,
        "/ws?token=garbage",
        &format!("Authorization: Bearer {good}\r\n"),
    )
    .await;
    assert_eq!(response.status, 101);
    assert_eq!(
        refusal(
            server.addr,
            &format!("/ws?token={good}"),
            "Authorization: Bearer garbage\r\n"
        )
        .await,
        (401, "invalid_token".into())
    );
}

#[tokio::test]
async fn a_token_s_patterns_decide_subscribe_publish_history_and_presence() {
    let server = token_server().await;
    let addr = server.addr;
    let reader = token("rita", &["lobby", "team:*"], &["team:*"]);
    let (mut rita, _) = chat(addr, &reader, "").await;

    for channel in ["lobby", "team:red", "team:"] {
        let reply = answer(
            &mut rita,
            json!({"type":"subscribe","channel":channel,"id":channel}),
        )
        .await;
        assert_eq!(reply["type"], "subscribed", "{channel}: {reply}");
    }
    for channel in ["ops", "team", "lobby2"] {
        let reply = answer(
            &mut rita,
            json!({"type":"subscribe","channel":channel,"id":1}),
        )
        .await;
        assert_eq!(
            (reply["type"].as_str(), reply["code"].as_str(), &reply["id"]),
            (Some("error"), Some("forbidden"), &json!(1)),
            "{channel}"
        );
        for kind in ["history", "presence"] {
            let reply = answer(&mut rita, json!({"type":kind,"channel":channel,"id":kind})).await;
            assert_eq!(reply["code"], "forbidden", "{kind} {channel}: {reply}");
        }
    }

    // Publishing where only subscribing is allowed stores nothing.
    let reply = answer(
        &mut rita,
        json!({"type":"publish","channel":"lobby","msg":"sneaky","id":"p"}),
    )
    .await;
    assert_eq!(
        (reply["type"].as_str(), reply["code"].as_str()),
        (Some("error"), Some("forbidden"))
    );
    assert_eq!(stored_offset(addr, "lobby").await, 0);
    let reply = answer(
        &mut rita,
        json!({"type":"publish","channel":"team:red","msg":"hi team","id":"q"}),
    )
    .await;
    assert_eq!(reply["type"], "ack", "{reply}");
    // The connection stayed open through every refusal.
    assert_eq!(
        answer(&mut rita, json!({"type":"ping","id":9})).await["type"],
        "pong"
    );

    // A channel named at connect that the token does not allow: 403 before the upgrade.
    assert_eq!(
        refusal(addr, &format!("/ws?token={reader}&channel=ops"), "").await,
        (403, "forbidden".into())
    );
    let (_, welcome) = chat(addr, &reader, "&channel=team:blue").await;
    assert_eq!(welcome["username"], "rita");

    // `*` alone allows every channel; no claim allows none.
    let (mut admin, _) = chat(addr, &token("root", &["*"], &["*"]), "").await;
    let reply = answer(
        &mut admin,
        json!({"type":"publish","channel":"ops","msg":"x","id":1}),
    )
    .await;
    assert_eq!(reply["type"], "ack");
    let (mut nobody, _) = chat(
        addr,
        &hs256(&json!({"sub":"nobody","exp":now()+60}), SECRET),
        "",
    )
    .await;
    let reply = answer(&mut nobody, json!({"type":"subscribe","channel":"ops"})).await;
    assert_eq!(reply["code"], "forbidden");
}

#[tokio::test]
async fn a_refresh_keeps_a_connection_past_its_first_expiry_and_narrows_it() {
    let server = token_server().await;
    let addr = server.addr;
    let short = hs256(&claims("ann", 2, &["lobby", "ops"], &["lobby"]), SECRET);
    let (mut ann, _) = chat(addr, &short, "").await;
    for channel in ["lobby", "ops"] {
        answer(&mut ann, json!({"type":"subscribe","channel":channel})).await;
    }

    // Refused refreshes change nothing.
    let other_user = token("bob", &["*"], &["*"]);
    let reply = answer(
        &mut ann,
        json!({"type":"refresh","token":other_user,"id":1}),
    )
    .await;
    assert_eq!(
        (reply["code"].as_str(), &reply["id"]),
        (Some("invalid_token"), &json!(1))
    );
    let expired = hs256(&claims("ann", 0, &["*"], &["*"]), SECRET);
    let reply = answer(&mut ann, json!({"type":"refresh","token":expired})).await;
    assert_eq!(reply["code"], "token_expired");
    let reply = answer(&mut ann, json!({"type":"refresh","token":"junk"})).await;
    assert_eq!(reply["code"], "invalid_token");

    // A refresh for the same user with narrower patterns: `ops` is left.
    let longer = claims("ann", 60, &["lobby"], &["lobby"]);
    let reply = answer(
        &mut ann,
        json!({"type":"refresh","token":hs256(&longer, SECRET),"id":"r"}),
    )
    .await;
    assert_eq!(
        reply,
        json!({"type":"refreshed","exp":longer["exp"],"id":"r"})
    );
    let notice = ann.recv_type("unsubscribed").await;
    assert_eq!(notice, json!({"type":"unsubscribed","channel":"ops"}));

    // Past the first token's expiry the connection lives on.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    assert_eq!(
        answer(&mut ann, json!({"type":"ping","id":2})).await["type"],
        "pong"
    );
    assert_eq!(
        answer(
            &mut ann,
            json!({"type":"publish","channel":"lobby","msg":"still here","id":3})
        )
        .await["type"],
        "ack"
    );
}

#[tokio::test]
async fn a_connection_whose_token_expires_is_closed_with_1008() {
    let server = token_server().await;
    let exp = now() + 2;
    let token = hs256(
        &json!({"sub":"ann","exp":exp,"subscribe":["lobby"]}),
        SECRET,
    );
    let (mut ann, _) = chat(server.addr, &token, "&channel=lobby").await;
    let close = ann.recv_close().await.expect("a close frame");
    let closed_at = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    assert_eq!(u16::from(close.code), 1008);
    assert!(close.reason.contains("expired"), "{}", close.reason);
    let late = closed_at.as_secs_f64() - exp as f64;
    assert!((0.0..2.0).contains(&late), "closed {late:.2}s after exp");
}

/// An SSE request answered however the server answers it: the status,
/// and the body when it is not a stream.
async fn sse(addr: SocketAddr, query: &str, bearer: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new().get(format!("http://{addr}/sse?{query}"));
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

async fn error_code(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    (status, body["error"]["code"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn an_event_stream_needs_a_token_and_ends_when_it_expires() {
    let server = token_server().await;
    let addr = server.addr;
    assert_eq!(
        error_code(sse(addr, "channel=lobby", None).await).await,
        (401, "missing_token".into())
    );
    assert_eq!(
        error_code(sse(addr, "channel=lobby&token=x.y.z", None).await).await,
        (401, "invalid_token".into())
    );
    let forged = hs256(&claims("sam", 60, &["*"], &[]), "another secret");
    assert_eq!(
        error_code(sse(addr, &format!("channel=lobby&token={forged}"), None).await).await,
        (401, "invalid_token".into())
    );
    let expired = hs256(&claims("sam", 0, &["*"], &[]), SECRET);
    assert_eq!(
        error_code(sse(addr, "channel=lobby", Some(&expired)).await).await,
        (401, "token_expired".into())
    );
    let reader = token("sam", &["lobby"], &[]);
    assert_eq!(
        error_code(
            sse(
                addr,
                &format!("channel=lobby&channel=ops&token={reader}"),
                None
            )
            .await
        )
        .await,
        (403, "forbidden".into())
    );

    // `?user=` is ignored: the stream is the token's user's.
    let stream = sse(addr, "channel=lobby&user=mallory", Some(&reader)).await;
    assert_eq!(stream.status(), 200);
    let (status, presence) = api(
        addr,
        reqwest::Method::GET,
        "/api/channels/lobby/presence",
        Some(&format!("apikey {API_KEY}")),
        None,
    )
    .await;
    assert_eq!((status, &presence["users"]), (200, &json!(["sam"])));
    drop(stream);

    let exp = now() + 2;
    let brief = hs256(
        &json!({"sub":"sam","exp":exp,"subscribe":["lobby"]}),
        SECRET,
    );
    let mut body = sse(addr, &format!("channel=lobby&token={brief}"), None)
        .await
        .bytes_stream();
    let ended = tokio::time::timeout(WAIT, async {
        while let Some(chunk) = body.next().await {
            if chunk.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream outlived its token");
    let late = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        - exp as f64;
    assert!((0.0..2.0).contains(&late), "ended {late:.2}s after exp");
}

#[tokio::test]
async fn the_http_api_takes_the_api_key_or_a_user_s_bearer_token() {
    let server = token_server().await;
    let addr = server.addr;
    let post = |authorization: Option<String>, body: Value| {
        let authorization = authorization.clone();
        async move {
            api(
                addr,
                reqwest::Method::POST,
                "/api/channels/lobby/messages",
                authorization.as_deref(),
                Some(body),
            )
            .await
        }
    };
    let code = |answer: &(u16, Value)| {
        (
            answer.0,
            answer.1["error"]["code"].as_str().unwrap_or("").to_owned(),
        )
    };

    let no_one = post(None, json!({"username":"ann","msg":"hi"})).await;
    assert_eq!(code(&no_one), (401, "unauthorized".into()));
    // A wrong key of the right length fails like any other.
    let wrong: String = API_KEY
        .chars()
        .map(|c| if c == 'k' { 'K' } else { c })
        .collect();
    assert_eq!(wrong.len(), API_KEY.len());
    assert_ne!(wrong, API_KEY);
    let wrong_key = post(
        Some(format!("apikey {wrong}")),
        json!({"username":"ann","msg":"hi"}),
    )
    .await;
    assert_eq!(code(&wrong_key), (401, "unauthorized".into()));
    let bad_token = post(Some("Bearer x.y.z".into()), json!({"msg":"hi"})).await;
    assert_eq!(code(&bad_token), (401, "unauthorized".into()));

    // The back end publishes as whoever it names.
    let (status, ack) = post(
        Some(format!("apikey {API_KEY}")),
        json!({"username":"system","msg":"welcome"}),
    )
    .await;
    assert_eq!(status, 201, "{ack}");
    let nameless = post(Some(format!("apikey {API_KEY}")), json!({"msg":"who?"})).await;
    assert_eq!(nameless.0, 400);

    // A user publishes as the token's `sub`, and as no one else.
    let ann = token("ann", &["lobby"], &["lobby"]);
    let (status, _) = post(Some(format!("Bearer {ann}")), json!({"msg":"from ann"})).await;
    assert_eq!(status, 201);
    let (status, _) = post(
        Some(format!("Bearer {ann}")),
        json!({"username":"ann","msg":"named"}),
    )
    .await;
    assert_eq!(status, 201);
    let spoof = post(
        Some(format!("Bearer {ann}")),
        json!({"username":"bob","msg":"as bob"}),
    )
    .await;
    assert_eq!(code(&spoof), (403, "forbidden".into()));
    let reader = token("rita", &["lobby"], &[]);
    let not_allowed = post(Some(format!("Bearer {reader}")), json!({"msg":"x"})).await;
    assert_eq!(code(&not_allowed), (403, "forbidden".into()));

    let (_, history) = api(
        addr,
        reqwest::Method::GET,
        "/api/channels/lobby/messages",
        Some(&format!("Bearer {reader}")),
        None,
    )
    .await;
    let authors: Vec<_> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["username"].as_str().unwrap(), m["msg"].as_str().unwrap()))
        .collect();
    assert_eq!(
        authors,
        [("system", "welcome"), ("ann", "from ann"), ("ann", "named")]
    );
    let outsider = token("otto", &["ops"], &[]);
    for path in [
        "/api/channels/lobby/messages",
        "/api/channels/lobby/presence",
    ] {
        let answer = api(
            addr,
            reqwest::Method::GET,
            path,
            Some(&format!("Bearer {outsider}")),
            None,
        )
        .await;
        assert_eq!(code(&answer), (403, "forbidden".into()), "{path}");
        let answer = api(addr, reqwest::Method::GET, path, None, None).await;
        assert_eq!(code(&answer), (401, "unauthorized".into()), "{path}");
    }
    let listing = api(
        addr,
        reqwest::Method::GET,
        "/api/channels",
        Some(&format!("Bearer {reader}")),
        None,
    )
    .await;
    assert_eq!(code(&listing), (403, "forbidden".into()));
    let (status, _) = api(
        addr,
        reqwest::Method::GET,
        "/api/channels",
        Some(&format!("apikey {API_KEY}")),
        None,
    )
    .await;
    assert_eq!(status, 200);
}

/// Keys made by `openssl` for this test: (private PEM, public PEM file).
fn openssl_key(dir: &Path, algorithm: &[&str]) -> (Vec<u8>, std::path::PathBuf) {
    let private = dir.join("private.pem");
    let public = dir.join("public.pem");
    let run = |args: &[&str]| {
        let status = std::process::Command::new("openssl")
            .args(args)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl is installed (scripts/test.sh)");
        assert!(status.success(), "openssl {args:?}");
    };
    let mut genpkey = vec!["genpkey"];
    genpkey.extend_from_slice(algorithm);
    genpkey.extend_from_slice(&["-out", private.to_str().unwrap()]);
    run(&genpkey);
    run(&[
        "pkey",
        "-in",
        private.to_str().unwrap(),
        "-pubout",
        "-out",
        public.to_str().unwrap(),
    ]);
    (std::fs::read(&private).unwrap(), public)
}

#[tokio::test]
async fn rs256_and_es256_keys_verify_their_own_algorithm_only() {
    let cases: [(&[&str], Algorithm); 2] = [
        (
            &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
            Algorithm::RS256,
        ),
        (
            &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
            Algorithm::ES256,
        ),
    ];
    for (openssl_args, algorithm) in cases {
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = openssl_key(dir.path(), openssl_args);
        let public_path = public.clone();
        let server = TestServer::with_config(|config| {
            config.auth = AuthMode::Token;
            config.token_public_key = Some(public_path);
        })
        .await;
        let key = match algorithm {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&private).unwrap(),
            _ => EncodingKey::from_ec_pem(&private).unwrap(),
        };
        let signed = jsonwebtoken::encode(
            &Header::new(algorithm),
            &claims("kay", 60, &["*"], &["*"]),
            &key,
        )
        .unwrap();
        let (_, welcome) = chat(server.addr, &signed, "").await;
        assert_eq!(welcome["username"], "kay", "{algorithm:?}");

        // The public key used as an HMAC secret: the classic algorithm swap.
        let public_pem = std::fs::read_to_string(&public).unwrap();
        let swapped = hs256(&claims("kay", 60, &["*"], &["*"]), &public_pem);
        assert_eq!(
            refusal(server.addr, &format!("/ws?token={swapped}"), "").await,
            (401, "invalid_token".into()),
            "{algorithm:?}"
        );
        // `alg: none`, unsigned.
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let unsigned = format!(
            "{}.{}.",
            b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
            b64.encode(claims("kay", 60, &["*"], &["*"]).to_string())
        );
        assert_eq!(
            refusal(server.addr, &format!("/ws?token={unsigned}"), "").await,
            (401, "invalid_token".into())
        );
    }
}

#[tokio::test]
async fn audience_and_issuer_are_checked_when_set() {
    let server = TestServer::with_config(|config| {
        config.auth = AuthMode::Token;
        config.token_hmac_secret = Some(SECRET.into());
        config.token_audience = Some("chat".into());
        config.token_issuer = Some("https://auth.example".into());
    })
    .await;
    let mut good = claims("ann", 60, &[], &[]);
    good["aud"] = json!("chat");
    good["iss"] = json!("https://auth.example");
    let (_, welcome) = chat(server.addr, &hs256(&good, SECRET), "").await;
    assert_eq!(welcome["username"], "ann");
    for (field, value) in [("aud", "other"), ("iss", "https://evil.example")] {
        let mut bad = good.clone();
        bad[field] = json!(value);
        assert_eq!(
            refusal(
                server.addr,
                &format!("/ws?token={}", hs256(&bad, SECRET)),
                ""
            )
            .await,
            (401, "invalid_token".into()),
            "{field}"
        );
    }
}

#[tokio::test]
async fn token_mode_without_one_key_does_not_start() {
    for (secret, key) in [(None, None), (Some("s"), Some("/dev/null"))] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let data = tempfile::tempdir().unwrap();
        let config = switchboard_server::Config {
            data_dir: data.path().to_path_buf(),
            auth: AuthMode::Token,
            token_hmac_secret: secret.map(str::to_owned),
            token_public_key: key.map(Into::into),
            ..switchboard_server::Config::default()
        };
        let error = switchboard_server::server::run(listener, config, std::future::pending())
            .await
            .expect_err("refused to start");
        assert!(error.to_string().contains("--token-"), "{error}");
    }
}

#[tokio::test]
async fn anonymous_mode_ignores_a_token_and_names_no_one_by_it() {
    let server = TestServer::start().await;
    let (_, welcome) = ChatClient::connect(server.addr, "/ws?user=ann&token=whatever").await;
    assert_eq!(welcome["username"], "ann");
    let stream = sse(server.addr, "channel=lobby&token=whatever", None).await;
    assert_eq!(stream.status(), 200);
    let (mut ann, _) = ChatClient::connect(server.addr, "/ws?user=ann").await;
    let reply = answer(&mut ann, json!({"type":"refresh","token":"t","id":1})).await;
    assert_eq!(reply["code"], "bad_request");
}

/// `GET path` as a page of `origin` would send it.
async fn get_from(addr: SocketAddr, path: &str, origin: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("http://{addr}{path}"))
        .header("origin", origin)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn pages_of_other_origins_are_refused_unless_listed() {
    let server = TestServer::start().await;
    let addr = server.addr;
    let other = "Origin: http://evil.example\r\n";
    for path in ["/ws", "/echo"] {
        assert_eq!(
            refusal(addr, path, other).await,
            (403, "origin_not_allowed".into()),
            "{path}"
        );
        assert_eq!(
            refusal(addr, path, "Origin: null\r\n").await,
            (403, "origin_not_allowed".into()),
            "{path}"
        );
        let (_, own) = try_upgrade(addr, path, &format!("Origin: http://{addr}\r\n")).await;
        assert_eq!(own.status, 101, "{path}");
        let (_, none) = try_upgrade(addr, path, "").await;
        assert_eq!(none.status, 101, "{path}");
    }
    for path in ["/sse?channel=lobby", "/socket.io/?EIO=4&transport=polling"] {
        let refused = get_from(addr, path, "http://evil.example").await;
        assert_eq!(
            error_code(refused).await,
            (403, "origin_not_allowed".into()),
            "{path}"
        );
    }

    // The API answers everyone, and lets only allowed pages read it (CORS).
    let cross = get_from(addr, "/api/channels", "http://evil.example").await;
    assert_eq!(cross.status(), 200);
    assert!(cross.headers().get("access-control-allow-origin").is_none());

    let listed = TestServer::with_config(|config| {
        config.allowed_origins = vec!["https://app.example".into()];
    })
    .await;
    let (_, allowed) = try_upgrade(listed.addr, "/ws", "Origin: https://app.example\r\n").await;
    assert_eq!(allowed.status, 101);
    assert_eq!(
        refusal(listed.addr, "/ws", other).await,
        (403, "origin_not_allowed".into())
    );
    let preflight = reqwest::Client::new()
        .request(
            reqwest::Method::OPTIONS,
            format!("http://{}/api/channels/lobby/messages", listed.addr),
        )
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    let headers = preflight.headers();
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://app.example"
    );
    assert!(
        headers["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );

    let any = TestServer::with_config(|config| config.allowed_origins = vec!["*".into()]).await;
    let (_, allowed) = try_upgrade(any.addr, "/ws", other).await;
    assert_eq!(allowed.status, 101);
    let cors = get_from(any.addr, "/api/channels", "http://evil.example").await;
    assert_eq!(
        cors.headers()["access-control-allow-origin"],
        "http://evil.example"
    );
}
