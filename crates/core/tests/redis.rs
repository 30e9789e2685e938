//! The queue library against a real redis-server: ordering, backpressure, reliable pops across a
//! killed consumer, dead letters, Redis crashes with AOF, reconnection, and the leader lease.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use ironwork_core::lease::{Lease, LeaseKeeper};
use ironwork_core::messages::{DeadLetter, FileEvent, StepEvent};
use ironwork_core::{BoundedProducer, CancellationToken, Queue, Redis, ReliableConsumer};
use ironwork_test_support::{Persistence, RedisServer};

const DEADLINE: Duration = Duration::from_secs(10);

fn messages(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| format!("m{i:05}").into_bytes()).collect()
}

async fn wait_until<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test]
async fn bulk_pop_keeps_fifo_order() {
    let server = RedisServer::start();
    let redis = Redis::open(&server.url()).expect("open");
    let q = Queue::new(&redis, "fifo");
    let sent = messages(2500);
    for chunk in sent.chunks(37) {
        q.push_batch(chunk).await.expect("push");
    }
    assert_eq!(q.len().await.expect("len"), 2500);
    let mut got = Vec::new();
    loop {
        let batch = q.pop_batch(100, Duration::ZERO).await.expect("pop");
        if batch.is_empty() {
            break;
        }
        assert!(batch.len() <= 100);
        got.extend(batch);
    }
    assert_eq!(got, sent);

    // The reliable path keeps the same order.
    q.push_batch(&sent).await.expect("push");
    let consumer = ReliableConsumer::new(q.clone(), "c1").expect("consumer");
    let mut got = Vec::new();
    loop {
        let batch = consumer.pop_batch(100, Duration::ZERO).await.expect("pop");
        if batch.is_empty() {
            break;
        }
        consumer.ack(&batch).await.expect("ack");
        got.extend(batch.into_iter().map(|d| d.payload));
    }
    assert_eq!(got, sent);
    assert_eq!(consumer.in_flight().await.expect("llen"), 0);
}

#[tokio::test]
async fn blocking_pop_returns_as_soon_as_a_message_arrives() {
    let server = RedisServer::start();
    let redis = Redis::open(&server.url()).expect("open");
    let q = Queue::new(&redis, "late");
    let consumer = ReliableConsumer::new(q.clone(), "c1").expect("consumer");
    let waiting = tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        let got = consumer.pop_batch(10, Duration::from_secs(30)).await.expect("pop");
        (got, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    q.push_batch(&[b"a".as_slice(), b"b"]).await.expect("push");
    let (got, waited) = tokio::time::timeout(DEADLINE, waiting)
        .await
        .expect("returns")
        .expect("task");
    let payloads: Vec<_> = got.into_iter().map(|d| d.payload).collect();
    assert_eq!(payloads, [b"a".to_vec(), b"b".to_vec()]);
    assert!(waited < Duration::from_secs(5), "waited {waited:?}");
}

#[tokio::test]
async fn producer_at_the_bound_waits_and_resumes_when_drained() {
    let server = RedisServer::start();
    let redis = Redis::open(&server.url()).expect("open");
    let q = Queue::new(&redis, "bounded");
    let producer = BoundedProducer::new(q.clone(), 10);
    let sent = messages(25);
    producer.push_batch(&sent[..10]).await.expect("fill to the bound");
    assert_eq!(q.len().await.expect("len"), 10);

    let p = producer.clone();
    let rest = sent[10..].to_vec();
    let blocked = tokio::spawn(async move { p.push_batch(&rest).await.expect("push") });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!blocked.is_finished(), "producer did not wait at the bound");
    assert_eq!(q.len().await.expect("len"), 10, "bound exceeded");

    let mut got = Vec::new();
    while got.len() < sent.len() {
        let batch = q.pop_batch(4, Duration::from_secs(1)).await.expect("pop");
        got.extend(batch);
        let len = q.len().await.expect("len");
        assert!(len <= 10, "queue grew to {len} past its bound");
    }
    let waits = tokio::time::timeout(DEADLINE, blocked)
        .await
        .expect("producer resumed")
        .expect("task");
    assert!(waits > 0, "a blocked producer reports its waits");
    assert_eq!(got, sent, "order kept across the wait");
}

