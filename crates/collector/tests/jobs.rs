//! The job pipeline with a real Redis: the manager schedules, consumers run and push results;
//! stale queues are cleared, overlapping runs skipped, disabled collections left out, failures
//! reported as `plugin.result`, malformed jobs dead-lettered.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::Agent;
use ironwork_test_support::{wait_for, RedisServer};

fn counter(a: &Agent, name: &str) -> u64 {
    a.get("/me/status").json()["counters"][name].as_u64().unwrap_or(0)
}

#[test]
fn scheduled_results_carry_the_correlation_info_and_renamed_points() {
    let a = Agent::start(
        RedisServer::start(),
        "",
        "[collection:net.ping]\nplugin_dir = @PLUGIN@\nmethod = SCRIPT\ninterval = 1\ntargets = h1, h2\n\
         correlation_info.site = paris\ncmd_and_args = ping.sh {target} {site}\n",
        &[(
            "ping.sh",
            r#"echo "[{\"name\":\"rtt\",\"tags\":{\"arg\":\"$1-$2\"},\"value\":0.25}]""#,
        )],
    );
    assert!(wait_for(Duration::from_secs(10), || a.llen("collector.data.queue") >= 4));
    let data = a.list("collector.data.queue");
    for d in &data {
        assert_eq!(d["plugin"], "net");
        assert_eq!(d["collection"], "ping");
        assert_eq!(d["correlation_info"]["site"], "paris");
        assert_eq!(d["points"][0]["name"], "net.rtt");
        let t = d["target"].as_str().unwrap();
        assert_eq!(d["points"][0]["tags"]["arg"], format!("{t}-paris"));
        assert!(d.get("error").is_none(), "{d}");
    }
    let targets: std::collections::BTreeSet<_> =
        data.iter().map(|d| d["target"].as_str().unwrap().to_string()).collect();
    assert_eq!(targets.len(), 2);
    assert_eq!(a.get("/me/status").json()["leader"], true, "a lone collector leads");
}

#[test]
fn a_failed_run_emits_plugin_result() {
    let a = Agent::start(
        RedisServer::start(),
        "",
        "[collection:db.check]\nplugin_dir = @PLUGIN@\nmethod = SCRIPT\ninterval = 1\ncmd_and_args = check.sh\n",
        &[("check.sh", "echo 'connection refused' >&2; exit 2")],
    );
    assert!(wait_for(Duration::from_secs(10), || a.llen("collector.data.queue") >= 1));
    let d = &a.list("collector.data.queue")[0];
    assert!(d["error"].as_str().unwrap().starts_with("exit"), "{d}");
    let p = &d["points"][0];
    assert_eq!(p["name"], "plugin.result");
    assert_eq!(p["value"], 1);
    assert_eq!(p["tags"]["ns"], "db");
    assert_eq!(p["tags"]["name"], "check");
    assert_eq!(p["tags"]["type"], "regular");
    assert_eq!(p["tags"]["reason"], "exit");
    assert!(counter(&a, "runs_failed") >= 1);
}

#[test]
fn a_stale_job_queue_is_cleared_and_the_discarded_jobs_counted() {
    // One run at a time, each 1.5 s, twenty targets due every second: consumers cannot keep up.
    let a = Agent::start(
        RedisServer::start(),
        "concurrency = 1\ncollection_bulk_size = 1\n",
        "[collection:slow.x]\nplugin_dir = @PLUGIN@\nmethod = SCRIPT\ninterval = 1\ntimeout = 5\n\
         targets = t1 t2 t3 t4 t5 t6 t7 t8 t9 t10 t11 t12 t13 t14 t15 t16 t17 t18 t19 t20\n\
         cmd_and_args = slow.sh\n",
        &[("slow.sh", "sleep 1.5")],
    );
    assert!(
        wait_for(Duration::from_secs(15), || counter(&a, "jobs_discarded") > 0),
        "{}",
        a.get("/me/status").text()
    );
    // What is left in the queue is never older than a couple of trigger intervals.
    assert!(a.llen("collector.job.queue") <= 40, "{}", a.llen("collector.job.queue"));
}

#[test]
fn a_run_still_going_at_the_next_slot_is_skipped_and_counted() {
    let a = Agent::start(
        RedisServer::start(),
        "",
        "[collection:slow.y]\nplugin_dir = @PLUGIN@\nmethod = SCRIPT\ninterval = 1\ntimeout = 5\n\
         cmd_and_args = slow.sh\n",
        &[("slow.sh", "sleep 2.5; echo '[{\"name\":\"done\",\"value\":1}]'")],
    );
    assert!(wait_for(Duration::from_secs(10), || counter(&a, "runs_skipped") >= 2));
    assert!(wait_for(Duration::from_secs(10), || a.llen("collector.data.queue") >= 1));
    let status = a.get("/me/status").json();
    assert!(
        status["counters"]["runs_active"].as_i64().unwrap() <= 1,
        "never two at once: {status}"
    );
}

