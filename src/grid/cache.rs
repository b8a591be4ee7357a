//! The block cache: a set-associative cache of grid blocks by address, with CLOCK eviction within
//! each set (docs/storage.md, "The block cache").
//!
//! An address maps to one set of `WAYS` slots by a fixed hash, so a lookup reads one set and
//! nothing else. Each slot has a small use counter: a hit raises it (up to `CLOCK_MAX`); an insert
//! into a full set sweeps the set's hand, lowering counters, and evicts the first slot found at
//! zero, so blocks used again and again survive a scan of blocks read once. The cache is
//! generic over what a slot holds (the replica stores the block's message buffer, so a read
//! completes into the buffer the eviction freed and nothing is copied), and is sized once, in
//! `new`, from the configuration. Deterministic: no randomness, no hashing of pointers.

/// Slots per set.
pub const WAYS: usize = 16;
/// The use counter's ceiling: a block survives up to this many sweeps of its set's hand unused.
const CLOCK_MAX: u8 = 3;

#[derive(Debug)]
pub struct BlockCache<V> {
    sets: usize,
    /// Per slot: the block's address, 0 if the slot is empty.
    addresses: Vec<u64>,
    clocks: Vec<u8>,
    values: Vec<Option<V>>,
    /// Per set: the next way its hand looks at.
    hands: Vec<u8>,
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
}

impl<V> BlockCache<V> {
    /// A cache of at least `blocks` slots (rounded up to whole sets).
    pub fn new(blocks: usize) -> BlockCache<V> {
        assert!(blocks > 0);
        let sets = blocks.div_ceil(WAYS);
        let slots = sets * WAYS;
        BlockCache {
            sets,
            addresses: vec![0; slots],
            clocks: vec![0; slots],
            values: (0..slots).map(|_| None).collect(),
            hands: vec![0; sets],
            hits: 0,
            misses: 0,
            evictions: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.sets * WAYS
    }

    /// The cached block at `address`, counted as a use.
    pub fn get(&mut self, address: u64) -> Option<&V> {
        match self.slot_of(address) {
            Some(slot) => {
                self.hits += 1;
                self.clocks[slot] = (self.clocks[slot] + 1).min(CLOCK_MAX);
                self.values[slot].as_ref()
            }
            None => {
                self.misses += 1;
                None
            }
        }
    }

    /// Whether `address` is cached, without counting a use.
    pub fn contains(&self, address: u64) -> bool {
        self.slot_of(address).is_some()
    }

    /// Caches `value` as the block at `address` (replacing any cached copy). Returns what had to
    /// leave for it, if anything: the replaced copy, or the set's evicted block.
    pub fn insert(&mut self, address: u64, value: V) -> Option<(u64, V)> {
        assert!(address > 0);
        let slot = match self.slot_of(address) {
            Some(slot) => slot,
            None => self.slot_victim(address),
        };
        let old_address = self.addresses[slot];
        let old = self.values[slot].take();
        self.addresses[slot] = address;
        self.values[slot] = Some(value);
        self.clocks[slot] = 1;
        if old_address != 0 && old_address != address {
            self.evictions += 1;
        }
        old.map(|v| (old_address, v))
    }

    /// Drops the cached block at `address` (freed, or found damaged), returning it.
    pub fn remove(&mut self, address: u64) -> Option<V> {
        let slot = self.slot_of(address)?;
        self.addresses[slot] = 0;
        self.clocks[slot] = 0;
        self.values[slot].take()
    }

    fn set_of(&self, address: u64) -> usize {
        // Fibonacci hashing: consecutive addresses spread over the sets.
        let hash = address.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        ((u128::from(hash) * self.sets as u128) >> 64) as usize
    }

    fn slot_of(&self, address: u64) -> Option<usize> {
        assert!(address > 0);
        let first = self.set_of(address) * WAYS;
        (first..first + WAYS).find(|&slot| self.addresses[slot] == address)
    }

    /// The slot of `address`'s set to fill: an empty one, or the first the hand finds unused.
    fn slot_victim(&mut self, address: u64) -> usize {
        let set = self.set_of(address);
        let first = set * WAYS;
        if let Some(slot) = (first..first + WAYS).find(|&slot| self.addresses[slot] == 0) {
            return slot;
        }
        // At most CLOCK_MAX + 1 sweeps bring some counter to zero.
        for _ in 0..WAYS * (CLOCK_MAX as usize + 1) {
            let slot = first + self.hands[set] as usize;
            self.hands[set] = ((self.hands[set] as usize + 1) % WAYS) as u8;
            if self.clocks[slot] == 0 {
                return slot;
            }
            self.clocks[slot] -= 1;
        }
        unreachable!("a sweep lowers every counter")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_cache_hits_what_it_holds() {
        let mut cache: BlockCache<u64> = BlockCache::new(100);
        assert_eq!(cache.capacity(), 112);
        assert_eq!(cache.get(5), None);
        assert_eq!(cache.insert(5, 50), None);
        assert_eq!(cache.get(5), Some(&50));
        // Replacing a cached block hands back the old copy.
        assert_eq!(cache.insert(5, 51), Some((5, 50)));
        assert_eq!(cache.remove(5), Some(51));
        assert!(!cache.contains(5));
        assert_eq!((cache.hits, cache.misses, cache.evictions), (1, 1, 0));
    }

    #[test]
    fn block_cache_keeps_blocks_in_use_through_a_scan() {
        // One set: 16 slots.
        let mut cache: BlockCache<u64> = BlockCache::new(WAYS);
        for address in 1..=8 {
            cache.insert(address, address);
            for _ in 0..3 {
                cache.get(address);
            }
        }
        // A scan of 1,000 blocks read once each.
        for address in 100..1_100 {
            cache.insert(address, address);
            // Blocks 1-8 are in use throughout.
            for hot in 1..=8 {
                if address % 4 == 0 {
                    cache.get(hot);
                }
            }
        }
        for hot in 1..=8 {
            assert!(cache.contains(hot), "block {hot} in use was evicted");
        }
        assert!(cache.evictions >= 1_000 - 8);
    }

    #[test]
    fn block_cache_evicts_within_the_set_only() {
        let mut cache: BlockCache<u64> = BlockCache::new(64 * WAYS);
        let mut evicted = 0;
        for address in 1..=10_000u64 {
            if let Some((old, value)) = cache.insert(address, address) {
                assert_eq!(old, value);
                assert_eq!(cache.set_of(old), cache.set_of(address));
                evicted += 1;
            }
        }
        assert_eq!(evicted, 10_000 - cache.capacity());
        let held = (1..=10_000u64).filter(|&a| cache.contains(a)).count();
        assert_eq!(
            held,
            cache.capacity(),
            "every set filled: addresses spread evenly"
        );
    }
}