/// Runs in a child process: pops two messages reliably, says so, then hangs until killed.
#[tokio::test]
#[ignore = "helper process for killed_consumer_loses_nothing"]
async fn child_reliable_consumer() {
    let url = std::env::var("IRONWORK_TEST_REDIS").expect("run by killed_consumer_loses_nothing");
    let redis = Redis::open(&url).expect("open");
    let consumer = ReliableConsumer::new(Queue::new(&redis, "work"), "worker-1").expect("consumer");
    let got = consumer.pop_batch(2, Duration::from_secs(10)).await.expect("pop");
    println!("POPPED {}", got.len());
    tokio::time::sleep(Duration::from_secs(600)).await;
}

/// Kills the child process if the test fails before it does.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn killed_consumer_loses_nothing() {
    let server = RedisServer::start();
    let redis = Redis::open(&server.url()).expect("open");
    let q = Queue::new(&redis, "work");
    q.push_batch(&[b"m1".as_slice(), b"m2", b"m3"]).await.expect("push");

    let mut child = KillOnDrop(
        Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "child_reliable_consumer",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("IRONWORK_TEST_REDIS", server.url())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child consumer"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    let popped = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|l| l.find("POPPED").map(|at| l[at..].to_string()))
    });
    let line = tokio::time::timeout(DEADLINE, popped)
        .await
        .expect("child popped")
        .expect("task");
    assert_eq!(line.as_deref(), Some("POPPED 2"));
    child.0.kill().expect("SIGKILL the consumer");
    child.0.wait().expect("reaped");

    // The popped messages sit in the dead consumer's processing list, not lost.
    assert_eq!(q.len().await.expect("len"), 1);
    let restarted = ReliableConsumer::new(q.clone(), "worker-1").expect("consumer");
    assert_eq!(restarted.in_flight().await.expect("llen"), 2);
    assert_eq!(restarted.recover().await.expect("recover"), 2);
    let got = restarted.pop_batch(10, Duration::ZERO).await.expect("pop");
    let payloads: Vec<_> = got.iter().map(|d| d.payload.clone()).collect();
    assert_eq!(
        payloads,
        [b"m1".to_vec(), b"m2".to_vec(), b"m3".to_vec()],
        "recovered first, in order"
    );
    restarted.ack(&got).await.expect("ack");
    assert_eq!(restarted.in_flight().await.expect("llen"), 0);
    assert_eq!(q.len().await.expect("len"), 0);
}

