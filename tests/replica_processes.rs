//! End-to-end: real `vsr` processes on 127.0.0.1, driven by the network client.

mod common;

use common::TestCluster;
use common::{account_body, op_head, CREATE_ACCOUNTS};
use std::time::Duration;
use vsr::client::net::NetClient;

#[test]
fn three_replicas_survive_primary_kill9_and_converge() {
    let mut cluster = TestCluster::format("kill9", 3);
    cluster.start_all();
    let mut client = NetClient::new(cluster.cluster, &cluster.addresses(), 65536);
    client.register(Duration::from_secs(30)).expect("register");
    let mut replies = Vec::new();
    for i in 0..20u32 {
        let reply = client
            .request(
                CREATE_ACCOUNTS,
                &account_body(i as u128 + 1),
                Duration::from_secs(30),
            )
            .expect("request");
        replies.push(reply.header().op);
    }
    // View 0's primary is replica 0 until a view change; kill whichever is primary by killing 0
    // and 1 in turn would lose a quorum, so kill replica 0 only (it is primary of view 0 or the
    // cluster has already moved on, and either way a majority remains).
    cluster.kill9(0);
    for i in 20..40u32 {
        let reply = client
            .request(
                CREATE_ACCOUNTS,
                &account_body(i as u128 + 1),
                Duration::from_secs(60),
            )
            .expect("request after kill -9");
        replies.push(reply.header().op);
    }
    cluster.start(0);
    for i in 40..50u32 {
        let reply = client
            .request(
                CREATE_ACCOUNTS,
                &account_body(i as u128 + 1),
                Duration::from_secs(60),
            )
            .expect("request after restart");
        replies.push(reply.header().op);
    }
    // Replies are strictly increasing ops: nothing executed twice, nothing lost.
    assert!(
        replies.windows(2).all(|w| w[0] < w[1]),
        "reply ops not increasing: {replies:?}"
    );
    let last = *replies.last().unwrap();
    // The restarted replica repairs its journal from its peers: wait until its data file holds
    // every acknowledged op (inspect only reads).
    common::wait_for("replica 0 to catch up", Duration::from_secs(60), || {
        (op_head(&cluster.inspect(0)) >= last).then_some(())
    });
    cluster.stop_all();
    let heads: Vec<u64> = (0..3).map(|r| op_head(&cluster.inspect(r))).collect();
    assert!(
        heads.iter().all(|&h| h >= last),
        "a replica lost acknowledged ops: heads {heads:?}, last reply op {last}"
    );
    assert!(
        heads.iter().all(|&h| h == heads[0]),
        "replicas disagree on the head: {heads:?}"
    );
}

#[test]
fn single_replica_recovers_after_kill9_mid_write() {
    let mut cluster = TestCluster::format("midwrite", 1);
    cluster.start(0);
    let addresses = cluster.addresses();
    let cluster_id = cluster.cluster;
    let mut last_acknowledged = 0;
    for round in 0..3u32 {
        // A writer thread keeps requests (each one journal write) flowing while we kill -9.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let stop = stop.clone();
            let addresses = addresses.clone();
            std::thread::spawn(move || {
                let mut client = NetClient::new(cluster_id, &addresses, 65536);
                let mut acknowledged = Vec::new();
                let mut i = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let id = ((round as u128) << 32) | (i as u128 + 1);
                    match client.request(CREATE_ACCOUNTS, &account_body(id), Duration::from_secs(2))
                    {
                        Ok(reply) => acknowledged.push(reply.header().op),
                        Err(_) => break,
                    }
                    i += 1;
                }
                acknowledged
            })
        };
        common::wait_for(
            "some requests to be acknowledged",
            Duration::from_secs(30),
            || (op_head(&cluster.inspect(0)) > last_acknowledged + 10).then_some(()),
        );
        cluster.kill9(0);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let acknowledged = writer.join().unwrap();
        last_acknowledged = acknowledged
            .iter()
            .copied()
            .max()
            .unwrap_or(last_acknowledged)
            .max(last_acknowledged);
        // Recovery classifies every slot; a torn last write is truncated, nothing acknowledged is lost.
        let inspect = cluster.inspect(0);
        assert!(
            op_head(&inspect) >= last_acknowledged,
            "round {round}: acknowledged op {last_acknowledged} lost:\n{inspect}"
        );
        cluster.start(0);
        let mut client = NetClient::new(cluster_id, &addresses, 65536);
        let reply = client
            .request(
                CREATE_ACCOUNTS,
                &account_body(1 << 60 | round as u128),
                Duration::from_secs(30),
            )
            .expect("serves after restart");
        assert!(
            reply.header().op > last_acknowledged,
            "op numbers reused after restart"
        );
        last_acknowledged = reply.header().op;
    }
    assert_eq!(cluster.stop(0), Some(0));
    assert!(
        !cluster.log(0).contains("panicked"),
        "replica panicked:\n{}",
        cluster.log(0)
    );
}

