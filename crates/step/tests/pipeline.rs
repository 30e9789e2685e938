//! The whole file pipeline, real processes and a real Redis: directory_observer → switch →
//! a final step that archives each file by rename. 10,000 files, half written in place and half
//! with the `.t`-then-rename convention, must each reach the archive exactly once with intact
//! contents; then the same run with two workers SIGKILLed at random moments and redis-server
//! restarted once must lose nothing (every file archived, or kept in trash with its reason).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ironwork_core::CancellationToken;
use ironwork_test_support::{wait_for, Persistence, RedisServer};
use md5::{Digest, Md5};
use rand::Rng;

const FILES: usize = 10_000;

struct Worker {
    args: Vec<String>,
    child: Child,
}

struct Pipeline {
    redis: RedisServer,
    _home: tempfile::TempDir,
    data: PathBuf,
    archive: PathBuf,
    observer: Option<(std::thread::JoinHandle<()>, CancellationToken)>,
    workers: Vec<Worker>,
}

impl Pipeline {
    fn start() -> Self {
        let redis = RedisServer::start_with(Persistence::AofAlways);
        let home = tempfile::tempdir().expect("tempdir");
        let data = home.path().join("var/in");
        let archive = home.path().join("archive");
        for d in ["step.switch.main", "step.sink.main"] {
            std::fs::create_dir_all(data.join(d)).expect("step dir");
        }
        std::fs::create_dir_all(&archive).expect("archive");
        let rules = home.path().join("switch_rules.ini");
        std::fs::write(&rules, "[switch_rules:alwaystrue]\n* = sink/main\n").expect("rules");
        let ini = home.path().join("directory_observer.ini");
        std::fs::write(
            &ini,
            format!(
                "[common]\nredis_unix_socket = {sock}\nredis_server = 127.0.0.1\nredis_port = 0\nforced_poll = 5\n\n\
                 [step_switch_main_1]\nactive = true\ndirectory = {data}/step.switch.main\nqueue = step.switch.main\n\n\
                 [step_sink_main_1]\nactive = true\ndirectory = {data}/step.sink.main\nqueue = step.sink.main\n",
                sock = redis.socket_path().display(),
                data = data.display()
            ),
        )
        .expect("observer ini");
        let config = directory_observer::config::Config::load(&ini).unwrap_or_else(|e| panic!("{e}"));
        let token = CancellationToken::new();
        let t = token.clone();
        let observer = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                if let Err(e) = directory_observer::run(config, t).await {
                    panic!("directory_observer failed: {e:#}");
                }
            });
        });
        let mut p = Self {
            redis,
            _home: home,
            data,
            archive,
            observer: Some((observer, token)),
            workers: Vec::new(),
        };
        let sw = vec!["switch".into(), "--rules".into(), rules.display().to_string()];
        p.spawn([sw.clone(), vec!["--consumer".into(), "sw1".into()]].concat());
        p.spawn([sw, vec!["--consumer".into(), "sw2".into()]].concat());
        for id in ["sk1", "sk2"] {
            p.spawn(vec![
                "run".into(),
                "--plugin".into(),
                "sink".into(),
                "--consumer".into(),
                id.into(),
                "--".into(),
                "mv".into(),
                "-t".into(),
                p.archive.display().to_string(),
            ]);
        }
        p
    }

    fn spawn(&mut self, args: Vec<String>) {
        let child = self.launch(&args);
        self.workers.push(Worker { args, child });
    }

    fn launch(&self, args: &[String]) -> Child {
        let split = args.iter().position(|a| a == "--").unwrap_or(args.len());
        Command::new(env!("CARGO_BIN_EXE_step"))
            .args(&args[..split])
            .arg("--redis")
            .arg(self.redis.url())
            .arg("--data-dir")
            .arg(&self.data)
            .args(&args[split..])
            .env("IRONWORK_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn step")
    }

    /// SIGKILL worker `i` and start it again with the same consumer id, as ringmaster would.
    fn kill_and_respawn(&mut self, i: usize) {
        let _ = self.workers[i].child.kill();
        let _ = self.workers[i].child.wait();
        std::thread::sleep(Duration::from_millis(50));
        let child = self.launch(&self.workers[i].args);
        self.workers[i].child = child;
    }

    fn count(dir: &Path) -> usize {
        std::fs::read_dir(dir).map(|rd| rd.count()).unwrap_or(0)
    }

    fn kept_in_trash(&self) -> BTreeMap<String, String> {
        let mut kept = BTreeMap::new();
        let Ok(steps) = std::fs::read_dir(self.data.join("trash")) else {
            return kept;
        };
        for step in steps.flatten() {
            for f in std::fs::read_dir(step.path()).into_iter().flatten().flatten() {
                let path = f.path();
                if path.extension().is_some_and(|e| e == "tags") {
                    continue;
                }
                let tags = std::fs::read_to_string(path.with_extension("tags")).unwrap_or_default();
                let reason = tags
                    .lines()
                    .find(|l| l.contains("failure_reason"))
                    .unwrap_or("(no reason)");
                let body = std::fs::read_to_string(&path).unwrap_or_default();
                kept.insert(body.lines().next().unwrap_or_default().to_string(), reason.to_string());
            }
        }
        kept
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        for w in &mut self.workers {
            let _ = w.child.kill();
            let _ = w.child.wait();
        }
        if let Some((thread, token)) = self.observer.take() {
            token.cancel();
            let _ = thread.join();
        }
    }
}

