//! The runtime's log lines (`vsr start`): every line carries an RFC 3339 UTC timestamp, a level,
//! the replica's index and a component, as text (default) or one JSON object a line
//! (`--log-format=json`) for log shippers. Lines go to stderr. The protocol never prints: the
//! driver logs the events it polls through here. A line repeated within 10 s is held back and
//! counted (`Repeats`), and the count written once the 10 s have passed, so a flapping peer
//! cannot flood the log and nothing is silently dropped.

use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicI16, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    fn name(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

static JSON: AtomicBool = AtomicBool::new(false);
/// The replica this process runs; -1 until known.
static REPLICA: AtomicI16 = AtomicI16::new(-1);

/// `text` or `json`.
pub fn set_format(format: &str) -> Result<(), String> {
    match format {
        "text" => JSON.store(false, Ordering::Relaxed),
        "json" => JSON.store(true, Ordering::Relaxed),
        other => return Err(format!("--log-format {other:?}: use text or json")),
    }
    Ok(())
}

pub fn set_replica(replica: u8) {
    REPLICA.store(i16::from(replica), Ordering::Relaxed);
}

/// Writes one line. A line identical (level, component, text) to one written less than
/// `REPEAT_WINDOW_MS` ago is held back and counted; once the window has passed, the count is
/// written with the line (`flush_held`, on the runtime's tick, or the next line logged).
/// Debug lines (the protocol trace) are never held back.
pub fn log(level: Level, component: &str, message: &str) {
    if level == Level::Debug {
        write_line(level, component, message);
        return;
    }
    let now_ms = process_ms();
    let mut repeats = REPEATS.lock().unwrap_or_else(|e| e.into_inner());
    for held in repeats.due(now_ms) {
        write_held(&held);
    }
    let key = repeat_key(level, component, message);
    let (admitted, evicted) = repeats.admit(key, now_ms, (level, component, message));
    drop(repeats);
    if let Some(held) = evicted {
        write_held(&held);
    }
    if admitted {
        write_line(level, component, message);
    }
}

/// Writes the counts of lines held back whose window has passed (called every tick).
pub fn flush_held() {
    let now_ms = process_ms();
    let due = REPEATS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .due(now_ms);
    for held in due {
        write_held(&held);
    }
}

fn write_line(level: Level, component: &str, message: &str) {
    let line = format_line(
        SystemTime::now(),
        level,
        REPLICA.load(Ordering::Relaxed),
        component,
        message,
        JSON.load(Ordering::Relaxed),
    );
    eprintln!("{line}");
}

fn write_held(held: &Held) {
    let message = format!(
        "{} ({} identical lines held back)",
        held.message, held.count
    );
    write_line(held.level, &held.component, &message);
}

/// Milliseconds of monotonic time since the first line this process logged.
fn process_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// Identical lines within this window after one is written are held back.
const REPEAT_WINDOW_MS: u64 = 10_000;
/// Distinct lines remembered (the oldest is forgotten first, its count written).
const REPEAT_ENTRIES: usize = 32;

static REPEATS: Mutex<Repeats> = Mutex::new(Repeats::new());

fn repeat_key(level: Level, component: &str, message: &str) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    (level.name(), component, message).hash(&mut hasher);
    hasher.finish() | 1
}

/// A line held back `count` times, to be written with its count.
#[derive(Debug, PartialEq, Eq)]
struct Held {
    level: Level,
    component: String,
    message: String,
    count: u64,
}

struct RepeatEntry {
    /// 0: unused.
    key: u64,
    logged_ms: u64,
    held: u64,
    level: Level,
    component: String,
    message: String,
}

impl RepeatEntry {
    const UNUSED: RepeatEntry = RepeatEntry {
        key: 0,
        logged_ms: 0,
        held: 0,
        level: Level::Info,
        component: String::new(),
        message: String::new(),
    };

    /// Its held-back count as a line to write, and the count reset.
    fn take_held(&mut self) -> Option<Held> {
        if self.held == 0 {
            return None;
        }
        let count = std::mem::take(&mut self.held);
        Some(Held {
            level: self.level,
            component: self.component.clone(),
            message: self.message.clone(),
            count,
        })
    }
}

struct Repeats {
    entries: [RepeatEntry; REPEAT_ENTRIES],
}

impl Repeats {
    const fn new() -> Repeats {
        Repeats {
            entries: [RepeatEntry::UNUSED; REPEAT_ENTRIES],
        }
    }

