//! `vsr client` (JSON lines on stdin, one result line per request on stdout) and `vsr repl`
//! (interactive statements, or one with `--command`).

use super::ledger_text::{self, Event, Reply};
use super::Failure;
use crate::client::net::{NetClient, NetError};
use crate::ledger::LedgerOperation;
use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::time::Duration;

pub struct Session {
    cluster: u128,
    addresses: Vec<SocketAddr>,
    client: NetClient,
    timeout: Duration,
}

/// Why a statement got no result, and whether it was executed.
#[derive(Debug)]
pub struct SubmitError {
    pub message: String,
    /// Certainly not executed (a malformed statement, or nothing was sent). Otherwise it may
    /// have been.
    pub definite: bool,
}

impl SubmitError {
    fn definite(message: String) -> SubmitError {
        SubmitError {
            message,
            definite: true,
        }
    }
}

impl Session {
    pub fn new(cluster: u128, addresses: Vec<SocketAddr>, timeout: Duration) -> Session {
        let client = NetClient::new(
            cluster,
            &addresses,
            crate::config::Config::production(1).message_size_max as usize,
        );
        Session {
            cluster,
            addresses,
            client,
            timeout,
        }
    }

    /// Registers the session: Ok once a replica has answered. Waits at most `wait` (and the
    /// session's timeout); a register still in flight then is waited for by the next statement.
    pub fn connect(&mut self, wait: Duration) -> Result<u64, NetError> {
        self.client.register(wait.min(self.timeout))
    }

    pub fn connected(&self) -> bool {
        self.client.session() != 0
    }

    pub fn submit(
        &mut self,
        operation: LedgerOperation,
        events: &[Event],
    ) -> Result<Reply, SubmitError> {
        let body = ledger_text::encode(operation, events, self.client.body_size_max())
            .map_err(SubmitError::definite)?;
        match self.client.request(operation as u8, &body, self.timeout) {
            Ok(reply) => {
                ledger_text::decode(operation, reply.body()).map_err(|e| SubmitError {
                    // It was executed; only its reply is unreadable.
                    message: format!("unreadable reply: {e}"),
                    definite: false,
                })
            }
            Err(e @ NetError::Evicted { .. }) => {
                // The session is gone; the next request starts a new one.
                self.client = NetClient::new(
                    self.cluster,
                    &self.addresses,
                    crate::config::Config::production(1).message_size_max as usize,
                );
                Err(SubmitError {
                    message: format!("{e}; the next statement opens a new session"),
                    definite: e.definite(),
                })
            }
            Err(e) => Err(SubmitError {
                message: e.to_string(),
                definite: e.definite(),
            }),
        }
    }
}

fn json_error(error: &SubmitError) -> String {
    serde_json::json!({
        "error": error.message,
        "outcome": if error.definite { "not_executed" } else { "unknown" },
    })
    .to_string()
}

/// JSON lines: a malformed line gets `{"error": ...}` and the process goes on. Errors carry
/// `"outcome"`: `"not_executed"` (certain) or `"unknown"` (the request may have been executed).
pub fn run_json(mut session: Session) -> Result<(), Failure> {
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let line = line.map_err(|e| Failure::runtime(format!("stdin: {e}")))?;
        if line.trim().is_empty() {
            continue;
        }
        let was_connected = session.connected();
        let output = match ledger_text::parse_json_request(&line) {
            Ok((operation, events)) => match session.submit(operation, &events) {
                Ok(reply) => ledger_text::reply_json(&reply),
                Err(e) => json_error(&e),
            },
            Err(e) => json_error(&SubmitError::definite(e)),
        };
        if !was_connected && session.connected() {
            eprintln!(
                "vsr client: connected to cluster {} (session {})",
                session.cluster,
                session.client.session()
            );
        }
        writeln!(stdout, "{output}").map_err(|e| Failure::runtime(format!("stdout: {e}")))?;
        stdout
            .flush()
            .map_err(|e| Failure::runtime(format!("stdout: {e}")))?;
    }
    Ok(())
}

