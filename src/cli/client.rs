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

    pub fn submit(
        &mut self,
        operation: LedgerOperation,
        events: &[Event],
    ) -> Result<Reply, String> {
        let body = ledger_text::encode(operation, events, self.client.body_size_max())?;
        match self.client.request(operation as u8, &body, self.timeout) {
            Ok(reply) => ledger_text::decode(operation, reply.body()),
            Err(NetError::Protocol(crate::client::ClientError::Evicted)) => {
                // The session is gone; the next request starts a new one.
                self.client = NetClient::new(
                    self.cluster,
                    &self.addresses,
                    crate::config::Config::production(1).message_size_max as usize,
                );
                Err("the cluster evicted this client's session; retry".into())
            }
            Err(e) => Err(e.to_string()),
        }
    }
}

fn json_error(message: &str) -> String {
    serde_json::json!({ "error": message }).to_string()
}

/// JSON lines: a malformed line gets `{"error": ...}` and the process goes on.
pub fn run_json(mut session: Session) -> Result<(), Failure> {
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let line = line.map_err(|e| Failure::runtime(format!("stdin: {e}")))?;
        if line.trim().is_empty() {
            continue;
        }
        let output = match ledger_text::parse_json_request(&line) {
            Ok((operation, events)) => match session.submit(operation, &events) {
                Ok(reply) => ledger_text::reply_json(&reply),
                Err(e) => json_error(&e),
            },
            Err(e) => json_error(&e),
        };
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

pub fn run_repl(mut session: Session, command: Option<String>) -> Result<(), Failure> {
    if let Some(statement) = command {
        let (operation, events) =
            ledger_text::parse_statement(&statement).map_err(Failure::usage)?;
        let reply = session
            .submit(operation, &events)
            .map_err(Failure::runtime)?;
        println!("{}", render_text(&reply));
        return Ok(());
    }
    println!(
        "vsr repl: connected to cluster {}. Type help.",
        session.cluster
    );
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
                Ok((operation, events)) => match session.submit(operation, &events) {
                    Ok(reply) => println!("{}", render_text(&reply)),
                    Err(e) => println!("error: {e}"),
                },
                Err(e) => println!("error: {e} (type help)"),
            },
        }
    }
}
