//! The message pool: a fixed number of sector-aligned, reference-counted buffers allocated once at
//! start-up. A prepare is received into a buffer, written to the journal from that same buffer, and
//! replicated from it: references are shared, bytes are not copied. Nothing here allocates after
//! `MessagePool::new`.

use crate::config::SECTOR_SIZE;
use crate::header::{Header, HEADER_SIZE};
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use zerocopy::FromBytes;

struct PoolInner {
    memory: *mut u8,
    layout: Layout,
    message_size_max: usize,
    refs: Box<[Cell<u32>]>,
    free: RefCell<Vec<u32>>,
    in_use_max: Cell<usize>,
}

impl Drop for PoolInner {
    fn drop(&mut self) {
        // Safety: allocated in MessagePool::new with this layout; every Message holds an Rc to
        // this inner, so no buffer outlives it.
        unsafe { dealloc(self.memory, self.layout) }
    }
}

/// A handle to the pool; cheap to clone (all clones share the same buffers).
#[derive(Clone)]
pub struct MessagePool {
    inner: Rc<PoolInner>,
}

impl MessagePool {
    pub fn new(count: usize, message_size_max: usize) -> MessagePool {
        assert!(count > 0 && count < u32::MAX as usize);
        assert!(message_size_max >= SECTOR_SIZE && message_size_max % SECTOR_SIZE == 0);
        let layout = Layout::from_size_align(count * message_size_max, SECTOR_SIZE)
            .expect("message pool layout");
        // Safety: layout has non-zero size.
        let memory = unsafe { alloc_zeroed(layout) };
        assert!(
            !memory.is_null(),
            "message pool allocation of {} bytes failed",
            layout.size()
        );
        let free: Vec<u32> = (0..count as u32).rev().collect();
        MessagePool {
            inner: Rc::new(PoolInner {
                memory,
                layout,
                message_size_max,
                refs: (0..count).map(|_| Cell::new(0)).collect(),
                free: RefCell::new(free),
                in_use_max: Cell::new(0),
            }),
        }
    }

    /// Bytes the pool reserved at start.
    pub fn size_bytes(&self) -> usize {
        self.inner.layout.size()
    }

    pub fn message_size_max(&self) -> usize {
        self.inner.message_size_max
    }

    pub fn capacity(&self) -> usize {
        self.inner.refs.len()
    }

    pub fn available(&self) -> usize {
        self.inner.free.borrow().len()
    }

    pub fn in_use_max(&self) -> usize {
        self.inner.in_use_max.get()
    }

    /// A fresh message with a zeroed header and `size = HEADER_SIZE`, or None when the pool is
    /// exhausted (the caller drops the work it was about to do; the protocol retries).
    pub fn get(&self) -> Option<Message> {
        let index = self.inner.free.borrow_mut().pop()?;
        let cell = &self.inner.refs[index as usize];
        assert_eq!(cell.get(), 0);
        cell.set(1);
        let in_use = self.capacity() - self.available();
        if in_use > self.inner.in_use_max.get() {
            self.inner.in_use_max.set(in_use);
        }
        let mut message = Message {
            pool: self.inner.clone(),
            index,
        };
        message.buffer_mut()[..HEADER_SIZE].fill(0);
        Some(message)
    }

    /// A message holding a copy of `bytes` (as much as a buffer holds: the receiver's checks
    /// refuse a truncated message), or None when the pool is exhausted.
    pub fn get_copy_of(&self, bytes: &[u8]) -> Option<Message> {
        let mut message = self.get()?;
        let n = bytes.len().min(message.capacity());
        message.buffer_mut()[..n].copy_from_slice(&bytes[..n]);
        Some(message)
    }
}

/// A reference to one pooled buffer. Clone adds a reference; the buffer returns to the pool when
/// the last reference drops. Mutable access requires the only reference.
pub struct Message {
    pool: Rc<PoolInner>,
    index: u32,
}

impl Message {
    fn refs(&self) -> &Cell<u32> {
        &self.pool.refs[self.index as usize]
    }

    fn ptr(&self) -> *mut u8 {
        // Safety: index < count, so the offset is inside the allocation.
        unsafe {
            self.pool
                .memory
                .add(self.index as usize * self.pool.message_size_max)
        }
    }

