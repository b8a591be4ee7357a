//! End-to-end: real `vsr` processes on 127.0.0.1 with a small journal, so it wraps behind
//! checkpoints many times; a backup killed for longer than its peers' journals cover must sync
//! their latest checkpoint (repair alone cannot supply the ops it missed) and converge.

mod common;

use common::{account_body, op_head, TestCluster, CREATE_ACCOUNTS};
use std::time::{Duration, Instant};
use vsr::client::net::NetClient;

/// A small journal (the smallest valid with this pipeline is 54 slots).
const SLOTS: u64 = 64;
const PIPELINE: u64 = 8;
/// `Config::checkpoint_interval`: slots / 2 - (pipeline_max + 1), 23 ops.
const INTERVAL: u64 = SLOTS / 2 - (PIPELINE + 1);
/// Accounts per request, so checkpoints grow to many chunks and sync moves several.
const ACCOUNTS_PER_REQUEST: u128 = 24;
/// Requests stop here at the latest: the ledger holds 16384 accounts (see `TestCluster::start`).
const OPS_MAX: u64 = 600;

/// The checkpoint line of `vsr inspect`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Checkpoint {
    op: u64,
    id: String,
    digest: String,
    chunks: u64,
}

fn field<'a>(line: &'a str, name: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
}

/// The newest checkpoint in the superblock, or None before the first.
fn checkpoint(inspect: &str) -> Option<Checkpoint> {
    let line = inspect
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("checkpoint:"))
        .unwrap_or_else(|| panic!("no checkpoint line:\n{inspect}"));
    if line.contains("none yet") {
        return None;
    }
    Some(Checkpoint {
        op: field(line, "op").parse().unwrap(),
        id: field(line, "id").to_string(),
        digest: field(line, "digest").to_string(),
        chunks: field(line, "chunks").parse().unwrap(),
    })
}

fn checkpoint_op(inspect: &str) -> u64 {
    checkpoint(inspect).map_or(0, |c| c.op)
}

/// The lowest op `vsr inspect` reports present in the journal.
fn op_tail(inspect: &str) -> u64 {
    let line = inspect
        .lines()
        .find(|l| l.contains("ops present:"))
        .expect("ops present line");
    let range = line.split("ops present:").nth(1).unwrap();
    range.split("..=").next().unwrap().trim().parse().unwrap()
}

/// The ops of the checkpoints a replica's log reports installed by state sync.
fn sync_done_ops(log: &str) -> Vec<u64> {
    log.lines()
        .filter_map(|l| l.split("state sync done: checkpoint op=").nth(1))
        .map(|rest| rest.split_whitespace().next().unwrap().parse().unwrap())
        .collect()
}

/// `view=` of the superblock line.
fn view(inspect: &str) -> u64 {
    let line = inspect
        .lines()
        .find(|l| l.contains(" log_view="))
        .expect("view line");
    field(line, "view").parse().unwrap()
}

struct Load {
    client: NetClient,
    next_id: u128,
    replies: Vec<u64>,
}

impl Load {
    /// A client registered with the cluster, nothing sent yet.
    fn register(cluster: &TestCluster) -> Load {
        let mut client = NetClient::new(cluster.cluster, &cluster.addresses(), 65536);
        client.register(Duration::from_secs(30)).expect("register");
        Load {
            client,
            next_id: 0,
            replies: Vec::new(),
        }
    }

    /// One request (one op) creating fresh accounts; returns its op.
    fn request(&mut self) -> u64 {
        let mut body = Vec::new();
        for _ in 0..ACCOUNTS_PER_REQUEST {
            self.next_id += 1;
            body.extend_from_slice(&account_body(self.next_id));
        }
        let reply = self
            .client
            .request(CREATE_ACCOUNTS, &body, Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("request after op {:?}: {e:?}", self.replies.last()));
        // An empty reply body: every account was created.
        assert!(
            reply.body().is_empty(),
            "op {}: some accounts failed",
            reply.header().op
        );
        self.replies.push(reply.header().op);
        reply.header().op
    }

    fn until(&mut self, op: u64) -> u64 {
        let t = Instant::now();
        let first = self.replies.len();
        let mut last = self.last();
        while last < op {
            last = self.request();
        }
        eprintln!(
            "{} requests in {:?}, up to op {last}",
            self.replies.len() - first,
            t.elapsed()
        );
        last
    }

    fn last(&self) -> u64 {
        self.replies.last().copied().unwrap_or(0)
    }
}

