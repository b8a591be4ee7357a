//! `vsr benchmark` end to end: it starts its own temporary replicas as child processes on
//! 127.0.0.1, loads them, validates, stops them, and tells a run where a replica died apart from
//! a good one.

mod common;

use common::{wait_for, VSR};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// A benchmark process, killed if the test fails before it exits (its replicas die with it).
struct Benchmark(std::process::Child);

impl Drop for Benchmark {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn log_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vsr-e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn benchmark_args(transfers: u64, logs: &Path) -> Vec<String> {
    vec![
        "benchmark".into(),
        "--replica-count=3".into(),
        "--account-count=1000".into(),
        format!("--transfer-count={transfers}"),
        "--query-count=10".into(),
        "--validate".into(),
        format!("--log-dir={}", logs.display()),
    ]
}

/// The number after `prefix` on the line that starts with it.
fn figure(stdout: &str, prefix: &str) -> f64 {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line in:\n{stdout}"));
    line[prefix.len()..]
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no figure in {line:?}"))
}

#[test]
fn benchmark_loads_validates_and_keeps_the_replica_logs() {
    let logs = log_dir("benchmark-ok");
    let benchmark = Command::new(VSR)
        .args(benchmark_args(40_000, &logs))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let temporary = std::env::temp_dir().join(format!("vsr-benchmark-{}", benchmark.id()));
    let output = benchmark.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");

    assert!(figure(&stdout, "load accepted = ") > 0.0, "{stdout}");
    assert!(figure(&stdout, "batch latency p1 = ") > 0.0, "{stdout}");
    assert!(stdout.contains("query latency p1 = "), "{stdout}");
    assert!(
        stdout.contains("validate: ok (1000 accounts match the transfers sent)"),
        "{stdout}"
    );
    assert!(stdout.contains("replica peak RSS = "), "{stdout}");
    assert!(stdout.contains("data file size = "), "{stdout}");

    // Each replica was stopped with SIGTERM and logged its closing counters; the temporary data
    // files are gone, the logs are kept.
    for replica in 0..3 {
        let log = std::fs::read_to_string(logs.join(format!("replica-{replica}.log"))).unwrap();
        // A temporary cluster gets a random id: no other cluster on the host can take its
        // connections for its own.
        let cluster = log
            .split(&format!("replica {replica} of cluster "))
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no cluster id in:\n{log}"));
        assert_ne!(cluster, "0", "{log}");
        let closing = log
            .lines()
            .find(|l| l.contains("stopping (signal)"))
            .unwrap_or_else(|| panic!("replica {replica} logged no closing counters:\n{log}"));
        assert!(closing.contains("view_changes="), "{closing}");
        assert!(closing.contains("send_dropped="), "{closing}");
    }
    assert!(!temporary.exists(), "{} left behind", temporary.display());
    let _ = std::fs::remove_dir_all(&logs);
}

/// The temporary replica of `benchmark` (a child of that pid) that runs `<replica>.vsr`.
fn temporary_replica_pid(benchmark: u32, replica: u8) -> Option<i32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The parent pid is the second field after the parenthesised command name.
        let ppid = stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        if ppid == Some(benchmark) && cmdline.contains(&format!("/{replica}.vsr")) {
            return Some(pid);
        }
    }
    None
}

/// Starts a 3-replica benchmark and waits until each of its replicas has started a view (the load
/// is seconds away: the primary first waits for its clock to synchronize). Returns the benchmark,
/// its replicas' pids, its temporary directory and the log directory.
fn benchmark_under_way(name: &str) -> (Benchmark, Vec<i32>, PathBuf, PathBuf) {
    let logs = log_dir(name);
    let benchmark = Benchmark(
        Command::new(VSR)
            .args(benchmark_args(1_000_000, &logs))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let temporary = std::env::temp_dir().join(format!("vsr-benchmark-{}", benchmark.0.id()));
    for replica in 0..3 {
        wait_for("a started view", Duration::from_secs(60), || {
            let log = std::fs::read_to_string(logs.join(format!("replica-{replica}.log"))).ok()?;
            log.contains("started as").then_some(())
        });
    }
    let pids = (0..3)
        .map(|r| {
            wait_for("a replica's pid", Duration::from_secs(10), || {
                temporary_replica_pid(benchmark.0.id(), r)
            })
        })
        .collect();
    (benchmark, pids, temporary, logs)
}

/// Waits for the benchmark to exit; its exit status, stdout and stderr.
fn exit_of(
    benchmark: &mut Benchmark,
    within: Duration,
) -> (std::process::ExitStatus, String, String) {
    use std::io::Read;
    let status = wait_for("the benchmark to exit", within, || {
        benchmark.0.try_wait().unwrap()
    });
    let (mut stdout, mut stderr) = (String::new(), String::new());
    let child = &mut benchmark.0;
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status, stdout, stderr)
}

fn wait_gone(pids: &[i32]) {
    for pid in pids {
        wait_for("the replica to exit", Duration::from_secs(10), || {
            // A zombie (exited, not yet reaped by its new parent) counts as gone.
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next());
            matches!(state, None | Some("Z")).then_some(())
        });
    }
}

#[test]
fn benchmark_interrupted_stops_its_replicas_and_removes_their_files() {
    let (mut benchmark, pids, temporary, logs) = benchmark_under_way("benchmark-term");
    // Safety: the pid is our child's.
    assert_eq!(
        unsafe { libc::kill(benchmark.0.id() as i32, libc::SIGTERM) },
        0
    );
    let (status, _, stderr) = exit_of(&mut benchmark, Duration::from_secs(30));
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{stderr}");
    assert!(
        stderr.contains("benchmark: interrupted (signal 15)"),
        "{stderr}"
    );
    wait_gone(&pids);
    assert!(!temporary.exists(), "{} left behind", temporary.display());
    let _ = std::fs::remove_dir_all(&logs);
}

#[test]
fn benchmark_killed_takes_its_replicas_along_and_the_next_one_removes_its_files() {
    let (mut benchmark, pids, temporary, logs) = benchmark_under_way("benchmark-kill");
    benchmark.0.kill().unwrap();
    benchmark.0.wait().unwrap();
    // Orphans would go on dialing their peers' ports under the cluster's id.
    wait_gone(&pids);
    assert!(temporary.exists(), "SIGKILL leaves no chance to clean up");

    let output = Command::new(VSR)
        .args(["benchmark", "--account-count=100", "--transfer-count=1000"])
        .args(["--query-count=1"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert!(!temporary.exists(), "{} left behind", temporary.display());
    let _ = std::fs::remove_dir_all(&logs);
}

#[test]
fn benchmark_fails_when_a_replica_dies_during_the_run() {
    let (mut benchmark, pids, temporary, logs) = benchmark_under_way("benchmark-died");
    // Replica 2 is a backup (replica 1 leads view 1); the two that remain are a quorum, so the
    // load goes on and the run completes.
    // Safety: the pid is a child of the benchmark we started.
    assert_eq!(unsafe { libc::kill(pids[2], libc::SIGKILL) }, 0);
    let (status, stdout, stderr) = exit_of(&mut benchmark, Duration::from_secs(120));
    assert_eq!(status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("replica 2 exited during the benchmark (signal: 9"),
        "{stderr}"
    );
    assert!(
        stderr.contains("the figures above are not this cluster's"),
        "{stderr}"
    );
    // Its log's end is quoted, and the others were stopped as usual.
    assert!(stderr.contains("started as backup"), "{stderr}");
    assert!(!temporary.exists(), "{} left behind", temporary.display());
    let _ = std::fs::remove_dir_all(&logs);
}
