//! The `vsr` command line's subcommands: `format`, `recover` and `start` here; `inspect`,
//! `status`, `client`/`repl` and `benchmark` in their own modules (argument parsing is in src/main.rs).
//! Exit codes: 0 ok, 1 runtime failure, 2 usage.

pub mod benchmark;
pub mod client;
pub mod inspect;
pub mod ledger_text;
pub mod status;

use crate::config::Config;
use crate::io::event_loop::Runtime;
use crate::io::file_storage::{format_file, FileStorage};
use crate::io::metrics::MetricsServer;
use crate::io::os_time::OsTime;
use crate::io::tcp_bus::TcpBus;
use crate::io::Io;
use crate::ledger::{Ledger, LedgerConfig};
use crate::message::MessagePool;
use crate::replica::{Replica, ReplicaOptions};
use crate::storage::Layout;
use crate::superblock::SuperBlock;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

pub static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

pub fn install_signal_handlers() {
    // Safety: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// An info line of `vsr start` (src/io/log.rs: timestamp, level, replica, component).
macro_rules! start_log {
    ($($arg:tt)*) => {
        crate::io::log::log(crate::io::log::Level::Info, "start", &format!($($arg)*))
    };
}

/// A failure with its exit code: 1 runtime, 2 usage.
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl Failure {
    pub fn runtime(message: impl Into<String>) -> Failure {
        Failure {
            code: 1,
            message: message.into(),
        }
    }
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure {
            code: 2,
            message: message.into(),
        }
    }
}

/// Layout-defining sizes; production defaults, smaller values for tests and development.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sizes {
    pub message_size_max: u32,
    pub journal_slot_count: u32,
    pub pipeline_max: u32,
    pub clients_max: u32,
}

impl Sizes {
    /// The sizes a data file was formatted with.
    pub fn of_superblock(sb: &SuperBlock) -> Sizes {
        Sizes {
            message_size_max: sb.message_size_max,
            journal_slot_count: sb.journal_slot_count,
            pipeline_max: sb.pipeline_max,
            clients_max: sb.clients_max,
        }
    }

    pub fn config(&self, replica_count: u8) -> Config {
        let mut config = Config::production(replica_count);
        config.message_size_max = self.message_size_max;
        config.journal_slot_count = self.journal_slot_count;
        config.pipeline_max = self.pipeline_max;
        config.clients_max = self.clients_max;
        config
    }
}

pub fn parse_addresses(text: &str) -> Result<Vec<SocketAddr>, Failure> {
    let mut addresses = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        // A bare port means 127.0.0.1:port.
        let candidate = if part.chars().all(|c| c.is_ascii_digit()) {
            format!("127.0.0.1:{part}")
        } else {
            part.to_string()
        };
        let address = candidate
            .to_socket_addrs()
            .map_err(|e| Failure::usage(format!("address {part:?}: {e}")))?
            .next()
            .ok_or_else(|| Failure::usage(format!("address {part:?} resolves to nothing")))?;
        addresses.push(address);
    }
    if addresses.is_empty() || addresses.len() > crate::config::REPLICAS_MAX {
        return Err(Failure::usage(format!(
            "--addresses needs 1 to {} addresses",
            crate::config::REPLICAS_MAX
        )));
    }
    Ok(addresses)
}

pub fn format(
    path: &Path,
    cluster: u128,
    replica: u8,
    replica_count: u8,
    sizes: &Sizes,
) -> Result<(), Failure> {
    create_data_file(path, cluster, replica, replica_count, sizes, false)
}

/// `vsr recover`: re-creates the data file of a replica whose disk was lost. The new file is
/// formatted but marked `rejoining`: at `vsr start` the replica takes no part in view changes
/// and acknowledges nothing until a start_view from the cluster tells it the log; it fetches
/// the state (state sync) and the journal from its peers, and until it has committed through
/// that log it never counts as a "not acknowledged" vote. Reformatting with `vsr format`
/// instead could let a view change drop committed ops the lost disk had acknowledged.
pub fn recover(
    path: &Path,
    cluster: u128,
    replica: u8,
    replica_count: u8,
    sizes: &Sizes,
) -> Result<(), Failure> {
    if replica_count < 2 {
        return Err(Failure::usage(
            "recover needs --replica-count of at least 2: a one-replica cluster has no other copy \
             of its data; restore the data file from a backup instead",
        ));
    }
    create_data_file(path, cluster, replica, replica_count, sizes, true)
}

