use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;
use vsr::cli::{self, Failure, Sizes};
use vsr::ledger::LedgerConfig;

const EXAMPLES: &str = "\
Examples:
  Try it: one development replica on 127.0.0.1:3000, then a REPL against it:
    vsr start --development
    vsr repl --cluster=0 --addresses=3000

  A cluster of three (one data file and one process per replica, each given every address):
    vsr format --cluster=7 --replica=0 --replica-count=3 /var/lib/vsr/0.vsr
    vsr start --addresses=10.0.0.1:3000,10.0.0.2:3000,10.0.0.3:3000 /var/lib/vsr/0.vsr

  What every replica of it is doing (status, view, primary, commit points, lag):
    vsr status --cluster=7 --addresses=10.0.0.1:3000,10.0.0.2:3000,10.0.0.3:3000

  A replica whose disk was lost (same arguments as its format):
    vsr recover --cluster=7 --replica=2 --replica-count=3 /var/lib/vsr/2.vsr

  Requests as JSON lines:
    echo '{\"operation\":\"lookup_accounts\",\"events\":[1]}' | vsr client --cluster=0 --addresses=3000";

#[derive(Parser)]
#[command(
    name = "vsr",
    version = version_long(),
    about = "A replicated financial ledger on Viewstamped Replication",
    after_help = EXAMPLES
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Create and lay out a new data file for one replica.
    Format(DataFileArgs),
    /// Re-create the data file of a replica whose disk was lost. The replica then rejoins safely:
    /// it neither votes nor acknowledges until it has caught up from its peers. Use the sizes the
    /// cluster was formatted with.
    Recover(DataFileArgs),
    /// Run a replica (its index and cluster are read from the data file).
    Start(StartArgs),
    /// JSON lines on stdin, one request per line; one JSON line of results per request on stdout.
    #[command(
        after_help = "Example:\n  echo '{\"operation\":\"create_accounts\",\"events\":[{\"id\":1,\"ledger\":700,\"code\":10}]}' \\\n    | vsr client --cluster=0 --addresses=3000\n  {\"results\":[]}"
    )]
    Client {
        /// The cluster id the replicas were formatted with.
        #[arg(long)]
        cluster: u128,
        /// Every replica's address, in replica order (host:port, or a bare port for 127.0.0.1).
        #[arg(long)]
        addresses: String,
        /// Seconds to wait for each reply.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
        /// Write integers of 64 and 128 bits as bare JSON numbers (by default they are strings:
        /// JavaScript and jq 1.6 round numbers above 2^53).
        #[arg(long)]
        integers_as_numbers: bool,
        /// Write `flags` as the integer bit set (by default a list of flag names).
        #[arg(long)]
        flags_as_integers: bool,
    },
    /// Interactive statements against a cluster (`help` lists them); reads a script from a
    /// pipe too.
    #[command(
        after_help = "Examples:\n  vsr repl --cluster=0 --addresses=3000\n  > create_accounts id=1 ledger=700 code=10, id=2 ledger=700 code=10;\n  vsr repl --cluster=0 --addresses=3000 --command 'lookup_accounts 1, 2;'\n  vsr repl --cluster=0 --addresses=3000 < statements.txt"
    )]
    Repl {
        /// The cluster id the replicas were formatted with.
        #[arg(long)]
        cluster: u128,
        /// Every replica's address, in replica order (host:port, or a bare port for 127.0.0.1).
        #[arg(long)]
        addresses: String,
        /// Run one statement, print its result, exit.
        #[arg(long)]
        command: Option<String>,
        /// Seconds to wait for each statement's reply.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// Load a cluster with transfers and report throughput and latency. Without --addresses,
    /// formats and starts temporary replicas on 127.0.0.1 and removes them afterwards.
    Benchmark(BenchmarkArgs),
    /// Show what a data file holds (superblock, journal, client sessions); never writes. On a
    /// running replica's file it shows the file as last written, and says so.
    Inspect {
        /// The data file.
        path: PathBuf,
    },
    /// Ask every replica of a running cluster for its state: status, view, primary or backup,
    /// op and commit points, checkpoint, lag, peers heard, uptime, version. Exit code 1 when
    /// fewer than a replication quorum answer.
    #[command(
        after_help = "Examples:\n  vsr status --cluster=0 --addresses=3000\n  vsr status --cluster=7 --addresses=3001,3002,3003 --json | jq '.[] | {replica, status, lag}'"
    )]
    Status {
        /// The cluster id the replicas were formatted with.
        #[arg(long)]
        cluster: u128,
        /// Every replica's address, in replica order (host:port, or a bare port for 127.0.0.1).
        #[arg(long)]
        addresses: String,
        /// One JSON array of replica objects instead of the table.
        #[arg(long)]
        json: bool,
        /// Milliseconds to wait for the answers.
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
    },
    /// Print the version, git commit and protocol version.
    Version,
}

