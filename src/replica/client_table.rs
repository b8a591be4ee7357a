//! Client sessions, replicated through the log: every replica applies the same `register` and
//! request commits in the same order, so every replica holds the same table and evicts the same
//! session when it is full. Each session keeps its latest reply so a duplicate request is
//! answered without executing it again.

use crate::message::Message;

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

#[cfg(test)]
mod tests {
    use super::*;
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
