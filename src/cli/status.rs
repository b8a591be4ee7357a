//! `vsr status`: asks every replica of a running cluster for its state (a request_status, which
//! every replica answers in any status, recovering included, and which never enters the log) and
//! prints one row per replica, or JSON for scripts. Exit code 0 when a replication quorum of the
//! replicas answered, 1 otherwise.
//!
//! Each address is asked on its own connection from its own thread (this is a command-line tool,
//! not the replica's event loop), all within one deadline.

use super::Failure;
use crate::config::quorums;
use crate::header::commands::{
    status_name, RequestStatus, StatusReport, STATUS_FLAG_CLOCK_SYNCHRONIZED, STATUS_FLAG_PRIMARY,
    STATUS_FLAG_REJOINING, STATUS_FLAG_SYNCING, STATUS_NORMAL,
};
use crate::header::{Command, Header, HEADER_SIZE};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use zerocopy::IntoBytes;

/// What one address answered.
pub struct Answer {
    pub address: SocketAddr,
    pub report: Result<StatusReport, String>,
}

/// Asks every address at once; returns an answer per address, in order, within `timeout`.
pub fn ask_all(cluster: u128, addresses: &[SocketAddr], timeout: Duration) -> Vec<Answer> {
    let deadline = Instant::now() + timeout;
    let client = asker_id();
    std::thread::scope(|scope| {
        let handles: Vec<_> = addresses
            .iter()
            .enumerate()
            .map(|(i, &address)| {
                scope.spawn(move || Answer {
                    address,
                    report: ask(cluster, address, client, i as u64 + 1, deadline),
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// A client id for this process's questions: replicas route the answer by it.
fn asker_id() -> u128 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    (u128::from(std::process::id()) << 96 | nanos) | 1
}

fn ask(
    cluster: u128,
    address: SocketAddr,
    client: u128,
    nonce: u64,
    deadline: Instant,
) -> Result<StatusReport, String> {
    let left = || deadline.saturating_duration_since(Instant::now());
    let mut stream = TcpStream::connect_timeout(&address, left().max(Duration::from_millis(1)))
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let mut header = RequestStatus { client, nonce }.to_header(cluster);
    header.set_checksum_body(&[]);
    header.set_checksum();
    stream
        .set_write_timeout(Some(left().max(Duration::from_millis(1))))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(header.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    loop {
        let mut bytes = [0u8; HEADER_SIZE];
        read_by(&mut stream, &mut bytes, deadline)?;
        let header = Header::read_from(&bytes);
        if !header.valid_checksum() || header.size as usize != HEADER_SIZE {
            return Err("a malformed answer".into());
        }
        if header.command() != Some(Command::StatusReport)
            || header.cluster != cluster
            || header.invalid(HEADER_SIZE).is_some()
        {
            continue;
        }
        let report = StatusReport::from_header(&header);
        if report.client == client && report.nonce == nonce {
            return Ok(report);
        }
    }
}

/// Fills `buffer` from `stream` by `deadline` (however the bytes trickle in).
fn read_by(stream: &mut TcpStream, buffer: &mut [u8], deadline: Instant) -> Result<(), String> {
    let mut filled = 0;
    while filled < buffer.len() {
        let wait = deadline.saturating_duration_since(Instant::now());
        if wait.is_zero() {
            return Err("no answer before the deadline".into());
        }
        stream
            .set_read_timeout(Some(wait))
            .map_err(|e| e.to_string())?;
        match stream.read(&mut buffer[filled..]) {
            Ok(0) => {
                return Err(
                    "the connection closed unanswered (another cluster, or not a replica)".into(),
                )
            }
            Ok(n) => filled += n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err("no answer before the deadline".into())
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("receive: {e}")),
        }
    }
    Ok(())
}

/// What a replica is doing beyond its status: primary or backup, syncing, rejoining.
fn role(report: &StatusReport) -> &'static str {
    if report.flags & STATUS_FLAG_REJOINING != 0 {
        "rejoining"
    } else if report.flags & STATUS_FLAG_SYNCING != 0 {
        "syncing"
    } else if report.flags & STATUS_FLAG_PRIMARY != 0 {
        "primary"
    } else if report.status == STATUS_NORMAL {
        "backup"
    } else {
        "-"
    }
}

fn version_text(version: u64) -> String {
    format!(
        "{}.{}.{}",
        version >> 32,
        version >> 16 & 0xffff,
        version & 0xffff
    )
}

/// The replicas a report says it heard from, in index order.
fn peers(report: &StatusReport) -> Vec<u8> {
    (0..report.replica_count)
        .filter(|r| report.peers_heard & (1 << r) != 0)
        .collect()
}

/// The newest commit point any answer knows: each replica's lag is measured from it.
fn commit_max(answers: &[Answer]) -> u64 {
    answers
        .iter()
        .filter_map(|a| a.report.as_ref().ok())
        .map(|r| r.commit_max.max(r.commit_min))
        .max()
        .unwrap_or(0)
}

pub fn table(answers: &[Answer]) -> String {
    let newest = commit_max(answers);
    let mut rows = vec![[
        "address",
        "replica",
        "status",
        "role",
        "view",
        "op",
        "commit_min",
        "commit_max",
        "checkpoint",
        "lag",
        "peers",
        "clock",
        "uptime_s",
        "version",
    ]
    .map(String::from)
    .to_vec()];
    for answer in answers {
        let row = match &answer.report {
            Ok(r) => vec![
                answer.address.to_string(),
                r.replica.to_string(),
                status_name(r.status).to_string(),
                role(r).to_string(),
                r.view.to_string(),
                r.op.to_string(),
                r.commit_min.to_string(),
                r.commit_max.to_string(),
                r.checkpoint_op.to_string(),
                newest.saturating_sub(r.commit_min).to_string(),
                peers(r)
                    .iter()
                    .map(u8::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                if r.flags & STATUS_FLAG_CLOCK_SYNCHRONIZED != 0 {
                    "synced"
                } else {
                    "unsynced"
                }
                .to_string(),
                (r.uptime_ms / 1000).to_string(),
                version_text(r.version),
            ],
            Err(error) => vec![answer.address.to_string(), format!("unreachable: {error}")],
        };
        rows.push(row);
    }
    let columns = rows[0].len();
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter(|row| row.len() == columns)
                .map(|row| row[c].len())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| {
                if row.len() == columns && c + 1 < columns {
                    format!("{cell:<width$}", width = widths[c])
                } else {
                    cell.clone()
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

pub fn json(answers: &[Answer]) -> String {
    let newest = commit_max(answers);
    let rows: Vec<serde_json::Value> = answers
        .iter()
        .map(|answer| match &answer.report {
            Ok(r) => serde_json::json!({
                "address": answer.address.to_string(),
                "reachable": true,
                "replica": r.replica,
                "replica_count": r.replica_count,
                "status": status_name(r.status),
                "primary": r.flags & STATUS_FLAG_PRIMARY != 0,
                "syncing": r.flags & STATUS_FLAG_SYNCING != 0,
                "sync_target_op": r.sync_target_op,
                "rejoining": r.flags & STATUS_FLAG_REJOINING != 0,
                "clock_synchronized": r.flags & STATUS_FLAG_CLOCK_SYNCHRONIZED != 0,
                "view": r.view,
                "log_view": r.log_view,
                "op": r.op,
                "commit_min": r.commit_min,
                "commit_max": r.commit_max,
                "checkpoint_op": r.checkpoint_op,
                "lag": newest.saturating_sub(r.commit_min),
                "pipeline": r.pipeline,
                "peers_heard": peers(r),
                "uptime_ms": r.uptime_ms,
                "version": version_text(r.version),
            }),
            Err(error) => serde_json::json!({
                "address": answer.address.to_string(),
                "reachable": false,
                "error": error,
            }),
        })
        .collect();
    serde_json::Value::Array(rows).to_string()
}

/// The summary line under the table, and whether a replication quorum answered.
pub fn summary(answers: &[Answer]) -> (String, bool) {
    let reports: Vec<&StatusReport> = answers
        .iter()
        .filter_map(|a| a.report.as_ref().ok())
        .collect();
    let answered = reports.len();
    // The cluster's size as its replicas report it (a short address list is not the cluster).
    let count = reports
        .iter()
        .map(|r| usize::from(r.replica_count))
        .max()
        .unwrap_or(answers.len())
        .max(answers.len());
    let quorum = quorums(count.clamp(1, crate::config::REPLICAS_MAX)).0;
    // An old primary cut off in a lower view may still think it leads: the newest view's wins.
    let primary = reports
        .iter()
        .filter(|r| r.flags & STATUS_FLAG_PRIMARY != 0)
        .max_by_key(|r| r.view);
    let primary_text = match primary {
        Some(p) => format!("primary: replica {} in view {}", p.replica, p.view),
        None => "no primary answered".to_string(),
    };
    let ok = answered >= quorum;
    let quorum_text = if ok {
        "a replication quorum answered"
    } else {
        "fewer than a replication quorum answered"
    };
    (
        format!("{answered}/{count} replicas answered ({quorum_text}); {primary_text}"),
        ok,
    )
}

pub fn run(
    cluster: u128,
    addresses: &[SocketAddr],
    timeout: Duration,
    as_json: bool,
) -> Result<(), Failure> {
    let answers = ask_all(cluster, addresses, timeout);
    let (summary, ok) = summary(&answers);
    if as_json {
        println!("{}", json(&answers));
    } else {
        print!("{}", table(&answers));
        println!("{summary}");
    }
    if ok {
        Ok(())
    } else {
        Err(Failure::runtime(summary))
    }
}
