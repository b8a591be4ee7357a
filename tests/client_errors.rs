//! End-to-end: a client session survives timeouts (the next request answers once the cluster
//! does, never "already in flight"), errors say whether the request was executed, and each
//! error names its cause: connection refused, another cluster, a short address list, no
//! primary, only backups, a primary that cannot commit.

mod common;

use common::TestCluster;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use vsr::client::net::{NetClient, NetError, Unavailable};
use vsr::header::commands::Reply;

/// A `vsr repl` fed statements one at a time through a pipe (so its notes go to stderr).
struct Repl {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: BufReader<std::process::ChildStdout>,
    stderr: BufReader<std::process::ChildStderr>,
}

impl Repl {
    fn start(cluster: u128, addresses: &str, timeout_seconds: u64) -> Repl {
        let mut child = Command::new(common::VSR)
            .args([
                "repl",
                &format!("--cluster={cluster}"),
                &format!("--addresses={addresses}"),
                &format!("--timeout={timeout_seconds}"),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let stderr = BufReader::new(child.stderr.take().unwrap());
        Repl {
            child,
            stdin,
            stdout,
            stderr,
        }
    }

    /// The next answer (bounded by the REPL's own --timeout). Piped, there is no prompt.
    fn line(&mut self) -> String {
        let mut out = String::new();
        self.stdout.read_line(&mut out).unwrap();
        assert!(!out.is_empty(), "vsr repl exited");
        out.trim_end().to_string()
    }

    /// The next note on stderr.
    fn note(&mut self) -> String {
        let mut out = String::new();
        self.stderr.read_line(&mut out).unwrap();
        assert!(!out.is_empty(), "vsr repl exited");
        out.trim_end().to_string()
    }

    /// One statement's answer.
    fn statement(&mut self, statement: &str) -> String {
        writeln!(self.stdin, "{statement}").unwrap();
        self.stdin.flush().unwrap();
        self.line()
    }
}

impl Drop for Repl {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `vsr repl --command`: (exit code, stdout, stderr).
fn repl_command(cluster: u128, addresses: &str, statement: &str) -> (i32, String, String) {
    repl_command_within(cluster, addresses, statement, 2)
}

/// `repl_command` with a deadline of `timeout_s` seconds.
fn repl_command_within(
    cluster: u128,
    addresses: &str,
    statement: &str,
    timeout_s: u64,
) -> (i32, String, String) {
    repl_run(cluster, addresses, timeout_s, &["--command", statement], "")
}

/// `vsr repl` with `args`, fed `stdin` through a pipe (closing it ends a script; every request
/// is bounded by --timeout): (exit code, stdout, stderr).
fn repl_run(
    cluster: u128,
    addresses: &str,
    timeout_s: u64,
    args: &[&str],
    stdin: &str,
) -> (i32, String, String) {
    let mut child = Command::new(common::VSR)
        .args([
            "repl",
            &format!("--cluster={cluster}"),
            &format!("--addresses={addresses}"),
            &format!("--timeout={timeout_s}"),
        ])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The issue's reproduction: `printf 'lookup_accounts 1;\nlookup_accounts 2;\n' | vsr repl
/// --addresses=<nothing there> --timeout 2` answered "a request is already in flight" to the
/// second statement, for good. Now the first says why it failed, and a later one answers once a
/// replica is up.
#[test]
fn repl_answers_again_once_a_replica_is_up() {
    let mut cluster = TestCluster::format("client-wedge", 1);
    let port = cluster.ports[0];
    let mut repl = Repl::start(cluster.cluster, &cluster.addresses_arg(), 2);
    let banner = repl.note();
    assert!(
        banner.starts_with("vsr repl: not connected"),
        "said connected with no replica: {banner}"
    );
    let refused = format!("error: not sent: connection refused on 127.0.0.1:{port}");
    assert!(banner.contains(&refused[14..]), "{banner}");
    let first = repl.statement("lookup_accounts 1;");
    assert!(first.starts_with(&refused), "{first}");

    cluster.start(0);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = repl.statement("lookup_accounts 2;");
        assert!(
            !answer.contains("in flight"),
            "the session wedged: {answer}"
        );
        if answer == "no accounts" {
            break;
        }
        assert!(
            answer.starts_with("error: not sent: "),
            "an error must name its cause and outcome: {answer}"
        );
        assert!(
            Instant::now() < deadline,
            "no answer within 60 s of starting the replica: {answer}"
        );
    }
    // And the session goes on normally.
    assert_eq!(
        repl.statement("create_accounts id=1 ledger=700 code=10;"),
        "ok"
    );
    assert!(repl.statement("lookup_accounts 1;").starts_with("id=1 "));
}

/// `vsr repl` fed a script through a pipe: (exit code, stdout, stderr).
fn repl_script(cluster: &TestCluster, script: &str) -> (i32, String, String) {
    repl_run(cluster.cluster, &cluster.addresses_arg(), 30, &[], script)
}

/// A piped script: statements end at ';' and may span lines (or share one), numbers take '_' and
/// hex, filters get TigerBeetle's defaults, stdout holds only answers (no banner, no prompt), and
/// a statement that fails makes the exit code non-zero.
#[test]
fn repl_scripts_span_lines_default_filters_and_fail_loudly() {
    let mut cluster = TestCluster::format("repl-script", 1);
    cluster.start(0);
    let script = "create_accounts id=1 ledger=700 code=10,\n  id=2 ledger=700 code=10;\n\
                  create_transfers id=0x10 debit_account_id=1 credit_account_id=2\n  \
                  amount=1_000 ledger=700 code=10;\n\
                  get_account_transfers account_id=1;\n\
                  lookup_accounts 2; query_transfers code=10\n";
    let (code, stdout, stderr) = repl_script(&cluster, script);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        5,
        "one answer a statement, nothing else: {stdout}"
    );
    assert_eq!(&lines[..2], ["ok", "ok"]);
    // The default limit and flags found the transfer (a limit of 0 matched nothing before).
    assert!(lines[2].starts_with("id=16 "), "{}", lines[2]);
    assert!(lines[2].contains(" amount=1000 "), "{}", lines[2]);
    assert!(lines[3].starts_with("id=2 "), "{}", lines[3]);
    // The last statement, without its ';', ran at the end of input.
    assert!(lines[4].starts_with("id=16 "), "{}", lines[4]);
    assert!(
        stderr.contains("vsr repl: connected to cluster"),
        "{stderr}"
    );

    let (code, stdout, stderr) = repl_script(&cluster, "lookup_accounts 1;\nlookup_accounts -5;\n");
    assert_eq!(
        code, 1,
        "a failed statement exits non-zero: {stdout} {stderr}"
    );
    assert!(stdout.starts_with("id=1 "), "{stdout}");
    assert!(
        stdout.contains("is not an unsigned integer up to 2^128-1"),
        "{stdout}"
    );
    assert!(stderr.contains("1 of 2 statements failed"), "{stderr}");
}

#[test]
fn a_timed_out_request_is_waited_for_or_retried_never_wedged() {
    let mut cluster = TestCluster::format("client-timeout", 1);
    cluster.start(0);
    let mut client = NetClient::new(cluster.cluster, &cluster.addresses(), 65536);
    client
        .request(
            common::CREATE_ACCOUNTS,
            &common::account_body(1),
            Duration::from_secs(30),
        )
        .expect("the replica serves");

    // 1. A stopped replica accepts connections but never answers: the request was sent, so
    //    its outcome is unknown.
    cluster.signal(0, libc::SIGSTOP);
    let error = client
        .request(
            common::CREATE_ACCOUNTS,
            &common::account_body(2),
            Duration::from_secs(2),
        )
        .unwrap_err();
    let NetError::Timeout { request, cause } = &error else {
        panic!("{error:?}")
    };
    assert!(!error.definite(), "{error}");
    assert!(
        matches!(cause, Unavailable::NoPrimary { .. }),
        "{cause:?}: {error}"
    );
    assert!(error.to_string().contains("no primary yet"), "{error}");
    let timed_out = *request;

    // 2. Another request waits behind it and is not sent: definite.
    let error = client
        .request(
            common::CREATE_ACCOUNTS,
            &common::account_body(3),
            Duration::from_secs(1),
        )
        .unwrap_err();
    assert!(
        matches!(error, NetError::PreviousPending { request, .. } if request == timed_out),
        "{error:?}"
    );
    assert!(error.definite());

    // 3. Once the replica runs again, a new request answers; the timed-out one's reply is kept.
    cluster.signal(0, libc::SIGCONT);
    let reply = client
        .request(
            common::CREATE_ACCOUNTS,
            &common::account_body(3),
            Duration::from_secs(30),
        )
        .expect("served after SIGCONT");
    assert!(reply.body().is_empty(), "account 3 created");
    let (late, late_reply) = client.take_late_reply().expect("the late reply");
    assert_eq!(late, timed_out);
    assert!(late_reply.body().is_empty(), "account 2 was created once");

    // 4. The same request again is a retry of the one in flight: it executes once, so its reply
    //    says "ok", not "exists".
    cluster.signal(0, libc::SIGSTOP);
    let error = client
        .request(
            common::CREATE_ACCOUNTS,
            &common::account_body(4),
            Duration::from_secs(1),
        )
        .unwrap_err();
    let NetError::Timeout { request, .. } = error else {
        panic!("{error:?}")
    };
    cluster.signal(0, libc::SIGCONT);
    let reply = client
        .request(
            common::CREATE_ACCOUNTS,
            &common::account_body(4),
            Duration::from_secs(30),
        )
        .expect("the retry is answered");
    assert_eq!(Reply::from_header(reply.header()).request, request);
    assert!(
        reply.body().is_empty(),
        "account 4 created by its one execution"
    );
    assert!(client.take_late_reply().is_none());
}

#[test]
fn errors_name_another_cluster() {
    let mut cluster = TestCluster::format("client-cluster", 1);
    cluster.start(0);
    let mut client = NetClient::new(cluster.cluster, &cluster.addresses(), 65536);
    client
        .register(Duration::from_secs(30))
        .expect("the replica serves");
    let other = cluster.cluster + 1;
    let (code, _, stderr) = repl_command(other, &cluster.addresses_arg(), "lookup_accounts 1;");
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("no replica of cluster {other} answered"))
            && stderr.contains("check --cluster"),
        "{stderr}"
    );

