//! End-to-end: a replica's port receives garbage, truncated frames, oversized sizes and headers
//! of another cluster. Each such connection is closed; the replica keeps serving clients.

mod common;

use common::TestCluster;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use vsr::header::commands::{PingClient, PrepareOk, Request};
use vsr::header::Header;
use zerocopy::IntoBytes;

/// True if the replica closed the connection within the deadline (EOF or reset).
fn closed_by_peer(stream: &mut TcpStream, timeout: Duration) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + timeout;
    let mut buffer = [0u8; 4096];
    while Instant::now() < deadline {
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {}
            Err(_) => return true,
        }
    }
    false
}

fn connect(cluster: &TestCluster) -> TcpStream {
    common::wait_for("the replica to listen", Duration::from_secs(20), || {
        TcpStream::connect(cluster.addresses()[0]).ok()
    })
}

fn ping_client(cluster: u128) -> Header {
    let ping = PingClient {
        view: 0,
        client: 42,
    };
    let mut header = ping.to_header(cluster);
    header.set_checksum_body(&[]);
    header.set_checksum();
    header
}

#[test]
fn hostile_bytes_close_the_connection_and_the_replica_keeps_serving() {
    let mut cluster = TestCluster::format("hostile", 1);
    cluster.start(0);

    // 1. Garbage: 4 KiB of pseudo-random bytes.
    let mut stream = connect(&cluster);
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    stream.write_all(&garbage).unwrap();
    assert!(
        closed_by_peer(&mut stream, Duration::from_secs(10)),
        "garbage did not close the connection"
    );

    // 2. A header of another cluster (checksum valid).
    let mut stream = connect(&cluster);
    stream
        .write_all(ping_client(cluster.cluster ^ 1).as_bytes())
        .unwrap();
    assert!(
        closed_by_peer(&mut stream, Duration::from_secs(10)),
        "wrong cluster did not close the connection"
    );

    // 3. An oversized size field (checksum valid, size beyond message_size_max).
    let mut stream = connect(&cluster);
    let mut oversized = ping_client(cluster.cluster);
    oversized.size = 64 * 1024 * 1024;
    oversized.set_checksum();
    stream.write_all(oversized.as_bytes()).unwrap();
    assert!(
        closed_by_peer(&mut stream, Duration::from_secs(10)),
        "oversized size did not close the connection"
    );

    // 4. A truncated frame: a request header announcing a body that never fully arrives, then a
    //    corrupt body once the peer gives up. The replica must not wait forever nor crash.
    let mut stream = connect(&cluster);
    let request = Request {
        client: 7,
        session: 1,
        request: 1,
        operation: common::CREATE_ACCOUNTS,
        ..Request::default()
    };
    let mut request = request.to_header(cluster.cluster);
    request.size = 256 + 100;
    request.checksum_body = 12345;
    request.set_checksum();
    stream.write_all(request.as_bytes()).unwrap();
    stream.write_all(&[0u8; 40]).unwrap();
    drop(stream);
    let mut stream = connect(&cluster);
    stream.write_all(request.as_bytes()).unwrap();
    stream.write_all(&[0u8; 100]).unwrap();
    assert!(
        closed_by_peer(&mut stream, Duration::from_secs(10)),
        "bad body checksum did not close the connection"
    );

    // 5. A client connection that sends a replica-only command.
    let mut stream = connect(&cluster);
    stream
        .write_all(ping_client(cluster.cluster).as_bytes())
        .unwrap();
    let prepare_ok = PrepareOk {
        op: 1,
        ..PrepareOk::default()
    };
    let mut prepare_ok = prepare_ok.to_header(cluster.cluster);
    prepare_ok.set_checksum_body(&[]);
    prepare_ok.set_checksum();
    stream.write_all(prepare_ok.as_bytes()).unwrap();
    assert!(
        closed_by_peer(&mut stream, Duration::from_secs(10)),
        "client sending replica commands was not closed"
    );

    // The replica still serves a real client.
    let mut client = vsr::client::net::NetClient::new(cluster.cluster, &cluster.addresses(), 65536);
    let reply = client
        .request(
            common::CREATE_ACCOUNTS,
            &common::account_body(1),
            Duration::from_secs(30),
        )
        .expect("replica stopped serving");
    assert!(
        reply.body().is_empty(),
        "creating a new account fails nothing"
    );
    assert_eq!(
        cluster.stop(0),
        Some(0),
        "replica did not exit cleanly on SIGTERM"
    );
    let log = cluster.log(0);
    assert!(!log.contains("panicked"), "replica panicked:\n{log}");
}

