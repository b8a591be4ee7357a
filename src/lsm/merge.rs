//! The merge at the heart of compaction: two sorted streams of values, the newer (`a`: the
//! shallower level) overriding the older (`b`) where their keys are equal, into one sorted stream.
//!
//! Inputs arrive a block at a time (compaction reads them from the grid), so the merge is a step
//! function over the blocks at hand: it runs until an input's block is used up (the caller loads
//! that input's next block, or marks it ended), the output cannot take a value (the caller seals
//! the output block or table), or both inputs are done. It allocates nothing and holds no buffers.
//!
//! A tombstone (a value the tree marks as a deletion) must keep hiding older values below it,
//! until the merge writes into the last level that could hold one: there it, and the value it
//! hides, are both dropped (`drop_tombstones`).

/// Where one input stands: its current block's values and how far the merge has read them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MergeInput {
    /// Values of the current block consumed.
    pub position: usize,
    /// Values in the current block.
    pub count: usize,
    /// No block follows the current one.
    pub ended: bool,
}

impl MergeInput {
    /// The input's next block, of `count` values, is loaded.
    pub fn load(&mut self, count: usize) {
        assert!(!self.ended);
        assert_eq!(
            self.position, self.count,
            "block loaded before the last was used up"
        );
        self.position = 0;
        self.count = count;
    }

    /// The input has no more blocks.
    pub fn end(&mut self) {
        assert_eq!(self.position, self.count);
        self.ended = true;
    }

    fn available(&self) -> bool {
        self.position < self.count
    }

