//! The data file behind the `Storage` seam: one file opened with O_DIRECT | O_DSYNC, so a write
//! completion means the bytes are durable, submitted through the loop's io_uring. An exclusive
//! `flock` keeps a second process off the same file.

use crate::io::{user_data, Io, Owner};
use crate::storage::{IoCompletion, IoKind, IoRequest, Layout, Storage, Zone};
use io_uring::{opcode, types};
use std::collections::VecDeque;
use std::ffi::CString;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

#[derive(Debug)]
pub enum FileOpenError {
    Io {
        what: &'static str,
        path: String,
        error: std::io::Error,
    },
    Locked {
        path: String,
    },
    NoDirectIo {
        path: String,
    },
    TooSmall {
        path: String,
        size: u64,
        expected: u64,
    },
}

impl fmt::Display for FileOpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileOpenError::Io { what, path, error } => write!(f, "{what} {path}: {error}"),
            FileOpenError::Locked { path } => {
                write!(
                    f,
                    "{path} is in use by another process (another replica holds its lock)"
                )
            }
            FileOpenError::NoDirectIo { path } => write!(
                f,
                "{path}: the filesystem does not support O_DIRECT, so writes could sit in the page \
                 cache unsynced; put the data file on ext4/xfs, or pass --development to accept \
                 buffered I/O (never in production)"
            ),
            FileOpenError::TooSmall {
                path,
                size,
                expected,
            } => write!(
                f,
                "{path} is {size} bytes but its layout needs {expected}: the file is truncated or \
                 was formatted with another configuration"
            ),
        }
    }
}

impl std::error::Error for FileOpenError {}

/// What the data file did, for the metrics endpoint.
#[derive(Clone, Copy, Debug, Default)]
pub struct FileStorageStats {
    pub reads: u64,
    pub writes: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// Journal writes (prepares and header-ring sectors), submitted until durable.
    pub journal_write: crate::metrics::Histogram,
}

pub struct FileStorage {
    fd: i32,
    layout: Layout,
    direct: bool,
    queue: VecDeque<IoRequest>,
    /// In-flight requests by slab index, with bytes already done (short reads/writes resume).
    in_flight: Vec<Option<(IoRequest, usize)>>,
    /// When each in-flight request was first submitted.
    submitted_at: Vec<std::time::Instant>,
    pub stats: FileStorageStats,
    free: Vec<usize>,
    completions: VecDeque<IoCompletion>,
}

fn cpath(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).expect("path without NUL")
}

