//! `GET /api/pipeline`: the publish path's hop histograms, as the load tool
//! reads them, and `DELETE` to start them over.

use crate::common::{ChatClient, RawClient, TestServer, WAIT, get_json};

#[tokio::test]
async fn the_pipeline_counts_every_commit_and_write_and_starts_over_on_delete() {
    let server = TestServer::start().await;
    let (mut reader, _) = ChatClient::connect(server.addr, "/ws?user=reader&channel=hops").await;
    // Its subscription starts at the offset this names.
    reader.recv_type("subscribed").await;
    let (mut writer, _) = ChatClient::connect(server.addr, "/ws?user=writer").await;
    for offset in 1..=5 {
        assert_eq!(writer.publish_acked("hops", "hello").await, offset);
        assert_eq!(reader.recv_type("message").await["offset"], offset);
    }

    // A batch is recorded once its last write is done, just after the
    // reader could see it: wait (bounded) for the fifth.
    let deadline = tokio::time::Instant::now() + WAIT;
    let hops = loop {
        let (status, hops) = get_json(server.addr, "/api/pipeline").await;
        assert_eq!(status, 200);
        if hops["first_to_last_write_us"]["count"] == 5 || tokio::time::Instant::now() > deadline {
            break hops;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    // One message per commit here: each publish waited for its ack.
    assert_eq!(hops["publish_to_commit_us"]["count"], 5, "{hops}");
    assert_eq!(hops["batch_size"]["count"], 5);
    assert_eq!(hops["batch_size"]["max"], 1);
    assert_eq!(hops["commit_us"]["count"], 5);
    // Every batch had a subscriber to write to.
    assert_eq!(hops["commit_to_first_write_us"]["count"], 5);
    assert_eq!(hops["first_to_last_write_us"]["count"], 5);
    let commit = &hops["commit_us"];
    assert!(commit["p50"].as_u64().unwrap() >= 1);
    assert!(commit["max"].as_u64() >= commit["p50"].as_u64());
    // A message's wait for its commit includes the commit.
    assert!(hops["publish_to_commit_us"]["max"].as_u64() >= commit["p50"].as_u64());

    let mut client = RawClient::connect(server.addr).await;
    let reset = client
        .request("DELETE /api/pipeline HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(reset.status, 204);
    let (_, hops) = get_json(server.addr, "/api/pipeline").await;
    assert_eq!(hops["batch_size"]["count"], 0, "{hops}");

    // A message nobody is subscribed to is committed, and written nowhere.
    assert_eq!(writer.publish_acked("empty-room", "hello").await, 1);
    let (_, hops) = get_json(server.addr, "/api/pipeline").await;
    assert_eq!(hops["batch_size"]["count"], 1, "{hops}");
    assert_eq!(hops["commit_to_first_write_us"]["count"], 0);
}