/// A backup stopped (SIGSTOP) under load finds, when it resumes, its peers' socket buffers full
/// of prepares. It used to receive and journal them faster than the writes completed, and commit
/// a reply per op, each pinning a pool message until its write was done: "message pool exhausted
/// at commit" within a second of SIGCONT. Now it must resume, catch up and keep serving.
#[test]
fn a_backup_resumed_after_sigstop_under_load_does_not_exhaust_its_pool() {
    let mut cluster = TestCluster::format("sigstop-backlog", 3);
    cluster.start_all();
    let mut client = NetClient::new(cluster.cluster, &cluster.addresses(), 65536);
    client
        .request(CREATE_ACCOUNTS, &account_body(1), Duration::from_secs(60))
        .expect("the cluster serves");
    let primary = ((0..3)
        .map(|r| common::view(&cluster.inspect(r)))
        .max()
        .unwrap()
        % 3) as usize;
    let backup = (primary + 1) % 3;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let loaders: Vec<_> = (0..4u128)
        .map(|t| {
            let (stop, addresses, id) = (stop.clone(), cluster.addresses(), cluster.cluster);
            std::thread::spawn(move || {
                let mut client = NetClient::new(id, &addresses, 65536);
                let mut n = 0u128;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    n += 1;
                    // Small requests, many ops: the backlog is counted in prepares.
                    let _ = client.request(
                        CREATE_ACCOUNTS,
                        &account_body((t + 2) << 64 | n),
                        Duration::from_secs(5),
                    );
                }
                n
            })
        })
        .collect();
    let started = op_head(&cluster.inspect(primary));
    common::wait_for("the load to get going", Duration::from_secs(30), || {
        (op_head(&cluster.inspect(primary)) > started + 200).then_some(())
    });
    for _ in 0..2 {
        cluster.signal(backup, libc::SIGSTOP);
        let before = op_head(&cluster.inspect(primary));
        common::wait_for("a backlog of 500 ops", Duration::from_secs(60), || {
            (op_head(&cluster.inspect(primary)) > before + 500).then_some(())
        });
        cluster.signal(backup, libc::SIGCONT);
        let target = op_head(&cluster.inspect(primary));
        common::wait_for("the backup to catch up", Duration::from_secs(120), || {
            assert!(
                cluster.exited(backup).is_none(),
                "the backup died:\n{}",
                cluster.log(backup)
            );
            (op_head(&cluster.inspect(backup)) >= target).then_some(())
        });
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let requests: u128 = loaders.into_iter().map(|l| l.join().unwrap()).sum();
    assert!(requests > 1000, "only {requests} requests: no load");
    assert_eq!(cluster.stop(backup), Some(0), "{}", cluster.log(backup));
    assert!(
        !cluster.log(backup).contains("panicked"),
        "{}",
        cluster.log(backup)
    );
}

/// A killed primary's connections close at once, and its backups start the view change on that
/// (once it has also been silent for half a heartbeat interval) rather than after the 2 s
/// normal-status timeout: the log names the reason, and the cluster serves again in the new view.
#[test]
fn backups_start_a_view_change_when_the_primary_connection_closes() {
    let mut cluster = TestCluster::format("primary-disconnect", 3);
    cluster.start_all();
    let mut client = NetClient::new(cluster.cluster, &cluster.addresses(), 65536);
    client
        .request(CREATE_ACCOUNTS, &account_body(1), Duration::from_secs(60))
        .expect("the cluster serves");
    let view = (0..3)
        .map(|r| common::view(&cluster.inspect(r)))
        .max()
        .unwrap();
    let primary = (view % 3) as usize;
    let backups = [(primary + 1) % 3, (primary + 2) % 3];
    let logged_before = backups.map(|b| cluster.log(b).len());
    let since_kill =
        |cluster: &TestCluster, i: usize| cluster.log(backups[i])[logged_before[i]..].to_string();
    cluster.kill9(primary);
    common::wait_for(
        "a backup to suspect the primary",
        Duration::from_secs(30),
        || {
            (0..2)
                .any(|i| since_kill(&cluster, i).contains("the connection to the primary closed"))
                .then_some(())
        },
    );
    client
        .request(CREATE_ACCOUNTS, &account_body(2), Duration::from_secs(60))
        .expect("the cluster serves in the new view");
    for (i, backup) in backups.iter().enumerate() {
        let log = since_kill(&cluster, i);
        assert!(
            !log.contains("no word from the primary within normal_status_timeout"),
            "replica {backup} waited for the timeout:\n{log}"
        );
    }
}

/// A primary whose backups are both gone says so, once, naming what it cannot do and what to
/// check (before, it logged nothing at all).
#[test]
fn a_primary_that_hears_no_quorum_warns_once() {
    let mut cluster = TestCluster::format("quorum-lost", 3);
    cluster.start_all();
    let mut client = NetClient::new(cluster.cluster, &cluster.addresses(), 65536);
    client
        .request(CREATE_ACCOUNTS, &account_body(1), Duration::from_secs(30))
        .expect("the cluster serves");
    // The primary: the replica whose latest view start was as primary.
    let primary = common::wait_for("a primary", Duration::from_secs(30), || {
        (0..3).find(|&r| {
            let log = cluster.log(r);
            let last = log.lines().rfind(|l| l.contains(" started as "));
            last.is_some_and(|l| l.contains("started as primary"))
        })
    });
    for backup in (0..3).filter(|&r| r != primary) {
        cluster.kill9(backup);
    }
    let warning = common::wait_for("the quorum warning", Duration::from_secs(60), || {
        cluster
            .log(primary)
            .lines()
            .find(|l| l.contains("hears 0 of its 2 peers"))
            .map(str::to_string)
    });
    assert!(warning.contains(" warn "), "{warning}");
    assert!(warning.contains(&format!("replica={primary}")), "{warning}");
    assert!(warning.contains("commits nothing"), "{warning}");
    // Once a view, not once a heartbeat: a few more heartbeats pass, still one line.
    std::thread::sleep(Duration::from_secs(2));
    let count = cluster
        .log(primary)
        .lines()
        .filter(|l| l.contains("hears 0 of its 2 peers"))
        .count();
    assert_eq!(count, 1, "{}", cluster.log(primary));
}