fn create_data_file(
    path: &Path,
    cluster: u128,
    replica: u8,
    replica_count: u8,
    sizes: &Sizes,
    rejoining: bool,
) -> Result<(), Failure> {
    if replica_count == 0 || replica_count as usize > crate::config::REPLICAS_MAX {
        return Err(Failure::usage(format!(
            "--replica-count must be 1..={}",
            crate::config::REPLICAS_MAX
        )));
    }
    if replica >= replica_count {
        return Err(Failure::usage(format!(
            "--replica must be below --replica-count ({replica_count})"
        )));
    }
    let config = sizes.config(replica_count);
    config
        .validate()
        .map_err(|e| Failure::usage(e.to_string()))?;
    if path.exists() {
        let hint = if rejoining {
            " (move the damaged file aside first; recover creates a new one)"
        } else {
            ""
        };
        return Err(Failure::runtime(format!(
            "{} exists: refusing to overwrite a data file{hint}",
            path.display()
        )));
    }
    let layout = Layout::new(&config);
    let writes = if rejoining {
        crate::format::recover_writes(&config, cluster, replica)
    } else {
        crate::format::format_writes(&config, cluster, replica)
    };
    format_file(path, &layout, &writes).map_err(|e| Failure::runtime(e.to_string()))?;
    eprintln!(
        "info: {} {} (cluster {cluster}, replica {replica} of {replica_count}, {} MiB){}",
        if rejoining { "re-created" } else { "formatted" },
        path.display(),
        layout.total_size() / (1024 * 1024),
        if rejoining {
            "; `vsr start` it with the cluster's addresses: it rejoins once it has caught up"
        } else {
            ""
        }
    );
    Ok(())
}

/// Reads the superblock with plain reads to learn the cluster, replica index and sizes before
/// the replica itself opens the file (copies have a fixed size, so no configuration is needed).
pub fn read_superblock(path: &Path) -> Result<SuperBlock, Failure> {
    use crate::storage::SUPERBLOCK_COPY_SIZE;
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::open(path)
        .map_err(|e| Failure::runtime(format!("open {}: {e}", path.display())))?;
    let mut buffer = vec![0u8; SUPERBLOCK_COPY_SIZE * crate::storage::SUPERBLOCK_COPIES];
    let n = file.read_at(&mut buffer, 0).unwrap_or(0);
    buffer[n..].fill(0);
    let layout = Layout::new(&Config::timing_defaults(1));
    let copies: Vec<Option<SuperBlock>> = buffer
        .chunks(SUPERBLOCK_COPY_SIZE)
        .map(|copy| SuperBlock::decode(copy, &layout))
        .collect();
    SuperBlock::choose(&copies).map_err(|e| Failure::runtime(format!("{}: {e}", path.display())))
}

pub struct StartOptions {
    pub path: PathBuf,
    pub addresses: Vec<SocketAddr>,
    pub development: bool,
    pub trace: bool,
    pub accounts_max: u32,
    pub transfers_max: u32,
    /// Serve Prometheus metrics on this address (`GET /metrics`).
    pub metrics: Option<SocketAddr>,
}

/// `--metrics`: one address, or a bare port for 127.0.0.1.
pub fn parse_metrics_address(text: &str) -> Result<SocketAddr, Failure> {
    let addresses =
        parse_addresses(text).map_err(|e| Failure::usage(format!("--metrics: {}", e.message)))?;
    match addresses[..] {
        [address] => Ok(address),
        _ => Err(Failure::usage(
            "--metrics takes one address (host:port, or a port)",
        )),
    }
}

