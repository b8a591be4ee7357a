//! The free set: which blocks of the grid are in use, and when a block given up becomes reusable.
//!
//! A block is *acquired* (holds data some state may reference), or *free*. Giving a block up is a
//! *release*: the block stays acquired, because a checkpoint that a replica may still need can
//! reference it, and becomes free only later, at a point every replica reaches at the same op:
//!
//! - Blocks released between checkpoints `k - 1` and `k` are referenced by checkpoint `k - 1` and
//!   by no later one. `checkpoint(k)` seals them as checkpoint `k`'s release generation.
//! - They are freed by `checkpoint_durable(k)`: the caller's proof that checkpoint `k` is durable
//!   on a replication quorum, so no replica restarts from, and no peer syncs, checkpoint `k - 1`
//!   any more. The caller derives that proof from an op it commits, never from a message's
//!   arrival, so every replica frees the same blocks at the same op.
//!
//! Sealed generations wait in order; at most `GENERATIONS_SEALED_MAX` at once. The replica's
//! proof for checkpoint `k` arrives after checkpoint `k + 1` is taken, and before `k + 2` when
//! `journal_slot_count > 6 * pipeline_max + 8` (production), else before `k + 3`: the smallest
//! journals `Config::validate` accepts can have three waiting (docs/storage.md).
//!
//! Acquisition is deterministic: the lowest free address, within a *reservation*. Jobs that run
//! side by side (compactions) each reserve, in a fixed order, the most blocks they may need; each
//! then acquires from its own reservation, so the blocks a job gets do not depend on how its I/O
//! interleaves with another's. When every reservation is forfeited, what they left unacquired is
//! open again. Checkpoints and frees happen with no reservation open.
//!
//! The whole set (acquired blocks and every release generation) is encoded at each checkpoint as
//! a sequence of little-endian u64 words (`encoded_word_count`, `encode_words`, `decode_words`),
//! whose length grows with the highest block in use, not with the grid's limit. Memory is sized
//! once, in `new`, from the limit: four bitsets of one bit per block.
//!
//! Address 0 is no block (a null reference); block `a` is bit `a - 1`.

/// Release generations that may wait for their checkpoint's durability at once.
pub const GENERATIONS_SEALED_MAX: usize = 3;

/// The encoding's first word.
const ENCODING_MAGIC: u64 = u64::from_le_bytes(*b"freeset1");
/// Magic, limit, acquired words, current words, sealed count, then per sealed: op, words.
const ENCODING_HEAD_WORDS: u64 = 5 + 2 * GENERATIONS_SEALED_MAX as u64;

#[derive(Clone, Debug, PartialEq, Eq)]
struct Generation {
    checkpoint_op: u64,
    blocks: Bitset,
}

