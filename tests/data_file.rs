//! End-to-end checks of the data file rules: one process per data file, foreign or unformatted
//! files refused with a clear error, no formatting over an existing file.

mod common;

use common::VSR;
use std::process::{Command, Stdio};
use std::time::Duration;

fn format(path: &std::path::Path, cluster: u128, replica: u8, count: u8) {
    let status = Command::new(VSR)
        .args([
            "format",
            &format!("--cluster={cluster}"),
            &format!("--replica={replica}"),
            &format!("--replica-count={count}"),
        ])
        .args(["--message-size-max=65536", "--journal-slot-count=64"])
        .arg(path)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn a_second_process_on_the_same_data_file_is_refused() {
    let mut cluster = common::TestCluster::format("lock", 1);
    cluster.start(0);
    let mut client = vsr::client::net::NetClient::new(cluster.cluster, &cluster.addresses(), 65536);
    client
        .request(
            common::CREATE_ACCOUNTS,
            &common::account_body(1),
            Duration::from_secs(30),
        )
        .expect("first replica serves");
    let port = common::free_ports(1)[0];
    let out = Command::new(VSR)
        .args(["start", &format!("--addresses={port}")])
        .arg(cluster.path(0))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("in use by another process"), "{stderr}");
    // `inspect` reads it anyway, and says the picture is as of the last superblock write.
    let running = "a replica is running on this file";
    assert!(
        cluster.inspect(0).contains(running),
        "{}",
        cluster.inspect(0)
    );
    cluster.stop(0);
    assert!(
        !cluster.inspect(0).contains(running),
        "{}",
        cluster.inspect(0)
    );
}

#[test]
fn unformatted_and_foreign_files_are_refused_clearly() {
    let dir = std::env::temp_dir().join(format!("vsr-refuse-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let garbage = dir.join("garbage.vsr");
    std::fs::write(&garbage, vec![7u8; 1 << 20]).unwrap();
    let out = Command::new(VSR)
        .args(["start", "--addresses=3999"])
        .arg(&garbage)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("unformatted or damaged"), "{stderr}");

    // A file of a 3-replica cluster started with one address: a usage error naming the mismatch.
    let foreign = dir.join("foreign.vsr");
    format(&foreign, 9, 1, 3);
    let out = Command::new(VSR)
        .args(["start", "--addresses=3999"])
        .arg(&foreign)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cluster of 3"), "{stderr}");

    // Formatting over an existing file is refused.
    let out = Command::new(VSR)
        .args(["format", "--cluster=9", "--replica=0", "--replica-count=1"])
        .arg(&foreign)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to overwrite"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn version_names_commit_and_protocol() {
    for args in [vec!["version"], vec!["--version"]] {
        let out = Command::new(VSR).args(&args).output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("commit "), "{args:?}: {text}");
        assert!(
            text.contains(&format!("protocol {}", vsr::header::PROTOCOL_VERSION)),
            "{args:?}: {text}"
        );
    }
}