#[test]
fn backup_down_for_longer_than_the_journal_syncs_a_checkpoint_and_converges() {
    let started = Instant::now();
    let mut cluster = TestCluster::format_with(
        "checkpoint-sync",
        3,
        &[
            &format!("--journal-slot-count={SLOTS}"),
            &format!("--pipeline-max={PIPELINE}"),
        ],
    );
    assert!(cluster.inspect(0).contains(&format!(
        "journal_slot_count={SLOTS} pipeline_max={PIPELINE} "
    )));
    cluster.start_all();
    let mut load = Load::register(&cluster);

    // Past the first wrap, with a checkpoint on every replica.
    load.until(SLOTS + INTERVAL / 2);
    common::wait_for(
        "every replica's first checkpoint",
        Duration::from_secs(30),
        || {
            (0..3)
                .all(|r| checkpoint_op(&cluster.inspect(r)) >= INTERVAL)
                .then_some(())
        },
    );

    // Kill a backup: not the primary of the highest view any replica recorded, nor the next
    // replica in its replication ring (primary -> primary+1 -> primary+2), so the load runs at
    // full speed from the first op after the kill (the ring skips a replica only once it has
    // been silent for two ping intervals).
    let view = (0..3).map(|r| view(&cluster.inspect(r))).max().unwrap();
    let victim = (view as usize + 2) % 3;
    let peers: Vec<usize> = (0..3).filter(|&r| r != victim).collect();
    cluster.kill9(victim);
    let at_kill = cluster.inspect(victim);
    // Its journal may hold prepares it never committed; it can replay no further than its head.
    let victim_head = op_head(&at_kill);
    let victim_checkpoint = checkpoint_op(&at_kill);
    eprintln!(
        "view {view}: killed replica {victim} at head {victim_head}, checkpoint {victim_checkpoint} \
         (last reply op {})",
        load.last()
    );

    // Three checkpoint intervals and more than a whole journal beyond what it holds.
    load.until(victim_head + SLOTS + 3 * INTERVAL);
    // The peers' journals have moved past every op it could ask them to repair.
    let peer_inspects: Vec<String> = peers.iter().map(|&r| cluster.inspect(r)).collect();
    for (inspect, r) in peer_inspects.iter().zip(&peers) {
        assert!(
            op_tail(inspect) > victim_head + 1,
            "replica {r} still holds op {} that replica {victim} needs:\n{inspect}",
            victim_head + 1
        );
    }
    let peer_checkpoint = peer_inspects
        .iter()
        .map(|i| checkpoint_op(i))
        .max()
        .unwrap();
    assert!(
        peer_checkpoint > victim_head + SLOTS,
        "peers' checkpoint {peer_checkpoint} too old to prove a sync (victim head {victim_head})"
    );
    cluster.start(victim);
    eprintln!(
        "restarted replica {victim} at last reply op {}, peers' checkpoint {peer_checkpoint}",
        load.last()
    );

    // Keep a paced load going while it recovers and syncs: the cluster moves on under it. Peers
    // serve only their newest checkpoint, so a sync they outpace is abandoned and started over;
    // at this rate (a checkpoint interval in well under a second) it may finish only once the
    // load stops. The load ends when the replica reports a finished sync and 6 journals' worth
    // of ops are committed, or when the ledger is nearly full.
    let restarted = Instant::now();
    while load.last() < 6 * SLOTS
        || (sync_done_ops(&cluster.log(victim)).is_empty() && load.last() < OPS_MAX)
    {
        load.request();
        std::thread::sleep(Duration::from_millis(5));
    }
    let last = load.last();
    eprintln!(
        "load stopped at op {last}, {:?} after the restart",
        restarted.elapsed()
    );
    assert!(
        load.replies.windows(2).all(|w| w[0] < w[1]),
        "reply ops not increasing: {:?}",
        load.replies
    );

    // It reports a sync, installs a checkpoint at least as new as its peers' when it came back,
    // and its journal reaches the last acknowledged op.
    let synced = common::wait_for(
        "the restarted replica to sync and catch up",
        Duration::from_secs(60),
        || {
            let inspect = cluster.inspect(victim);
            let c = checkpoint(&inspect)?;
            let synced = !sync_done_ops(&cluster.log(victim)).is_empty();
            (synced && c.op >= peer_checkpoint && op_head(&inspect) >= last).then_some(c)
        },
    );
    let log = cluster.log(victim);
    let syncs = sync_done_ops(&log);
    eprintln!(
        "replica {victim} caught up {:?} after the restart: checkpoint {} ({} chunks); \
         syncs done at ops {syncs:?}, {} abandoned",
        restarted.elapsed(),
        synced.op,
        synced.chunks,
        log.matches("state sync abandoned").count()
    );
    // Repair could not have brought it here: the ops after its head were gone from every peer.
    let synced_op = *syncs.iter().max().unwrap();
    assert!(
        synced_op >= peer_checkpoint && synced_op > victim_head + SLOTS,
        "synced checkpoint {synced_op}: peers had {peer_checkpoint}, its head was {victim_head}"
    );

    // Idle: every replica commits the last op and checkpoints at the same op.
    let final_op = last - last % INTERVAL;
    common::wait_for(
        "every replica's checkpoint at the last checkpoint op",
        Duration::from_secs(30),
        || {
            (0..3)
                .all(|r| checkpoint_op(&cluster.inspect(r)) == final_op)
                .then_some(())
        },
    );
    for r in 0..3 {
        assert_eq!(cluster.stop(r), Some(0), "replica {r} exit status");
    }
    let inspects: Vec<String> = (0..3).map(|r| cluster.inspect(r)).collect();
    let checkpoints: Vec<Checkpoint> = inspects
        .iter()
        .map(|i| checkpoint(i).expect("inspect prints the checkpoint"))
        .collect();
    assert!(
        checkpoints.iter().all(|c| c.op == final_op
            && c.id == checkpoints[0].id
            && c.digest == checkpoints[0].digest),
        "checkpoints differ:\n{}",
        inspects.join("\n")
    );
    assert!(
        checkpoints[0].chunks > 1,
        "the checkpoint fits one chunk: {checkpoints:?}"
    );
    // The superblock also names the checkpoint before, intact in the other area: a peer whose
    // own copy is damaged can still sync to it.
    for &r in &peers {
        let previous = format!("previous checkpoint: op={} ", final_op - INTERVAL);
        assert!(inspects[r].contains(&previous), "{}", inspects[r]);
    }
    let heads: Vec<u64> = inspects.iter().map(|i| op_head(i)).collect();
    assert!(
        heads.iter().all(|&h| h == last),
        "heads {heads:?}, last reply op {last}"
    );
    for r in 0..3 {
        let log = cluster.log(r);
        assert!(!log.contains("panicked"), "replica {r} panicked:\n{log}");
    }
    eprintln!(
        "{} ops, final checkpoint {final_op} on all three in {:?}",
        last,
        started.elapsed()
    );
}

