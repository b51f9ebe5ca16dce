//! Idempotent publish: a resend with the same `idempotency_key` gets the
//! first publish's ack and is neither stored nor delivered again.

use serde_json::{Value, json};

use crate::common::{ChatClient, TestServer, get_json, post_message};

fn history_texts(page: &Value) -> Vec<String> {
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["msg"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_resent_publish_gets_the_first_ack_and_is_delivered_once() {
    let server = TestServer::start().await;
    let (mut watcher, _) = ChatClient::connect(server.addr, "/ws?user=watcher").await;
    watcher
        .subscribe(json!({"type":"subscribe","channel":"room"}))
        .await;

    let publish =
        json!({"type":"publish","channel":"room","msg":"once","idempotency_key":"k-1","id":1});
    let (mut first, _) = ChatClient::connect(server.addr, "/ws?user=alice").await;
    first.send(publish.clone()).await;
    let ack = first.recv_type("ack").await;
    assert_eq!(
        (ack["id"].as_u64(), ack["offset"].as_u64()),
        (Some(1), Some(1))
    );
    let delivered = watcher.recv_type("message").await;
    assert_eq!(delivered["msg"], "once");
    assert_eq!(
        ack["time"], delivered["time"],
        "the ack carries the message's time"
    );
    drop(first);

    // The same user resends after a reconnect, with a new request id.
    let (mut again, _) = ChatClient::connect(server.addr, "/ws?user=alice").await;
    let mut resend = publish.clone();
    resend["id"] = json!(2);
    again.send(resend).await;
    let repeat = again.recv_type("ack").await;
    assert_eq!(repeat["id"], 2);
    assert_eq!(
        (&repeat["offset"], &repeat["time"]),
        (&ack["offset"], &ack["time"])
    );

    // Nothing reached the watcher in between: its next message is the next one.
    assert_eq!(again.publish_acked("room", "next").await, 2);
    let next = watcher.recv_type("message").await;
    assert_eq!(
        (next["msg"].as_str(), next["offset"].as_u64()),
        (Some("next"), Some(2))
    );
    let (_, page) = get_json(server.addr, "/api/channels/room/messages").await;
    assert_eq!(history_texts(&page), ["once", "next"]);

    // Another user's identical key is a message of its own.
    let (mut bob, _) = ChatClient::connect(server.addr, "/ws?user=bob").await;
    bob.send(publish).await;
    assert_eq!(bob.recv_type("ack").await["offset"], 3);
}

#[tokio::test]
async fn the_http_api_answers_a_repeat_with_the_first_answer() {
    let server = TestServer::start().await;
    let body = json!({"username":"bot","msg":"deploy done","idempotency_key":"deploy-42"});
    let (status, first) = post_message(server.addr, "ops", body.clone()).await;
    assert_eq!(status, 201, "{first}");
    let (status, repeat) = post_message(server.addr, "ops", body).await;
    assert_eq!(status, 201, "{repeat}");
    assert_eq!(first, repeat);
    // A native publish by the same user with the same key is the same publish.
    let (mut bot, _) = ChatClient::connect(server.addr, "/ws?user=bot").await;
    bot.send(
        json!({"type":"publish","channel":"ops","msg":"deploy done","idempotency_key":"deploy-42"}),
    )
    .await;
    assert_eq!(bot.recv_type("ack").await["offset"], first["offset"]);
    let (_, page) = get_json(server.addr, "/api/channels/ops/messages").await;
    assert_eq!(history_texts(&page), ["deploy done"]);
}

#[tokio::test]
async fn a_key_outside_one_to_sixty_four_characters_is_refused() {
    let server = TestServer::start().await;
    let long = "k".repeat(65);
    for key in ["", long.as_str()] {
        let (status, body) = post_message(
            server.addr,
            "ops",
            json!({"username":"bot","msg":"x","idempotency_key":key}),
        )
        .await;
        assert_eq!(status, 400);
        assert_eq!(body["error"]["code"], "invalid_idempotency_key", "{body}");

        let (mut client, _) = ChatClient::connect(server.addr, "/ws?user=bot").await;
        client
            .send(
                json!({"type":"publish","channel":"ops","msg":"x","idempotency_key":key,"id":"p"}),
            )
            .await;
        let error = client.recv_type("error").await;
        assert_eq!(
            (error["code"].as_str(), error["id"].as_str()),
            (Some("invalid_idempotency_key"), Some("p"))
        );
    }
    // 64 characters, counted as characters, not bytes.
    let (status, _) = post_message(
        server.addr,
        "ops",
        json!({"username":"bot","msg":"x","idempotency_key":"é".repeat(64)}),
    )
    .await;
    assert_eq!(status, 201);
    let (_, page) = get_json(server.addr, "/api/channels/ops/messages").await;
    assert_eq!(history_texts(&page), ["x"]);
}
