//! The binary's configuration surface: `--help` documents every option with
//! its default and environment variable, bad values fail start-up naming the
//! field, and precedence is flag > environment > file > default.

mod common;

use std::path::PathBuf;

use common::binary::{self, run_to_end, spawn};
use common::{Client, Connect, within};

/// Every option: its flag (without `--`) and, where the contract fixes it,
/// its default as `--help` should print it.
const OPTIONS: &[(&str, Option<&str>)] = &[
    ("listen", Some(":8080")),
    ("admin-listen", Some(":9090")),
    ("node-name", None),
    ("heartbeat-ms", Some("25000")),
    ("drain-seconds", Some("30")),
    ("log-level", Some("info")),
    ("limits-max-frame-bytes", Some("65536")),
    ("limits-max-payload-bytes", None),
    ("limits-max-rooms-per-connection", Some("256")),
    ("limits-publish-rate-per-second", Some("200")),
    ("limits-publish-burst", Some("400")),
    ("limits-outbound-queue-frames", Some("4096")),
    ("limits-outbound-queue-bytes", None),
    ("limits-max-connections", None),
    ("auth-jwt-secret", None),
    ("auth-jwt-public-key", None),
    ("auth-jwt-issuer", None),
    ("auth-jwt-audience", None),
    ("auth-jwt-leeway-seconds", None),
    ("auth-api-key", None),
    ("auth-allowed-origins", None),
    ("nats-url", None),
    ("nats-cluster-name", None),
    ("nats-token", None),
    ("nats-user", None),
    ("nats-password", None),
    ("nats-credentials-file", None),
    ("nats-tls-ca-file", None),
    ("nats-tls-cert-file", None),
    ("nats-tls-key-file", None),
    ("nats-tls-required", None),
    ("nats-request-timeout-ms", None),
    ("namespace", None),
];

/// Splits `--help` output into one block per option, keyed by its long flag.
fn help_blocks(help: &str) -> Vec<(String, String)> {
    let mut blocks: Vec<(String, String)> = Vec::new();
    for line in help.lines() {
        let trimmed = line.trim_start();
        let flag = trimmed
            .split([' ', ',', '=', '<'])
            .find(|w| w.starts_with("--"))
            .filter(|_| trimmed.starts_with('-'));
        match flag {
            Some(flag) => blocks.push((flag.trim_start_matches('-').to_owned(), line.to_owned())),
            None => {
                if let Some((_, text)) = blocks.last_mut() {
                    text.push('\n');
                    text.push_str(line);
                }
            }
        }
    }
    blocks
}

fn env_of(flag: &str) -> String {
    format!("ROOMCAST_{}", flag.replace('-', "_").to_uppercase())
}

#[tokio::test]
async fn help_lists_every_option_with_its_default_and_env_var() {
    within(20, async {
        let mut cmd = binary::command();
        cmd.arg("--help");
        let (status, stdout, stderr) = run_to_end(cmd).await;
        assert!(status.success(), "--help exits 0; stderr: {stderr}");
        // Compare with whitespace collapsed: clap may wrap long help lines.
        let blocks: Vec<(String, String)> = help_blocks(&stdout)
            .into_iter()
            .map(|(flag, text)| (flag, text.split_whitespace().collect::<Vec<_>>().join(" ")))
            .collect();
        for (flag, default) in OPTIONS {
            let Some((_, block)) = blocks.iter().find(|(f, _)| f == flag) else {
                panic!("--{flag} missing from --help:\n{stdout}");
            };
            assert!(
                block.contains("[default: "),
                "--{flag} shows no default:\n{block}"
            );
            if let Some(default) = default {
                let shown = block
                    .split("[default: ")
                    .nth(1)
                    .and_then(|rest| rest.split(']').next())
                    .unwrap_or_default();
                assert!(
                    shown.contains(default),
                    "--{flag} default {shown:?}, want {default:?}"
                );
            }
            assert!(
                block.contains(&env_of(flag)),
                "--{flag} names {}:\n{block}",
                env_of(flag)
            );
        }
        assert!(
            blocks.iter().any(|(f, _)| f == "config"),
            "--config in --help"
        );
        // Options added later are held to the same rule.
        for (flag, block) in &blocks {
            if ["help", "version", "config"].contains(&flag.as_str()) {
                continue;
            }
            assert!(
                block.contains("[default: "),
                "--{flag} shows no default:\n{block}"
            );
            assert!(
                block.contains(&env_of(flag)),
                "--{flag} names no env var:\n{block}"
            );
        }
    })
    .await;
}

