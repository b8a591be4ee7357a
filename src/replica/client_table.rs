//! Client sessions, replicated through the log: every replica applies the same `register` and
//! request commits in the same order, so every replica holds the same table and evicts the same
//! session when it is full. Each session keeps its latest reply so a duplicate request is
//! answered without executing it again.

use crate::header::commands::Reply;
use crate::header::{Command, HEADER_SIZE};
use crate::message::{Message, MessagePool};

const CLIENT_SECTION_MAGIC: u64 = 0x7673_725f_636c_6e74; // "vsr_clnt"
const SESSION_RECORD_SIZE: usize = 8 + 16 + 8 + 8 + 8 + 4;

#[derive(Debug)]
pub struct ClientSession {
    pub client: u128,
    /// The op that registered this session; requests must carry it.
    pub session: u64,
    /// The latest committed request number (0 = only registered).
    pub request: u64,
    /// The op of the latest commit for this session (eviction picks the smallest).
    pub commit_op: u64,
    /// The latest reply (its checksum is the next request's `parent`).
    pub reply: Message,
}

pub struct ClientTable {
    entries: Vec<Option<ClientSession>>,
}

impl ClientTable {
    pub fn new(clients_max: usize) -> ClientTable {
        ClientTable {
            entries: (0..clients_max).map(|_| None).collect(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.entries.len()
    }

    pub fn len(&self) -> usize {
        self.entries.iter().filter(|e| e.is_some()).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, client: u128) -> Option<&ClientSession> {
        self.entries.iter().flatten().find(|e| e.client == client)
    }

    pub fn index_of(&self, client: u128) -> Option<usize> {
        self.entries
            .iter()
            .position(|e| e.as_ref().is_some_and(|e| e.client == client))
    }

    pub fn iter(&self) -> impl Iterator<Item = (usize, &ClientSession)> {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.as_ref().map(|e| (i, e)))
    }

    /// Registers `client`; returns (slot index, evicted client if the table was full).
    /// Eviction is deterministic: the session whose latest commit is oldest.
    pub fn register(
        &mut self,
        client: u128,
        session: u64,
        reply: Message,
    ) -> (usize, Option<u128>) {
        assert!(self.get(client).is_none(), "client registered twice");
        let (index, evicted) = match self.entries.iter().position(|e| e.is_none()) {
            Some(index) => (index, None),
            None => {
                let (index, oldest) = self
                    .entries
                    .iter()
                    .enumerate()
                    .map(|(i, e)| (i, e.as_ref().unwrap()))
                    .min_by_key(|(_, e)| e.commit_op)
                    .unwrap();
                (index, Some(oldest.client))
            }
        };
        self.entries[index] = Some(ClientSession {
            client,
            session,
            request: 0,
            commit_op: session,
            reply,
        });
        (index, evicted)
    }

    /// Records the reply of a committed request.
    pub fn update(&mut self, client: u128, request: u64, commit_op: u64, reply: Message) -> usize {
        let index = self.index_of(client).expect("update of an unknown session");
        let entry = self.entries[index].as_mut().unwrap();
        assert_eq!(request, entry.request + 1, "requests commit in order");
        assert!(commit_op > entry.commit_op);
        entry.request = request;
        entry.commit_op = commit_op;
        entry.reply = reply;
        index
    }

    /// Puts a session back at `index` (loading a checkpoint).
    pub fn restore(
        &mut self,
        index: usize,
        client: u128,
        session: u64,
        request: u64,
        commit_op: u64,
        reply: Message,
    ) -> Result<(), String> {
        if self.entries[index].is_some() || self.get(client).is_some() {
            return Err(format!("session {index} restored twice"));
        }
        if commit_op < session {
            return Err(format!("session {index} committed before it registered"));
        }
        self.entries[index] = Some(ClientSession {
            client,
            session,
            request,
            commit_op,
            reply,
        });
        Ok(())
    }

    /// A digest over the table (client, session, request), for the simulator's checkers.
    pub fn digest(&self) -> u128 {
        let mut bytes = Vec::new();
        for (i, e) in self.iter() {
            bytes.extend_from_slice(&(i as u64).to_le_bytes());
            bytes.extend_from_slice(&e.client.to_le_bytes());
            bytes.extend_from_slice(&e.session.to_le_bytes());
            bytes.extend_from_slice(&e.request.to_le_bytes());
        }
        crate::checksum::checksum(&bytes)
    }
}

// ---- The client section of a checkpoint ------------------------------------------------------

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
            || h.command() != Some(Command::Reply)
            || Reply::from_header(&h).client != client
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
        let reply = Reply {
            client,
            op: request + 10,
            commit: request + 10,
            request,
            ..Reply::default()
        };
        *m.header_mut() = reply.to_header(1);
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

    use crate::message::MessagePool;

    #[test]
    fn evicts_oldest_commit() {
        let pool = MessagePool::new(8, 4096);
        let mut table = ClientTable::new(2);
        assert_eq!(table.register(10, 1, pool.get().unwrap()), (0, None));
        assert_eq!(table.register(20, 2, pool.get().unwrap()), (1, None));
        table.update(10, 1, 3, pool.get().unwrap());
        // 20's latest commit (op 2) is older than 10's (op 3).
        assert_eq!(table.register(30, 4, pool.get().unwrap()), (1, Some(20)));
        assert!(table.get(20).is_none());
        assert_eq!(table.get(30).unwrap().session, 4);
        assert_eq!(table.len(), 2);
    }
}
