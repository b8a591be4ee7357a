//! The ledger's records as field lists, shared by `vsr client` (JSON lines) and `vsr repl`
//! (statements): parse named fields into the wire structs, and render replies back, always with
//! TigerBeetle's field names and flag bit positions.

use crate::ledger::{
    Account, AccountBalance, AccountFilter, CreateAccountResult, CreateResult,
    CreateTransferResult, LedgerOperation, QueryFilter, Transfer,
};
use zerocopy::{FromBytes, FromZeros, IntoBytes};

/// A field's value as written by a user: a number (any size up to u128) or a list of flag names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Number(u128),
    Flags(Vec<String>),
}

/// One event as (field, value) pairs, or a bare id for lookups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Fields(Vec<(String, Value)>),
    Id(u128),
}

pub const ACCOUNT_FLAGS: &[&str] = &[
    "linked",
    "debits_must_not_exceed_credits",
    "credits_must_not_exceed_debits",
    "history",
    "imported",
    "closed",
];
pub const TRANSFER_FLAGS: &[&str] = &[
    "linked",
    "pending",
    "post_pending_transfer",
    "void_pending_transfer",
    "balancing_debit",
    "balancing_credit",
    "closing_debit",
    "closing_credit",
    "imported",
];
pub const ACCOUNT_FILTER_FLAGS: &[&str] = &["debits", "credits", "reversed"];
pub const QUERY_FILTER_FLAGS: &[&str] = &["reversed"];

pub fn operation_from_name(name: &str) -> Result<LedgerOperation, String> {
    LedgerOperation::ALL
        .into_iter()
        .find(|op| op.name() == name)
        .ok_or_else(|| {
            let names: Vec<&str> = LedgerOperation::ALL.iter().map(|op| op.name()).collect();
            format!("unknown operation {name:?}; one of: {}", names.join(", "))
        })
}

fn flags_value(value: &Value, names: &[&str]) -> Result<u128, String> {
    match value {
        Value::Number(n) => Ok(*n),
        Value::Flags(list) => {
            let mut bits = 0u128;
            for name in list {
                let bit = names.iter().position(|n| n == name).ok_or_else(|| {
                    format!("unknown flag {name:?}; one of: {}", names.join(", "))
                })?;
                bits |= 1 << bit;
            }
            Ok(bits)
        }
    }
}

/// An unsigned integer up to 2^128-1 as users write one: decimal, or `0x`/`0o`/`0b` for hex,
/// octal or binary, with `_` allowed between digits (`1_000`, `0xffff_ffff`).
pub fn parse_number(text: &str) -> Option<u128> {
    let lower = text.to_ascii_lowercase();
    let (radix, digits) = match lower.get(..2) {
        Some("0x") => (16, &lower[2..]),
        Some("0o") => (8, &lower[2..]),
        Some("0b") => (2, &lower[2..]),
        _ => (10, lower.as_str()),
    };
    let well_placed = !digits.starts_with('_') && !digits.ends_with('_') && !digits.contains("__");
    let digits = digits.replace('_', "");
    if !well_placed || digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u128::from_str_radix(&digits, radix).ok()
}

/// The one error every malformed number gets.
fn number_error(field: &str, text: &str) -> String {
    format!("{field}: {text:?} is not an unsigned integer up to 2^128-1")
}

/// The most records one reply holds: TigerBeetle's REPL default for a filter's `limit`.
pub fn results_max() -> u128 {
    let body =
        crate::config::Config::production(1).message_size_max as usize - crate::header::HEADER_SIZE;
    (body / core::mem::size_of::<Transfer>()) as u128
}

fn fit<T: TryFrom<u128>>(field: &str, value: u128) -> Result<T, String> {
    T::try_from(value).map_err(|_| format!("{field}: {value} does not fit the field"))
}

struct Fields<'a> {
    pairs: &'a [(String, Value)],
    used: Vec<bool>,
}

