use clap::{Parser, Subcommand};
use std::path::PathBuf;
use vsr::cli::{self, Failure, Sizes};

#[derive(Parser)]
#[command(name = "vsr", version = version_long(), about = "A replicated financial ledger on Viewstamped Replication")]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Create and lay out a new data file for one replica.
    Format {
        /// The cluster id (u128); every replica of a cluster has the same.
        #[arg(long)]
        cluster: u128,
        /// This replica's index, 0-based.
        #[arg(long)]
        replica: u8,
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
        path: PathBuf,
    },
    /// Run a replica (its index and cluster are read from the data file).
    Start {
        /// Every replica's address, in replica order (host:port, or a bare port for 127.0.0.1).
        #[arg(long)]
        addresses: Option<String>,
        /// Without a path: a one-replica cluster on 127.0.0.1:3000 with data under ./data/.
        /// With a path: allow filesystems without O_DIRECT (never in production).
        #[arg(long)]
        development: bool,
        /// Log level: info, or debug for a protocol trace.
        #[arg(long, default_value = "info", env = "VSR_LOG_LEVEL")]
        log_level: String,
        path: Option<PathBuf>,
    },
    /// Show what a data file holds (superblock, journal, client sessions); never writes.
    Inspect { path: PathBuf },
    /// Print the version, git commit and protocol version.
    Version,
}

fn version_long() -> &'static str {
    concat!(env!("CARGO_PKG_VERSION"), " (", env!("VSR_GIT_COMMIT"), ")")
}

fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Commands::Format {
            cluster,
            replica,
            replica_count,
            message_size_max,
            journal_slot_count,
            pipeline_max,
            clients_max,
            path,
        } => {
            let sizes = Sizes {
                message_size_max,
                journal_slot_count,
                pipeline_max,
                clients_max,
            };
            cli::format(&path, cluster, replica, replica_count, &sizes)
        }
        Commands::Start {
            addresses,
            development,
            log_level,
            path,
        } => {
            let trace = match log_level.as_str() {
                "info" => false,
                "debug" => true,
                other => {
                    return Err(Failure::usage(format!(
                        "--log-level {other:?}: use info or debug"
                    )))
                }
            };
            match (path, addresses) {
                (None, None) if development => cli::start_development(trace),
                (None, _) => Err(Failure::usage(
                    "start needs a data file path (or --development alone)",
                )),
                (Some(_), None) => Err(Failure::usage("start needs --addresses")),
                (Some(path), Some(addresses)) => {
                    let addresses = cli::parse_addresses(&addresses)?;
                    cli::start(cli::StartOptions {
                        path,
                        addresses,
                        development,
                        trace,
                    })
                }
            }
        }
        Commands::Inspect { path } => {
            print!("{}", vsr::cli::inspect::inspect(&path)?);
            Ok(())
        }
        Commands::Version => {
            println!(
                "vsr {} commit {} protocol {}",
                env!("CARGO_PKG_VERSION"),
                env!("VSR_GIT_COMMIT"),
                vsr::config::PROTOCOL_VERSION
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