pub fn start(options: StartOptions) -> Result<(), Failure> {
    let sb = read_superblock(&options.path)?;
    crate::io::log::set_replica(sb.replica);
    let config = start_config(&options, &sb)?;
    let layout = Layout::new(&config);
    let io = Io::new(1024).map_err(|e| Failure::runtime(e.to_string()))?;
    let storage_slots = crate::config::journal_io_max(&config) * 2 + 16;
    let storage = FileStorage::open(
        &options.path,
        layout.clone(),
        !options.development,
        storage_slots,
    )
    .map_err(|e| Failure::runtime(e.to_string()))?;
    let messages = pool_messages(&config);
    let pool = MessagePool::new(messages, config.message_size_max as usize);
    let mut bus = TcpBus::listen(
        pool.clone(),
        sb.cluster,
        sb.replica,
        options.addresses.clone(),
        connections_max(&config),
        SEND_QUEUE_MAX,
    )
    .map_err(|e| Failure::runtime(format!("listen: {e}")))?;
    let metrics = match options.metrics {
        None => None,
        Some(address) => {
            let server = MetricsServer::listen(address).map_err(|e| {
                Failure::runtime(format!(
                    "--metrics: cannot listen on {address}: {e} (is the port in use? pick \
                     another)"
                ))
            })?;
            crate::io::metrics::log_listening(address);
            Some(server)
        }
    };
    // What the replica may take from the pool between two received messages: a reply per
    // session and the write of the one before it, the pipeline and its cache, journal I/O.
    bus.reserve_for_replica(
        config.clients_max as usize * 2
            + config.pipeline_max as usize * 2
            + crate::config::journal_io_max(&config),
    );
    log_start(&options, &sb, &config, &layout, &pool, messages);
    let ledger = open_ledger(&options, &config);
    let replica = Replica::open_with_pool(
        ReplicaOptions {
            cluster: sb.cluster,
            replica: sb.replica,
            config,
            seed: 0,
            trace: options.trace,
        },
        pool,
        storage,
        bus,
        OsTime,
        ledger,
    );
    let mut runtime = Runtime::new(io, replica);
    runtime.metrics = metrics;
    install_signal_handlers();
    if options.development {
        let address = options.addresses[sb.replica as usize];
        let address = if address.ip().is_loopback() {
            address.port().to_string()
        } else {
            address.to_string()
        };
        start_log!(
            "ready. In another terminal: vsr repl --cluster={} --addresses={address} \
             (stop this replica with Ctrl-C)",
            sb.cluster
        );
    }
    runtime.run(&STOP).map_err(Failure::runtime)?;
    log_stop(&runtime);
    Ok(())
}

/// The configuration the data file was formatted with, checked against the command line.
fn start_config(options: &StartOptions, sb: &SuperBlock) -> Result<Config, Failure> {
    if options.addresses.len() != sb.replica_count as usize {
        return Err(Failure::usage(format!(
            "--addresses lists {} replicas but {} was formatted for a cluster of {}",
            options.addresses.len(),
            options.path.display(),
            sb.replica_count
        )));
    }
    let config = Sizes::of_superblock(sb).config(sb.replica_count);
    config
        .validate()
        .map_err(|e| Failure::runtime(format!("data file configuration: {e}")))?;
    Ok(config)
}

/// Messages the bus queues to send on a connection to another replica.
const SEND_QUEUE_MAX: usize = 16;

/// The most connections the bus holds at once: the cluster's replicas and the clients.
fn connections_max(config: &Config) -> usize {
    config.replica_count as usize + config.clients_max as usize
}

/// The message pool's size: the replica's own messages and the bus's.
fn pool_messages(config: &Config) -> usize {
    // One receive buffer per connection, plus what send queues may pin.
    let bus_messages = connections_max(config)
        + (config.replica_count as usize - 1) * SEND_QUEUE_MAX
        + config.clients_max as usize * crate::io::tcp_bus::CLIENT_SEND_QUEUE_MAX;
    config.messages_max() + bus_messages
}

/// Where the replica listens, its configuration, and the memory it reserves outside the ledger.
fn log_start(
    options: &StartOptions,
    sb: &SuperBlock,
    config: &Config,
    layout: &Layout,
    pool: &MessagePool,
    messages: usize,
) {
    start_log!(
        "replica {} of {} in cluster {} listening on {}",
        sb.replica,
        sb.replica_count,
        sb.cluster,
        options.addresses[sb.replica as usize]
    );
    start_log!(
        "configuration: message_size_max={} journal_slot_count={} pipeline_max={} clients_max={} direct_io={}",
        config.message_size_max,
        config.journal_slot_count,
        config.pipeline_max,
        config.clients_max,
        !options.development
    );
    start_log!(
        "memory budget: message pool {} MiB ({} messages), data file {} MiB",
        pool.size_bytes() / (1024 * 1024),
        messages,
        layout.total_size() / (1024 * 1024)
    );
}

/// The ledger, its pages touched now rather than inside commits (see `Ledger::prefault`).
fn open_ledger(options: &StartOptions, config: &Config) -> Ledger {
    let ledger_config = LedgerConfig {
        accounts_max: options.accounts_max,
        transfers_max: options.transfers_max,
        message_size_max: config.message_size_max,
    };
    let reserved = ledger_config.memory_bytes();
    let mut ledger = Ledger::new(ledger_config);
    let touched = ledger.prefault();
    start_log!(
        "ledger: accounts_max={} transfers_max={}: {} MiB reserved, {} MiB touched at start",
        options.accounts_max,
        options.transfers_max,
        reserved / (1024 * 1024),
        touched / (1024 * 1024)
    );
    ledger
}

