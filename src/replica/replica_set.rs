//! A set of replica indices: who voted for one thing (a start_view_change, a prepare_ok) or who
//! holds one thing (a checkpoint). A set, so a duplicate vote counts once, and quorums are
//! compared as counts of distinct replicas.

use crate::config::REPLICAS_MAX;
use std::fmt;

#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplicaSet(u8);

// One bit per replica.
const _: () = assert!(REPLICAS_MAX <= u8::BITS as usize);

impl ReplicaSet {
    pub const EMPTY: ReplicaSet = ReplicaSet(0);

    pub fn single(replica: u8) -> ReplicaSet {
        let mut set = ReplicaSet::EMPTY;
        set.insert(replica);
        set
    }

    pub fn insert(&mut self, replica: u8) {
        assert!(
            (replica as usize) < REPLICAS_MAX,
            "replica {replica} out of range"
        );
        self.0 |= 1 << replica;
    }

    pub fn contains(self, replica: u8) -> bool {
        assert!(
            (replica as usize) < REPLICAS_MAX,
            "replica {replica} out of range"
        );
        self.0 & (1 << replica) != 0
    }

    pub fn count(self) -> usize {
        self.0.count_ones() as usize
    }

    /// At least `quorum` distinct replicas.
    pub fn reached(self, quorum: usize) -> bool {
        assert!(
            (1..=REPLICAS_MAX).contains(&quorum),
            "quorum {quorum} out of range"
        );
        self.count() >= quorum
    }
}

impl fmt::Debug for ReplicaSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries((0..REPLICAS_MAX as u8).filter(|&r| self.contains(r)))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_distinct_replicas() {
        let mut set = ReplicaSet::single(2);
        set.insert(2);
        assert_eq!(set.count(), 1);
        set.insert(0);
        set.insert(5);
        assert!(set.contains(0) && set.contains(2) && set.contains(5) && !set.contains(1));
        assert!(set.reached(3) && !set.reached(4));
        assert_eq!(format!("{set:?}"), "{0, 2, 5}");
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn refuses_an_index_beyond_the_largest_cluster() {
        let mut set = ReplicaSet::EMPTY;
        set.insert(REPLICAS_MAX as u8);
    }
}
