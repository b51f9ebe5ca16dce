//! History on disk: it survives a restart, and an acknowledged message
//! survives SIGKILL.

use serde_json::json;

use crate::common::{ChatClient, ServerProcess, get_json};

const UNLIMITED: [&str; 4] = ["--publish-rate", "1000000", "--publish-burst", "1000000"];

#[tokio::test]
async fn history_survives_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data.path(), &UNLIMITED);
    let (mut client, _) = ChatClient::connect(server.addr, "/ws?user=keeper").await;
    for i in 1..=3 {
        client.publish_acked("kept", &format!("m{i}")).await;
    }
    let (_, before) = get_json(server.addr, "/api/channels/kept/messages").await;
    drop(client);
    server.signal("-TERM");
    assert!(server.wait().await.success());

    let server = ServerProcess::start(data.path(), &UNLIMITED);
    let (status, after) = get_json(server.addr, "/api/channels/kept/messages").await;
    assert_eq!(status, 200);
    assert_eq!(after, before, "same messages, same epoch");
    assert_eq!(after["messages"].as_array().unwrap().len(), 3);
    // Offsets continue where they stopped.
    let (mut client, _) = ChatClient::connect(server.addr, "/ws?user=keeper").await;
    client
        .send(json!({"type":"publish","channel":"kept","msg":"m4"}))
        .await;
    assert_eq!(client.recv_type("ack").await["offset"], 4);
    server.signal("-TERM");
    server.wait().await;
}

#[tokio::test]
async fn sigkill_right_after_the_ack_loses_nothing() {
    let data = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data.path(), &UNLIMITED);
    let (mut client, _) = ChatClient::connect(server.addr, "/ws?user=crash").await;
    let total = 300;
    for i in 1..=total {
        client
            .send(json!({"type":"publish","channel":"crash","msg":format!("m{i}"),"id":i}))
            .await;
    }
    let mut acked = Vec::new();
    while acked.len() < total {
        let ack = client.recv_type("ack").await;
        acked.push((ack["id"].as_u64().unwrap(), ack["offset"].as_u64().unwrap()));
    }
    // No grace: the process dies the moment the last ack is in.
    server.signal("-KILL");
    server.wait().await;

    let server = ServerProcess::start(data.path(), &UNLIMITED);
    let (_, page) = get_json(
        server.addr,
        "/api/channels/crash/messages?since=0&limit=1000",
    )
    .await;
    let stored: std::collections::HashMap<u64, String> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["offset"].as_u64().unwrap(),
                m["msg"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for (id, offset) in acked {
        assert_eq!(
            stored.get(&offset),
            Some(&format!("m{id}")),
            "acked offset {offset} lost"
        );
    }
    server.signal("-TERM");
    server.wait().await;
}
