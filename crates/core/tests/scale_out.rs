//! The queue library on a real three-master Redis Cluster and on a real Sentinel setup: every
//! queue operation works whichever master holds the queue, pipelines that span slots keep their
//! order, the lease works, and a Sentinel failover loses no acknowledged message.

use std::collections::BTreeSet;
use std::time::Duration;

use ironwork_core::connection::{key_slot, Endpoint};
use ironwork_core::lease::Lease;
use ironwork_core::{BoundedProducer, Queue, Redis, ReliableConsumer};
use ironwork_test_support::cluster::{RedisCluster, RedisSentinel};
use ironwork_test_support::wait_for;

fn messages(prefix: &str, n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| format!("{prefix}{i:05}").into_bytes()).collect()
}

/// Queue names whose slots fall on each of the three masters (slots 0-5460, 5461-10922,
/// 10923-16383 after `--cluster create` with three nodes).
fn queues_on_every_master() -> Vec<String> {
    let mut found: [Option<String>; 3] = Default::default();
    for i in 0.. {
        let name = format!("step.p{i}.main");
        let node = (key_slot(name.as_bytes()) as usize * 3) / 16384;
        found[node.min(2)].get_or_insert(name);
        if found.iter().all(Option::is_some) {
            break;
        }
    }
    found.into_iter().flatten().collect()
}