/// The replica's counters when it stops, in one line.
fn log_stop(runtime: &Runtime<Ledger>) {
    let (r, bus) = (&runtime.replica, &runtime.replica.bus().stats);
    let s = r.stats();
    // What happened while it ran, in one line: a slow run shows here as view changes, resent
    // prepares or dropped sends.
    start_log!(
        "replica {}: stopping (signal): view={} status={:?} op={} commit_max={}; view_changes={} \
         views_started={} commits={} prepares_resent={} repairs_headers={} repairs_prepares={} \
         pool_exhausted={} dropped_invalid={}; bus: accepted={} connected={} send_dropped={} \
         closed_peer={} closed_invalid={} receives_deferred={}",
        r.index(),
        r.view(),
        r.status(),
        r.op(),
        r.commit_max(),
        s.view_changes,
        s.views_started,
        s.commits,
        s.prepares_resent,
        s.repairs_headers,
        s.repairs_prepares,
        s.pool_exhausted,
        s.messages_dropped_invalid,
        bus.accepted,
        bus.connected,
        bus.send_dropped,
        bus.closed_peer,
        bus.closed_invalid,
        bus.receives_deferred
    );
}

/// The development replica's ledger capacity unless given (tens of MB, not the production
/// default's 1.5 GiB).
const DEVELOPMENT_ACCOUNTS_MAX: u32 = 1 << 14;
const DEVELOPMENT_TRANSFERS_MAX: u32 = 1 << 17;

/// The development replica's data file: 64 KiB messages (a batch of up to 510 events; clients
/// learn the size when they register), a short journal and few sessions, so the file and the
/// message pool are a few MiB rather than 1.1 GB and 1 GiB.
const DEVELOPMENT_SIZES: Sizes = Sizes {
    message_size_max: 64 * 1024,
    journal_slot_count: 64,
    pipeline_max: 4,
    clients_max: 16,
};

/// Development data files formatted by earlier versions: small ledger capacity still (1 MiB
/// messages).
const DEVELOPMENT_SIZES_EARLIER: Sizes = Sizes {
    message_size_max: 1024 * 1024,
    journal_slot_count: 32,
    pipeline_max: 4,
    clients_max: 16,
};

/// The development replica: one replica on 127.0.0.1:3000 (or `address`), data under ./data/,
/// formatted on first start. The address is checked before anything is formatted.
pub fn start_development(
    trace: bool,
    address: Option<&str>,
    accounts_max: Option<u32>,
    transfers_max: Option<u32>,
    metrics: Option<SocketAddr>,
) -> Result<(), Failure> {
    let addresses = parse_addresses(address.unwrap_or("127.0.0.1:3000"))?;
    if addresses.len() != 1 {
        return Err(Failure::usage(
            "--development runs one replica: give --addresses one address (or a port)",
        ));
    }
    if let Err(e) = std::net::TcpListener::bind(addresses[0]) {
        return Err(Failure::runtime(format!(
            "cannot listen on {}: {e}. Is a replica already running there? Stop it, or pick \
             another port with --addresses=<port>",
            addresses[0]
        )));
    }
    if let Some(address) = metrics {
        if let Err(e) = std::net::TcpListener::bind(address) {
            return Err(Failure::runtime(format!(
                "--metrics: cannot listen on {address}: {e}. Pick another port with \
                 --metrics=<port>"
            )));
        }
    }
    let path = PathBuf::from("data/0_0.vsr");
    if !path.exists() {
        std::fs::create_dir_all("data")
            .map_err(|e| Failure::runtime(format!("create ./data: {e}")))?;
        start_log!(
            "DEVELOPMENT MODE: formatting a new single-replica data file at {}",
            path.display()
        );
        format(&path, 0, 0, 1, &DEVELOPMENT_SIZES)?;
    }
    // A file formatted by an older version with production sizes may hold more than the small
    // ledger: it keeps the production capacity, or its checkpoint would not fit.
    let sizes = Sizes::of_superblock(&read_superblock(&path)?);
    let small = sizes == DEVELOPMENT_SIZES || sizes == DEVELOPMENT_SIZES_EARLIER;
    let production = crate::ledger::LedgerConfig::default();
    let (accounts_default, transfers_default) = match small {
        true => (DEVELOPMENT_ACCOUNTS_MAX, DEVELOPMENT_TRANSFERS_MAX),
        false => (production.accounts_max, production.transfers_max),
    };
    let accounts_max = accounts_max.unwrap_or(accounts_default);
    let transfers_max = transfers_max.unwrap_or(transfers_default);
    start(StartOptions {
        path,
        addresses,
        development: true,
        trace,
        accounts_max,
        transfers_max,
        metrics,
    })
}
