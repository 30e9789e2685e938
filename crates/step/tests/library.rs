//! A Rust-native step on the library, in process: routing helpers, tags, metrics.

use std::path::PathBuf;
use std::time::Duration;

use ironwork_core::{CancellationToken, Redis};
use ironwork_step::cli::WorkerArgs;
use ironwork_step::{Basename, Failure, Step, StepFile, StepName};
use ironwork_test_support::RedisServer;

/// Tags each file, then moves it on under its own name, or copies it to two steps.
struct Splitter;

impl Step for Splitter {
    async fn process(&mut self, file: &mut StepFile) -> Result<(), Failure> {
        file.set_tag("seen_by", "splitter");
        let name = file.original_basename().to_string();
        if name.starts_with("move") {
            file.move_to_step(&target("next/main"), Basename::Current);
        } else if name.starts_with("split") {
            file.copy_to_step(&target("left/main"), Basename::OriginalUid);
            file.hardlink_to_step(&target("right/main"), Basename::New);
        } else {
            return Err(Failure::new(format!("no rule for {name}")));
        }
        Ok(())
    }
}

fn target(s: &str) -> StepName {
    StepName::parse(s).unwrap_or_else(|e| panic!("{e}"))
}

fn files(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[tokio::test]
async fn a_native_step_routes_with_the_helpers_and_carries_its_tags() {
    let redis_server = RedisServer::start();
    let home = tempfile::tempdir().expect("tempdir");
    let data: PathBuf = home.path().join("in");
    let dir = data.join("step.lib.main");
    std::fs::create_dir_all(&dir).expect("dir");
    for name in ["move-me", "split-me", "other"] {
        std::fs::write(dir.join(name), name).expect("write");
        let msg = format!(
            r#"{{"directory": "{}", "filename": "{name}", "event": "exists", "event_timestamp": 1.0}}"#,
            dir.display()
        );
        redis_server.cli(&["LPUSH", "step.lib.main", &msg]);
    }
    let args = WorkerArgs {
        plugin: Some("lib".into()),
        step: "main".into(),
        redis: Some(redis_server.url()),
        data_dir: Some(data.clone()),
        watched_directories: vec![],
        queue: None,
        consumer: Some("t1".into()),
        batch: 16,
        failure_policy: "keep".into(),
        failure_policy_move_dest_dir: None,
        retry_total: 0,
        retry_min_wait: Duration::from_secs(10),
        retry_max_wait: Duration::from_secs(120),
        retry_backoff: Duration::ZERO,
        step_limit: 1000,
        tags_ttl: Duration::from_secs(3600),
        listen: None,
    };
    let cfg = args.to_config(None).unwrap_or_else(|e| panic!("{e:?}"));
    let redis = Redis::open(&redis_server.url()).expect("redis");
    let token = CancellationToken::new();
    let worker = tokio::spawn(ironwork_step::serve(cfg, None, redis, Splitter, token.clone()));

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::time::Instant::now() < deadline
        && !(files(&data.join("step.next.main")).len() == 1
            && files(&data.join("step.left.main")).len() == 1
            && files(&data.join("step.right.main")).len() == 1
            && files(&data.join("trash/lib.main")).len() == 2)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    token.cancel();
    worker.await.expect("join").expect("worker ran cleanly");

    assert_eq!(files(&data.join("step.next.main")), ["move-me"]);
    let moved = data.join("step.next.main/move-me");
    let key = ironwork_step::tags::key_for(&moved);
    assert_eq!(
        redis_server.cli(&["HGET", &key, "latest.lib.main.seen_by"]).trim(),
        "splitter"
    );
    assert_eq!(
        redis_server.cli(&["HGET", &key, "0.lib.main.seen_by"]).trim(),
        "splitter"
    );

    let left = files(&data.join("step.left.main"));
    let uid = redis_server.cli(&[
        "HGET",
        &ironwork_step::tags::key_for(&data.join("step.left.main").join(&left[0])),
        "first.core.original_uid",
    ]);
    assert_eq!(
        left[0],
        uid.trim(),
        "OriginalUid names the copy after the file's first uid"
    );
    let right = files(&data.join("step.right.main"));
    assert_eq!(right[0].len(), 32, "New gives a fresh hex name");
    assert_eq!(
        std::fs::read_to_string(data.join("step.left.main").join(&left[0])).unwrap_or_default(),
        "split-me"
    );

    assert_eq!(files(&data.join("trash/lib.main")), ["other", "other.tags"]);
    let tags = std::fs::read_to_string(data.join("trash/lib.main/other.tags")).unwrap_or_default();
    assert!(
        tags.contains("latest.lib.main.failure_reason = no rule for other"),
        "{tags}"
    );
    assert!(
        tags.contains("latest.lib.main.seen_by = splitter"),
        "tags set before the failure are kept: {tags}"
    );
    assert!(files(&data.join("tmp/lib.main")).is_empty());
}