// `vsr start`'s arguments (the subcommand's help is the doc comment on `Commands::Start`).
#[derive(clap::Args)]
struct StartArgs {
    /// Every replica's address, in replica order (host:port, or a bare port for 127.0.0.1).
    /// With --development and no path: the development replica's one address (default 3000).
    #[arg(long)]
    addresses: Option<String>,
    /// Without a path: a small one-replica cluster (cluster id 0) on 127.0.0.1:3000 with data
    /// under ./data/, formatted on first start. With a path: allow filesystems without O_DIRECT
    /// (never in production).
    #[arg(long)]
    development: bool,
    /// Log level: info, or debug for a protocol trace.
    #[arg(long, default_value = "info", env = "VSR_LOG_LEVEL")]
    log_level: String,
    /// Log lines as text, or json (one object a line: time, level, replica, component,
    /// message) for log shippers.
    #[arg(long, default_value = "text", env = "VSR_LOG_FORMAT")]
    log_format: String,
    /// Most accounts the ledger holds (memory is reserved at start) [default: 1048576; 16384 for
    /// the development replica].
    #[arg(long)]
    accounts_max: Option<u32>,
    /// Most transfers the ledger holds [default: 4194304; 131072 for the development replica].
    #[arg(long)]
    transfers_max: Option<u32>,
    /// Serve Prometheus metrics on this address (host:port, or a port for 127.0.0.1):
    /// `GET /metrics`, from the replica's own event loop (docs/operations.md lists them).
    #[arg(long, value_name = "ADDRESS")]
    metrics: Option<String>,
    /// The replica's data file (made by `vsr format`); none with --development.
    path: Option<PathBuf>,
}

// `vsr benchmark`'s arguments (its help is on `Commands::Benchmark`).
#[derive(clap::Args)]
struct BenchmarkArgs {
    /// Load a running cluster at these addresses (in replica order) instead of temporary
    /// replicas.
    #[arg(long)]
    addresses: Option<String>,
    /// The cluster id: 0 by default with --addresses; a random one for temporary replicas.
    #[arg(long)]
    cluster: Option<u128>,
    /// Replicas to start when no --addresses is given.
    #[arg(long, default_value_t = 1)]
    replica_count: u8,
    /// Accounts to create first; each transfer picks two of them.
    #[arg(long, default_value_t = 10_000)]
    account_count: u64,
    /// Transfers to create.
    #[arg(long, default_value_t = 1_000_000)]
    transfer_count: u64,
    /// Transfers per request (default: as many as fit a message).
    #[arg(long, default_value_t = 8190)]
    transfer_batch_size: usize,
    /// Seed of the transfers' random accounts and amounts (the same seed, the same load).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Client sessions sending batches in parallel.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// Read every account back afterwards and check its balances.
    #[arg(long)]
    validate: bool,
    /// Single-account lookups to time after the load.
    #[arg(long, default_value_t = 100)]
    query_count: u64,
    /// Create the accounts without the `history` flag. By default, as in TigerBeetle's
    /// benchmark, every transfer also stores both accounts' balances.
    #[arg(long)]
    no_history: bool,
    /// Keep the temporary replicas' logs in this directory (replica-<i>.log); by default
    /// they are deleted with the replicas.
    #[arg(long)]
    log_dir: Option<PathBuf>,
}

/// What `format` and `recover` need to lay out a data file.
#[derive(clap::Args)]
struct DataFileArgs {
    /// The cluster id (u128); every replica of a cluster has the same.
    #[arg(long)]
    cluster: u128,
    /// This replica's index, 0-based.
    #[arg(long)]
    replica: u8,
    /// Replicas in the cluster.
    #[arg(long)]
    replica_count: u8,
    /// Advanced: largest message in bytes (a multiple of 4096).
    #[arg(long, default_value_t = 1024 * 1024)]
    message_size_max: u32,
    /// Advanced: journal slots.
    #[arg(long, default_value_t = 1024)]
    journal_slot_count: u32,
    /// Advanced: prepares in flight.
    #[arg(long, default_value_t = 8)]
    pipeline_max: u32,
    /// Advanced: client sessions kept.
    #[arg(long, default_value_t = 64)]
    clients_max: u32,
    /// The data file to create (it must not exist).
    path: PathBuf,
}