impl<'a> Fields<'a> {
    fn new(pairs: &'a [(String, Value)]) -> Fields<'a> {
        Fields {
            pairs,
            used: vec![false; pairs.len()],
        }
    }

    fn get(&mut self, name: &str, flags: Option<&[&str]>) -> Result<u128, String> {
        let Some(index) = self.pairs.iter().position(|(n, _)| n == name) else {
            return Ok(0);
        };
        self.used[index] = true;
        match (&self.pairs[index].1, flags) {
            (value, Some(names)) => flags_value(value, names),
            (Value::Number(n), None) => Ok(*n),
            (Value::Flags(_), None) => Err(format!("{name}: expected a number")),
        }
    }

    fn finish(self, what: &str) -> Result<(), String> {
        match self.used.iter().position(|u| !u) {
            Some(i) => Err(format!("{what} has no field {:?}", self.pairs[i].0)),
            None => Ok(()),
        }
    }
}

fn account(pairs: &[(String, Value)]) -> Result<Account, String> {
    let mut f = Fields::new(pairs);
    let mut a = Account::new_zeroed();
    a.id = f.get("id", None)?;
    a.debits_pending = f.get("debits_pending", None)?;
    a.debits_posted = f.get("debits_posted", None)?;
    a.credits_pending = f.get("credits_pending", None)?;
    a.credits_posted = f.get("credits_posted", None)?;
    a.user_data_128 = f.get("user_data_128", None)?;
    a.user_data_64 = fit("user_data_64", f.get("user_data_64", None)?)?;
    a.user_data_32 = fit("user_data_32", f.get("user_data_32", None)?)?;
    a.reserved = fit("reserved", f.get("reserved", None)?)?;
    a.ledger = fit("ledger", f.get("ledger", None)?)?;
    a.code = fit("code", f.get("code", None)?)?;
    a.flags = fit("flags", f.get("flags", Some(ACCOUNT_FLAGS))?)?;
    a.timestamp = fit("timestamp", f.get("timestamp", None)?)?;
    f.finish("an account")?;
    Ok(a)
}

fn transfer(pairs: &[(String, Value)]) -> Result<Transfer, String> {
    let mut f = Fields::new(pairs);
    let mut t = Transfer::new_zeroed();
    t.id = f.get("id", None)?;
    t.debit_account_id = f.get("debit_account_id", None)?;
    t.credit_account_id = f.get("credit_account_id", None)?;
    t.amount = f.get("amount", None)?;
    t.pending_id = f.get("pending_id", None)?;
    t.user_data_128 = f.get("user_data_128", None)?;
    t.user_data_64 = fit("user_data_64", f.get("user_data_64", None)?)?;
    t.user_data_32 = fit("user_data_32", f.get("user_data_32", None)?)?;
    t.timeout = fit("timeout", f.get("timeout", None)?)?;
    t.ledger = fit("ledger", f.get("ledger", None)?)?;
    t.code = fit("code", f.get("code", None)?)?;
    t.flags = fit("flags", f.get("flags", Some(TRANSFER_FLAGS))?)?;
    t.timestamp = fit("timestamp", f.get("timestamp", None)?)?;
    f.finish("a transfer")?;
    Ok(t)
}

fn account_filter(pairs: &[(String, Value)]) -> Result<AccountFilter, String> {
    let mut f = Fields::new(pairs);
    let mut filter = AccountFilter::new_zeroed();
    filter.account_id = f.get("account_id", None)?;
    filter.user_data_128 = f.get("user_data_128", None)?;
    filter.user_data_64 = fit("user_data_64", f.get("user_data_64", None)?)?;
    filter.user_data_32 = fit("user_data_32", f.get("user_data_32", None)?)?;
    filter.code = fit("code", f.get("code", None)?)?;
    filter.timestamp_min = fit("timestamp_min", f.get("timestamp_min", None)?)?;
    filter.timestamp_max = fit("timestamp_max", f.get("timestamp_max", None)?)?;
    filter.limit = fit("limit", f.get("limit", None)?)?;
    filter.flags = fit("flags", f.get("flags", Some(ACCOUNT_FILTER_FLAGS))?)?;
    f.finish("an account filter")?;
    Ok(filter)
}

fn query_filter(pairs: &[(String, Value)]) -> Result<QueryFilter, String> {
    let mut f = Fields::new(pairs);
    let mut filter = QueryFilter::new_zeroed();
    filter.user_data_128 = f.get("user_data_128", None)?;
    filter.user_data_64 = fit("user_data_64", f.get("user_data_64", None)?)?;
    filter.user_data_32 = fit("user_data_32", f.get("user_data_32", None)?)?;
    filter.ledger = fit("ledger", f.get("ledger", None)?)?;
    filter.code = fit("code", f.get("code", None)?)?;
    filter.timestamp_min = fit("timestamp_min", f.get("timestamp_min", None)?)?;
    filter.timestamp_max = fit("timestamp_max", f.get("timestamp_max", None)?)?;
    filter.limit = fit("limit", f.get("limit", None)?)?;
    filter.flags = fit("flags", f.get("flags", Some(QUERY_FILTER_FLAGS))?)?;
    f.finish("a query filter")?;
    Ok(filter)
}

fn id_of(event: &Event) -> Result<u128, String> {
    match event {
        Event::Id(id) => Ok(*id),
        Event::Fields(pairs) => match pairs.as_slice() {
            [(name, Value::Number(id))] if name == "id" => Ok(*id),
            _ => Err("lookups take ids (e.g. 1, or {\"id\": 1})".into()),
        },
    }
}

fn fields_of(event: &Event) -> Result<&[(String, Value)], String> {
    match event {
        Event::Fields(pairs) => Ok(pairs),
        Event::Id(_) => Err("expected an object of fields".into()),
    }
}

/// Encodes a request body; `body_size_max` bounds it.
pub fn encode(
    operation: LedgerOperation,
    events: &[Event],
    body_size_max: usize,
) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    match operation {
        LedgerOperation::CreateAccounts => {
            for e in events {
                body.extend_from_slice(account(fields_of(e)?)?.as_bytes());
            }
        }
        LedgerOperation::CreateTransfers => {
            for e in events {
                body.extend_from_slice(transfer(fields_of(e)?)?.as_bytes());
            }
        }
        LedgerOperation::LookupAccounts | LedgerOperation::LookupTransfers => {
            for e in events {
                body.extend_from_slice(&id_of(e)?.to_le_bytes());
            }
        }
        LedgerOperation::GetAccountTransfers | LedgerOperation::GetAccountBalances => {
            let [e] = events else {
                return Err(format!("{} takes exactly one filter", operation.name()));
            };
            body.extend_from_slice(account_filter(fields_of(e)?)?.as_bytes());
        }
        LedgerOperation::QueryAccounts | LedgerOperation::QueryTransfers => {
            let [e] = events else {
                return Err(format!("{} takes exactly one filter", operation.name()));
            };
            body.extend_from_slice(query_filter(fields_of(e)?)?.as_bytes());
        }
    }
    if body.len() > body_size_max {
        return Err(format!(
            "too much data: {} bytes of events, at most {body_size_max} fit in a request",
            body.len()
        ));
    }
    Ok(body)
}

