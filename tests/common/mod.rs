//! Real `vsr` processes on 127.0.0.1 for end-to-end tests. Every wait is on a condition with a
//! bounded deadline; every process is killed when the harness drops.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const VSR: &str = env!("CARGO_BIN_EXE_vsr");

pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

pub struct TestCluster {
    pub dir: PathBuf,
    pub cluster: u128,
    pub ports: Vec<u16>,
    pub children: Vec<Option<Child>>,
    /// Arguments `start` gives `vsr start` besides the addresses and the path.
    pub start_args: Vec<String>,
}

impl TestCluster {
    /// Formats `n` replicas with small sizes (fast, small files).
    pub fn format(name: &str, n: usize) -> TestCluster {
        TestCluster::format_with(name, n, &[])
    }

    /// Formats `n` replicas with small sizes, plus `extra_format_args` for `vsr format` in
    /// `--flag=value` form; one naming a flag that has a small default here replaces it.
    pub fn format_with(name: &str, n: usize, extra_format_args: &[&str]) -> TestCluster {
        let flag = |arg: &str| arg.split('=').next().unwrap().to_string();
        let sizes: Vec<&str> = ["--message-size-max=65536", "--journal-slot-count=512"]
            .into_iter()
            .filter(|default| extra_format_args.iter().all(|a| flag(a) != flag(default)))
            .chain(extra_format_args.iter().copied())
            .collect();
        let dir = std::env::temp_dir().join(format!("vsr-e2e-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let cluster = 0xc1u128 << 64 | std::process::id() as u128;
        for replica in 0..n {
            let status = Command::new(VSR)
                .args([
                    "format",
                    &format!("--cluster={cluster}"),
                    &format!("--replica={replica}"),
                ])
                .arg(format!("--replica-count={n}"))
                .args(&sizes)
                .arg(dir.join(format!("{replica}.vsr")))
                .stderr(Stdio::null())
                .status()
                .unwrap();
            assert!(status.success(), "format replica {replica}");
        }
        TestCluster {
            dir,
            cluster,
            ports: free_ports(n),
            children: (0..n).map(|_| None).collect(),
            // Small ledger: the replica touches all of its memory at start.
            start_args: vec![
                "--accounts-max=16384".into(),
                "--transfers-max=65536".into(),
            ],
        }
    }

    pub fn addresses_arg(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}").parse().unwrap())
            .collect()
    }

    pub fn path(&self, replica: usize) -> PathBuf {
        self.dir.join(format!("{replica}.vsr"))
    }

    pub fn start(&mut self, replica: usize) {
        assert!(self.children[replica].is_none());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{replica}.log")))
            .unwrap();
        let child = Command::new(VSR)
            .args(["start", &format!("--addresses={}", self.addresses_arg())])
            .args(&self.start_args)
            .arg(self.path(replica))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.children[replica] = Some(child);
    }

    pub fn start_all(&mut self) {
        for replica in 0..self.children.len() {
            self.start(replica);
        }
    }

    pub fn kill9(&mut self, replica: usize) {
        if let Some(mut child) = self.children[replica].take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// If the replica's process has exited (and we did not stop it), its exit status: the
    /// process is reaped and the replica counts as not running.
    pub fn exited(&mut self, replica: usize) -> Option<std::process::ExitStatus> {
        let status = self.children[replica].as_mut()?.try_wait().unwrap()?;
        self.children[replica] = None;
        Some(status)
    }

    /// Sends `signal` (SIGSTOP, SIGCONT, ...) to a running replica.
    pub fn signal(&self, replica: usize, signal: i32) {
        let child = self.children[replica].as_ref().expect("replica running");
        // Safety: plain kill(2) on our child.
        unsafe { libc::kill(child.id() as i32, signal) };
    }

    /// SIGTERM and wait for a clean exit (bounded).
    pub fn stop(&mut self, replica: usize) -> Option<i32> {
        let mut child = self.children[replica].take()?;
        // Safety: plain kill(2) on our child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() > deadline {
                child.kill().unwrap();
                child.wait().unwrap();
                panic!("replica {replica} did not stop within 10s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop_all(&mut self) {
        for replica in 0..self.children.len() {
            self.stop(replica);
        }
    }

    pub fn inspect(&self, replica: usize) -> String {
        let out = Command::new(VSR)
            .arg("inspect")
            .arg(self.path(replica))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "inspect failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn log(&self, replica: usize) -> String {
        std::fs::read_to_string(self.dir.join(format!("{replica}.log"))).unwrap_or_default()
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            // A stopped process dies of SIGKILL too; no SIGCONT needed.
            let _ = child.kill();
            let _ = child.wait();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Polls `f` until it returns Some, or panics with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = f() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A create_accounts body with one account (ledger 700, code 10).
pub fn account_body(id: u128) -> Vec<u8> {
    use zerocopy::{FromZeros, IntoBytes};
    let mut account = vsr::ledger::Account::new_zeroed();
    account.id = id;
    account.ledger = 700;
    account.code = 10;
    account.as_bytes().to_vec()
}

pub const CREATE_ACCOUNTS: u8 = vsr::ledger::LedgerOperation::CreateAccounts as u8;

/// The highest op `vsr inspect` reports present in the journal.
pub fn op_head(inspect: &str) -> u64 {
    let line = inspect
        .lines()
        .find(|l| l.contains("ops present:"))
        .expect("ops present line");
    line.rsplit("..=").next().unwrap().trim().parse().unwrap()
}

/// The view in `vsr inspect`'s superblock line.
pub fn view(inspect: &str) -> u32 {
    let line = inspect
        .lines()
        .find(|l| l.trim_start().starts_with("view="))
        .expect("view line");
    line.trim_start()
        .trim_start_matches("view=")
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}