#[test]
fn a_disabled_collection_is_not_scheduled_until_it_enables_itself() {
    let a = Agent::start(
        RedisServer::start(),
        "disable_for = 3s\n",
        "[collection:p.tick]\nplugin_dir = @PLUGIN@\nmethod = SCRIPT\ninterval = 1\ncmd_and_args = tick.sh\n",
        &[("tick.sh", "echo '[{\"name\":\"tick\",\"value\":1}]'")],
    );
    assert!(wait_for(Duration::from_secs(10), || a.llen("collector.data.queue") >= 1));
    assert_eq!(a.post("/plugins/disable?ns=p&repo=tick", b"").status, 200);
    // After the manager's next refresh nothing new arrives.
    assert!(wait_for(Duration::from_secs(5), || counter(&a, "jobs_disabled") >= 1));
    let before = a.llen("collector.data.queue");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        a.llen("collector.data.queue") <= before + 1,
        "a run already queued may finish, no more"
    );
    // disable_for passes: the manager removes it from the disabled set and runs resume.
    assert!(wait_for(Duration::from_secs(8), || a
        .redis
        .cli(&["HLEN", "collector.disabled"])
        .trim()
        == "0"));
    let after = a.llen("collector.data.queue");
    assert!(wait_for(Duration::from_secs(5), || a.llen("collector.data.queue") > after));
}

#[test]
fn a_malformed_job_is_dead_lettered_and_the_flow_goes_on() {
    let a = Agent::start(
        RedisServer::start(),
        "",
        "[collection:p.tick]\nplugin_dir = @PLUGIN@\nmethod = SCRIPT\ninterval = 1\ncmd_and_args = tick.sh\n",
        &[("tick.sh", "echo '[{\"name\":\"tick\",\"value\":1}]'")],
    );
    a.redis.cli(&["LPUSH", "collector.job.queue", "{not a job"]);
    assert!(wait_for(Duration::from_secs(5), || a
        .llen("{collector.job.queue}.dead")
        == 1));
    let dead = a.list("{collector.job.queue}.dead");
    assert!(
        dead[0]["reason"].as_str().unwrap().contains("not a collection job"),
        "{}",
        dead[0]
    );
    assert!(wait_for(Duration::from_secs(5), || a.llen("collector.data.queue") >= 1));
}

#[test]
fn sigterm_style_stop_finishes_runs_in_progress_and_pushes_them() {
    let mut a = Agent::start(
        RedisServer::start(),
        "shutdown_grace = 5s\n",
        "[collection:p.slow]\nplugin_dir = @PLUGIN@\nmethod = SCRIPT\ninterval = 0\ncmd_and_args = slow.sh\n",
        &[("slow.sh", "sleep 1; echo '[{\"name\":\"late\",\"value\":1}]'")],
    );
    // Queue a job by hand (an on-demand collection is never scheduled).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let job = format!(
        r#"{{"plugin":"p","collection":"slow","target":"localhost","scheduled_at":{now},"correlation_info":{{}}}}"#
    );
    a.redis.cli(&["LPUSH", "collector.job.queue", &job]);
    assert!(wait_for(Duration::from_secs(5), || counter(&a, "runs_active") == 1));
    a.stop();
    assert_eq!(
        a.llen("collector.data.queue"),
        1,
        "the run in progress finished and was pushed"
    );
    assert_eq!(
        a.redis.cli(&["EXISTS", "collector.manager.lease"]).trim(),
        "0",
        "the lease was released"
    );
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn push_job(a: &Agent, collection: &str) {
    let job = format!(
        r#"{{"plugin":"p","collection":"{collection}","target":"localhost","scheduled_at":{},"correlation_info":{{}}}}"#,
        now()
    );
    a.redis.cli(&["LPUSH", "collector.job.queue", &job]);
}

#[test]
fn runs_past_the_grace_period_are_aborted_their_groups_killed_and_guards_released() {
    let mut a = Agent::start(
        RedisServer::start(),
        "shutdown_grace = 1s\n",
        "[collection:p.long]\nplugin_dir = @PLUGIN@\nmethod = SCRIPT\ninterval = 0\ntimeout = 30\ncmd_and_args = long.sh\n",
        &[("long.sh", "echo $$ > pid; sleep 20")],
    );
    push_job(&a, "long");
    assert!(wait_for(Duration::from_secs(5), || counter(&a, "runs_active") == 1));
    let pidfile = a.plugin_dir().join("pid");
    let read_pid = || std::fs::read_to_string(&pidfile).ok()?.trim().parse::<u32>().ok();
    assert!(wait_for(Duration::from_secs(5), || read_pid().is_some()));
    let pid = read_pid().unwrap();
    let t = std::time::Instant::now();
    a.stop();
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "stop took {:?} with a 1 s grace",
        t.elapsed()
    );
    assert!(
        wait_for(Duration::from_secs(2), || !std::path::Path::new(&format!(
            "/proc/{pid}"
        ))
        .exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map_or(true, |s| s.contains(") Z"))),
        "the aborted run's script still runs"
    );
    assert_eq!(
        a.redis.cli(&["EXISTS", "collector.running.p.long.localhost"]).trim(),
        "0",
        "the aborted run's guard was released"
    );
}

#[test]
fn shutdown_with_redis_gone_still_ends_within_the_grace() {
    let mut a = Agent::start(
        RedisServer::start(),
        "shutdown_grace = 2s\n",
        "[collection:p.tick]\nplugin_dir = @PLUGIN@\nmethod = SCRIPT\ninterval = 2\ntimeout = 3\ncmd_and_args = tick.sh\n",
        &[("tick.sh", "sleep 1; echo '[{\"name\":\"tick\",\"value\":1}]'")],
    );
    assert!(
        wait_for(Duration::from_secs(10), || counter(&a, "runs_ok") >= 1),
        "{}",
        a.get("/me/status").text()
    );
    // Redis goes away during a run: its result cannot be pushed.
    assert!(wait_for(Duration::from_secs(5), || counter(&a, "runs_active") == 1));
    a.redis.kill();
    std::thread::sleep(Duration::from_millis(1500));
    let t = std::time::Instant::now();
    a.stop();
    assert!(t.elapsed() < Duration::from_secs(8), "stop took {:?}", t.elapsed());
}
