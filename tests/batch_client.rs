//! End-to-end: many threads share one batching client; their create_transfers calls are packed
//! into shared requests and each caller gets exactly its own results.

mod common;

use std::sync::Arc;
use std::time::Duration;
use vsr::client::batch::BatchClient;
use vsr::ledger::{Account, LedgerOperation, Transfer};
use zerocopy::{FromBytes, FromZeros, IntoBytes};

#[test]
fn concurrent_callers_are_batched_and_get_their_own_results() {
    let mut cluster = common::TestCluster::format("batch", 1);
    cluster.start(0);
    let client = Arc::new(BatchClient::new(
        cluster.cluster,
        &cluster.addresses(),
        65536,
        Duration::from_secs(30),
    ));
    let mut accounts = Vec::new();
    for id in 1..=2u128 {
        let mut a = Account::new_zeroed();
        a.id = id;
        a.ledger = 700;
        a.code = 10;
        accounts.extend_from_slice(a.as_bytes());
    }
    let created = client
        .submit(LedgerOperation::CreateAccounts as u8, &accounts)
        .expect("create accounts");
    assert!(created.is_empty());

    let threads = 8u128;
    let per_thread = 25u128;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let client = client.clone();
            std::thread::spawn(move || {
                for i in 0..per_thread {
                    // Two events per call; the second is invalid on purpose (amount on ledger 0),
                    // so every caller must see exactly one failure at its own index 1.
                    let mut body = Vec::new();
                    for (k, ledger) in [(0u128, 700u32), (1, 0)] {
                        let mut tr = Transfer::new_zeroed();
                        tr.id = 1 + (t * per_thread + i) * 2 + k;
                        tr.debit_account_id = 1;
                        tr.credit_account_id = 2;
                        tr.amount = 1;
                        tr.ledger = ledger;
                        tr.code = 10;
                        body.extend_from_slice(tr.as_bytes());
                    }
                    let results = client
                        .submit(LedgerOperation::CreateTransfers as u8, &body)
                        .expect("submit");
                    assert_eq!(results.len(), 8, "exactly one failure for this caller");
                    assert_eq!(
                        u32::from_le_bytes(results[..4].try_into().unwrap()),
                        1,
                        "index is the caller's own"
                    );
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let mut ids = Vec::new();
    ids.extend_from_slice(&1u128.to_le_bytes());
    let reply = client
        .submit(LedgerOperation::LookupAccounts as u8, &ids)
        .expect("lookup");
    let account = Account::read_from_bytes(&reply[..128]).unwrap();
    assert_eq!(
        account.debits_posted,
        threads * per_thread,
        "every valid transfer applied exactly once"
    );
    // Batching happened: the journal holds fewer ops than there were calls.
    let inspect = cluster.inspect(0);
    let line = inspect
        .lines()
        .find(|l| l.contains("ops present:"))
        .unwrap();
    let head: u128 = line.rsplit("..=").next().unwrap().trim().parse().unwrap();
    let calls = threads * per_thread + 3;
    assert!(
        head < calls,
        "{calls} calls took {head} ops: nothing was batched"
    );
}