/// A replica's data file is lost for good: `vsr recover` re-creates it, the replica rejoins from
/// its peers (state sync: their journals have wrapped past everything it would need), commits
/// through the cluster's log, and once it has caught up its file no longer says `rejoining`.
/// Nothing acknowledged is lost, and its checkpoint matches its peers'.
#[test]
fn lost_data_file_re_created_with_vsr_recover_rejoins() {
    let sizes = [
        format!("--journal-slot-count={SLOTS}"),
        format!("--pipeline-max={PIPELINE}"),
    ];
    let mut cluster = TestCluster::format_with("recover", 3, &[&sizes[0], &sizes[1]]);
    cluster.start_all();
    let mut load = Load::register(&cluster);
    load.until(2 * SLOTS);

    let view = (0..3).map(|r| view(&cluster.inspect(r))).max().unwrap();
    let victim = (view as usize + 2) % 3;
    cluster.kill9(victim);
    std::fs::remove_file(cluster.path(victim)).unwrap();
    let out = std::process::Command::new(common::VSR)
        .args(["recover", &format!("--cluster={}", cluster.cluster)])
        .arg(format!("--replica={victim}"))
        .args(["--replica-count=3", "--message-size-max=65536"])
        .args(&sizes)
        .arg(cluster.path(victim))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(cluster.inspect(victim).contains("rejoining: yes"));

    // The cluster goes on without it, past another journal, then it starts from the new file.
    load.until(load.last() + SLOTS + INTERVAL);
    cluster.start(victim);
    let caught_up = |cluster: &TestCluster, last: u64| {
        let inspect = cluster.inspect(victim);
        !inspect.contains("rejoining") && op_head(&inspect) >= last
    };
    while !caught_up(&cluster, load.last()) && load.last() < OPS_MAX {
        load.request();
        std::thread::sleep(Duration::from_millis(5));
    }
    let last = load.last();
    common::wait_for(
        "the re-created replica to catch up and stop rejoining",
        Duration::from_secs(60),
        || caught_up(&cluster, last).then_some(()),
    );
    let log = cluster.log(victim);
    assert!(log.contains("rejoining (re-created data file)"), "{log}");
    assert!(log.contains("rejoined: committed through op"), "{log}");
    assert!(!sync_done_ops(&log).is_empty(), "it never synced:\n{log}");

    cluster.stop_all();
    let inspects: Vec<String> = (0..3).map(|r| cluster.inspect(r)).collect();
    let heads: Vec<u64> = inspects.iter().map(|i| op_head(i)).collect();
    assert!(
        heads.iter().all(|&h| h == last),
        "heads {heads:?}, last reply op {last}"
    );
    let victim_checkpoint = checkpoint(&inspects[victim]).expect("a checkpoint");
    let peer = (victim + 1) % 3;
    let peer_checkpoint = checkpoint(&inspects[peer]).expect("a checkpoint");
    if victim_checkpoint.op == peer_checkpoint.op {
        assert_eq!(victim_checkpoint, peer_checkpoint);
    }
    for r in 0..3 {
        let log = cluster.log(r);
        assert!(!log.contains("panicked"), "replica {r} panicked:\n{log}");
    }
}