/// A decoded reply: what kind of records, and each as (field, rendered value) pairs.
pub struct Reply {
    pub kind: &'static str,
    pub records: Vec<Vec<(&'static str, String)>>,
}

fn render_account(a: &Account) -> Vec<(&'static str, String)> {
    vec![
        ("id", a.id.to_string()),
        ("debits_pending", a.debits_pending.to_string()),
        ("debits_posted", a.debits_posted.to_string()),
        ("credits_pending", a.credits_pending.to_string()),
        ("credits_posted", a.credits_posted.to_string()),
        ("user_data_128", a.user_data_128.to_string()),
        ("user_data_64", a.user_data_64.to_string()),
        ("user_data_32", a.user_data_32.to_string()),
        ("reserved", a.reserved.to_string()),
        ("ledger", a.ledger.to_string()),
        ("code", a.code.to_string()),
        ("flags", a.flags.to_string()),
        ("timestamp", a.timestamp.to_string()),
    ]
}

fn render_transfer(t: &Transfer) -> Vec<(&'static str, String)> {
    vec![
        ("id", t.id.to_string()),
        ("debit_account_id", t.debit_account_id.to_string()),
        ("credit_account_id", t.credit_account_id.to_string()),
        ("amount", t.amount.to_string()),
        ("pending_id", t.pending_id.to_string()),
        ("user_data_128", t.user_data_128.to_string()),
        ("user_data_64", t.user_data_64.to_string()),
        ("user_data_32", t.user_data_32.to_string()),
        ("timeout", t.timeout.to_string()),
        ("ledger", t.ledger.to_string()),
        ("code", t.code.to_string()),
        ("flags", t.flags.to_string()),
        ("timestamp", t.timestamp.to_string()),
    ]
}

fn render_balance(b: &AccountBalance) -> Vec<(&'static str, String)> {
    vec![
        ("debits_pending", b.debits_pending.to_string()),
        ("debits_posted", b.debits_posted.to_string()),
        ("credits_pending", b.credits_pending.to_string()),
        ("credits_posted", b.credits_posted.to_string()),
        ("timestamp", b.timestamp.to_string()),
    ]
}

/// Flag names of a rendered record's `flags` joined by '|', for readable REPL output; empty
/// if none is set or a set bit has no name (the integer then says it all).
pub fn flags_text(kind: &str, bits: u32) -> String {
    flag_list(kind, bits).map_or_else(String::new, |names| names.join("|"))
}

pub fn decode(operation: LedgerOperation, body: &[u8]) -> Result<Reply, String> {
    fn records<T: FromBytes>(body: &[u8], size: usize) -> Result<Vec<T>, String> {
        if body.len() % size != 0 {
            return Err(format!(
                "reply of {} bytes is not a whole number of {size}-byte records",
                body.len()
            ));
        }
        Ok(body
            .chunks(size)
            .map(|c| T::read_from_bytes(c).unwrap())
            .collect())
    }
    let reply = match operation {
        LedgerOperation::CreateAccounts | LedgerOperation::CreateTransfers => {
            let results: Vec<CreateResult> = records(body, std::mem::size_of::<CreateResult>())?;
            let records = results
                .iter()
                .map(|r| {
                    let name = if operation == LedgerOperation::CreateAccounts {
                        CreateAccountResult::from_u32(r.result).map(|c| c.name())
                    } else {
                        CreateTransferResult::from_u32(r.result).map(|c| c.name())
                    };
                    vec![
                        ("index", r.index.to_string()),
                        ("result", name.unwrap_or("unknown").to_string()),
                    ]
                })
                .collect();
            Reply {
                kind: "results",
                records,
            }
        }
        LedgerOperation::LookupAccounts | LedgerOperation::QueryAccounts => {
            let accounts: Vec<Account> = records(body, 128)?;
            Reply {
                kind: "accounts",
                records: accounts.iter().map(render_account).collect(),
            }
        }
        LedgerOperation::LookupTransfers
        | LedgerOperation::GetAccountTransfers
        | LedgerOperation::QueryTransfers => {
            let transfers: Vec<Transfer> = records(body, 128)?;
            Reply {
                kind: "transfers",
                records: transfers.iter().map(render_transfer).collect(),
            }
        }
        LedgerOperation::GetAccountBalances => {
            let balances: Vec<AccountBalance> =
                records(body, std::mem::size_of::<AccountBalance>())?;
            Reply {
                kind: "balances",
                records: balances.iter().map(render_balance).collect(),
            }
        }
    };
    Ok(reply)
}

/// The reply as one JSON line; numbers stay numbers at any size; `result` is a string.
/// How `vsr client` writes replies.
#[derive(Clone, Copy, Debug)]
pub struct JsonStyle {
    /// Integers of 64 bits and more as JSON strings (JavaScript and jq 1.6 round numbers above
    /// 2^53); bare numbers if false.
    pub wide_as_strings: bool,
    /// `flags` as a list of names; the integer bit set if false.
    pub flags_as_names: bool,
}

impl Default for JsonStyle {
    fn default() -> JsonStyle {
        JsonStyle {
            wide_as_strings: true,
            flags_as_names: true,
        }
    }
}

/// Fields of 64 or 128 bits.
const WIDE_FIELDS: &[&str] = &[
    "id",
    "debits_pending",
    "debits_posted",
    "credits_pending",
    "credits_posted",
    "user_data_128",
    "user_data_64",
    "debit_account_id",
    "credit_account_id",
    "amount",
    "pending_id",
    "timestamp",
];

/// The names of `bits`, or `None` if a set bit has no name (then the integer says it all).
fn flag_list(kind: &str, bits: u32) -> Option<Vec<&'static str>> {
    let names = match kind {
        "accounts" => ACCOUNT_FLAGS,
        "transfers" => TRANSFER_FLAGS,
        _ => return None,
    };
    if bits >> names.len() != 0 {
        return None;
    }
    Some(
        names
            .iter()
            .enumerate()
            .filter(|(i, _)| bits & (1 << i) != 0)
            .map(|(_, n)| *n)
            .collect(),
    )
}

