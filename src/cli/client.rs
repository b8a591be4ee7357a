//! `vsr client` (JSON lines on stdin, one result line per request on stdout) and `vsr repl`
//! (interactive statements, or one with `--command`).

use super::ledger_text::{self, Event, Reply};
use super::Failure;
use crate::client::net::{NetClient, NetError};
use crate::ledger::LedgerOperation;
use std::io::{BufRead, IsTerminal, Write};
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
        if !self.connected() {
            // Registered first: the register reply names the cluster's message size, which
            // bounds the body.
            if let Err(e) = self.client.register(self.timeout) {
                return Err(self.failed(e));
            }
        }
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
            Err(e) => Err(self.failed(e)),
        }
    }

    /// A request or register that failed; an evicted session is replaced, so the next
    /// statement opens a new one.
    fn failed(&mut self, e: NetError) -> SubmitError {
        match e {
            e @ NetError::Evicted { .. } => {
                // The session is gone; the next request starts a new one.
                self.client = NetClient::new(
                    self.cluster,
                    &self.addresses,
                    crate::config::Config::production(1).message_size_max as usize,
                );
                SubmitError {
                    message: format!("{e}; the next statement opens a new session"),
                    definite: e.definite(),
                }
            }
            e => SubmitError {
                message: e.to_string(),
                definite: e.definite(),
            },
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
pub fn run_json(mut session: Session, style: ledger_text::JsonStyle) -> Result<(), Failure> {
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
                Ok(reply) => ledger_text::reply_json(&reply, style),
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
Statements end with ';' and may span lines:
  create_accounts id=1 ledger=700 code=10 flags=history, id=2 ledger=700 code=10;
  create_transfers id=1 debit_account_id=1 credit_account_id=2 amount=10 ledger=700 code=10;
  create_transfers id=2 debit_account_id=1 credit_account_id=2 amount=5 ledger=700 code=10 flags=pending timeout=60;
  lookup_accounts 1, 2;
  lookup_transfers 1;
  get_account_transfers account_id=1;
  get_account_balances account_id=1 flags=debits|reversed limit=10;
  query_accounts ledger=700 limit=10;
  query_transfers code=10;
Fields use TigerBeetle's names; flags are names joined by '|' (or the integer bit set).
Numbers are unsigned integers up to 2^128-1: decimal, or 0x/0o/0b, with '_' between digits.
Filters default as TigerBeetle's REPL: limit = as many as a reply holds (8190), and for
get_account_* flags = debits|credits.
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
    let interactive = std::io::stdin().is_terminal();
    // Say "connected" only once a replica has answered; say why not within 5 s. Piped, stdout
    // carries only answers: notes go to stderr.
    let note = match session.connect(Duration::from_secs(5)) {
        Ok(s) => format!(
            "vsr repl: connected to cluster {} (session {s}).",
            session.cluster
        ),
        Err(e) => format!(
            "vsr repl: not connected to cluster {}: {e}. Statements keep trying.",
            session.cluster
        ),
    };
    if interactive {
        println!("{note} Statements end with ';'. Type help.");
    } else {
        eprintln!("{note}");
    }
    let mut repl = ReplLoop {
        session,
        interactive,
        statements: 0,
        failed: 0,
    };
    repl.run()?;
    if repl.failed > 0 {
        return Err(Failure::runtime(format!(
            "{} of {} statements failed",
            repl.failed, repl.statements
        )));
    }
    Ok(())
}

struct ReplLoop {
    session: Session,
    interactive: bool,
    statements: u64,
    failed: u64,
}

/// Where the REPL's lines come from: a line editor with history on a terminal, plain reads from a
/// pipe.
enum Lines {
    Editor(Box<rustyline::DefaultEditor>),
    Plain(std::io::Stdin),
}

enum Input {
    /// A line, with its newline.
    Line(String),
    /// Ctrl-C: the statement being typed is abandoned, as in a shell.
    Interrupted,
    End,
}

impl Lines {
    fn next(&mut self, prompt: &str) -> Result<Input, Failure> {
        match self {
            Lines::Editor(editor) => match editor.readline(prompt) {
                Ok(line) => Ok(Input::Line(line + "\n")),
                Err(rustyline::error::ReadlineError::Interrupted) => Ok(Input::Interrupted),
                Err(rustyline::error::ReadlineError::Eof) => Ok(Input::End),
                Err(e) => Err(Failure::runtime(format!("terminal: {e}"))),
            },
            Lines::Plain(stdin) => {
                let mut line = String::new();
                let read = stdin
                    .lock()
                    .read_line(&mut line)
                    .map_err(|e| Failure::runtime(format!("stdin: {e}")))?;
                Ok(if read > 0 {
                    Input::Line(line)
                } else {
                    Input::End
                })
            }
        }
    }

    fn remember(&mut self, statement: &str) {
        if let Lines::Editor(editor) = self {
            let _ = editor.add_history_entry(statement.trim());
        }
    }
}

impl ReplLoop {
    /// Reads lines until end of input or `exit`; a statement ends at ';' and may span lines.
    fn run(&mut self) -> Result<(), Failure> {
        let mut lines = match self.interactive {
            true => match rustyline::DefaultEditor::new() {
                Ok(editor) => Lines::Editor(Box::new(editor)),
                Err(_) => Lines::Plain(std::io::stdin()),
            },
            false => Lines::Plain(std::io::stdin()),
        };
        let mut pending = String::new();
        loop {
            let prompt = match (self.interactive, pending.trim().is_empty()) {
                (false, _) => "",
                (true, true) => "> ",
                (true, false) => "... ",
            };
            if let Lines::Plain(_) = lines {
                print!("{prompt}");
                let _ = std::io::stdout().flush();
            }
            match lines.next(prompt)? {
                Input::Line(line) => pending.push_str(&line),
                Input::Interrupted => {
                    pending.clear();
                    continue;
                }
                Input::End => {
                    // End of input: a last statement without its ';' still runs.
                    if !pending.trim().is_empty() {
                        self.statement(&pending);
                    }
                    return Ok(());
                }
            }
            match pending.trim() {
                "help" | "help;" => {
                    println!("{REPL_HELP}");
                    pending.clear();
                    continue;
                }
                "exit" | "exit;" | "quit" | "quit;" => return Ok(()),
                _ => {}
            }
            while let Some(end) = pending.find(';') {
                let statement: String = pending.drain(..=end).collect();
                if !statement.trim_end_matches(';').trim().is_empty() {
                    lines.remember(&statement);
                    self.statement(&statement);
                }
            }
        }
    }

    fn statement(&mut self, statement: &str) {
        self.statements += 1;
        match ledger_text::parse_statement(statement) {
            Ok((operation, events)) => {
                let was_connected = self.session.connected();
                let result = self.session.submit(operation, &events);
                if !was_connected && self.session.connected() {
                    let note = format!(
                        "vsr repl: connected to cluster {} (session {})",
                        self.session.cluster,
                        self.session.client.session()
                    );
                    if self.interactive {
                        println!("{note}");
                    } else {
                        eprintln!("{note}");
                    }
                }
                match result {
                    Ok(reply) => println!("{}", render_text(&reply)),
                    Err(e) => {
                        self.failed += 1;
                        println!("{}", repl_error(&e));
                    }
                }
            }
            Err(e) => {
                self.failed += 1;
                println!("error: {e} (type help)");
            }
        }
    }
}