/// A range of block indexes handed to one job: it covered exactly `count` free blocks when made.
#[derive(Debug, PartialEq, Eq)]
pub struct Reservation {
    index_first: u64,
    index_end: u64,
    session: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FreeSet {
    blocks_count_max: u64,
    acquired: Bitset,
    acquired_count: u64,
    /// Released since the last checkpoint (still acquired).
    released: Bitset,
    /// Sealed release generations, oldest first; `sealed_count` of them in use.
    sealed: [Generation; GENERATIONS_SEALED_MAX],
    sealed_count: usize,
    /// Indexes below this are reserved (acquired or not) by open reservations.
    reserved_end: u64,
    reservations_open: u32,
    /// Tells reservations of different rounds apart, so a stale one is caught.
    reservation_session: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    Magic,
    Limit { encoded: u64, configured: u64 },
    Truncated,
    Malformed(&'static str),
}

impl FreeSet {
    /// An empty set of `blocks_count_max` blocks (addresses `1..=blocks_count_max`).
    pub fn new(blocks_count_max: u64) -> FreeSet {
        assert!(blocks_count_max > 0);
        let generation = Generation {
            checkpoint_op: 0,
            blocks: Bitset::new(blocks_count_max),
        };
        FreeSet {
            blocks_count_max,
            acquired: Bitset::new(blocks_count_max),
            acquired_count: 0,
            released: Bitset::new(blocks_count_max),
            sealed: std::array::from_fn(|_| generation.clone()),
            sealed_count: 0,
            reserved_end: 0,
            reservations_open: 0,
            reservation_session: 1,
        }
    }

    pub fn blocks_count_max(&self) -> u64 {
        self.blocks_count_max
    }

    pub fn count_acquired(&self) -> u64 {
        self.acquired_count
    }

    pub fn count_free(&self) -> u64 {
        self.blocks_count_max - self.acquired_count
    }

    /// Acquired blocks released and not yet freed, in every generation.
    pub fn count_released(&self) -> u64 {
        let sealed: u64 = self.sealed[..self.sealed_count]
            .iter()
            .map(|g| g.blocks.count_ones())
            .sum();
        self.released.count_ones() + sealed
    }

    /// The highest acquired address: the grid's used size, in blocks.
    pub fn highest_acquired(&self) -> Option<u64> {
        self.acquired.last_one().map(|index| index + 1)
    }

    pub fn is_free(&self, address: u64) -> bool {
        !self
            .acquired
            .get(Self::index(address, self.blocks_count_max))
    }

    /// Released (in any generation) and not yet freed.
    pub fn is_released(&self, address: u64) -> bool {
        let index = Self::index(address, self.blocks_count_max);
        self.released.get(index)
            || self.sealed[..self.sealed_count]
                .iter()
                .any(|g| g.blocks.get(index))
    }

    /// Reserves the next `count` free blocks past any open reservation, or `None` if the grid
    /// has fewer left. Reservations are made in a deterministic order; each is forfeited once.
    pub fn reserve(&mut self, count: u64) -> Option<Reservation> {
        assert!(count > 0);
        let index_first = self.reserved_end;
        let mut found = 0;
        let mut index = index_first;
        while found < count {
            index = self.acquired.next_zero(index)?;
            found += 1;
            index += 1;
        }
        let reservation = Reservation {
            index_first,
            index_end: index,
            session: self.reservation_session,
        };
        self.reserved_end = index;
        self.reservations_open += 1;
        Some(reservation)
    }

    /// The lowest free block of the reservation, now acquired; `None` once it has none left.
    pub fn acquire(&mut self, reservation: &Reservation) -> Option<u64> {
        assert_eq!(reservation.session, self.reservation_session);
        assert!(self.reservations_open > 0);
        assert!(reservation.index_end <= self.reserved_end);
        let index = self.acquired.next_zero(reservation.index_first)?;
        if index >= reservation.index_end {
            return None;
        }
        assert!(!self.released.get(index));
        self.acquired.set(index);
        self.acquired_count += 1;
        Some(index + 1)
    }

    /// Ends a reservation; when none is left open, their unacquired blocks are open again.
    pub fn forfeit(&mut self, reservation: Reservation) {
        assert_eq!(reservation.session, self.reservation_session);
        assert!(self.reservations_open > 0);
        self.reservations_open -= 1;
        if self.reservations_open == 0 {
            self.reserved_end = 0;
            self.reservation_session += 1;
        }
    }

    /// Gives up an acquired block: it stays acquired until its generation is freed.
    pub fn release(&mut self, address: u64) {
        let index = Self::index(address, self.blocks_count_max);
        assert!(self.acquired.get(index), "release of free block {address}");
        assert!(!self.is_released(address), "block {address} released twice");
        self.released.set(index);
    }

    /// Seals the blocks released since the last checkpoint as checkpoint `checkpoint_op`'s
    /// generation. Called at the checkpoint's op, before its trailer's blocks are acquired.
    pub fn checkpoint(&mut self, checkpoint_op: u64) {
        assert_eq!(self.reservations_open, 0);
        assert!(
            self.sealed_count < GENERATIONS_SEALED_MAX,
            "checkpoint {checkpoint_op} taken with {} generations waiting",
            self.sealed_count
        );
        if let Some(newest) = self.sealed[..self.sealed_count].last() {
            assert!(newest.checkpoint_op < checkpoint_op);
        }
        let generation = &mut self.sealed[self.sealed_count];
        generation.checkpoint_op = checkpoint_op;
        std::mem::swap(&mut generation.blocks, &mut self.released);
        self.released.clear();
        self.sealed_count += 1;
    }

    /// Checkpoint `checkpoint_op` is durable on a replication quorum: the blocks released before
    /// it (its generation) are free. Returns how many were freed.
    pub fn checkpoint_durable(&mut self, checkpoint_op: u64) -> u64 {
        assert_eq!(self.reservations_open, 0);
        assert!(
            self.sealed_count > 0,
            "no generation waits for {checkpoint_op}"
        );
        assert_eq!(self.sealed[0].checkpoint_op, checkpoint_op);
        let freed = self.sealed[0].blocks.count_ones();
        self.acquired.subtract(&self.sealed[0].blocks);
        self.acquired_count -= freed;
        self.sealed[0].blocks.clear();
        self.sealed[..self.sealed_count].rotate_left(1);
        self.sealed_count -= 1;
        assert_eq!(self.acquired_count, self.acquired.count_ones());
        freed
    }

    /// The checkpoint ops whose generations wait, oldest first.
    pub fn generations_waiting(&self) -> impl Iterator<Item = u64> + '_ {
        self.sealed[..self.sealed_count]
            .iter()
            .map(|g| g.checkpoint_op)
    }

    /// The length of the encoding, in u64 words.
    pub fn encoded_word_count(&self) -> u64 {
        let sealed: u64 = self.sealed[..self.sealed_count]
            .iter()
            .map(|g| g.blocks.used_words())
            .sum();
        ENCODING_HEAD_WORDS + self.acquired.used_words() + self.released.used_words() + sealed
    }

    /// Writes words `first..first + out.len()` of the encoding into `out` (little-endian).
    pub fn encode_words(&self, first: u64, out: &mut [u64]) {
        assert_eq!(self.reservations_open, 0);
        // Each bitset's length once (a scan from its end), not once a word.
        let mut used = [0u64; 2 + GENERATIONS_SEALED_MAX];
        for (length, bitset) in used.iter_mut().zip(self.bitsets()) {
            *length = bitset.used_words();
        }
        let total: u64 = ENCODING_HEAD_WORDS + used.iter().sum::<u64>();
        assert!(first + out.len() as u64 <= total);
        for (i, word) in out.iter_mut().enumerate() {
            *word = self.encoded_word(&used, first + i as u64).to_le();
        }
    }

    /// The acquired bitset, the current releases, then each sealed generation.
    fn bitsets(&self) -> impl Iterator<Item = &Bitset> + '_ {
        [&self.acquired, &self.released]
            .into_iter()
            .chain(self.sealed[..self.sealed_count].iter().map(|g| &g.blocks))
    }