    fn done(&self) -> bool {
        self.ended && !self.available()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MergeStop {
    /// Input `a`'s block is used up: load its next block or end it.
    NeedA,
    /// Input `b`'s block is used up: load its next block or end it.
    NeedB,
    /// The output refused a value: make room and call again (the value is not consumed).
    OutputFull,
    /// Both inputs ended and every value was written.
    Done,
}

/// The rules of one merge.
pub struct MergeRules<'r> {
    pub value_size: usize,
    pub key_size: usize,
    pub tombstone: &'r dyn Fn(&[u8]) -> bool,
    pub drop_tombstones: bool,
}

/// Merges from the current blocks `a_values` and `b_values` (packed values, `value_size` each)
/// into `output`, which returns false when it cannot take the value.
pub fn merge(
    rules: &MergeRules,
    a_values: &[u8],
    a: &mut MergeInput,
    b_values: &[u8],
    b: &mut MergeInput,
    output: &mut dyn FnMut(&[u8]) -> bool,
) -> MergeStop {
    assert_eq!(a_values.len(), a.count * rules.value_size);
    assert_eq!(b_values.len(), b.count * rules.value_size);
    loop {
        // Both sides must show their next value before the smaller can be chosen.
        if !a.available() && !a.ended {
            return MergeStop::NeedA;
        }
        if !b.available() && !b.ended {
            return MergeStop::NeedB;
        }
        if a.done() && b.done() {
            return MergeStop::Done;
        }
        let size = rules.value_size;
        let a_value = a
            .available()
            .then(|| &a_values[a.position * size..(a.position + 1) * size]);
        let b_value = b
            .available()
            .then(|| &b_values[b.position * size..(b.position + 1) * size]);
        let (chosen, take_a, take_b) = match (a_value, b_value) {
            (Some(x), Some(y)) => match x[..rules.key_size].cmp(&y[..rules.key_size]) {
                std::cmp::Ordering::Less => (x, true, false),
                std::cmp::Ordering::Greater => (y, false, true),
                // The newer value wins; the older is dropped.
                std::cmp::Ordering::Equal => (x, true, true),
            },
            (Some(x), None) => (x, true, false),
            (None, Some(y)) => (y, false, true),
            (None, None) => unreachable!("done handled above"),
        };
        let dropped = rules.drop_tombstones && (rules.tombstone)(chosen);
        if !dropped && !output(chosen) {
            return MergeStop::OutputFull;
        }
        a.position += usize::from(take_a);
        b.position += usize::from(take_b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use std::collections::BTreeMap;

    /// 16-byte values: an 8-byte big-endian key, a version, a tombstone flag.
    fn value(key: u64, version: u32, tombstone: bool) -> [u8; 16] {
        let mut v = [0u8; 16];
        v[..8].copy_from_slice(&key.to_be_bytes());
        v[8..12].copy_from_slice(&version.to_le_bytes());
        v[12] = u8::from(tombstone);
        v
    }

    fn is_tombstone(v: &[u8]) -> bool {
        v[12] == 1
    }

    /// Runs the merge over `a` and `b` cut into blocks of the given sizes, with an output that
    /// fills up every `output_room` values.
    fn run(
        a: &[[u8; 16]],
        b: &[[u8; 16]],
        a_block: usize,
        b_block: usize,
        output_room: usize,
        drop_tombstones: bool,
    ) -> Vec<[u8; 16]> {
        let rules = MergeRules {
            value_size: 16,
            key_size: 8,
            tombstone: &is_tombstone,
            drop_tombstones,
        };
        let blocks = |values: &[[u8; 16]], size: usize| -> Vec<Vec<u8>> {
            values.chunks(size).map(|c| c.concat()).collect()
        };
        let (a_blocks, b_blocks) = (blocks(a, a_block), blocks(b, b_block));
        let (mut a_next, mut b_next) = (0, 0);
        let (mut a_input, mut b_input) = (MergeInput::default(), MergeInput::default());
        let (mut a_values, mut b_values): (&[u8], &[u8]) = (&[], &[]);
        let mut out = Vec::new();
        let mut room = output_room;
        loop {
            let mut output = |v: &[u8]| {
                if room == 0 {
                    return false;
                }
                room -= 1;
                out.push(v.try_into().unwrap());
                true
            };
            match merge(
                &rules,
                a_values,
                &mut a_input,
                b_values,
                &mut b_input,
                &mut output,
            ) {
                MergeStop::NeedA if a_next < a_blocks.len() => {
                    a_values = &a_blocks[a_next];
                    a_input.load(a_values.len() / 16);
                    a_next += 1;
                }
                MergeStop::NeedA => {
                    a_input.end();
                }
                MergeStop::NeedB if b_next < b_blocks.len() => {
                    b_values = &b_blocks[b_next];
                    b_input.load(b_values.len() / 16);
                    b_next += 1;
                }
                MergeStop::NeedB => b_input.end(),
                MergeStop::OutputFull => room = output_room,
                MergeStop::Done => return out,
            }
        }
    }

    #[test]
    fn merge_newer_wins_and_order_holds() {
        let a = [value(1, 2, false), value(4, 2, true), value(6, 2, false)];
        let b = [
            value(1, 1, false),
            value(2, 1, false),
            value(4, 1, false),
            value(9, 1, false),
        ];
        let kept = run(&a, &b, 2, 3, 2, false);
        assert_eq!(
            kept,
            vec![
                value(1, 2, false),
                value(2, 1, false),
                value(4, 2, true),
                value(6, 2, false),
                value(9, 1, false)
            ]
        );
        // Into the last level the tombstone and what it hid are gone.
        let last = run(&a, &b, 1, 1, 1, true);
        assert_eq!(
            last,
            vec![
                value(1, 2, false),
                value(2, 1, false),
                value(6, 2, false),
                value(9, 1, false)
            ]
        );
        assert!(run(&[], &[], 1, 1, 1, false).is_empty());
        assert_eq!(run(&a, &[], 3, 1, 9, false), a.to_vec());
    }

    /// Against a model: random inputs, random block cuts and output room.
    #[test]
    fn merge_matches_a_model() {
        let mut rng = ChaCha8Rng::seed_from_u64(17);
        let mut below = |n: u64| rng.next_u64() % n;
        for _ in 0..500 {
            let sorted = |count: u64, version: u32, below: &mut dyn FnMut(u64) -> u64| {
                let mut keys: BTreeMap<u64, bool> = BTreeMap::new();
                for _ in 0..count {
                    keys.insert(below(60), below(4) == 0);
                }
                keys.into_iter()
                    .map(|(k, t)| value(k, version, t))
                    .collect::<Vec<_>>()
            };
            let a = sorted(below(40), 2, &mut below);
            let b = sorted(below(40), 1, &mut below);
            let drop_tombstones = below(2) == 0;
            let mut model: BTreeMap<u64, [u8; 16]> = BTreeMap::new();
            for v in b.iter().chain(&a) {
                model.insert(u64::from_be_bytes(v[..8].try_into().unwrap()), *v);
            }
            let expected: Vec<_> = model
                .into_values()
                .filter(|v| !(drop_tombstones && is_tombstone(v)))
                .collect();
            let got = run(
                &a,
                &b,
                1 + below(7) as usize,
                1 + below(7) as usize,
                1 + below(5) as usize,
                drop_tombstones,
            );
            assert_eq!(got, expected);
        }
    }
}