#[tokio::test]
async fn malformed_payload_lands_in_dead_letters_with_its_reason() {
    let server = RedisServer::start();
    let redis = Redis::open(&server.url()).expect("open");
    let q = Queue::new(&redis, "step.demo.main");
    let good = StepEvent {
        directory: "/d".into(),
        filename: "f".into(),
        event: FileEvent::Created,
        event_timestamp: 1.5,
    };
    q.push_batch(&[
        b"{not json".to_vec(),
        good.to_metwork_json(),
        br#"{"directory": "/d"}"#.to_vec(),
    ])
    .await
    .expect("push");
    let consumer = ReliableConsumer::new(q.clone(), "c").expect("consumer");
    let batch = consumer.pop_batch(10, Duration::ZERO).await.expect("pop");
    assert_eq!(batch.len(), 3);
    let decoded = consumer.decode::<StepEvent>(batch, 1000).await.expect("decode");
    assert_eq!(decoded.len(), 1);
    assert_eq!(decoded[0].1, good);
    assert_eq!(
        consumer.in_flight().await.expect("llen"),
        1,
        "dead letters leave the processing list"
    );
    consumer.ack(&[decoded[0].0.clone()]).await.expect("ack");
    assert_eq!(consumer.in_flight().await.expect("llen"), 0);

    assert_eq!(q.dead_len().await.expect("dead len"), 2);
    let raw = server.cli(&["LRANGE", "{step.demo.main}.dead", "0", "-1"]);
    let letters: Vec<DeadLetter> = raw
        .lines()
        .map(|l| serde_json::from_str(l).expect("dead letter is json"))
        .collect();
    let by_payload = |p: &str| letters.iter().find(|l| l.payload == p).expect("letter present");
    let bad = by_payload("{not json");
    assert_eq!(bad.queue, "step.demo.main");
    assert_eq!(bad.consumer, "c");
    assert!(bad.reason.starts_with("invalid StepEvent"), "{}", bad.reason);
    assert!(by_payload(r#"{"directory": "/d"}"#).reason.contains("missing field"));
}

#[tokio::test]
async fn dead_letter_list_is_capped() {
    let server = RedisServer::start();
    let redis = Redis::open(&server.url()).expect("open");
    let q = Queue::new(&redis, "q");
    let mut dropped = 0;
    for i in 0..5 {
        dropped += q
            .dead_letter("c", format!("p{i}").as_bytes(), "bad", 3)
            .await
            .expect("dead");
    }
    assert_eq!(dropped, 2);
    assert_eq!(q.dead_len().await.expect("len"), 3);
}

#[tokio::test]
async fn acknowledged_pushes_survive_a_redis_crash_with_aof() {
    let mut server = RedisServer::start_with(Persistence::AofAlways);
    let redis = Redis::open(&server.url()).expect("open");
    let q = Queue::new(&redis, "durable");
    let sent = messages(300);
    q.push_batch(&sent[..200]).await.expect("push");

    server.restart(); // SIGKILL, then start on the same socket and AOF
                      // The same handle reconnects by itself.
    assert_eq!(q.len().await.expect("len after restart"), 200);
    q.push_batch(&sent[200..]).await.expect("push after restart");
    let got = q.pop_batch(1000, Duration::ZERO).await.expect("pop");
    assert_eq!(got, sent);
}

#[tokio::test]
async fn clients_ride_out_a_redis_outage() {
    let mut server = RedisServer::start_with(Persistence::AofAlways);
    let redis = Redis::open(&server.url()).expect("open");
    let q = Queue::new(&redis, "outage");
    q.push(b"before").await.expect("push");
    assert!(redis.is_healthy());

    server.kill();
    let q2 = q.clone();
    let pending = tokio::spawn(async move { q2.push(b"during").await.expect("push retried") });
    assert!(
        wait_until(DEADLINE, || async { !redis.is_healthy() }).await,
        "the outage shows in health"
    );
    assert!(!pending.is_finished());
    server.start_again();
    tokio::time::timeout(DEADLINE, pending)
        .await
        .expect("push completes after Redis returns")
        .expect("task");
    assert!(redis.is_healthy());
    let got = q.pop_batch(10, Duration::ZERO).await.expect("pop");
    assert_eq!(got, [b"before".to_vec(), b"during".to_vec()]);
}

async fn wait_for_leader(keepers: &[&LeaseKeeper]) -> Option<usize> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while tokio::time::Instant::now() < deadline {
        let leaders: Vec<usize> = keepers
            .iter()
            .enumerate()
            .filter(|(_, k)| k.is_leader())
            .map(|(i, _)| i)
            .collect();
        assert!(leaders.len() <= 1, "two leaders at once");
        if let [one] = leaders[..] {
            return Some(one);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

#[tokio::test]
async fn lease_has_one_holder_and_moves_when_the_holder_stops_renewing() {
    let server = RedisServer::start();
    let redis = Redis::open(&server.url()).expect("open");
    let ttl = Duration::from_millis(600);
    let token = CancellationToken::new();
    let leases = [
        Lease::new(&redis, "lease.test", ttl),
        Lease::new(&redis, "lease.test", ttl),
    ];
    let tokens: Vec<String> = leases.iter().map(|l| l.token().to_string()).collect();
    let mut keepers: Vec<Option<LeaseKeeper>> = leases
        .into_iter()
        .map(|l| Some(LeaseKeeper::spawn(l, token.child_token())))
        .collect();

    let both: Vec<&LeaseKeeper> = keepers.iter().flatten().collect();
    let first = wait_for_leader(&both).await.expect("someone leads");
    // Over several TTLs, never two leaders, and leadership stays put while renewed.
    let until = tokio::time::Instant::now() + ttl * 3;
    while tokio::time::Instant::now() < until {
        let leaders = both.iter().filter(|k| k.is_leader()).count();
        assert_eq!(leaders, 1, "exactly one leader while the holder renews");
        assert!(both[first].is_leader());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let holder = Lease::new(&redis, "lease.test", ttl).holder().await.expect("get");
    assert_eq!(holder.as_deref(), Some(tokens[first].as_str()));

    // The holder freezes: no renew, no release. The other takes over once the TTL runs out.
    let started = tokio::time::Instant::now();
    keepers[first].take().expect("keeper").abandon();
    let second = 1 - first;
    let other = keepers[second].as_ref().expect("keeper");
    assert!(
        wait_until(DEADLINE, || async { other.is_leader() }).await,
        "no takeover"
    );
    let took = started.elapsed();
    assert!(took <= ttl * 3, "takeover took {took:?} with a TTL of {ttl:?}");
    let holder = Lease::new(&redis, "lease.test", ttl).holder().await.expect("get");
    assert_eq!(holder.as_deref(), Some(tokens[second].as_str()));

    token.cancel();
    keepers[second].take().expect("keeper").join().await;
    let holder = Lease::new(&redis, "lease.test", ttl).holder().await.expect("get");
    assert_eq!(holder, None, "released on shutdown");
}

#[tokio::test]
async fn a_lease_taken_over_behind_the_holders_back_is_reported_lost() {
    let server = RedisServer::start();
    let redis = Redis::open(&server.url()).expect("open");
    let ttl = Duration::from_millis(600);
    let keeper = LeaseKeeper::spawn(Lease::new(&redis, "lease.stolen", ttl), CancellationToken::new());
    let mut leader = keeper.watch();
    assert!(wait_until(DEADLINE, || async { keeper.is_leader() }).await);
    leader.borrow_and_update();
    server.cli(&["SET", "lease.stolen", "someone-else", "PX", "60000"]);
    tokio::time::timeout(DEADLINE, leader.changed())
        .await
        .expect("change reported")
        .expect("alive");
    assert!(!*leader.borrow());
    // Our release must not delete the new holder's key.
    let lease = Lease::new(&redis, "lease.stolen", ttl);
    assert!(!lease.release().await.expect("release"));
    assert_eq!(server.cli(&["GET", "lease.stolen"]).trim(), "someone-else");
}

#[tokio::test]
async fn a_holder_cut_off_from_redis_steps_down_before_its_ttl_ends() {
    let mut server = RedisServer::start();
    let redis = Redis::open(&server.url()).expect("open");
    let ttl = Duration::from_millis(900);
    let keeper = LeaseKeeper::spawn(Lease::new(&redis, "lease.cut", ttl), CancellationToken::new());
    assert!(wait_until(DEADLINE, || async { keeper.is_leader() }).await);
    let cut = tokio::time::Instant::now();
    server.kill();
    assert!(
        wait_until(DEADLINE, || async { !keeper.is_leader() }).await,
        "still claims leadership"
    );
    assert!(
        cut.elapsed() < ttl + Duration::from_millis(300),
        "stepped down after {:?}",
        cut.elapsed()
    );
}

#[tokio::test]
async fn acks_in_any_order_remove_exactly_the_acknowledged() {
    let server = RedisServer::start();
    let redis = Redis::open(&server.url()).expect("open");
    let q = Queue::new(&redis, "acks");
    q.push_batch(&messages(5)).await.expect("push");
    let consumer = ReliableConsumer::new(q.clone(), "c").expect("consumer");
    let got = consumer.pop_batch(5, Duration::ZERO).await.expect("pop");
    assert_eq!(got.len(), 5);
    // Out of order: the newest and a middle one first.
    assert_eq!(consumer.ack(&[got[4].clone(), got[2].clone()]).await.expect("ack"), 2);
    let left = server.cli(&["LRANGE", "{acks}.processing.c", "0", "-1"]);
    assert_eq!(left.trim(), "m00003\nm00001\nm00000");
    // Then the oldest two, in delivery order (the LTRIM path), then the last.
    assert_eq!(consumer.ack(&got[..2]).await.expect("ack"), 2);
    assert_eq!(
        server.cli(&["LRANGE", "{acks}.processing.c", "0", "-1"]).trim(),
        "m00003"
    );
    assert_eq!(consumer.ack(&[got[3].clone()]).await.expect("ack"), 1);
    assert_eq!(consumer.in_flight().await.expect("llen"), 0);
    // Acknowledging again is harmless.
    assert_eq!(consumer.ack(&got).await.expect("ack"), 0);
}

#[tokio::test]
async fn a_pop_larger_than_luas_unpack_limit_moves_everything_and_loses_nothing() {
    let server = RedisServer::start();
    let redis = Redis::open(&server.url()).expect("client");
    let q = Queue::new(&redis, "big");
    let sent = messages(9000);
    q.push_batch(&sent).await.expect("push");
    let consumer = ReliableConsumer::new(q.clone(), "c1").expect("consumer");
    let got = consumer.pop_batch(8500, Duration::ZERO).await.expect("pop");
    assert_eq!(got.len(), 8500);
    assert_eq!(consumer.in_flight().await.expect("llen"), 8500);
    assert_eq!(q.len().await.expect("llen"), 500);
    let payloads: Vec<_> = got.iter().map(|d| d.payload.clone()).collect();
    assert_eq!(payloads, sent[..8500]);
    consumer.ack(&got).await.expect("ack");
    assert_eq!(consumer.in_flight().await.expect("llen"), 0);
}