#[test]
fn urls_of_every_kind_parse() {
    assert_eq!(
        Endpoint::parse("redis+cluster://a:7000,b").expect("cluster"),
        Endpoint::Cluster {
            nodes: vec!["redis://a:7000".into(), "redis://b:6379".into()],
            username: None,
            password: None
        }
    );
    assert_eq!(
        Endpoint::parse("redis+sentinel://:pw@s1,s2:26380/main/3").expect("sentinel"),
        Endpoint::Sentinel {
            sentinels: vec!["redis://s1:26379".into(), "redis://s2:26380".into()],
            master: "main".into(),
            db: 3,
            username: None,
            password: Some("pw".into())
        }
    );
    assert!(matches!(Endpoint::parse("/run/r.sock"), Ok(Endpoint::Single(u)) if u == "redis+unix:///run/r.sock"));
    for bad in [
        "redis+sentinel://s1:26379",
        "redis+cluster://",
        "redis+cluster://a:x",
        "redis+cluster://a/2",
    ] {
        assert!(Endpoint::parse(bad).is_err(), "{bad} accepted");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reliable_queues_work_on_every_master_of_a_cluster() {
    let cluster = RedisCluster::start();
    let redis = Redis::open(&cluster.url()).expect("open");
    let names = queues_on_every_master();
    for name in &names {
        let q = Queue::new(&redis, name.as_str());
        let producer = BoundedProducer::new(q.clone(), 10_000);
        let sent = messages(name, 1500);
        producer.push_batch(&sent).await.expect("bounded push");

        // A consumer takes a batch, dies (dropped without ack); its successor recovers it.
        let first = ReliableConsumer::new(q.clone(), "c1").expect("consumer");
        let taken = first.pop_batch(700, Duration::from_secs(1)).await.expect("pop");
        assert_eq!(taken.len(), 700);
        drop(first);
        let again = ReliableConsumer::new(q.clone(), "c1").expect("consumer");
        assert_eq!(again.recover().await.expect("recover"), 700);

        // A peer that stopped heartbeating leaves its in-flight messages to the others.
        let peer = ReliableConsumer::new(q.clone(), "peer").expect("peer");
        peer.heartbeat(Duration::from_millis(200)).await.expect("beat");
        let held = peer.pop_batch(10, Duration::from_secs(1)).await.expect("peer pop");
        assert_eq!(held.len(), 10);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(again.recover_orphans().await.expect("orphans"), 10);

        // Everything, in order, once; one bad message dead-lettered; some handed back.
        let mut got = Vec::new();
        let mut handed_back = false;
        loop {
            let batch = again.pop_batch(400, Duration::from_millis(200)).await.expect("pop");
            if batch.is_empty() {
                break;
            }
            let keep = if handed_back { batch.len() } else { batch.len() - 5 };
            let (keep, back) = batch.split_at(keep);
            if !back.is_empty() {
                assert_eq!(again.hand_back(back).await.expect("hand back"), 5);
                handed_back = true;
            }
            again.ack(keep).await.expect("ack");
            got.extend(keep.iter().map(|d| d.payload.clone()));
        }
        assert!(handed_back);
        assert_eq!(got.len(), sent.len(), "{name}: duplicated messages");
        let unique: BTreeSet<_> = got.iter().collect();
        assert_eq!(unique, sent.iter().collect(), "{name}: lost messages");
        q.push(b"not json").await.expect("push");
        let bad = again.pop_batch(1, Duration::from_secs(1)).await.expect("pop");
        let decoded = again.decode::<serde_json::Value>(bad, 100).await.expect("decode");
        assert!(decoded.is_empty());
        assert_eq!(q.dead_len().await.expect("dead len"), 1);
        assert_eq!(again.in_flight().await.expect("in flight"), 0);
    }
    // The queues really are spread over the three masters.
    assert!(
        cluster.sizes().iter().all(|&n| n > 0),
        "keys per master: {:?}",
        cluster.sizes()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_pipelines_across_slots_keep_their_order_and_transactions_stay_in_one_slot() {
    let cluster = RedisCluster::start();
    let redis = Redis::open(&cluster.url()).expect("open");
    let names = queues_on_every_master();
    let mut pipe = redis::pipe();
    for round in 0..3 {
        for name in &names {
            pipe.rpush(name, format!("{round}")).ignore();
            pipe.llen(name);
        }
    }
    let lens: Vec<u64> = redis.pipeline("cross-slot", &pipe).await.expect("pipeline");
    assert_eq!(lens, [1, 1, 1, 2, 2, 2, 3, 3, 3]);
    for name in &names {
        assert_eq!(cluster.cli(&["LRANGE", name, "0", "-1"]).trim(), "0\n1\n2");
    }
    let mut tx = redis::pipe();
    tx.atomic().lpush(&names[0], "x").lpush(&names[1], "y");
    let err = redis
        .pipeline::<()>("cross-slot transaction", &tx)
        .await
        .expect_err("a transaction across slots must be refused");
    assert!(err.to_string().to_uppercase().contains("CROSSSLOT"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_on_a_cluster_has_one_holder() {
    let cluster = RedisCluster::start();
    let a = Redis::open(&cluster.url()).expect("open");
    let b = Redis::open(&cluster.url()).expect("open");
    let la = Lease::new(&a, "collector.manager.lease", Duration::from_secs(5));
    let lb = Lease::new(&b, "collector.manager.lease", Duration::from_secs(5));
    assert!(la.try_acquire().await.expect("a"));
    assert!(!lb.try_acquire().await.expect("b"));
    assert!(la.renew().await.expect("renew"));
    assert!(!lb.renew().await.expect("b renew"));
    assert!(la.release().await.expect("release"));
    assert!(lb.try_acquire().await.expect("b after"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_loses_no_acknowledged_message() {
    let mut setup = RedisSentinel::start();
    let redis = Redis::open(&setup.url()).expect("open");
    let q = Queue::new(&redis, "collector.data.queue");
    let consumer = ReliableConsumer::new(q.clone(), "c").expect("consumer");
    let before = messages("a", 200);
    q.push_batch(&before).await.expect("push");
    let got = consumer.pop_batch(100, Duration::from_secs(1)).await.expect("pop");
    consumer.ack(&got).await.expect("ack");
    // Everything written so far is on the replica before the master dies.
    let replicated = wait_for(Duration::from_secs(10), || {
        setup.replica.cli(&["LLEN", "collector.data.queue"]).trim() == "100"
    });
    assert!(replicated);
    let old = setup.master.port;
    setup.master.kill();
    let failed_over = wait_for(Duration::from_secs(30), || {
        setup.master_port().is_some_and(|p| p != old)
    });
    assert!(failed_over, "sentinel did not fail over");

    // The same handles carry on against the promoted replica.
    let after = messages("b", 50);
    tokio::time::timeout(Duration::from_secs(30), q.push_batch(&after))
        .await
        .expect("push after failover in time")
        .expect("push after failover");
    let mut rest = Vec::new();
    loop {
        let batch = tokio::time::timeout(
            Duration::from_secs(30),
            consumer.pop_batch(100, Duration::from_millis(200)),
        )
        .await
        .expect("pop in time")
        .expect("pop");
        if batch.is_empty() {
            break;
        }
        consumer.ack(&batch).await.expect("ack");
        rest.extend(batch.into_iter().map(|d| d.payload));
    }
    let mut expected: Vec<Vec<u8>> = before[100..].to_vec();
    expected.extend(after);
    assert_eq!(rest, expected);
    assert!(redis.is_healthy());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_switchover_is_followed_by_the_same_handle() {
    let setup = RedisSentinel::start();
    let redis = Redis::open(&setup.url()).expect("open");
    let q = Queue::new(&redis, "metrics.send.queue");
    q.push(b"before").await.expect("push");
    let old = setup.master_port().expect("master");
    let replicated = wait_for(Duration::from_secs(10), || {
        setup.replica.cli(&["LLEN", "metrics.send.queue"]).trim() == "1"
    });
    assert!(replicated);
    // A planned switchover: the old master stays up, as a replica of the new one. (Sentinel
    // answers NOGOODSLAVE until it has fresh news of the replica.)
    let asked = wait_for(Duration::from_secs(30), || {
        setup.sentinel.cli(&["SENTINEL", "FAILOVER", "ironwork"]).trim() == "OK"
    });
    assert!(asked, "sentinel refused the failover");
    let switched = wait_for(Duration::from_secs(30), || {
        setup.master_port().is_some_and(|p| p != old) && setup.master.cli(&["ROLE"]).contains("slave")
    });
    assert!(switched, "sentinel did not switch over");
    // Writes the old master took before it turned replica are lost with it (replication is
    // asynchronous); from here on the handle must reach the new master.
    tokio::time::timeout(Duration::from_secs(30), q.push(b"after"))
        .await
        .expect("push after the switchover in time")
        .expect("push after the switchover");
    assert_eq!(
        setup.replica.cli(&["LRANGE", "metrics.send.queue", "0", "-1"]).trim(),
        "after\nbefore"
    );
    assert!(
        setup.master.cli(&["ROLE"]).contains("slave"),
        "the old master is a replica now"
    );
}
