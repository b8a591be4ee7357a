//! `vsr start --metrics`: a real replica process serves the Prometheus text format on
//! `GET /metrics`, parsed here with a Prometheus parser; its commit counter and request latency
//! histogram grow under load; other requests get 404 or 400; a thousand malformed, partial or
//! idle connections to the endpoint do not stall the replica's clients; and connections that
//! hold every slot are shut down at their deadline.

mod common;

use common::{account_body, free_ports, wait_for, TestCluster, CREATE_ACCOUNTS};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use vsr::client::net::NetClient;

/// One HTTP/1.1 exchange: the status code and the body (the server closes after answering).
fn http(port: u16, request: &[u8]) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.write_all(request).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let code = head.split(' ').nth(1)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))?
        .parse()
        .ok()?;
    assert_eq!(length, body.len(), "Content-Length matches the body");
    Some((code, body.to_string()))
}

fn scrape(port: u16) -> Option<prometheus_parse::Scrape> {
    let (code, body) = http(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")?;
    assert_eq!(code, 200);
    let lines = body.lines().map(|l| Ok(l.to_string()));
    Some(prometheus_parse::Scrape::parse(lines).expect("valid exposition text"))
}

/// The value of the sample `name` (with every label in `labels`).
fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let sample = scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .unwrap_or_else(|| panic!("no sample {name} {labels:?}"));
    match &sample.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => *v,
        prometheus_parse::Value::Histogram(buckets) => {
            buckets.iter().map(|b| b.count).fold(0.0, f64::max)
        }
        other => panic!("{name}: {other:?}"),
    }
}

fn replica_with_metrics(name: &str) -> (TestCluster, u16) {
    let mut cluster = TestCluster::format(name, 1);
    let port = free_ports(1)[0];
    cluster
        .start_args
        .push(format!("--metrics=127.0.0.1:{port}"));
    cluster.start_all();
    (cluster, port)
}

#[test]
fn metrics_are_served_and_grow_under_load() {
    let (cluster, port) = replica_with_metrics("metrics");
    let first = wait_for(
        "a scrape of a normal replica",
        Duration::from_secs(30),
        || scrape(port).filter(|s| value(s, "vsr_status", &[("status", "normal")]) == 1.0),
    );
    assert_eq!(value(&first, "vsr_primary", &[]), 1.0);
    assert_eq!(value(&first, "vsr_replica_count", &[]), 1.0);
    assert_eq!(value(&first, "vsr_lag", &[]), 0.0);
    let commits_before = value(&first, "vsr_commits_total", &[]);

    let mut client = NetClient::new(cluster.cluster, &cluster.addresses(), 65536);
    client.register(Duration::from_secs(30)).expect("register");
    for i in 0..20u32 {
        client
            .request(
                CREATE_ACCOUNTS,
                &account_body(i as u128 + 1),
                Duration::from_secs(30),
            )
            .expect("request");
    }
    let after = scrape(port).expect("a scrape after the load");
    assert!(value(&after, "vsr_commits_total", &[]) >= commits_before + 20.0);
    assert!(value(&after, "vsr_request_seconds_count", &[]) >= 20.0);
    assert!(value(&after, "vsr_prepare_commit_seconds_count", &[]) >= 20.0);
    assert!(
        value(&after, "vsr_commit_min", &[]) >= 21.0,
        "register and 20 requests"
    );
    assert!(value(&after, "vsr_requests_total", &[]) >= 21.0);
    assert!(value(&after, "vsr_prepares_total", &[]) >= 21.0);
    assert!(value(&after, "vsr_journal_write_seconds_count", &[]) >= 21.0);
    assert!(value(&after, "vsr_storage_written_bytes_total", &[]) > 21.0 * 4096.0);
    let open = [("reason", "open")];
    assert_eq!(
        value(&after, "vsr_view_changes_by_reason_total", &open),
        1.0
    );
    let (buckets, count) = after
        .samples
        .iter()
        .find_map(|s| match &s.value {
            prometheus_parse::Value::Histogram(b) if s.metric == "vsr_request_seconds" => {
                Some((b.clone(), value(&after, "vsr_request_seconds_count", &[])))
            }
            _ => None,
        })
        .expect("the request latency histogram");
    assert!(
        buckets.windows(2).all(|w| w[0].count <= w[1].count),
        "cumulative buckets"
    );
    assert!(buckets.last().unwrap().count <= count);

    assert_eq!(http(port, b"GET /other HTTP/1.1\r\n\r\n").unwrap().0, 404);
    assert_eq!(
        http(port, b"POST /metrics HTTP/1.1\r\n\r\n").unwrap().0,
        400
    );
    assert_eq!(http(port, b"garbage\r\n\r\n").unwrap().0, 400);
    let last = scrape(port).unwrap();
    assert!(value(&last, "vsr_metrics_bad_requests_total", &[]) >= 3.0);
}

#[test]
fn a_thousand_hostile_connections_do_not_stall_the_replica() {
    let (cluster, port) = replica_with_metrics("metrics-hostile");
    wait_for("a scrape", Duration::from_secs(30), || scrape(port));
    let mut client = NetClient::new(cluster.cluster, &cluster.addresses(), 65536);
    client.register(Duration::from_secs(30)).expect("register");
    let mut account = 0u128;
    // Four waves of 250 connections held open while the client works: a quarter idle, a
    // quarter with half a request line (slow), a quarter with a request that never ends its
    // headers, a quarter with binary garbage.
    for wave in 0..4 {
        let mut hostile = Vec::new();
        for i in 0..250 {
            let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
                continue;
            };
            let bytes: &[u8] = match i % 4 {
                0 => b"",
                1 => b"GET /metr",
                2 => b"GET /metrics HTTP/1.1\r\nX: y\r\n",
                _ => &[0xff, 0x00, 0x13, 0x37, 0x0d],
            };
            let _ = stream.write_all(bytes);
            hostile.push(stream);
        }
        assert!(hostile.len() >= 200, "wave {wave}: connections refused");
        // Every request completes in well under its deadline while they hang on.
        for _ in 0..10 {
            account += 1;
            client
                .request(
                    CREATE_ACCOUNTS,
                    &account_body(account),
                    Duration::from_secs(5),
                )
                .unwrap_or_else(|e| panic!("wave {wave}: request stalled: {e:?}"));
        }
        drop(hostile);
    }
    let after = wait_for(
        "a scrape after the hostile waves",
        Duration::from_secs(10),
        || scrape(port),
    );
    assert!(value(&after, "vsr_commits_total", &[]) >= 40.0);

    // Slow clients holding every slot are shut down at their deadline (2 s): scrapes get
    // through again while they still hold their connections open.
    let idle: Vec<TcpStream> = (0..16)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", port)).ok())
        .collect();
    assert_eq!(idle.len(), 16);
    let past_idle = wait_for(
        "a scrape past 16 idle connections",
        Duration::from_secs(10),
        || scrape(port).filter(|s| value(s, "vsr_metrics_timed_out_total", &[]) >= 16.0),
    );
    assert!(value(&past_idle, "vsr_metrics_scrapes_total", &[]) >= 2.0);
    drop(idle);
}