impl DataFileArgs {
    fn sizes(&self) -> Sizes {
        Sizes {
            message_size_max: self.message_size_max,
            journal_slot_count: self.journal_slot_count,
            pipeline_max: self.pipeline_max,
            clients_max: self.clients_max,
        }
    }
}

impl StartArgs {
    fn run(self) -> Result<(), Failure> {
        let trace = match self.log_level.as_str() {
            "info" => false,
            "debug" => true,
            other => {
                return Err(Failure::usage(format!(
                    "--log-level {other:?}: use info or debug"
                )))
            }
        };
        vsr::io::log::set_format(&self.log_format).map_err(Failure::usage)?;
        let production = LedgerConfig::default();
        let metrics = match &self.metrics {
            Some(text) => Some(cli::parse_metrics_address(text)?),
            None => None,
        };
        match (self.path, self.addresses) {
            (None, addresses) if self.development => cli::start_development(
                trace,
                addresses.as_deref(),
                self.accounts_max,
                self.transfers_max,
                metrics,
            ),
            (None, _) => Err(Failure::usage(
                "start needs a data file path (or --development alone)",
            )),
            (Some(_), None) => Err(Failure::usage("start needs --addresses")),
            (Some(path), Some(addresses)) => {
                let addresses = cli::parse_addresses(&addresses)?;
                cli::start(cli::StartOptions {
                    path,
                    addresses,
                    development: self.development,
                    trace,
                    accounts_max: self.accounts_max.unwrap_or(production.accounts_max),
                    transfers_max: self.transfers_max.unwrap_or(production.transfers_max),
                    metrics,
                })
            }
        }
    }
}

impl BenchmarkArgs {
    fn run(self) -> Result<(), Failure> {
        let addresses = self
            .addresses
            .map(|a| cli::parse_addresses(&a))
            .transpose()?;
        cli::benchmark::run(cli::benchmark::BenchmarkOptions {
            addresses,
            cluster: self.cluster,
            replica_count: self.replica_count,
            account_count: self.account_count,
            transfer_count: self.transfer_count,
            transfer_batch_size: self.transfer_batch_size,
            seed: self.seed,
            clients: self.clients,
            validate: self.validate,
            query_count: self.query_count,
            account_history: !self.no_history,
            log_dir: self.log_dir,
        })
    }
}

fn version_long() -> &'static str {
    concat!(
        env!("CARGO_PKG_VERSION"),
        " commit ",
        env!("VSR_GIT_COMMIT"),
        " protocol ",
        env!("VSR_PROTOCOL_VERSION")
    )
}

fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Commands::Format(a) => {
            cli::format(&a.path, a.cluster, a.replica, a.replica_count, &a.sizes())
        }
        Commands::Recover(a) => {
            cli::recover(&a.path, a.cluster, a.replica, a.replica_count, &a.sizes())
        }
        Commands::Start(args) => args.run(),
        Commands::Client {
            cluster,
            addresses,
            timeout,
            integers_as_numbers,
            flags_as_integers,
        } => {
            let addresses = cli::parse_addresses(&addresses)?;
            let style = vsr::cli::ledger_text::JsonStyle {
                wide_as_strings: !integers_as_numbers,
                flags_as_names: !flags_as_integers,
            };
            cli::client::run_json(
                cli::client::Session::new(cluster, addresses, Duration::from_secs(timeout)),
                style,
            )
        }
        Commands::Repl {
            cluster,
            addresses,
            command,
            timeout,
        } => {
            let addresses = cli::parse_addresses(&addresses)?;
            cli::client::run_repl(
                cli::client::Session::new(cluster, addresses, Duration::from_secs(timeout)),
                command,
            )
        }
        Commands::Benchmark(args) => args.run(),
        Commands::Inspect { path } => {
            print!("{}", vsr::cli::inspect::inspect(&path)?);
            Ok(())
        }
        Commands::Status {
            cluster,
            addresses,
            json,
            timeout_ms,
        } => {
            let addresses = cli::parse_addresses(&addresses)?;
            cli::status::run(cluster, &addresses, Duration::from_millis(timeout_ms), json)
        }
        Commands::Version => {
            println!(
                "vsr {} commit {} protocol {}",
                env!("CARGO_PKG_VERSION"),
                env!("VSR_GIT_COMMIT"),
                vsr::header::PROTOCOL_VERSION
            );
            Ok(())
        }
    }
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    if let Err(failure) = run(cli) {
        eprintln!("error: {}", failure.message);
        std::process::exit(failure.code);
    }
}