    /// Word `position` of the encoding, given each bitset's used length.
    fn encoded_word(&self, used: &[u64], position: u64) -> u64 {
        let sealed = &self.sealed[..self.sealed_count];
        if position < ENCODING_HEAD_WORDS {
            return match position {
                0 => ENCODING_MAGIC,
                1 => self.blocks_count_max,
                2 => used[0],
                3 => used[1],
                4 => self.sealed_count as u64,
                p => {
                    let g = ((p - 5) / 2) as usize;
                    match ((p - 5) % 2, sealed.get(g)) {
                        (_, None) => 0,
                        (0, Some(generation)) => generation.checkpoint_op,
                        (_, Some(_)) => used[2 + g],
                    }
                }
            };
        }
        let mut rest = position - ENCODING_HEAD_WORDS;
        for (bitset, &length) in self.bitsets().zip(used) {
            if rest < length {
                return bitset.words[rest as usize];
            }
            rest -= length;
        }
        unreachable!("word {position} beyond the encoding")
    }

    /// Replaces this set with the one `words` (a whole encoding, little-endian) describes. The
    /// set must be fresh (nothing acquired); on error it is left cleared.
    pub fn decode_words(&mut self, words: &[u64]) -> Result<(), DecodeError> {
        assert_eq!(self.acquired_count, 0);
        assert_eq!(self.reservations_open, 0);
        let result = self.decode_words_unchecked(words);
        if result.is_err() {
            *self = FreeSet::new(self.blocks_count_max);
        }
        result
    }

