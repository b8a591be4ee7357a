use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "vsr",
    version,
    about = "A replicated financial ledger on Viewstamped Replication"
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Print the version and protocol version.
    Version,
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Commands::Version => {
            println!(
                "vsr {} protocol {}",
                env!("CARGO_PKG_VERSION"),
                vsr::config::PROTOCOL_VERSION
            );
        }
    }
}