    // `vsr client` says the same in JSON, with the outcome.
    let mut child = Command::new(common::VSR)
        .args([
            "client",
            &format!("--cluster={other}"),
            &format!("--addresses={}", cluster.addresses_arg()),
            "--timeout=2",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(
        child.stdin.as_mut().unwrap(),
        r#"{{"operation":"lookup_accounts","events":[1]}}"#
    )
    .unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    let line: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("one JSON line per request");
    assert_eq!(line["outcome"], "not_executed", "{line}");
    assert!(
        line["error"].as_str().unwrap().contains("check --cluster"),
        "{line}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("connected"),
        "vsr client said connected without a replica of its cluster"
    );
}

#[test]
fn errors_name_a_short_address_list_only_backups_and_a_primary_that_cannot_commit() {
    let mut cluster = TestCluster::format("client-causes", 3);
    cluster.start_all();
    let mut client = NetClient::new(cluster.cluster, &cluster.addresses(), 65536);
    client
        .request(
            common::CREATE_ACCOUNTS,
            &common::account_body(1),
            Duration::from_secs(60),
        )
        .expect("the cluster serves");
    let primary = ((0..3)
        .map(|r| common::view(&cluster.inspect(r)))
        .max()
        .unwrap()
        % 3) as usize;
    let backups: Vec<usize> = (0..3).filter(|&r| r != primary).collect();
    let address = |r: usize| format!("127.0.0.1:{}", cluster.ports[r]);

    // A list holding only a backup's address.
    let (code, _, stderr) =
        repl_command(cluster.cluster, &address(backups[0]), "lookup_accounts 1;");
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("lists 1 address(es) but the cluster has 3 replicas")
            && stderr.contains("list every replica's address"),
        "{stderr}"
    );

    // The primary stopped: the backups answer (they wait out 2 s of silence before electing
    // another: a stopped process keeps its connections, so the request's 1 s deadline comes
    // first).
    cluster.signal(primary, libc::SIGSTOP);
    let (code, _, stderr) = repl_command_within(
        cluster.cluster,
        &cluster.addresses_arg(),
        "lookup_accounts 1;",
        1,
    );
    cluster.signal(primary, libc::SIGCONT);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("only backups answered")
            && stderr.contains(&format!(
                "the primary, replica {primary} at {}",
                address(primary)
            )),
        "{stderr}"
    );

