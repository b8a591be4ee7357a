//! `vsr status` against real `vsr start` processes: every replica answers with its state, one is
//! the primary and the others follow it in its view, all at one commit point; once the primary
//! is killed it shows as unreachable and the others show a new primary in a newer view; once
//! fewer than a replication quorum answer, the command exits 1 (the replica left still answers,
//! from whatever status it is in). A wrong cluster id gets no answer.

mod common;

use common::{wait_for, TestCluster};
use std::process::Command;
use std::time::Duration;

fn status(cluster: &TestCluster) -> (Option<i32>, Vec<serde_json::Value>) {
    let out = Command::new(common::VSR)
        .args([
            "status",
            &format!("--cluster={}", cluster.cluster),
            &format!("--addresses={}", cluster.addresses_arg()),
            "--json",
            "--timeout-ms=1000",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let rows: serde_json::Value =
        serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON: {text:?}: {e}"));
    (out.status.code(), rows.as_array().unwrap().clone())
}

/// Every reachable row normal in one view, with exactly one primary: the cluster has settled.
fn settled(rows: &[serde_json::Value]) -> bool {
    let up: Vec<&serde_json::Value> = rows.iter().filter(|r| r["reachable"] == true).collect();
    let views: std::collections::BTreeSet<u64> =
        up.iter().map(|r| r["view"].as_u64().unwrap()).collect();
    !up.is_empty()
        && up.iter().all(|r| r["status"] == "normal")
        && views.len() == 1
        && up.iter().filter(|r| r["primary"] == true).count() == 1
}

#[test]
fn status_shows_every_replica_and_fails_without_a_quorum() {
    let mut cluster = TestCluster::format("status", 3);
    cluster.start_all();
    let rows = wait_for("a settled cluster", Duration::from_secs(30), || {
        let (code, rows) = status(&cluster);
        (code == Some(0) && rows.iter().all(|r| r["reachable"] == true) && settled(&rows))
            .then_some(rows)
    });
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row["replica"], i as u64, "rows follow the address order");
        assert_eq!(row["replica_count"], 3);
        assert_eq!(row["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(row["lag"], 0);
    }

    // The table form names the same primary.
    let out = Command::new(common::VSR)
        .args([
            "status",
            &format!("--cluster={}", cluster.cluster),
            &format!("--addresses={}", cluster.addresses_arg()),
        ])
        .output()
        .unwrap();
    let table = String::from_utf8(out.stdout).unwrap();
    let primary = rows.iter().find(|r| r["primary"] == true).unwrap();
    assert!(
        table.contains(&format!("primary: replica {}", primary["replica"])),
        "{table}"
    );
    assert_eq!(
        table.lines().count(),
        5,
        "header, three rows, summary:\n{table}"
    );

    // Every replica reports the same commit point (the cluster is idle).
    let commits: std::collections::BTreeSet<u64> = rows
        .iter()
        .map(|r| r["commit_max"].as_u64().unwrap())
        .collect();
    assert_eq!(commits.len(), 1, "{rows:?}");

    // The primary killed: shown as unreachable, and within the view-change time the others
    // show a new primary in a newer view; the command still succeeds.
    let down = primary["replica"].as_u64().unwrap() as usize;
    let old_view = primary["view"].as_u64().unwrap();
    cluster.kill9(down);
    let rows = wait_for("a new primary", Duration::from_secs(30), || {
        let (code, rows) = status(&cluster);
        let new_primary = rows.iter().find(|r| r["primary"] == true).cloned();
        (code == Some(0)
            && settled(&rows)
            && new_primary.is_some_and(|p| {
                p["replica"].as_u64() != Some(down as u64) && p["view"].as_u64().unwrap() > old_view
            }))
        .then_some(rows)
    });
    assert_eq!(rows[down]["reachable"], false);
    // Refused, or (for a moment after SIGKILL, while io_uring releases the dead process's
    // listening socket) accepted and reset.
    assert!(!rows[down]["error"].as_str().unwrap().is_empty());

    // Two down: fewer than a replication quorum (2 of 3) answer, exit 1; the one left still
    // answers, whatever its status.
    let other = (down + 1) % 3;
    cluster.kill9(other);
    let (code, rows) = status(&cluster);
    assert_eq!(code, Some(1));
    let left = (other + 1) % 3;
    assert_eq!(rows[left]["reachable"], true);
    assert_eq!(rows[left]["replica"], left as u64);

    // The wrong cluster id: every replica closes the connection unanswered.
    let out = Command::new(common::VSR)
        .args([
            "status",
            &format!("--cluster={}", cluster.cluster + 1),
            &format!("--addresses={}", cluster.addresses_arg()),
            "--json",
            "--timeout-ms=1000",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("closed unanswered"), "{text}");
}