#[test]
fn recover_creates_a_rejoining_file_and_refuses_what_it_cannot_do_safely() {
    let dir = std::env::temp_dir().join(format!("vsr-recover-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("1.vsr");
    let recover = |count: &str, path: &std::path::Path| {
        Command::new(VSR)
            .args(["recover", "--cluster=9", "--replica=1"])
            .arg(format!("--replica-count={count}"))
            .args(["--message-size-max=65536", "--journal-slot-count=64"])
            .arg(path)
            .output()
            .unwrap()
    };

    // A one-replica cluster has no other copy to rejoin from.
    let out = recover("1", &path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no other copy"), "{stderr}");
    assert!(!path.exists());

    let out = recover("3", &path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let inspect = Command::new(VSR)
        .arg("inspect")
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&inspect.stdout);
    assert!(text.contains("rejoining: yes"), "{text}");

    // A file that is there (damaged, or not lost at all) is never overwritten.
    let out = recover("3", &path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("move the damaged file aside"), "{stderr}");

    // A plainly formatted file is not rejoining.
    let plain = dir.join("plain.vsr");
    format(&plain, 9, 1, 3);
    let inspect = Command::new(VSR)
        .arg("inspect")
        .arg(&plain)
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&inspect.stdout).contains("rejoining"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `vsr start --development`: a small file, the port of one's choosing, a "ready" line naming
/// the command to run next, and a busy port refused before anything is formatted.
#[test]
fn development_replica_is_small_takes_a_port_and_checks_it_first() {
    let dir = std::env::temp_dir().join(format!("vsr-development-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("first")).unwrap();
    std::fs::create_dir_all(dir.join("second")).unwrap();
    let port = common::free_ports(1)[0];
    let mut replica = Command::new(VSR)
        .args(["start", "--development", &format!("--addresses={port}")])
        .current_dir(dir.join("first"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Kill the replica however the test ends.
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stderr = replica.stderr.take().unwrap();
    let mut replica = Kill(replica);
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)) {
            let _ = sender.send(line.unwrap_or_default());
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let ready = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = receiver
            .recv_timeout(left)
            .expect("the replica said ready within 60 s");
        if line.contains("ready.") {
            break line;
        }
    };
    assert!(
        ready.contains(&format!("vsr repl --cluster=0 --addresses={port}")),
        "{ready}"
    );
    let size = std::fs::metadata(dir.join("first/data/0_0.vsr"))
        .unwrap()
        .len();
    assert!(size <= 8 << 20, "a development data file of {size} bytes");
    // Tens of MB resident: the small ledger and a pool of 64 KiB messages (56 MiB measured).
    let status = std::fs::read_to_string(format!("/proc/{}/status", replica.0.id())).unwrap();
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(
        rss_kib < 100 << 10,
        "a development replica of {rss_kib} KiB resident"
    );

    // Refused, from a directory with no data, with nothing formatted: returns the error.
    let refused = |args: &[String], what: &str| {
        let out = Command::new(VSR)
            .args(["start", "--development"])
            .args(args)
            .current_dir(dir.join("second"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            !dir.join("second/data").exists(),
            "formatted before checking the {what}"
        );
        stderr
    };
    // The same port again.
    let stderr = refused(&[format!("--addresses={port}")], "port");
    assert!(stderr.contains("cannot listen on"), "{stderr}");
    assert!(stderr.contains("--addresses=<port>"), "{stderr}");
    // A free replica port but a busy metrics port.
    let other = common::free_ports(1)[0];
    let args = [format!("--addresses={other}"), format!("--metrics={port}")];
    let stderr = refused(&args, "metrics port");
    assert!(stderr.contains("--metrics: cannot listen on"), "{stderr}");
    assert!(
        replica.0.try_wait().unwrap().is_none(),
        "the first replica is still up"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every option of every subcommand says what it is, and the top-level help shows examples.
#[test]
fn help_describes_every_option_and_shows_examples() {
    let help = |args: &[&str]| {
        let out = Command::new(VSR).args(args).output().unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let top = help(&["--help"]);
    assert!(top.contains("Examples:"), "{top}");
    assert!(top.contains("vsr start --development"), "{top}");
    for command in [
        "format",
        "recover",
        "start",
        "client",
        "repl",
        "benchmark",
        "inspect",
        "status",
    ] {
        let text = help(&[command, "--help"]);
        let lines: Vec<&str> = text.lines().collect();
        let mut in_section = false;
        for (i, line) in lines.iter().enumerate() {
            if *line == "Options:" || *line == "Arguments:" {
                in_section = true;
                continue;
            }
            if line.is_empty() || !line.starts_with(' ') {
                in_section = false;
                continue;
            }
            // "  --name <NAME>  description", or the description on the next line, indented
            // deeper (clap's layout when the options are wide).
            let item = line.trim_start();
            let indent = line.len() - item.len();
            if in_section && (item.starts_with('-') || item.starts_with('<')) {
                // A "[default: ...]" alone describes nothing.
                let says = |d: &str| !d.trim().is_empty() && !d.trim().starts_with("[default");
                let inline = item.split_once("  ").is_some_and(|(_, d)| says(d));
                let below = lines.get(i + 1).is_some_and(|next| {
                    let text = next.trim_start();
                    says(text) && next.len() - text.len() > indent && !text.starts_with('-')
                });
                assert!(
                    inline || below,
                    "vsr {command}: {line:?} has no description"
                );
            }
        }
    }
}
