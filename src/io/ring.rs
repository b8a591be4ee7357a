//! The io_uring ring the whole process shares: submissions from the storage, the bus and the
//! timer, and completions routed back by the owner encoded in each one's user_data.

use io_uring::{cqueue, squeue, IoUring};
use std::fmt;

/// Which part of the process a completion belongs to (top byte of user_data).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Owner {
    Storage = 1,
    Bus = 2,
    Timer = 3,
    Metrics = 4,
}

pub fn user_data(owner: Owner, value: u64) -> u64 {
    assert!(value < 1 << 56);
    ((owner as u64) << 56) | value
}

pub fn owner_of(user_data: u64) -> Option<(Owner, u64)> {
    let value = user_data & ((1 << 56) - 1);
    match user_data >> 56 {
        1 => Some((Owner::Storage, value)),
        2 => Some((Owner::Bus, value)),
        3 => Some((Owner::Timer, value)),
        4 => Some((Owner::Metrics, value)),
        _ => None,
    }
}

/// Why io_uring could not be set up, with what to do about it.
#[derive(Debug)]
pub struct IoSetupError {
    pub errno: i32,
}

impl fmt::Display for IoSetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reason = match self.errno {
            libc::ENOSYS => "the kernel does not support io_uring (Linux 5.6 or newer is needed)",
            libc::EPERM => {
                "io_uring is not permitted: either `sysctl kernel.io_uring_disabled` is set (set it \
                 to 0), or a seccomp profile blocks it (Docker's default does: run the container with \
                 `--security-opt seccomp=unconfined` or a profile that allows io_uring_setup, \
                 io_uring_enter and io_uring_register)"
            }
            libc::ENOMEM => "not enough locked memory for the ring (raise `ulimit -l`)",
            _ => "io_uring_setup failed",
        };
        write!(f, "cannot set up io_uring: {reason} (errno {})", self.errno)
    }
}

impl std::error::Error for IoSetupError {}

pub struct Io {
    ring: IoUring,
    /// Completions read off the ring, reused every loop iteration (no allocation).
    completions: Vec<(u64, i32)>,
    in_flight: usize,
}

impl Io {
    pub fn new(entries: u32) -> Result<Io, IoSetupError> {
        let ring = IoUring::new(entries).map_err(|e| IoSetupError {
            errno: e.raw_os_error().unwrap_or(0),
        })?;
        Ok(Io {
            ring,
            completions: Vec::with_capacity(entries as usize * 2),
            in_flight: 0,
        })
    }

    /// Queues one submission; if the submission queue is full, submits first.
    ///
    /// # Safety
    ///
    /// Every buffer and pointer the entry names must stay valid until its completion is
    /// reaped. Callers guarantee it by holding the buffer (a pooled `Message`) in their own
    /// in-flight state until then.
    pub unsafe fn push(&mut self, entry: squeue::Entry) {
        loop {
            // Safety: forwarded from the caller.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                self.in_flight += 1;
                return;
            }
            self.ring.submit().expect("io_uring submit");
        }
    }

    /// Submits everything queued and waits for at least one completion, then reads all ready
    /// completions into `completions()`.
    pub fn submit_and_wait(&mut self) -> std::io::Result<()> {
        self.completions.clear();
        let want = if self.in_flight > 0 { 1 } else { 0 };
        match self.ring.submit_and_wait(want) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => return Err(e),
        }
        for cqe in self.ring.completion() {
            let cqe: cqueue::Entry = cqe;
            self.completions.push((cqe.user_data(), cqe.result()));
        }
        self.in_flight -= self.completions.len();
        Ok(())
    }

    pub fn completions(&self) -> &[(u64, i32)] {
        &self.completions
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }
}