    fn decode_words_unchecked(&mut self, words: &[u64]) -> Result<(), DecodeError> {
        let word = |i: u64| words.get(i as usize).map(|w| u64::from_le(*w));
        if word(0).ok_or(DecodeError::Truncated)? != ENCODING_MAGIC {
            return Err(DecodeError::Magic);
        }
        let head: Vec<u64> = (0..ENCODING_HEAD_WORDS)
            .map(|i| word(i).ok_or(DecodeError::Truncated))
            .collect::<Result<_, _>>()?;
        if head[1] != self.blocks_count_max {
            return Err(DecodeError::Limit {
                encoded: head[1],
                configured: self.blocks_count_max,
            });
        }
        let sealed_count = head[4] as usize;
        if sealed_count > GENERATIONS_SEALED_MAX {
            return Err(DecodeError::Malformed("too many generations"));
        }
        // What encode writes, and nothing else: unused generations' words are zero.
        if head[5 + 2 * sealed_count..].iter().any(|&w| w != 0) {
            return Err(DecodeError::Malformed("words of an unused generation"));
        }
        let mut position = ENCODING_HEAD_WORDS;
        let mut read = |bitset: &mut Bitset, used: u64| -> Result<(), DecodeError> {
            if used > bitset.words.len() as u64 {
                return Err(DecodeError::Malformed("bitset beyond the limit"));
            }
            for i in 0..used {
                bitset.words[i as usize] = word(position + i).ok_or(DecodeError::Truncated)?;
            }
            position += used;
            if !bitset.tail_clear() {
                return Err(DecodeError::Malformed("bits beyond the limit"));
            }
            // Encode writes each bitset up to its last non-zero word.
            if bitset.used_words() != used {
                return Err(DecodeError::Malformed("a bitset ends in zero words"));
            }
            Ok(())
        };
        read(&mut self.acquired, head[2])?;
        read(&mut self.released, head[3])?;
        for g in 0..sealed_count {
            self.sealed[g].checkpoint_op = head[5 + 2 * g];
            read(&mut self.sealed[g].blocks, head[6 + 2 * g])?;
        }
        if position != words.len() as u64 {
            return Err(DecodeError::Malformed("words after the encoding"));
        }
        self.sealed_count = sealed_count;
        self.acquired_count = self.acquired.count_ones();
        self.validate()
    }

    /// Every released block is acquired, in one generation only; generations in op order.
    fn validate(&self) -> Result<(), DecodeError> {
        let sealed = &self.sealed[..self.sealed_count];
        if sealed
            .windows(2)
            .any(|w| w[0].checkpoint_op >= w[1].checkpoint_op)
        {
            return Err(DecodeError::Malformed("generations out of order"));
        }
        let mut union = Bitset::new(self.blocks_count_max);
        for bitset in std::iter::once(&self.released).chain(sealed.iter().map(|g| &g.blocks)) {
            if !bitset.subset_of(&self.acquired) {
                return Err(DecodeError::Malformed("a released block is not acquired"));
            }
            if bitset.intersects(&union) {
                return Err(DecodeError::Malformed("a block released twice"));
            }
            union.union_with(bitset);
        }
        Ok(())
    }

    fn index(address: u64, blocks_count_max: u64) -> u64 {
        assert!(
            address >= 1 && address <= blocks_count_max,
            "block address {address} outside 1..={blocks_count_max}"
        );
        address - 1
    }
}

/// A fixed-size bitset.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Bitset {
    bits: u64,
    words: Vec<u64>,
}

impl Bitset {
    fn new(bits: u64) -> Bitset {
        Bitset {
            bits,
            words: vec![0; bits.div_ceil(64) as usize],
        }
    }

    fn get(&self, index: u64) -> bool {
        assert!(index < self.bits);
        self.words[(index / 64) as usize] & (1 << (index % 64)) != 0
    }

    fn set(&mut self, index: u64) {
        assert!(index < self.bits);
        self.words[(index / 64) as usize] |= 1 << (index % 64);
    }

    fn clear(&mut self) {
        self.words.fill(0);
    }