pub fn reply_json(reply: &Reply, style: JsonStyle) -> String {
    let field = |name: &str, value: &str| -> String {
        if name == "result" || (style.wide_as_strings && WIDE_FIELDS.contains(&name)) {
            return format!("\"{name}\":\"{value}\"");
        }
        if name == "flags" && style.flags_as_names {
            let bits = value.parse().expect("flags render as an integer");
            if let Some(list) = flag_list(reply.kind, bits) {
                let quoted: Vec<String> = list.iter().map(|n| format!("\"{n}\"")).collect();
                return format!("\"{name}\":[{}]", quoted.join(","));
            }
        }
        format!("\"{name}\":{value}")
    };
    let records: Vec<String> = reply
        .records
        .iter()
        .map(|fields| {
            let inner: Vec<String> = fields.iter().map(|(n, v)| field(n, v)).collect();
            format!("{{{}}}", inner.join(","))
        })
        .collect();
    format!("{{\"{}\":[{}]}}", reply.kind, records.join(","))
}

/// Parses one JSON request line into (operation, events).
pub fn parse_json_request(line: &str) -> Result<(LedgerOperation, Vec<Event>), String> {
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
    let object = value.as_object().ok_or("a request is a JSON object")?;
    for key in object.keys() {
        if key != "operation" && key != "events" {
            return Err(format!(
                "unknown key {key:?} (expected \"operation\" and \"events\")"
            ));
        }
    }
    let operation = object
        .get("operation")
        .and_then(|o| o.as_str())
        .ok_or("missing \"operation\" (a string)")?;
    let operation = operation_from_name(operation)?;
    let events_value = object.get("events").ok_or("missing \"events\"")?;
    let list: Vec<&serde_json::Value> = match events_value {
        serde_json::Value::Array(items) => items.iter().collect(),
        // get_account_* take one filter object; accept it bare too.
        serde_json::Value::Object(_) => vec![events_value],
        _ => return Err("\"events\" must be an array".into()),
    };
    let mut events = Vec::with_capacity(list.len());
    for item in list {
        events.push(json_event(item)?);
    }
    Ok((operation, events))
}

