//! The ledger: double-entry accounting with TigerBeetle's public data model and semantics
//! (docs.tigerbeetle.com, "reference"), as a `StateMachine` the replica commits to.
//!
//! - `types`: the wire structs (`Account`, `Transfer`, filters, `AccountBalance`), flags and
//!   result codes.
//! - `state_machine`: `Ledger`, allocated once from `LedgerConfig`.
//! - `workload`: a seeded generator of valid and invalid requests, for tests and the simulator.
//!
//! docs/ledger.md describes every operation and result code.

pub mod digest;
pub mod state_machine;
pub mod table;
pub mod types;
pub mod workload;

#[cfg(test)]
mod model;
#[cfg(test)]
mod tests;

pub use state_machine::{Ledger, LedgerConfig};
pub use types::*;

/// The ledger's operations and their numbers in the header's `operation` field. The numbers are
/// those TigerBeetle 0.16 used on the wire for the same (unbatched) operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum LedgerOperation {
    CreateAccounts = 129,
    CreateTransfers = 130,
    LookupAccounts = 131,
    LookupTransfers = 132,
    GetAccountTransfers = 133,
    GetAccountBalances = 134,
    QueryAccounts = 135,
    QueryTransfers = 136,
}

impl LedgerOperation {
    pub const ALL: [LedgerOperation; 8] = [
        LedgerOperation::CreateAccounts,
        LedgerOperation::CreateTransfers,
        LedgerOperation::LookupAccounts,
        LedgerOperation::LookupTransfers,
        LedgerOperation::GetAccountTransfers,
        LedgerOperation::GetAccountBalances,
        LedgerOperation::QueryAccounts,
        LedgerOperation::QueryTransfers,
    ];

    pub fn from_u8(value: u8) -> Option<LedgerOperation> {
        LedgerOperation::ALL
            .into_iter()
            .find(|&op| op as u8 == value)
    }

    pub fn name(self) -> &'static str {
        match self {
            LedgerOperation::CreateAccounts => "create_accounts",
            LedgerOperation::CreateTransfers => "create_transfers",
            LedgerOperation::LookupAccounts => "lookup_accounts",
            LedgerOperation::LookupTransfers => "lookup_transfers",
            LedgerOperation::GetAccountTransfers => "get_account_transfers",
            LedgerOperation::GetAccountBalances => "get_account_balances",
            LedgerOperation::QueryAccounts => "query_accounts",
            LedgerOperation::QueryTransfers => "query_transfers",
        }
    }

    pub fn from_name(name: &str) -> Option<LedgerOperation> {
        LedgerOperation::ALL
            .into_iter()
            .find(|op| op.name() == name)
    }

    /// Bytes per event in a request body.
    pub fn event_size(self) -> usize {
        match self {
            LedgerOperation::CreateAccounts | LedgerOperation::CreateTransfers => RECORD_SIZE,
            LedgerOperation::LookupAccounts | LedgerOperation::LookupTransfers => 16,
            LedgerOperation::GetAccountTransfers | LedgerOperation::GetAccountBalances => {
                RECORD_SIZE
            }
            LedgerOperation::QueryAccounts | LedgerOperation::QueryTransfers => 64,
        }
    }

    /// Bytes per entry in a reply body.
    pub fn result_size(self) -> usize {
        match self {
            LedgerOperation::CreateAccounts | LedgerOperation::CreateTransfers => 8,
            _ => RECORD_SIZE,
        }
    }

    /// Whether a request carries any number of events (else exactly one filter).
    pub fn is_batchable(self) -> bool {
        matches!(
            self,
            LedgerOperation::CreateAccounts
                | LedgerOperation::CreateTransfers
                | LedgerOperation::LookupAccounts
                | LedgerOperation::LookupTransfers
        )
    }
}