pub const REPL_HELP: &str = "\
Statements (end with ';' or a newline):
  create_accounts id=1 ledger=700 code=10 flags=history, id=2 ledger=700 code=10;
  create_transfers id=1 debit_account_id=1 credit_account_id=2 amount=10 ledger=700 code=10;
  create_transfers id=2 debit_account_id=1 credit_account_id=2 amount=5 ledger=700 code=10 flags=pending timeout=60;
  lookup_accounts 1, 2;
  lookup_transfers 1;
  get_account_transfers account_id=1 flags=debits|credits limit=10;
  get_account_balances account_id=1 flags=debits|credits limit=10;
  query_accounts ledger=700 limit=10;
  query_transfers code=10 limit=10;
Fields use TigerBeetle's names; flags are names joined by '|' (or the integer bit set).
Commands: help, exit.";

fn render_text(reply: &Reply) -> String {
    if reply.kind == "results" {
        if reply.records.is_empty() {
            return "ok".into();
        }
        return reply
            .records
            .iter()
            .map(|r| format!("event {}: {}", r[0].1, r[1].1))
            .collect::<Vec<_>>()
            .join("\n");
    }
    if reply.records.is_empty() {
        return format!("no {}", reply.kind);
    }
    reply
        .records
        .iter()
        .map(|fields| {
            fields
                .iter()
                .filter(|(name, value)| *name == "id" || value != "0")
                .map(|(name, value)| {
                    if *name == "flags" {
                        let text = ledger_text::flags_text(reply.kind, value.parse().unwrap_or(0));
                        format!(
                            "{name}={}",
                            if text.is_empty() { value.clone() } else { text }
                        )
                    } else {
                        format!("{name}={value}")
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn repl_error(e: &SubmitError) -> String {
    if e.definite {
        format!("error: {}", e.message)
    } else {
        format!("error (outcome unknown): {}", e.message)
    }
}

pub fn run_repl(mut session: Session, command: Option<String>) -> Result<(), Failure> {
    if let Some(statement) = command {
        let (operation, events) =
            ledger_text::parse_statement(&statement).map_err(Failure::usage)?;
        let reply = session
            .submit(operation, &events)
            .map_err(|e| Failure::runtime(e.message))?;
        println!("{}", render_text(&reply));
        return Ok(());
    }
    // Say "connected" only once a replica has answered; say why not within 5 s.
    match session.connect(Duration::from_secs(5)) {
        Ok(s) => println!(
            "vsr repl: connected to cluster {} (session {s}). Type help.",
            session.cluster
        ),
        Err(e) => println!(
            "vsr repl: not connected to cluster {}: {e}. Statements keep trying. Type help.",
            session.cluster
        ),
    }
    let stdin = std::io::stdin();
    let mut line = String::new();
    loop {
        print!("> ");
        let _ = std::io::stdout().flush();
        line.clear();
        if stdin
            .lock()
            .read_line(&mut line)
            .map_err(|e| Failure::runtime(e.to_string()))?
            == 0
        {
            return Ok(());
        }
        let statement = line.trim();
        match statement {
            "" => continue,
            "help" | "help;" => println!("{REPL_HELP}"),
            "exit" | "exit;" | "quit" | "quit;" => return Ok(()),
            _ => match ledger_text::parse_statement(statement) {
                Ok((operation, events)) => {
                    let was_connected = session.connected();
                    let result = session.submit(operation, &events);
                    if !was_connected && session.connected() {
                        println!(
                            "vsr repl: connected to cluster {} (session {})",
                            session.cluster,
                            session.client.session()
                        );
                    }
                    match result {
                        Ok(reply) => println!("{}", render_text(&reply)),
                        Err(e) => println!("{}", repl_error(&e)),
                    }
                }
                Err(e) => println!("error: {e} (type help)"),
            },
        }
    }
}