    pub fn is_unique(&self) -> bool {
        self.refs().get() == 1
    }

    pub fn capacity(&self) -> usize {
        self.pool.message_size_max
    }

    /// The whole buffer (capacity bytes).
    pub fn buffer(&self) -> &[u8] {
        // Safety: the region belongs to this index; writers need `&mut` on the only reference,
        // so no mutable alias exists while this shared borrow lives.
        unsafe { std::slice::from_raw_parts(self.ptr(), self.pool.message_size_max) }
    }

    pub fn buffer_mut(&mut self) -> &mut [u8] {
        assert!(self.is_unique(), "mutable access to a shared message");
        // Safety: unique reference (checked above) and `&mut self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr(), self.pool.message_size_max) }
    }

    pub fn header(&self) -> &Header {
        Header::ref_from_bytes(&self.buffer()[..HEADER_SIZE]).expect("aligned header")
    }

    pub fn header_mut(&mut self) -> &mut Header {
        Header::mut_from_bytes(&mut self.buffer_mut()[..HEADER_SIZE]).expect("aligned header")
    }

    /// Header and body: `size` bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.buffer()[..self.header().size as usize]
    }

    pub fn body(&self) -> &[u8] {
        let size = self.header().size as usize;
        &self.buffer()[HEADER_SIZE..size]
    }

    pub fn body_mut(&mut self) -> &mut [u8] {
        let size = self.header().size as usize;
        &mut self.buffer_mut()[HEADER_SIZE..size]
    }

    /// Sets `size` for a body of `body_size` bytes, then both checksums.
    pub fn seal(&mut self, body_size: usize) {
        assert!(HEADER_SIZE + body_size <= self.capacity());
        self.header_mut().size = (HEADER_SIZE + body_size) as u32;
        let body_checksum = crate::checksum::checksum(self.body());
        let header = self.header_mut();
        header.checksum_body = body_checksum;
        header.set_checksum();
    }

    /// `size` rounded up to whole sectors: what is written to disk.
    pub fn size_sectors(&self) -> usize {
        (self.header().size as usize).next_multiple_of(crate::config::SECTOR_SIZE)
    }
}

impl Clone for Message {
    fn clone(&self) -> Message {
        let refs = self.refs();
        refs.set(refs.get() + 1);
        Message {
            pool: self.pool.clone(),
            index: self.index,
        }
    }
}

impl Drop for Message {
    fn drop(&mut self) {
        let refs = self.refs();
        let count = refs.get();
        assert!(count > 0);
        refs.set(count - 1);
        if count == 1 {
            // The free list was created holding every index, so its capacity covers this push:
            // returning a buffer never allocates.
            self.pool.free.borrow_mut().push(self.index);
        }
    }
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Message#{}({:?})", self.index, self.header())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::Command;

    #[test]
    fn reference_counting_returns_buffers() {
        let pool = MessagePool::new(2, 4096);
        let a = pool.get().unwrap();
        let b = a.clone();
        let c = pool.get().unwrap();
        assert!(pool.get().is_none());
        drop(a);
        assert!(pool.get().is_none());
        drop(b);
        let d = pool.get().unwrap();
        assert_eq!(d.buffer().as_ptr() as usize % SECTOR_SIZE, 0);
        drop(c);
        drop(d);
        assert_eq!(pool.available(), 2);
        assert_eq!(pool.in_use_max(), 2);
    }

    #[test]
    fn seal_sets_checksums() {
        let pool = MessagePool::new(1, 4096);
        let mut m = pool.get().unwrap();
        *m.header_mut() = Header::new(Command::Headers, 1, 0, 0);
        m.buffer_mut()[HEADER_SIZE..HEADER_SIZE + 3].copy_from_slice(b"abc");
        m.seal(3);
        assert!(m.header().valid_checksum());
        assert!(m.header().valid_checksum_body(m.body()));
        assert_eq!(m.size_sectors(), 4096);
    }

    #[test]
    #[should_panic(expected = "mutable access to a shared message")]
    fn shared_message_is_read_only() {
        let pool = MessagePool::new(1, 4096);
        let mut a = pool.get().unwrap();
        let _b = a.clone();
        a.buffer_mut();
    }
}
