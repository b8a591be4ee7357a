//! Checkpoint content and its chunks, independent of I/O (the replica drives the reads and
//! writes in `replica/checkpoint.rs` and `replica/sync.rs`).
//!
//! The content of a checkpoint at op C is one byte string:
//! `[client section length: u64][client section][state machine snapshot]`. The client section
//! holds every session (slot, client, session, request, commit op) and its latest reply. Both
//! parts depend only on the committed ops, so every replica's checkpoint at C is byte-identical.
//!
//! The content is cut into chunks of `message_size_max - HEADER_SIZE` bytes. Each chunk is stored
//! as a message (`Command::CheckpointChunk` header + body) in one block of a checkpoint area, and
//! the same message, with `context` set to the checkpoint id, is what state sync sends. The id is
//! the checksum over the chunk body checksums in order; the superblock records it, so a load or a
//! sync verifies every chunk (its own checksums) and the whole (the id).

use crate::checksum::checksum;
use crate::header::{Command, Header, HEADER_SIZE};
use crate::message::MessagePool;
use crate::replica::client_table::ClientTable;

const CLIENT_SECTION_MAGIC: u64 = 0x7673_725f_636c_6e74; // "vsr_clnt"
const SESSION_RECORD_SIZE: usize = 8 + 16 + 8 + 8 + 8 + 4;

/// Bytes of content each chunk carries.
pub fn chunk_payload(message_size_max: u32) -> usize {
    message_size_max as usize - HEADER_SIZE
}

/// Chunks a content of `size` bytes needs (at least one).
pub fn chunk_count(size: u64, message_size_max: u32) -> u32 {
    let payload = chunk_payload(message_size_max) as u64;
    u32::try_from(size.div_ceil(payload).max(1)).expect("checkpoint chunk count fits u32")
}

/// Bytes of content chunk `index` carries.
pub fn chunk_len(size: u64, message_size_max: u32, index: u32) -> usize {
    let payload = chunk_payload(message_size_max) as u64;
    let start = index as u64 * payload;
    assert!(start < size.max(1));
    (size - start).min(payload) as usize
}

/// The checkpoint id: the checksum over the chunk body checksums, in order.
pub fn checkpoint_id(chunk_checksums: &[u128]) -> u128 {
    let mut bytes = Vec::with_capacity(chunk_checksums.len() * 16);
    for c in chunk_checksums {
        bytes.extend_from_slice(&c.to_le_bytes());
    }
    // Never 0: 0 means "no checkpoint" on the wire.
    checksum(&bytes).max(1)
}

/// What a chunk header must say, for a checkpoint at `op` of `size` bytes with state `digest`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkIdentity {
    pub cluster: u128,
    pub op: u64,
    pub size: u64,
    pub chunks: u32,
    pub digest: u128,
}

impl ChunkIdentity {
    /// The header of chunk `index` as stored on disk (`context` 0), sealed over `body`.
    pub fn header(&self, index: u32, body: &[u8]) -> Header {
        let mut h = Header::new(Command::CheckpointChunk, self.cluster, 0, 0);
        h.op = self.op;
        h.request = index as u64;
        h.commit = self.chunks as u64;
        h.timestamp = self.size;
        h.parent = self.digest;
        h.size = (HEADER_SIZE + body.len()) as u32;
        h.set_checksum_body(body);
        h.set_checksum();
        h
    }

    /// Whether `h` (already checksum-verified together with its body) is chunk `index` of this
    /// checkpoint, with the body length that chunk must have.
    pub fn matches(&self, h: &Header, index: u32, message_size_max: u32) -> bool {
        h.command == Command::CheckpointChunk as u8
            && h.cluster == self.cluster
            && h.op == self.op
            && h.request == index as u64
            && h.commit == self.chunks as u64
            && h.timestamp == self.size
            && h.parent == self.digest
            && h.body_size() == chunk_len(self.size, message_size_max, index)
    }
}

/// Appends the client section (with its length prefix) to `out`.
pub fn encode_client_section(table: &ClientTable, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&0u64.to_le_bytes());
    out.extend_from_slice(&CLIENT_SECTION_MAGIC.to_le_bytes());
    out.extend_from_slice(&(table.len() as u64).to_le_bytes());
    for (index, session) in table.iter() {
        let reply = session.reply.bytes();
        out.extend_from_slice(&(index as u64).to_le_bytes());
        out.extend_from_slice(&session.client.to_le_bytes());
        out.extend_from_slice(&session.session.to_le_bytes());
        out.extend_from_slice(&session.request.to_le_bytes());
        out.extend_from_slice(&session.commit_op.to_le_bytes());
        out.extend_from_slice(&(reply.len() as u32).to_le_bytes());
        out.extend_from_slice(reply);
    }
    let len = (out.len() - start - 8) as u64;
    out[start..start + 8].copy_from_slice(&len.to_le_bytes());
}