fn json_number(value: &serde_json::Value, field: &str) -> Result<u128, String> {
    match value {
        serde_json::Value::Number(n) => {
            let text = n.to_string();
            text.parse::<u128>().map_err(|_| number_error(field, &text))
        }
        serde_json::Value::String(s) => parse_number(s).ok_or_else(|| number_error(field, s)),
        _ => Err(format!(
            "{field}: expected an unsigned integer up to 2^128-1 (a number or a string)"
        )),
    }
}

fn json_event(value: &serde_json::Value) -> Result<Event, String> {
    match value {
        serde_json::Value::Object(map) => {
            let mut pairs = Vec::with_capacity(map.len());
            for (key, v) in map {
                let value = match v {
                    serde_json::Value::Array(names) => Value::Flags(
                        names
                            .iter()
                            .map(|n| {
                                n.as_str()
                                    .map(str::to_string)
                                    .ok_or_else(|| format!("{key}: flag names are strings"))
                            })
                            .collect::<Result<_, _>>()?,
                    ),
                    other => Value::Number(json_number(other, key)?),
                };
                pairs.push((key.clone(), value));
            }
            Ok(Event::Fields(pairs))
        }
        other => Ok(Event::Id(json_number(other, "id")?)),
    }
}

/// Parses a REPL statement: `operation field=value ..., field=value ...;` (objects separated by
/// commas; flags as `a|b`; bare numbers as ids for lookups).
pub fn parse_statement(statement: &str) -> Result<(LedgerOperation, Vec<Event>), String> {
    let statement = statement.trim().trim_end_matches(';').trim();
    let (name, rest) = statement
        .split_once(char::is_whitespace)
        .unwrap_or((statement, ""));
    let operation = operation_from_name(name)?;
    let mut events = Vec::new();
    for object in rest.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        let mut pairs = Vec::new();
        for token in object.split_whitespace() {
            match token.split_once('=') {
                Some((key, value)) => {
                    let value = if value.contains('|')
                        || value
                            .chars()
                            .next()
                            .is_some_and(|c| c.is_ascii_alphabetic())
                    {
                        Value::Flags(
                            value
                                .split('|')
                                .filter(|s| !s.is_empty())
                                .map(str::to_string)
                                .collect(),
                        )
                    } else {
                        Value::Number(parse_number(value).ok_or_else(|| number_error(key, value))?)
                    };
                    pairs.push((key.to_string(), value));
                }
                None if pairs.is_empty() => {
                    let numeric = token.starts_with(|c: char| c.is_ascii_digit() || c == '-');
                    events.push(Event::Id(parse_number(token).ok_or_else(|| {
                        if numeric {
                            number_error("id", token)
                        } else {
                            format!("{token:?}: expected an id or field=value")
                        }
                    })?));
                }
                None => return Err(format!("{token:?}: expected field=value")),
            }
        }
        if !pairs.is_empty() {
            events.push(Event::Fields(pairs));
        }
    }
    filter_defaults(operation, &mut events);
    Ok((operation, events))
}