    /// Whether to write the line now (else it is held back and counted), and the count of a
    /// line forgotten to make room for it.
    fn admit(
        &mut self,
        key: u64,
        now_ms: u64,
        (level, component, message): (Level, &str, &str),
    ) -> (bool, Option<Held>) {
        assert_ne!(key, 0);
        if let Some(entry) = self.entries.iter_mut().find(|e| e.key == key) {
            if now_ms.saturating_sub(entry.logged_ms) < REPEAT_WINDOW_MS {
                entry.held += 1;
                return (false, None);
            }
            entry.logged_ms = now_ms;
            return (true, None);
        }
        let oldest = self
            .entries
            .iter_mut()
            .min_by_key(|e| (e.key != 0, e.logged_ms))
            .unwrap();
        let evicted = oldest.take_held();
        *oldest = RepeatEntry {
            key,
            logged_ms: now_ms,
            held: 0,
            level,
            component: component.to_string(),
            message: message.to_string(),
        };
        (true, evicted)
    }

    /// Counts whose window has passed, taken to be written.
    fn due(&mut self, now_ms: u64) -> Vec<Held> {
        self.entries
            .iter_mut()
            .filter(|e| e.held > 0 && now_ms.saturating_sub(e.logged_ms) >= REPEAT_WINDOW_MS)
            .filter_map(|e| {
                e.logged_ms = now_ms;
                e.take_held()
            })
            .collect()
    }
}

fn format_line(
    now: SystemTime,
    level: Level,
    replica: i16,
    component: &str,
    message: &str,
    json: bool,
) -> String {
    let time = rfc3339(now);
    if json {
        let mut object = serde_json::Map::new();
        object.insert("time".into(), time.into());
        object.insert("level".into(), level.name().into());
        if replica >= 0 {
            object.insert("replica".into(), replica.into());
        }
        object.insert("component".into(), component.into());
        object.insert("message".into(), message.into());
        return serde_json::Value::Object(object).to_string();
    }
    let mut line = format!("{time} {:<5}", level.name());
    if replica >= 0 {
        let _ = write!(line, " replica={replica}");
    }
    let _ = write!(line, " {component}: {message}");
    line
}

/// `2026-12-07T16:17:12.345Z`.
fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since.as_secs();
    let (year, month, day) = civil_from_days((seconds / 86_400) as i64);
    let of_day = seconds % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60,
        since.subsec_millis()
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let at = |s: u64, ms: u64| rfc3339(UNIX_EPOCH + Duration::from_millis(s * 1000 + ms));
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(at(1_796_660_232, 345), "2026-12-07T16:17:12.345Z");
        assert_eq!(at(4_107_542_399, 999), "2100-02-28T23:59:59.999Z");
    }

    #[test]
    fn repeated_lines_are_held_back_and_counted() {
        let mut repeats = Repeats::new();
        let line = (Level::Warn, "bus", "peer 2 refused");
        let a = repeat_key(line.0, line.1, line.2);
        let b = repeat_key(Level::Warn, "bus", "peer 1 refused");
        assert_ne!(a, b);
        assert_eq!(repeats.admit(a, 1_000, line), (true, None));
        assert_eq!(repeats.admit(a, 2_000, line), (false, None));
        assert_eq!(
            repeats.admit(b, 2_500, (Level::Warn, "bus", "peer 1 refused")),
            (true, None),
            "another line is not held back"
        );
        assert_eq!(repeats.admit(a, 10_999, line), (false, None));
        assert!(
            repeats.due(10_999).is_empty(),
            "not before the window has passed"
        );
        let held = Held {
            level: Level::Warn,
            component: "bus".into(),
            message: "peer 2 refused".into(),
            count: 2,
        };
        assert_eq!(repeats.due(11_000), vec![held]);
        assert!(repeats.due(30_000).is_empty(), "a count is written once");
        assert_eq!(repeats.admit(a, 30_000, line), (true, None));
        assert_eq!(repeats.admit(a, 30_001, line), (false, None));
        // More distinct lines than the table holds: the oldest is forgotten, its count written.
        let mut evicted = Vec::new();
        for i in 0..REPEAT_ENTRIES as u64 * 2 {
            let (admitted, gone) = repeats.admit(1000 + 2 * i + 1, 30_002 + i, line);
            assert!(admitted);
            evicted.extend(gone);
        }
        assert_eq!(evicted.len(), 1);
        assert_eq!(evicted[0].count, 1);
    }

    #[test]
    fn lines_carry_time_level_replica_and_component() {
        let now = UNIX_EPOCH + Duration::from_secs(1_796_660_232);
        let text = format_line(now, Level::Warn, 2, "bus", "peer gone", false);
        assert_eq!(
            text,
            "2026-12-07T16:17:12.000Z warn  replica=2 bus: peer gone"
        );
        let json = format_line(now, Level::Info, 0, "replica", "a \"quoted\" word", true);
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["time"], "2026-12-07T16:17:12.000Z");
        assert_eq!(value["level"], "info");
        assert_eq!(value["replica"], 0);
        assert_eq!(value["component"], "replica");
        assert_eq!(value["message"], "a \"quoted\" word");
        let unknown = format_line(now, Level::Error, -1, "start", "x", false);
        assert_eq!(unknown, "2026-12-07T16:17:12.000Z error start: x");
    }
}
