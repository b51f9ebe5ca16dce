//! The `--config` TOML file and `switchboard config`, through the binary:
//! precedence flag > environment > file > default, errors that name the
//! key and line, redacted secrets, and a printout the file takes back.

use std::collections::BTreeMap;
use std::process::{Command, Output};

use crate::common::ServerProcess;

fn switchboard(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    command.args(args);
    // Only what the test sets: the runner's own SWITCHBOARD_* stay out.
    for (name, _) in std::env::vars() {
        if name.starts_with("SWITCHBOARD_") {
            command.env_remove(name);
        }
    }
    command.envs(env.iter().copied());
    command.output().unwrap()
}

/// `switchboard config`'s lines as key → (value, source).
fn printed(output: &Output) -> BTreeMap<String, (String, String)> {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone())
        .unwrap()
        .lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| {
            let (setting, source) = line.rsplit_once("  # ").unwrap();
            let (key, value) = setting.split_once(" = ").unwrap();
            (key.to_owned(), (value.to_owned(), source.to_owned()))
        })
        .collect()
}

fn write(dir: &tempfile::TempDir, text: &str) -> String {
    let path = dir.path().join("switchboard.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn flags_beat_the_environment_which_beats_the_file_which_beats_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        &dir,
        "# every kind of value\n\
         max-connections = 5000\n\
         publish-rate = 2.5\n\
         ping-interval = \"7s\"\n\
         no-deflate = true\n\
         allowed-origins = [\"https://a.example\", \"https://b.example\"]\n\
         sse-retry = \"9s\"\n\
         api-key = \"hunter2\"\n\
         redis-url = \"redis://:hunter2@db:6379/0\"\n",
    );
    let output = switchboard(
        &["config", "--config", &file, "--max-connections", "9"],
        &[
            ("SWITCHBOARD_PING_INTERVAL", "3s"),
            ("SWITCHBOARD_PUBLISH_BURST", "11"),
        ],
    );
    let settings = printed(&output);
    let from_file = format!("file {file}");
    let expect = |key: &str, value: &str, source: &str| {
        assert_eq!(
            settings[key],
            (value.to_owned(), source.to_owned()),
            "{key}"
        );
    };
    expect("max-connections", "9", "flag");
    expect(
        "ping-interval",
        "\"3s\"",
        "environment SWITCHBOARD_PING_INTERVAL",
    );
    expect(
        "publish-burst",
        "11",
        "environment SWITCHBOARD_PUBLISH_BURST",
    );
    expect("publish-rate", "2.5", &from_file);
    expect("no-deflate", "true", &from_file);
    expect(
        "allowed-origins",
        "[\"https://a.example\", \"https://b.example\"]",
        &from_file,
    );
    expect("sse-retry", "\"9s\"", &from_file);
    expect("max-subscriptions", "100", "default");
    expect("api-key", "\"<redacted>\"", &from_file);
    expect("redis-url", "\"redis://:<redacted>@db:6379/0\"", &from_file);
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("# tls-cert = (unset)  # default"), "{text}");
}

#[test]
fn the_printout_is_a_settings_file_that_reads_back_the_same() {
    let first = printed(&switchboard(
        &["config", "--max-connections", "77", "--idle-timeout", "90s"],
        &[],
    ));
    let dir = tempfile::tempdir().unwrap();
    let text: String = first
        .iter()
        .map(|(key, (value, _))| format!("{key} = {value}\n"))
        .collect();
    let file = write(&dir, &text);
    let again = printed(&switchboard(&["config", "--config", &file], &[]));
    let values = |settings: &BTreeMap<String, (String, String)>| -> Vec<(String, String)> {
        settings
            .iter()
            .map(|(key, (value, _))| (key.clone(), value.clone()))
            .collect()
    };
    assert_eq!(values(&again), values(&first));
    assert_eq!(again["max-connections"].1, format!("file {file}"));
}

#[test]
fn a_mistake_in_the_file_stops_the_start_naming_the_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    for (text, wanted) in [
        (
            "listen = \"127.0.0.1:0\"\n\nmax-conections = 5\n",
            ":3: unknown key `max-conections` (did you mean `max-connections`?)",
        ),
        (
            "# comment\nmax-connections = \"lots\"\n",
            ":2: `max-connections`: invalid value 'lots'",
        ),
        (
            "idle-timeout = 5\n",
            ":1: `idle-timeout`: invalid value '5'",
        ),
        (
            "deflate-level = 12\n",
            ":1: `deflate-level`: invalid value '12'",
        ),
        (
            "no-deflate = \"yes\"\n",
            ":1: `no-deflate`: expected true or false",
        ),
        (
            "ping-interval = [\"1s\"]\n",
            ":1: `ping-interval`: expected one value, not a list",
        ),
        ("[tls]\ncert = \"x\"\n", ":1: unknown key `tls`"),
        ("\n\nlisten = = 1\n", ":3: "),
        ("config = \"other.toml\"\n", ":1: unknown key `config`"),
    ] {
        let file = write(&dir, text);
        for command in [&["--config", &file][..], &["config", "--config", &file][..]] {
            let output = switchboard(command, &[]);
            assert_eq!(output.status.code(), Some(2), "{text}");
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(
                stderr.contains(&format!("{file}{wanted}")),
                "{text}: {stderr}"
            );
        }
    }
    let output = switchboard(&["--config", "/nonexistent/switchboard.toml"], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/switchboard.toml"));
}

#[tokio::test]
async fn the_server_runs_with_the_file_given_in_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(&dir, "sse-retry = \"7s\"\nlisten = \"127.0.0.1:1\"\n");
    let data = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with_env(data.path(), &[], &[("SWITCHBOARD_CONFIG", &file)]);
    // The flag (--listen 127.0.0.1:0) beat the file's listen; the file's
    // sse-retry is what the stream announces.
    let mut stream = reqwest::get(format!("http://{}/sse?channel=lobby", server.addr))
        .await
        .unwrap();
    let first = stream.chunk().await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&first);
    assert!(text.contains("retry: 7000"), "{text}");
}
