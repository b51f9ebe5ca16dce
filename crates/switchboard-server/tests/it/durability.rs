//! History on disk: it survives a restart, an acknowledged message was
//! committed before its ack (so SIGKILL loses none), and its commit was
//! fsynced before the ack left (so a power cut loses none either).

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
/// Proves ack-after-commit: a killed process keeps the page cache, so this
/// holds with or without fsync. `an_ack_leaves_only_after_its_commit_is_fsynced`
/// proves the fsync.
async fn acked_messages_were_committed_so_sigkill_right_after_the_ack_loses_none() {
    let data = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data.path(), &UNLIMITED);
    let (mut client, _) = ChatClient::connect(server.addr, "/ws?user=crash").await;
    let acked = publish_pipelined(&mut client, "crash", 300).await;
    // No grace: the process dies the moment the last ack is in.
    server.signal("-KILL");
    server.wait().await;

    let server = ServerProcess::start(data.path(), &UNLIMITED);
    assert_all_stored(&server, "crash", acked).await;
    server.signal("-TERM");
    server.wait().await;
}

/// `--sync before-ack` with a window of 2 × 16 messages.
const BEFORE_ACK: [&str; 8] = [
    "--publish-rate",
    "1000000",
    "--publish-burst",
    "1000000",
    "--sync",
    "before-ack",
    "--max-batch",
    "16",
];

#[tokio::test]
async fn before_ack_delivers_everything_and_an_acked_message_survives_sigkill() {
    let data = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data.path(), &BEFORE_ACK);
    let (mut subscriber, _) =
        ChatClient::connect(server.addr, "/ws?user=reader&channel=fast").await;
    subscriber.recv_type("subscribed").await;
    let (mut publisher, _) = ChatClient::connect(server.addr, "/ws?user=writer").await;
    let acked = publish_pipelined(&mut publisher, "fast", 300).await;
    for offset in 1..=300 {
        let message = subscriber.recv_type("message").await;
        assert_eq!(message["offset"], offset, "in order, no gap");
    }
    server.signal("-KILL");
    server.wait().await;

    let server = ServerProcess::start(data.path(), &BEFORE_ACK);
    assert_all_stored(&server, "fast", acked).await;
    // The process died with its guard on disk: offsets move a window (32)
    // past the last stored one, so none a subscriber saw is handed out again.
    let (mut publisher, _) = ChatClient::connect(server.addr, "/ws?user=writer").await;
    assert_eq!(publisher.publish_acked("fast", "after").await, 300 + 32 + 1);
    server.signal("-TERM");
    server.wait().await;
}

#[tokio::test]
async fn before_ack_keeps_offsets_contiguous_across_a_clean_stop() {
    let data = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data.path(), &BEFORE_ACK);
    let (mut client, _) = ChatClient::connect(server.addr, "/ws?user=keeper").await;
    for i in 1..=3 {
        assert_eq!(client.publish_acked("kept", &format!("m{i}")).await, i);
    }
    drop(client);
    server.signal("-TERM");
    assert!(server.wait().await.success());
    assert!(
        !data.path().join("switchboard.db-unsynced").exists(),
        "a clean stop lifts the guard"
    );

    let server = ServerProcess::start(data.path(), &BEFORE_ACK);
    let (mut client, _) = ChatClient::connect(server.addr, "/ws?user=keeper").await;
    assert_eq!(client.publish_acked("kept", "m4").await, 4);
    server.signal("-TERM");
    server.wait().await;
}

/// Publishes `total` messages to `channel` without waiting, then collects
/// every ack: (request id, offset).
async fn publish_pipelined(
    client: &mut ChatClient,
    channel: &str,
    total: usize,
) -> Vec<(u64, u64)> {
    for i in 1..=total {
        client
            .send(json!({"type":"publish","channel":channel,"msg":format!("m{i}"),"id":i}))
            .await;
    }
    let mut acked = Vec::new();
    while acked.len() < total {
        let ack = client.recv_type("ack").await;
        acked.push((ack["id"].as_u64().unwrap(), ack["offset"].as_u64().unwrap()));
    }
    acked
}

/// Asserts that every acked message is stored under its offset.
async fn assert_all_stored(server: &ServerProcess, channel: &str, acked: Vec<(u64, u64)>) {
    let path = format!("/api/channels/{channel}/messages?since=0&limit=1000");
    let (_, page) = get_json(server.addr, &path).await;
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
}

/// How many fsyncs of the WAL completed in `calls` (strace lines in
/// order). A syscall another thread interrupts is printed in two lines,
/// `PID fdatasync(7</…/switchboard.db-wal> <unfinished ...>` and later
/// `PID <... fdatasync resumed>) = 0`.
fn completed_wal_fsyncs(calls: &[&String]) -> usize {
    let mut waiting: Vec<&str> = Vec::new();
    let mut completed = 0;
    for line in calls {
        let pid = line.split_whitespace().next().unwrap_or("");
        let is_sync = line.contains("fsync(") || line.contains("fdatasync(");
        if is_sync && line.contains("switchboard.db-wal") {
            if line.contains("<unfinished ...>") {
                waiting.push(pid);
            } else if line.trim_end().ends_with("= 0") {
                completed += 1;
            }
        } else if line.contains("sync resumed>") && line.trim_end().ends_with("= 0") {
            if let Some(at) = waiting.iter().position(|p| *p == pid) {
                waiting.remove(at);
                completed += 1;
            }
        }
    }
    completed
}

/// The syscalls of a server run under strace, one line each, in order.
fn traced_calls(trace: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(trace)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn an_ack_leaves_only_after_its_commit_is_fsynced() {
    // A killed process keeps the page cache, so only the syscalls show
    // whether a commit is durable before its ack: under strace, the WAL's
    // fsync (or fdatasync) must complete before the ack is written. With
    // `synchronous=OFF`, or NORMAL (no fsync per commit in WAL mode), there
    // is no such fsync and this fails.
    let data = tempfile::tempdir().unwrap();
    let trace = data.path().join("strace.log");
    let trace_arg = trace.to_str().unwrap();
    let server = ServerProcess::start_under(
        &[
            "strace",
            "-f",
            "-y",
            "-s",
            "256",
            "-o",
            trace_arg,
            "-e",
            "trace=fsync,fdatasync,write,writev,sendto,sendmsg",
        ],
        &data.path().join("store"),
        &UNLIMITED,
    );
    let (mut client, _) = ChatClient::connect(server.addr, "/ws?user=durable").await;
    for i in 0..3 {
        let marker = format!("durable-{i}");
        client
            .send(json!({"type":"publish","channel":"fsynced","msg":"m","id":marker}))
            .await;
        assert_eq!(client.recv_type("ack").await["id"], marker.as_str());
        let calls = traced_calls(&trace);
        // strace escapes the frame's quotes: `\"id\":\"durable-0\"`.
        let needle = format!("\\\"id\\\":\\\"{marker}\\\"");
        let ack = calls
            .iter()
            .position(|line| line.contains(&needle))
            .unwrap_or_else(|| panic!("no write of the ack {marker} traced"));
        // The commit's fsync: after the previous ack, done before this one.
        let synced = calls[..ack]
            .iter()
            .rev()
            .take_while(|line| i == 0 || !line.contains("durable-"));
        let mut synced: Vec<&String> = synced.collect();
        synced.reverse();
        assert!(
            completed_wal_fsyncs(&synced) > 0,
            "no completed fsync of the WAL before ack {marker}:\n{}",
            calls[..ack].join("\n")
        );
    }
    drop(client);
    server.signal("-KILL");
    server.wait().await;
}