/// Rebuilds the client table from a client section (without its length prefix). Replies are
/// verified by their own checksums.
pub fn decode_client_section(
    bytes: &[u8],
    pool: &MessagePool,
    clients_max: usize,
) -> Result<ClientTable, String> {
    let mut at = 0usize;
    let mut take = |n: usize| -> Result<&[u8], String> {
        let slice = bytes
            .get(at..at + n)
            .ok_or_else(|| "client section truncated".to_string())?;
        at += n;
        Ok(slice)
    };
    let u64_of = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap());
    if u64_of(take(8)?) != CLIENT_SECTION_MAGIC {
        return Err("client section: bad magic".into());
    }
    let count = u64_of(take(8)?) as usize;
    if count > clients_max {
        return Err(format!(
            "client section holds {count} sessions, clients_max is {clients_max}"
        ));
    }
    let mut table = ClientTable::new(clients_max);
    for _ in 0..count {
        let record = take(SESSION_RECORD_SIZE)?;
        let index = u64_of(&record[0..8]) as usize;
        let client = u128::from_le_bytes(record[8..24].try_into().unwrap());
        let session = u64_of(&record[24..32]);
        let request = u64_of(&record[32..40]);
        let commit_op = u64_of(&record[40..48]);
        let reply_len = u32::from_le_bytes(record[48..52].try_into().unwrap()) as usize;
        let reply_bytes = take(reply_len)?;
        if index >= clients_max || reply_len < HEADER_SIZE || reply_len > pool.message_size_max() {
            return Err("client section: session record out of range".into());
        }
        let mut reply = pool
            .get()
            .ok_or_else(|| "message pool exhausted restoring client replies".to_string())?;
        reply.buffer_mut()[..reply_len].copy_from_slice(reply_bytes);
        let h = *reply.header();
        if !h.valid_checksum()
            || h.size as usize != reply_len
            || !h.valid_checksum_body(reply.body())
            || h.client != client
        {
            return Err("client section: reply fails its checksum".into());
        }
        table
            .restore(index, client, session, request, commit_op, reply)
            .map_err(|e| format!("client section: {e}"))?;
    }
    if at != bytes.len() {
        return Err("client section: trailing bytes".into());
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(pool: &MessagePool, client: u128, request: u64) -> crate::message::Message {
        let mut m = pool.get().unwrap();
        let body_len = (request as usize * 7) % 100;
        m.buffer_mut()[HEADER_SIZE..HEADER_SIZE + body_len].fill(request as u8);
        let h = m.header_mut();
        *h = Header::new(Command::Reply, 1, 0, 0);
        h.client = client;
        h.op = request + 10;
        h.commit = request + 10;
        h.request = request;
        h.size = (HEADER_SIZE + body_len) as u32;
        m.seal(body_len);
        m
    }

    #[test]
    fn client_section_roundtrip_and_damage() {
        let pool = MessagePool::new(32, 4096);
        let mut table = ClientTable::new(4);
        table.register(7, 1, reply(&pool, 7, 0));
        table.register(9, 2, reply(&pool, 9, 0));
        table.update(9, 1, 5, reply(&pool, 9, 1));
        let mut bytes = Vec::new();
        encode_client_section(&table, &mut bytes);
        let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        assert_eq!(len, bytes.len() - 8);
        let restored = decode_client_section(&bytes[8..], &pool, 4).unwrap();
        assert_eq!(restored.digest(), table.digest());
        let mut again = Vec::new();
        encode_client_section(&restored, &mut again);
        assert_eq!(again, bytes, "encoding is a function of the table");
        for at in [8, 20, 40, bytes.len() - 1] {
            let mut damaged = bytes.clone();
            damaged[at] ^= 1;
            assert!(decode_client_section(&damaged[8..], &pool, 4).is_err());
        }
        assert!(decode_client_section(&bytes[8..bytes.len() - 3], &pool, 4).is_err());
        assert!(decode_client_section(&bytes[8..], &pool, 1).is_err());
    }

    #[test]
    fn chunking() {
        assert_eq!(chunk_count(0, 4096), 1);
        assert_eq!(chunk_count(3840, 4096), 1);
        assert_eq!(chunk_count(3841, 4096), 2);
        assert_eq!(chunk_len(3841, 4096, 1), 1);
        let identity = ChunkIdentity {
            cluster: 1,
            op: 50,
            size: 3841,
            chunks: 2,
            digest: 99,
        };
        let h = identity.header(1, &[5]);
        assert!(identity.matches(&h, 1, 4096));
        assert!(!identity.matches(&h, 0, 4096));
        assert_eq!(h.invalid(4096), None);
        assert_ne!(checkpoint_id(&[1, 2]), checkpoint_id(&[2, 1]));
    }
}
