//! The OS clocks behind the `Time` seam: CLOCK_MONOTONIC and CLOCK_REALTIME.

use crate::time::Time;

#[derive(Default)]
pub struct OsTime;

fn clock(id: libc::clockid_t) -> libc::timespec {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // Safety: `ts` is a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(id, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime failed");
    ts
}

impl Time for OsTime {
    fn monotonic(&self) -> u64 {
        let ts = clock(libc::CLOCK_MONOTONIC);
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }

    fn realtime(&self) -> i64 {
        let ts = clock(libc::CLOCK_REALTIME);
        ts.tv_sec * 1_000_000_000 + ts.tv_nsec
    }
}