    fn count_ones(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// Words up to and including the last non-zero one.
    fn used_words(&self) -> u64 {
        self.words
            .iter()
            .rposition(|&w| w != 0)
            .map_or(0, |i| i as u64 + 1)
    }

    fn last_one(&self) -> Option<u64> {
        let i = self.used_words().checked_sub(1)?;
        let word = self.words[i as usize];
        Some(i * 64 + 63 - u64::from(word.leading_zeros()))
    }

    /// The first clear bit at or after `from`, if any below `bits`.
    fn next_zero(&self, from: u64) -> Option<u64> {
        if from >= self.bits {
            return None;
        }
        let mut i = (from / 64) as usize;
        let mut word = !self.words[i] & (u64::MAX << (from % 64));
        loop {
            if word != 0 {
                let index = i as u64 * 64 + u64::from(word.trailing_zeros());
                return (index < self.bits).then_some(index);
            }
            i += 1;
            if i == self.words.len() {
                return None;
            }
            word = !self.words[i];
        }
    }

    /// No bit is set at or beyond `bits`.
    fn tail_clear(&self) -> bool {
        let tail = self.bits % 64;
        tail == 0 || self.words.last().is_none_or(|w| w >> tail == 0)
    }

    fn subtract(&mut self, other: &Bitset) {
        for (w, o) in self.words.iter_mut().zip(&other.words) {
            *w &= !o;
        }
    }

    fn union_with(&mut self, other: &Bitset) {
        for (w, o) in self.words.iter_mut().zip(&other.words) {
            *w |= o;
        }
    }

    fn subset_of(&self, other: &Bitset) -> bool {
        self.words
            .iter()
            .zip(&other.words)
            .all(|(w, o)| w & !o == 0)
    }

    fn intersects(&self, other: &Bitset) -> bool {
        self.words.iter().zip(&other.words).any(|(w, o)| w & o != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use std::collections::BTreeSet;

    fn acquire_n(set: &mut FreeSet, n: u64) -> Vec<u64> {
        let reservation = set.reserve(n).unwrap();
        let addresses = (0..n).map(|_| set.acquire(&reservation).unwrap()).collect();
        assert_eq!(set.acquire(&reservation), None);
        set.forfeit(reservation);
        addresses
    }

    /// Uniform enough in `low..high` for a test.
    fn between(rng: &mut ChaCha8Rng, low: u64, high: u64) -> u64 {
        low + rng.next_u64() % (high - low)
    }

    fn encoding(set: &FreeSet) -> Vec<u64> {
        let mut words = vec![0; set.encoded_word_count() as usize];
        set.encode_words(0, &mut words);
        words
    }

    #[test]
    fn free_set_acquires_lowest_first_within_each_reservation() {
        let mut set = FreeSet::new(100);
        let a = set.reserve(3).unwrap();
        let b = set.reserve(2).unwrap();
        // Whatever order the jobs run in, each gets its own blocks.
        assert_eq!(set.acquire(&b), Some(4));
        assert_eq!(set.acquire(&a), Some(1));
        assert_eq!(set.acquire(&b), Some(5));
        assert_eq!(set.acquire(&b), None);
        set.forfeit(b);
        assert_eq!(set.acquire(&a), Some(2));
        set.forfeit(a);
        // All forfeited: block 3, reserved but never acquired, is open again.
        assert_eq!(acquire_n(&mut set, 2), vec![3, 6]);
        assert_eq!(set.count_acquired(), 6);
        assert_eq!(set.highest_acquired(), Some(6));
    }

    #[test]
    fn free_set_reserves_only_what_exists() {
        let mut set = FreeSet::new(70);
        assert_eq!(acquire_n(&mut set, 69).len(), 69);
        assert!(set.reserve(2).is_none());
        assert_eq!(acquire_n(&mut set, 1), vec![70]);
        assert!(set.reserve(1).is_none());
        assert_eq!(set.count_free(), 0);
    }

    #[test]
    fn free_set_frees_a_release_only_when_its_checkpoint_is_durable() {
        let mut set = FreeSet::new(64);
        acquire_n(&mut set, 4);
        set.release(2);
        assert!(!set.is_free(2) && set.is_released(2));
        // Checkpoint 10 still references block 2 until checkpoint 20 is durable on a quorum.
        set.checkpoint(10);
        set.release(3);
        set.checkpoint(20);
        assert_eq!(set.generations_waiting().collect::<Vec<_>>(), vec![10, 20]);
        assert_eq!(
            acquire_n(&mut set, 1),
            vec![5],
            "released blocks are not reused"
        );
        assert_eq!(set.checkpoint_durable(10), 1);
        assert!(set.is_free(2) && !set.is_released(2));
        assert!(!set.is_free(3) && set.is_released(3));
        assert_eq!(acquire_n(&mut set, 1), vec![2]);
        assert_eq!(set.checkpoint_durable(20), 1);
        assert_eq!(set.count_released(), 0);
        assert_eq!(set.count_acquired(), 4);
    }

    #[test]
    #[should_panic(expected = "generations waiting")]
    fn free_set_refuses_more_waiting_generations_than_a_journal_allows() {
        let mut set = FreeSet::new(64);
        for op in 1..=GENERATIONS_SEALED_MAX as u64 + 1 {
            set.checkpoint(op);
        }
    }

    #[test]
    #[should_panic(expected = "released twice")]
    fn free_set_refuses_a_double_release() {
        let mut set = FreeSet::new(64);
        acquire_n(&mut set, 1);
        set.release(1);
        set.checkpoint(1);
        set.release(1);
    }

    #[test]
    fn free_set_encoding_round_trips_and_grows_with_use_not_limit() {
        let mut set = FreeSet::new(1 << 20);
        let empty = set.encoded_word_count();
        acquire_n(&mut set, 200);
        set.release(7);
        set.checkpoint(5);
        set.release(150);
        let words = encoding(&set);
        assert_eq!(words.len() as u64, empty + 4 + 1 + 3);
        let mut decoded = FreeSet::new(1 << 20);
        decoded.decode_words(&words).unwrap();
        assert_eq!(encoding(&decoded), words);
        assert_eq!(decoded.count_acquired(), 200);
        assert!(decoded.is_released(7) && decoded.is_released(150));
        assert_eq!(decoded.generations_waiting().collect::<Vec<_>>(), vec![5]);
        // Encoded in parts, the same words.
        let mut parts = vec![0; words.len()];
        let (head, tail) = parts.split_at_mut(3);
        set.encode_words(0, head);
        set.encode_words(3, tail);
        assert_eq!(parts, words);
    }

    #[test]
    fn free_set_decode_refuses_what_cannot_be() {
        let mut set = FreeSet::new(128);
        acquire_n(&mut set, 3);
        set.release(2);
        let words = encoding(&set);
        let decode = |words: &[u64], limit: u64| {
            let mut fresh = FreeSet::new(limit);
            let result = fresh.decode_words(words);
            if result.is_err() {
                assert_eq!(fresh.count_acquired(), 0, "left cleared");
            }
            result
        };
        assert_eq!(decode(&words, 128), Ok(()));
        assert_eq!(
            decode(&words, 256),
            Err(DecodeError::Limit {
                encoded: 128,
                configured: 256
            })
        );
        assert_eq!(
            decode(&words[..words.len() - 1], 128),
            Err(DecodeError::Truncated)
        );
        let mut bad = words.clone();
        bad[0] ^= 1;
        assert_eq!(decode(&bad, 128), Err(DecodeError::Magic));
        // Block 64 released but never acquired.
        let mut bad = words.clone();
        let released_word = bad.len() - 1;
        bad[released_word] = 1 << 63;
        assert_eq!(
            decode(&bad, 128),
            Err(DecodeError::Malformed("a released block is not acquired"))
        );
        // Block 105 acquired in a set of 100 (its second word has room for 128).
        let mut small = FreeSet::new(100);
        acquire_n(&mut small, 1);
        let mut bad = encoding(&small);
        bad[2] = 2;
        bad.insert(ENCODING_HEAD_WORDS as usize + 1, 1 << 40);
        assert_eq!(
            decode(&bad, 100),
            Err(DecodeError::Malformed("bits beyond the limit"))
        );
        // Only what encode writes: a bitset padded with a zero word, an unused generation's op.
        let mut bad = encoding(&small);
        bad[2] = 2;
        bad.insert(ENCODING_HEAD_WORDS as usize + 1, 0);
        assert_eq!(
            decode(&bad, 100),
            Err(DecodeError::Malformed("a bitset ends in zero words"))
        );
        let mut bad = encoding(&small);
        bad[5] = 7;
        assert_eq!(
            decode(&bad, 100),
            Err(DecodeError::Malformed("words of an unused generation"))
        );
    }

    /// Random operations against a model of sets: the free set acquires the lowest free block of
    /// its reservation, never hands out a released block, frees generations in order, and its
    /// encoding decodes to the same set at any point.
    #[test]
    fn free_set_matches_a_model() {
        for seed in 0..20 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let limit = 64 + between(&mut rng, 0, 300);
            let mut set = FreeSet::new(limit);
            let mut acquired = BTreeSet::new();
            let mut released = BTreeSet::new();
            let mut sealed: Vec<(u64, BTreeSet<u64>)> = Vec::new();
            let mut checkpoint_op = 0;
            for _ in 0..2_000 {
                match between(&mut rng, 0, 10) {
                    0 => {
                        // Two jobs side by side: whatever order they acquire in, the first
                        // reservation gets the lowest free blocks, the second the next ones.
                        let (n1, n2) = (between(&mut rng, 1, 5), between(&mut rng, 1, 5));
                        if limit - (acquired.len() as u64) < n1 + n2 {
                            continue;
                        }
                        let first = set.reserve(n1).unwrap();
                        let second = set.reserve(n2).unwrap();
                        let mut from_second: Vec<u64> =
                            (0..n2).map(|_| set.acquire(&second).unwrap()).collect();
                        let from_first: Vec<u64> =
                            (0..n1).map(|_| set.acquire(&first).unwrap()).collect();
                        let lowest: Vec<u64> = (1..=limit)
                            .filter(|a| !acquired.contains(a))
                            .take((n1 + n2) as usize)
                            .collect();
                        let mut both = from_first.clone();
                        both.append(&mut from_second);
                        assert_eq!(both, lowest);
                        acquired.extend(both);
                        set.forfeit(second);
                        set.forfeit(first);
                    }
                    1..=3 => {
                        let n = between(&mut rng, 1, 8);
                        let Some(reservation) = set.reserve(n) else {
                            assert!(limit - (acquired.len() as u64) < n);
                            continue;
                        };
                        for _ in 0..between(&mut rng, 0, n + 1) {
                            let address = set.acquire(&reservation).unwrap();
                            let lowest = (1..=limit).find(|a| !acquired.contains(a)).unwrap();
                            assert_eq!(address, lowest);
                            acquired.insert(address);
                        }
                        set.forfeit(reservation);
                    }
                    4..=6 => {
                        let candidates: Vec<u64> = acquired
                            .iter()
                            .copied()
                            .filter(|a| {
                                !released.contains(a) && sealed.iter().all(|g| !g.1.contains(a))
                            })
                            .collect();
                        if !candidates.is_empty() {
                            let address =
                                candidates[between(&mut rng, 0, candidates.len() as u64) as usize];
                            set.release(address);
                            released.insert(address);
                        }
                    }
                    7 if sealed.len() < GENERATIONS_SEALED_MAX => {
                        checkpoint_op += between(&mut rng, 1, 100);
                        set.checkpoint(checkpoint_op);
                        sealed.push((checkpoint_op, std::mem::take(&mut released)));
                    }
                    8 if !sealed.is_empty() => {
                        let (op, blocks) = sealed.remove(0);
                        assert_eq!(set.checkpoint_durable(op), blocks.len() as u64);
                        for a in blocks {
                            acquired.remove(&a);
                        }
                    }
                    _ => {
                        let mut decoded = FreeSet::new(limit);
                        decoded.decode_words(&encoding(&set)).unwrap();
                        assert_eq!(encoding(&decoded), encoding(&set));
                        set = decoded;
                    }
                }
                assert_eq!(set.count_acquired(), acquired.len() as u64);
                let waiting: usize = sealed.iter().map(|g| g.1.len()).sum();
                assert_eq!(set.count_released(), (released.len() + waiting) as u64);
                assert_eq!(set.highest_acquired(), acquired.last().copied());
            }
        }
    }
}