/// Write `FILES` files into the switch directory; returns name → MD5 of the contents.
fn write_files(dir: &Path) -> BTreeMap<String, String> {
    let mut rng = rand::rng();
    let mut expected = BTreeMap::new();
    for i in 0..FILES {
        let name = format!("file{i:05}.dat");
        let len = rng.random_range(16..2048);
        let noise: String = (0..len).map(|_| char::from(b'a' + rng.random_range(0..26u8))).collect();
        let body = format!("{name}\n{noise}\n");
        expected.insert(name.clone(), ironwork_step::tags::hex(&Md5::digest(body.as_bytes())));
        if i % 2 == 0 {
            std::fs::write(dir.join(&name), &body).expect("write in place");
        } else {
            let part = dir.join(format!("{name}.t"));
            std::fs::write(&part, &body).expect("write .t");
            std::fs::rename(&part, dir.join(&name)).expect("rename .t");
        }
    }
    expected
}

/// Check the archive against `expected`: no file twice, every one intact; returns the names
/// archived.
fn check_archive(p: &Pipeline, expected: &BTreeMap<String, String>) -> std::collections::BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for f in std::fs::read_dir(&p.archive).expect("archive").flatten() {
        let body = std::fs::read(f.path()).expect("read archived");
        let name = String::from_utf8_lossy(body.split(|b| *b == b'\n').next().unwrap_or_default()).into_owned();
        let sum = ironwork_step::tags::hex(&Md5::digest(&body));
        assert_eq!(
            expected.get(&name),
            Some(&sum),
            "archived {} is not an intact input",
            f.path().display()
        );
        *seen.entry(name).or_default() += 1;
    }
    let dups: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dups.is_empty(), "files archived more than once: {dups:?}");
    seen.into_keys().collect()
}

fn wait_until_settled(p: &Pipeline, timeout: Duration) -> bool {
    wait_for(timeout, || {
        Pipeline::count(&p.archive) + p.kept_in_trash().len() >= FILES
    })
}

fn assert_nothing_left(p: &Pipeline) {
    let leftovers = || {
        ["step.switch.main", "step.sink.main", "tmp/switch.main", "tmp/sink.main"]
            .iter()
            .map(|d| Pipeline::count(&p.data.join(d)))
            .sum::<usize>()
    };
    assert!(
        wait_for(Duration::from_secs(30), || leftovers() == 0),
        "files left behind: {}",
        leftovers()
    );
    let queues = || {
        ["step.switch.main", "step.sink.main"]
            .iter()
            .map(|q| p.redis.cli(&["LLEN", q]).trim().parse::<u64>().unwrap_or(u64::MAX))
            .sum::<u64>()
    };
    assert!(
        wait_for(Duration::from_secs(30), || queues() == 0),
        "messages left in the queues"
    );
}

#[test]
fn ten_thousand_files_reach_the_final_step_exactly_once() {
    let p = Pipeline::start();
    let started = Instant::now();
    let expected = write_files(&p.data.join("step.switch.main"));
    assert!(
        wait_until_settled(&p, Duration::from_secs(300)),
        "only {} of {FILES} archived",
        Pipeline::count(&p.archive)
    );
    assert_eq!(p.kept_in_trash(), BTreeMap::new(), "nothing may fail without faults");
    assert_eq!(check_archive(&p, &expected).len(), FILES);
    assert_nothing_left(&p);
    eprintln!("{FILES} files through the pipeline in {:.1?}", started.elapsed());
}

#[test]
fn workers_killed_and_redis_restarted_lose_nothing() {
    let mut p = Pipeline::start();
    let dir = p.data.join("step.switch.main");
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let writing = writing.clone();
        std::thread::spawn(move || {
            let expected = write_files(&dir);
            writing.store(false, Ordering::SeqCst);
            expected
        })
    };
    let mut rng = rand::rng();
    let mut kills = 0;
    let mut restarted = false;
    let deadline = Instant::now() + Duration::from_secs(120);
    while (kills < 6 || !restarted) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(rng.random_range(100..600)));
        if !restarted && Pipeline::count(&p.archive) > FILES / 3 {
            p.redis.restart();
            restarted = true;
            continue;
        }
        // One switch worker and one final-step worker take the kills.
        let victim = if kills % 2 == 0 { 0 } else { 2 };
        p.kill_and_respawn(victim);
        kills += 1;
    }
    let expected = writer.join().expect("writer");
    assert!(restarted, "redis-server was never restarted");
    assert!(
        wait_until_settled(&p, Duration::from_secs(300)),
        "only {} archived and {} kept of {FILES}",
        Pipeline::count(&p.archive),
        p.kept_in_trash().len()
    );
    let kept = p.kept_in_trash();
    for (name, reason) in &kept {
        assert!(expected.contains_key(name), "unknown file kept: {name}");
        assert!(reason.contains("failure_reason"), "{name} kept without a reason");
    }
    let archived = check_archive(&p, &expected);
    assert!(
        kept.keys().all(|k| !archived.contains(k)),
        "a file both archived and kept: {kept:?}"
    );
    assert_eq!(archived.len() + kept.len(), FILES, "kept: {kept:?}");
    assert_nothing_left(&p);
    eprintln!(
        "{kills} kills, one redis restart: {} archived, {} kept",
        archived.len(),
        kept.len()
    );
}