/// Runs the binary expecting a start-up failure whose message names `field`.
async fn assert_rejected(args: &[&str], envs: &[(&str, &str)], field: &str) {
    let mut cmd = binary::command();
    cmd.args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]);
    cmd.args(args);
    cmd.envs(envs.iter().copied());
    let (status, stdout, stderr) = run_to_end(cmd).await;
    assert!(!status.success(), "{args:?} {envs:?} must fail start-up");
    let out = format!("{stdout}{stderr}");
    assert!(
        out.contains(field),
        "message for {args:?} {envs:?} names {field}: {out}"
    );
    assert!(
        !out.contains("roomcast-gateway listening"),
        "it never listened: {out}"
    );
}

#[tokio::test]
async fn bad_values_fail_start_up_naming_the_field() {
    within(30, async {
        assert_rejected(
            &["--limits-max-frame-bytes", "lots"],
            &[],
            "limits.max_frame_bytes",
        )
        .await;
        assert_rejected(&["--heartbeat-ms", "0"], &[], "heartbeat_ms").await;
        assert_rejected(&[], &[("ROOMCAST_HEARTBEAT_MS", "-5")], "heartbeat_ms").await;
        assert_rejected(&["--drain-seconds", "soon"], &[], "drain_seconds").await;
        assert_rejected(
            &[],
            &[("ROOMCAST_LIMITS_PUBLISH_BURST", "many")],
            "limits.publish_burst",
        )
        .await;
        assert_rejected(&["--namespace", "chat:bogus=1"], &[], "bogus").await;
        assert_rejected(
            &[],
            &[(
                "ROOMCAST_NAMESPACES",
                "chat:history_size=5;:history_ttl_seconds=0",
            )],
            "history_ttl_seconds",
        )
        .await;
        let mut cmd_args = vec!["--listen", "nowhere"];
        cmd_args.extend(["--admin-listen", "127.0.0.1:0"]);
        let mut cmd = binary::command();
        cmd.args(&cmd_args);
        let (status, stdout, stderr) = run_to_end(cmd).await;
        assert!(!status.success(), "a bad listen address fails");
        assert!(format!("{stdout}{stderr}").contains("listen"), "{stderr}");
    })
    .await;
}

#[tokio::test]
async fn an_unknown_key_in_the_file_fails_start_up() {
    within(20, async {
        let file = config_file("unknown-key", "limits:\n  max_rooms_per_conection: 3\n");
        let path = file.to_str().expect("utf-8 path");
        assert_rejected(&["--config", path], &[], "max_rooms_per_conection").await;
        let _ = std::fs::remove_file(&file);
    })
    .await;
}

/// Writes a config file in the temp dir, unique to this process and `name`.
fn config_file(name: &str, text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "roomcast-gwtests-{}-{name}.yaml",
        std::process::id()
    ));
    std::fs::write(&path, text).expect("write config file");
    path
}

#[tokio::test]
async fn flags_beat_env_and_env_beats_the_file() {
    within(30, async {
        let file = config_file("precedence", "node_name: from-file\nheartbeat_ms: 7000\n");
        let path = file.to_str().expect("utf-8 path").to_owned();

        let mut cmd = binary::command();
        cmd.args(["--config", &path]);
        let gw = spawn(cmd).await;
        assert_eq!(gw.node, "from-file", "file beats the default");
        drop(gw);

        let mut cmd = binary::command();
        cmd.args(["--config", &path]);
        cmd.env("ROOMCAST_NODE_NAME", "from-env");
        cmd.env("ROOMCAST_HEARTBEAT_MS", "8000");
        let gw = spawn(cmd).await;
        assert_eq!(gw.node, "from-env", "env beats the file");
        drop(gw);

        let mut cmd = binary::command();
        cmd.env("ROOMCAST_CONFIG", &path);
        cmd.env("ROOMCAST_NODE_NAME", "from-env");
        cmd.env("ROOMCAST_HEARTBEAT_MS", "8000");
        cmd.args(["--node-name", "from-flag"]);
        let gw = spawn(cmd).await;
        assert_eq!(gw.node, "from-flag", "flag beats env");
        let c = Client::connect(&format!("ws://{}/ws", gw.public), &Connect::default())
            .await
            .expect("upgrade");
        assert_eq!(c.welcome["node"], "from-flag");
        assert_eq!(
            c.welcome["heartbeat_ms"], 8000,
            "env beats the file for numbers too"
        );
        drop(gw);
        let _ = std::fs::remove_file(&file);
    })
    .await;
}