impl FileStorage {
    /// Opens an existing data file. `direct = false` only for --development.
    pub fn open(
        path: &Path,
        layout: Layout,
        direct: bool,
        slots: usize,
    ) -> Result<FileStorage, FileOpenError> {
        let display = path.display().to_string();
        let mut flags = libc::O_RDWR | libc::O_CLOEXEC | libc::O_DSYNC;
        if direct {
            flags |= libc::O_DIRECT;
        }
        // Safety: valid C string; the returned fd is owned by FileStorage.
        let fd = unsafe { libc::open(cpath(path).as_ptr(), flags) };
        if fd < 0 {
            let error = std::io::Error::last_os_error();
            if direct && error.raw_os_error() == Some(libc::EINVAL) {
                return Err(FileOpenError::NoDirectIo { path: display });
            }
            return Err(FileOpenError::Io {
                what: "open",
                path: display,
                error,
            });
        }
        // Safety: fd is open.
        if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            // Safety: fd is open and ours.
            unsafe { libc::close(fd) };
            return Err(FileOpenError::Locked { path: display });
        }
        // Safety: zeroed stat is a valid out-parameter.
        let mut stat: libc::stat = unsafe { std::mem::zeroed() };
        // Safety: fd is open, stat is writable.
        if unsafe { libc::fstat(fd, &mut stat) } != 0 {
            let error = std::io::Error::last_os_error();
            // Safety: fd is ours.
            unsafe { libc::close(fd) };
            return Err(FileOpenError::Io {
                what: "stat",
                path: display,
                error,
            });
        }
        if (stat.st_size as u64) < layout.total_size() {
            // Safety: fd is ours.
            unsafe { libc::close(fd) };
            return Err(FileOpenError::TooSmall {
                path: display,
                size: stat.st_size as u64,
                expected: layout.total_size(),
            });
        }
        Ok(FileStorage {
            fd,
            layout,
            direct,
            queue: VecDeque::with_capacity(slots),
            in_flight: (0..slots).map(|_| None).collect(),
            submitted_at: vec![std::time::Instant::now(); slots],
            stats: FileStorageStats::default(),
            free: (0..slots).rev().collect(),
            completions: VecDeque::with_capacity(slots),
        })
    }

    pub fn direct(&self) -> bool {
        self.direct
    }

    /// Moves queued requests onto the ring while slab slots are free.
    pub fn pump(&mut self, io: &mut Io) {
        while !self.queue.is_empty() {
            let Some(index) = self.free.pop() else { return };
            let request = self.queue.pop_front().unwrap();
            self.in_flight[index] = Some((request, 0));
            self.submitted_at[index] = std::time::Instant::now();
            self.submit(io, index);
        }
    }

    fn submit(&mut self, io: &mut Io, index: usize) {
        let layout = &self.layout;
        let fd = types::Fd(self.fd);
        let (request, done) = self.in_flight[index].as_mut().unwrap();
        let offset = layout.zone_offset(request.zone) + request.offset + *done as u64;
        let len = (request.len - *done) as u32;
        let entry = match request.kind {
            IoKind::Read => {
                // Reads get a uniquely referenced buffer (asserted by `assert_valid` at submit).
                let ptr = request.buffer.buffer_mut().as_mut_ptr();
                // Safety: in bounds (done < len <= capacity).
                opcode::Read::new(fd, unsafe { ptr.add(*done) }, len)
                    .offset(offset)
                    .build()
            }
            IoKind::Write => {
                let ptr = request.buffer.buffer().as_ptr();
                // Safety: in bounds; the kernel only reads it.
                opcode::Write::new(fd, unsafe { ptr.add(*done) }, len)
                    .offset(offset)
                    .build()
            }
        };
        let entry = entry.user_data(user_data(Owner::Storage, index as u64));
        // Safety: the buffer lives in `self.in_flight[index]` until `on_cqe` for this index.
        unsafe { io.push(entry) };
    }

    /// A completion from the ring for slab `index`.
    pub fn on_cqe(&mut self, io: &mut Io, index: usize, result: i32) {
        let (request, done) = self.in_flight[index]
            .as_mut()
            .expect("completion for a free slot");
        if result < 0 {
            let errno = -result;
            if errno == libc::EINTR || errno == libc::EAGAIN {
                self.submit(io, index);
                return;
            }
            match request.kind {
                // A read error is a corrupt sector to the protocol: zeros fail every checksum,
                // and the replica repairs from its peers.
                IoKind::Read => {
                    let start = *done;
                    let len = request.len;
                    if request.buffer.is_unique() {
                        request.buffer.buffer_mut()[start..len].fill(0);
                    }
                    *done = len;
                }
                // A write that fails cannot be acknowledged as durable; carrying on would lie.
                IoKind::Write => panic!(
                    "write to {:?} at {} failed: {} (the data file is unusable)",
                    request.zone,
                    request.offset,
                    std::io::Error::from_raw_os_error(errno)
                ),
            }
        } else if result == 0 && request.kind == IoKind::Read {
            // Beyond the end of file: reads as zeros.
            let start = *done;
            let len = request.len;
            request.buffer.buffer_mut()[start..len].fill(0);
            *done = len;
        } else {
            *done += result as usize;
        }
        if *done < request.len {
            self.submit(io, index);
            return;
        }
        let (request, _) = self.in_flight[index].take().unwrap();
        self.free.push(index);
        self.count(&request, index);
        self.completions.push_back(IoCompletion {
            kind: request.kind,
            zone: request.zone,
            offset: request.offset,
            len: request.len,
            buffer: request.buffer,
            token: request.token,
        });
    }

    fn count(&mut self, request: &IoRequest, index: usize) {
        let stats = &mut self.stats;
        match request.kind {
            IoKind::Read => {
                stats.reads += 1;
                stats.bytes_read += request.len as u64;
            }
            IoKind::Write => {
                stats.writes += 1;
                stats.bytes_written += request.len as u64;
                if matches!(request.zone, Zone::WalPrepares | Zone::WalHeaders) {
                    let elapsed = self.submitted_at[index].elapsed();
                    stats.journal_write.observe(elapsed.as_nanos() as u64);
                }
            }
        }
    }

    pub fn busy(&self) -> bool {
        !self.queue.is_empty() || self.free.len() < self.in_flight.len()
    }
}

impl Storage for FileStorage {
    fn layout(&self) -> &Layout {
        &self.layout
    }

    fn submit(&mut self, request: IoRequest) {
        request.assert_valid(&self.layout);
        self.queue.push_back(request);
    }

    fn next_completion(&mut self) -> Option<IoCompletion> {
        self.completions.pop_front()
    }
}

impl Drop for FileStorage {
    fn drop(&mut self) {
        // Safety: fd is ours; closing releases the flock.
        unsafe { libc::close(self.fd) };
    }
}

/// Creates and lays out a new data file: preallocates it, writes the format image, fsyncs.
/// Refuses to overwrite an existing file.
pub fn format_file(
    path: &Path,
    layout: &Layout,
    writes: &[(crate::storage::Zone, u64, Vec<u8>)],
) -> Result<(), FileOpenError> {
    use std::io::Write;
    use std::os::unix::fs::FileExt;
    let display = path.display().to_string();
    let io_err = |what: &'static str| {
        let display = display.clone();
        move |error: std::io::Error| FileOpenError::Io {
            what,
            path: display,
            error,
        }
    };
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io_err("create"))?;
    // Preallocate so later writes never fail for space and the layout is whole from the start.
    // Safety: the fd is open for writing.
    let rc = unsafe {
        libc::posix_fallocate(
            std::os::fd::AsRawFd::as_raw_fd(&file),
            0,
            layout.total_size() as i64,
        )
    };
    if rc != 0 {
        file.set_len(layout.total_size()).map_err(io_err("size"))?;
    }
    for (zone, offset, bytes) in writes {
        file.write_all_at(bytes, layout.zone_offset(*zone) + offset)
            .map_err(io_err("write"))?;
    }
    let mut file = file;
    file.flush().map_err(io_err("flush"))?;
    file.sync_all().map_err(io_err("fsync"))?;
    // The directory entry must be durable too.
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}