/// TigerBeetle's REPL defaults for what a filter leaves out: `limit` as many as a reply holds,
/// and for the account filters `flags = debits|credits` (a limit or flags of 0 match nothing).
fn filter_defaults(operation: LedgerOperation, events: &mut [Event]) {
    let account_filter = matches!(
        operation,
        LedgerOperation::GetAccountTransfers | LedgerOperation::GetAccountBalances
    );
    let query_filter = matches!(
        operation,
        LedgerOperation::QueryAccounts | LedgerOperation::QueryTransfers
    );
    if !account_filter && !query_filter {
        return;
    }
    for event in events {
        let Event::Fields(pairs) = event else {
            continue;
        };
        let has = |pairs: &Vec<(String, Value)>, name: &str| pairs.iter().any(|(n, _)| n == name);
        if !has(pairs, "limit") {
            pairs.push(("limit".into(), Value::Number(results_max())));
        }
        if account_filter && !has(pairs, "flags") {
            pairs.push((
                "flags".into(),
                Value::Flags(vec!["debits".into(), "credits".into()]),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_parse_in_every_form_users_write() {
        assert_eq!(parse_number("0"), Some(0));
        assert_eq!(parse_number("1_000"), Some(1000));
        assert_eq!(parse_number("0x10"), Some(16));
        assert_eq!(parse_number("0XfF_ff"), Some(0xffff));
        assert_eq!(parse_number("0o17"), Some(15));
        assert_eq!(parse_number("0b1010"), Some(10));
        assert_eq!(parse_number(&u128::MAX.to_string()), Some(u128::MAX));
        for bad in [
            "", "-5", "+5", "2e3", "1__0", "_1", "1_", "0x", "0xg", "0b2", "12a",
        ] {
            assert_eq!(parse_number(bad), None, "{bad:?}");
        }
        // 2^128 and beyond.
        assert_eq!(
            parse_number("340282366920938463463374607431768211456"),
            None
        );
    }

    #[test]
    fn statements_get_one_number_error_whatever_the_case() {
        for value in ["-5", "340282366920938463463374607431768211456", "1__0"] {
            let expected = format!("id: {value:?} is not an unsigned integer up to 2^128-1");
            let error = parse_statement(&format!("lookup_accounts id={value};")).unwrap_err();
            assert_eq!(error, expected);
            let error = parse_statement(&format!("lookup_accounts {value};")).unwrap_err();
            assert_eq!(error, expected);
        }
        let json = parse_json_request(r#"{"operation":"lookup_accounts","events":["-5"]}"#);
        assert_eq!(
            json.unwrap_err(),
            "id: \"-5\" is not an unsigned integer up to 2^128-1"
        );
        let (_, events) =
            parse_json_request(r#"{"operation":"lookup_accounts","events":["0x10", 3]}"#).unwrap();
        assert_eq!(events, vec![Event::Id(16), Event::Id(3)]);
    }

    #[test]
    fn filters_default_as_tigerbeetles_repl() {
        let (operation, events) = parse_statement("get_account_transfers account_id=3;").unwrap();
        let body = encode(operation, &events, 1 << 20).unwrap();
        let filter = AccountFilter::read_from_bytes(&body).unwrap();
        assert_eq!(filter.account_id, 3);
        assert_eq!(u128::from(filter.limit), results_max());
        assert_eq!(filter.flags, 0b11, "debits|credits");
        // What the user gives is kept.
        let (operation, events) =
            parse_statement("get_account_balances account_id=3 limit=5 flags=credits;").unwrap();
        let body = encode(operation, &events, 1 << 20).unwrap();
        let filter = AccountFilter::read_from_bytes(&body).unwrap();
        assert_eq!((filter.limit, filter.flags), (5, 0b10));
        let (operation, events) = parse_statement("query_transfers code=10").unwrap();
        let body = encode(operation, &events, 1 << 20).unwrap();
        let filter = QueryFilter::read_from_bytes(&body).unwrap();
        assert_eq!((u128::from(filter.limit), filter.flags), (results_max(), 0));
        assert_eq!(results_max(), 8190);
    }

    #[test]
    fn json_replies_keep_wide_integers_exact_and_name_flags() {
        let mut account = Account::new_zeroed();
        account.id = u128::MAX;
        account.user_data_64 = u64::MAX;
        account.ledger = 700;
        account.flags = 0b1000; // history
        let reply = Reply {
            kind: "accounts",
            records: vec![render_account(&account)],
        };
        let json: serde_json::Value =
            serde_json::from_str(&reply_json(&reply, JsonStyle::default())).unwrap();
        let record = &json["accounts"][0];
        assert_eq!(record["id"], serde_json::json!(u128::MAX.to_string()));
        assert_eq!(
            record["user_data_64"],
            serde_json::json!(u64::MAX.to_string())
        );
        assert_eq!(record["ledger"], serde_json::json!(700));
        assert_eq!(record["flags"], serde_json::json!(["history"]));
        assert_eq!(record["reserved"], serde_json::json!(0));
        // The older style, on request.
        let bare = reply_json(
            &reply,
            JsonStyle {
                wide_as_strings: false,
                flags_as_names: false,
            },
        );
        assert!(bare.contains(&format!("\"id\":{}", u128::MAX)), "{bare}");
        assert!(bare.contains("\"flags\":8"), "{bare}");
        // A bit without a name is not dropped: the integer is written.
        account.flags = 1 << 15;
        let reply = Reply {
            kind: "accounts",
            records: vec![render_account(&account)],
        };
        assert!(reply_json(&reply, JsonStyle::default()).contains("\"flags\":32768"));
    }
}
