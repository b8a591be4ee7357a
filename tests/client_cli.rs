//! End-to-end through the binaries users touch: a 3-replica cluster of `vsr start` processes and
//! a `vsr client` process fed JSON lines. The primary is killed with SIGKILL mid-stream; the
//! client carries on through the view change; the primary restarts, rejoins and catches up.

mod common;

use common::TestCluster;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

struct JsonClient {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: BufReader<std::process::ChildStdout>,
}

impl JsonClient {
    fn start(cluster: &TestCluster) -> JsonClient {
        let mut child = Command::new(common::VSR)
            .args([
                "client",
                &format!("--cluster={}", cluster.cluster),
                &format!("--addresses={}", cluster.addresses_arg()),
            ])
            .arg("--timeout=60")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        JsonClient {
            child,
            stdin,
            stdout,
        }
    }

    /// One request line in, one result line out (the client answers every line, bounded by its
    /// own --timeout).
    fn call(&mut self, line: &str) -> serde_json::Value {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
        let mut out = String::new();
        self.stdout.read_line(&mut out).unwrap();
        assert!(!out.is_empty(), "vsr client exited");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON: {out:?}: {e}"))
    }
}

impl Drop for JsonClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn view_of(inspect: &str) -> u32 {
    let line = inspect
        .lines()
        .find(|l| l.trim_start().starts_with("view="))
        .unwrap();
    line.trim_start()
        .trim_start_matches("view=")
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn transfer(id: u64, debit: u64, credit: u64, amount: u64) -> String {
    format!(
        r#"{{"operation":"create_transfers","events":[{{"id":{id},"debit_account_id":{debit},"credit_account_id":{credit},"amount":{amount},"ledger":700,"code":10}}]}}"#
    )
}

#[test]
fn ledger_through_vsr_client_survives_primary_kill9() {
    let mut cluster = TestCluster::format("client-cli", 3);
    cluster.start_all();
    let mut client = JsonClient::start(&cluster);

    let created = client.call(
        r#"{"operation":"create_accounts","events":[{"id":1,"ledger":700,"code":10},{"id":2,"ledger":700,"code":10,"flags":["history"]},{"id":3,"ledger":700,"code":10,"flags":["debits_must_not_exceed_credits"]}]}"#,
    );
    assert_eq!(created, serde_json::json!({"results": []}));
    // A failing event reports its index and TigerBeetle's result name.
    let failed = client.call(&transfer(100, 3, 1, 5));
    assert_eq!(
        failed,
        serde_json::json!({"results": [{"index": 0, "result": "exceeds_credits"}]})
    );
    // A malformed line gets an error, and the client goes on.
    let error = client.call("{not json");
    assert!(error.get("error").is_some(), "{error}");

    let mut acknowledged = 0u64;
    for id in 1..=20u64 {
        assert_eq!(
            client.call(&transfer(id, 1, 2, id)),
            serde_json::json!({"results": []})
        );
        acknowledged += id;
    }

    // Kill -9 the primary of the current view.
    let primary = (view_of(&cluster.inspect(0)) % 3) as usize;
    cluster.kill9(primary);
    for id in 21..=40u64 {
        assert_eq!(
            client.call(&transfer(id, 1, 2, id)),
            serde_json::json!({"results": []}),
            "transfer {id} after kill -9"
        );
        acknowledged += id;
    }
    cluster.start(primary);
    for id in 41..=50u64 {
        assert_eq!(
            client.call(&transfer(id, 1, 2, id)),
            serde_json::json!({"results": []})
        );
        acknowledged += id;
    }
    // A retried id is idempotent: `exists`, and no double debit.
    let again = client.call(&transfer(7, 1, 2, 7));
    assert_eq!(
        again,
        serde_json::json!({"results": [{"index": 0, "result": "exists"}]})
    );

    let accounts = client.call(r#"{"operation":"lookup_accounts","events":[1,2]}"#);
    let accounts = accounts["accounts"].as_array().unwrap();
    assert_eq!(accounts.len(), 2);
    // Integers of 64 bits and more are strings (exact in any JSON reader); flags are names.
    let wide = |v: &serde_json::Value| v.as_str().and_then(|s| s.parse::<u128>().ok());
    assert_eq!(
        wide(&accounts[0]["debits_posted"]),
        Some(u128::from(acknowledged)),
        "every acknowledged transfer is there, once"
    );
    assert_eq!(
        wide(&accounts[1]["credits_posted"]),
        Some(u128::from(acknowledged))
    );
    assert_eq!(accounts[1]["id"], serde_json::json!("2"));
    assert_eq!(accounts[1]["flags"], serde_json::json!(["history"]));
    assert_eq!(accounts[1]["ledger"], serde_json::json!(700));
    assert_eq!(accounts[1]["reserved"], serde_json::json!(0));
    let transfers = client.call(r#"{"operation":"lookup_transfers","events":[1,50,999]}"#);
    assert_eq!(
        transfers["transfers"].as_array().unwrap().len(),
        2,
        "transfers 1 and 50 exist, 999 does not"
    );
    let balances = client.call(r#"{"operation":"get_account_balances","events":{"account_id":2,"flags":["credits"],"limit":100}}"#);
    assert_eq!(
        balances["balances"].as_array().unwrap().len(),
        50,
        "account 2 keeps history: one balance per transfer"
    );

    // The restarted primary catches up: its data file holds the cluster's head.
    let head = common::op_head;
    let others: Vec<usize> = (0..3).filter(|&r| r != primary).collect();
    let target = others
        .iter()
        .map(|&r| head(&cluster.inspect(r)))
        .max()
        .unwrap();
    common::wait_for(
        "the restarted primary to catch up",
        Duration::from_secs(60),
        || (head(&cluster.inspect(primary)) >= target).then_some(()),
    );
    drop(client);
    cluster.stop_all();
    let heads: Vec<u64> = (0..3).map(|r| head(&cluster.inspect(r))).collect();
    assert!(
        heads.iter().all(|&h| h == heads[0]),
        "replicas disagree on the head: {heads:?}"
    );
}

/// A client learns the cluster's message size when it registers: against replicas formatted
/// with 64 KiB messages (this harness's size), a batch that does not fit is refused by the
/// client at once, naming the limit, instead of being sent and dropped by the replicas (which
/// would look like a timeout); a batch that fits goes through.
#[test]
fn vsr_client_cuts_requests_to_the_clusters_message_size() {
    let mut cluster = TestCluster::format("client-size", 1);
    cluster.start_all();
    let mut client = JsonClient::start(&cluster);
    let accounts = |first: u64, count: u64| {
        let events: Vec<String> = (first..first + count)
            .map(|id| format!(r#"{{"id":{id},"ledger":700,"code":10}}"#))
            .collect();
        format!(
            r#"{{"operation":"create_accounts","events":[{}]}}"#,
            events.join(",")
        )
    };
    // 64 KiB less the header holds 510 events of 128 bytes.
    let too_many = client.call(&accounts(1, 511));
    assert_eq!(too_many["outcome"], "not_executed", "{too_many}");
    let error = too_many["error"].as_str().unwrap();
    assert!(error.contains("at most 65280"), "{error}");
    let fits = client.call(&accounts(1, 510));
    assert_eq!(fits["results"], serde_json::json!([]), "{fits}");
}