    // Wait until the cluster serves again (it may have changed views), then stop both backups
    // of whichever replica is primary now: it still answers pings, but cannot commit.
    client
        .request(
            common::CREATE_ACCOUNTS,
            &common::account_body(2),
            Duration::from_secs(60),
        )
        .expect("the cluster serves again");
    let primary = ((0..3)
        .map(|r| common::view(&cluster.inspect(r)))
        .max()
        .unwrap()
        % 3) as usize;
    for r in (0..3).filter(|&r| r != primary) {
        cluster.signal(r, libc::SIGSTOP);
    }
    let error = client
        .request(
            common::CREATE_ACCOUNTS,
            &common::account_body(3),
            Duration::from_secs(2),
        )
        .unwrap_err();
    for r in (0..3).filter(|&r| r != primary) {
        cluster.signal(r, libc::SIGCONT);
    }
    assert!(!error.definite(), "{error}");
    assert!(
        error.to_string().contains(&format!(
            "the primary (replica {primary} at {}",
            address(primary)
        )) && error.to_string().contains("cannot commit"),
        "{error}"
    );
    // The timed-out request is answered once the backups run again.
    client
        .request(
            common::CREATE_ACCOUNTS,
            &common::account_body(3),
            Duration::from_secs(60),
        )
        .expect("the retry is answered");
}