/// The count after `name=` in a replica's stopping line.
fn stop_counter(log: &str, name: &str) -> u64 {
    let line = log
        .lines()
        .find(|l| l.contains("stopping"))
        .unwrap_or_else(|| panic!("no stopping line:\n{log}"));
    let at = line.find(&format!(" {name}=")).expect(name) + name.len() + 2;
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// A replica of another cluster whose peers' ports are ours: each of our replicas it dials
/// refuses it, and says so once (per peer address, per minute), not once per attempt; it backs
/// off rather than redialing every few ticks. Measured before: ~1,300 lines per replica in 40 s.
#[test]
fn a_replica_of_another_cluster_is_refused_and_logged_once_not_per_attempt() {
    let mut ours = TestCluster::format("foreign-ours", 3);
    ours.start_all();
    // Theirs: replica 0 of a 3-replica cluster whose replicas 1 and 2 are at our addresses.
    let mut theirs = TestCluster::format("foreign-theirs", 1);
    let path = theirs.dir.join("foreign.vsr");
    let status = std::process::Command::new(common::VSR)
        .args([
            "format",
            &format!("--cluster={}", ours.cluster + 1),
            "--replica=0",
            "--replica-count=3",
            "--message-size-max=65536",
            "--journal-slot-count=512",
        ])
        .arg(&path)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let addresses = format!(
        "127.0.0.1:{},127.0.0.1:{},127.0.0.1:{}",
        theirs.ports[0], ours.ports[1], ours.ports[2]
    );
    let log = std::fs::File::create(theirs.dir.join("foreign.log")).unwrap();
    let child = std::process::Command::new(common::VSR)
        .args(["start", &format!("--addresses={addresses}")])
        .args(["--accounts-max=16384", "--transfers-max=65536"])
        .arg(&path)
        .stderr(log)
        .spawn()
        .unwrap();
    theirs.children[0] = Some(child);
    common::wait_for(
        "our replica 1 to refuse the other cluster",
        Duration::from_secs(30),
        || ours.log(1).contains("wrong cluster").then_some(()),
    );
    // A window long enough for the old behaviour to log hundreds of lines.
    let window = Instant::now();
    while window.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(theirs.stop(0), Some(0));
    let their_log = std::fs::read_to_string(theirs.dir.join("foreign.log")).unwrap();
    for replica in [1, 2] {
        let log = ours.log(replica);
        let lines = log.lines().filter(|l| l.contains("wrong cluster")).count();
        assert_eq!(lines, 1, "replica {replica} logged {lines} lines:\n{log}");
        assert!(
            log.contains(&format!("it names cluster {}", ours.cluster + 1)),
            "{log}"
        );
    }
    let unanswered = their_log
        .lines()
        .filter(|l| l.contains("closed our connection without answering"))
        .count();
    assert_eq!(unanswered, 2, "one line per peer:\n{their_log}");
    // Backing off: a dozen or so dials per peer in ~12 s, not one every few ticks.
    let dials = stop_counter(&their_log, "connected");
    assert!(dials <= 40, "{dials} connections in ~12 s:\n{their_log}");
    // Our cluster still serves.
    let mut client = vsr::client::net::NetClient::new(ours.cluster, &ours.addresses(), 65536);
    client
        .request(
            common::CREATE_ACCOUNTS,
            &common::account_body(1),
            Duration::from_secs(60),
        )
        .expect("our cluster serves");
}
