//! A fixed-capacity open-addressing hash index from u128 ids to u32 values (a slot in an
//! object array), with linear probing and backward-shift deletion. Allocated once; never grows.
//!
//! Each bucket is one u64: a 32-bit fingerprint (the hash's high half) and `value + 1` (0 marks
//! an empty bucket). A probe only reads the object (to compare the full id) when the fingerprint
//! matches, so a miss costs no object loads. The hash is a fixed function of the id: the layout,
//! and so any iteration over it, is the same on every replica.

/// A 128-to-64-bit mix (two rounds of the SplitMix64/Murmur3 finalizer over the halves).
#[inline]
pub fn hash_id(id: u128) -> u64 {
    let lo = id as u64;
    let hi = (id >> 64) as u64;
    fmix64(lo ^ fmix64(hi ^ 0x9E37_79B9_7F4A_7C15))
}

#[inline]
pub fn fmix64(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Asks Linux to back a large table with huge pages: lookups land on random buckets, and with
/// 4 KiB pages nearly every one would also miss the TLB (measured: about 20% of the cost of a
/// transfer). Only a hint; contents and results are unaffected.
fn advise_huge_pages(buckets: &[u64]) {
    #[cfg(not(target_os = "linux"))]
    let _ = buckets;
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 * 1024 * 1024;
        let start = buckets.as_ptr() as usize;
        let end = start + core::mem::size_of_val(buckets);
        let aligned = start.next_multiple_of(HUGE);
        if end > aligned + HUGE {
            let len = (end - aligned) / HUGE * HUGE;
            // SAFETY: madvise on whole pages inside our own allocation; MADV_HUGEPAGE changes
            // only how the kernel backs them, never their contents.
            unsafe {
                libc::madvise(aligned as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
            }
        }
    }
}

pub struct IdTable {
    buckets: Vec<u64>,
    mask: usize,
    count: usize,
    capacity: usize,
}

impl IdTable {
    /// A table for up to `capacity` entries, at most half full.
    pub fn new(capacity: usize) -> IdTable {
        assert!(capacity < u32::MAX as usize);
        let size = (capacity.max(8) * 2).next_power_of_two();
        let buckets = vec![0u64; size];
        advise_huge_pages(&buckets);
        IdTable {
            // Zeroed allocation: the OS hands out zero pages lazily.
            buckets,
            mask: size - 1,
            count: 0,
            capacity,
        }
    }

    pub fn len(&self) -> usize {
        self.count
    }

    /// Writes each page of the (zeroed) buckets so the kernel backs it now. Returns the bytes.
    pub fn prefault(&mut self) -> usize {
        let per_page = 4096 / std::mem::size_of::<u64>();
        let mut index = 0;
        while index < self.buckets.len() {
            // Rewrites the value already there: the table is unchanged.
            let value = self.buckets[index];
            // Safety: in bounds (checked by the loop condition).
            unsafe { std::ptr::write_volatile(&mut self.buckets[index], value) };
            index += per_page;
        }
        std::mem::size_of_val(self.buckets.as_slice())
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn memory_bytes(&self) -> usize {
        self.buckets.len() * 8
    }

    /// The value stored for `id`; `id_of(value)` gives the id an entry's value refers to.
    #[inline]
    pub fn get(&self, id: u128, id_of: impl Fn(u32) -> u128) -> Option<u32> {
        let hash = hash_id(id);
        let fingerprint = hash >> 32;
        let mut index = hash as usize & self.mask;
        loop {
            let bucket = self.buckets[index];
            if bucket == 0 {
                return None;
            }
            if bucket >> 32 == fingerprint {
                let value = (bucket as u32) - 1;
                if id_of(value) == id {
                    return Some(value);
                }
            }
            index = (index + 1) & self.mask;
        }
    }

    /// Starts loading the bucket where a lookup of `id` begins, so that a lookup a little
    /// later finds it in cache. No effect on results.
    #[inline]
    pub fn prefetch(&self, id: u128) {
        let index = hash_id(id) as usize & self.mask;
        let bucket: *const u64 = &self.buckets[index];
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch is a hint; it never faults and has no architectural effect.
        #[allow(unused_unsafe)]
        unsafe {
            core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
                bucket.cast::<i8>(),
            );
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = bucket;
    }

    /// Inserts an id known to be absent.
    #[inline]
    pub fn insert(&mut self, id: u128, value: u32) {
        assert!(self.count < self.capacity, "id table over capacity");
        assert!(value < u32::MAX);
        let hash = hash_id(id);
        let mut index = hash as usize & self.mask;
        while self.buckets[index] != 0 {
            index = (index + 1) & self.mask;
        }
        self.buckets[index] = (hash >> 32) << 32 | u64::from(value + 1);
        self.count += 1;
    }

    /// Inserts `id` unless it is already present (then returns false and changes nothing):
    /// `insert` for ids that come from outside, such as a snapshot being restored.
    pub fn try_insert(&mut self, id: u128, value: u32, id_of: impl Fn(u32) -> u128) -> bool {
        assert!(self.count < self.capacity, "id table over capacity");
        assert!(value < u32::MAX);
        let hash = hash_id(id);
        let fingerprint = hash >> 32;
        let mut index = hash as usize & self.mask;
        loop {
            let bucket = self.buckets[index];
            if bucket == 0 {
                break;
            }
            if bucket >> 32 == fingerprint && id_of((bucket as u32) - 1) == id {
                return false;
            }
            index = (index + 1) & self.mask;
        }
        self.buckets[index] = fingerprint << 32 | u64::from(value + 1);
        self.count += 1;
        true
    }

    /// Removes every entry.
    pub fn clear(&mut self) {
        // Every insert fills one bucket and every remove empties one, so an empty table has
        // only empty buckets: skip the write (and the page faults of a fresh table).
        if self.count != 0 {
            self.buckets.fill(0);
            self.count = 0;
        }
    }

    /// Removes the entry for `id`, which must be present, keeping every probe chain unbroken.
    pub fn remove(&mut self, id: u128, id_of: impl Fn(u32) -> u128) {
        let hash = hash_id(id);
        let fingerprint = hash >> 32;
        let mut hole = hash as usize & self.mask;
        loop {
            let bucket = self.buckets[hole];
            assert_ne!(bucket, 0, "removing an absent id");
            if bucket >> 32 == fingerprint && id_of((bucket as u32) - 1) == id {
                break;
            }
            hole = (hole + 1) & self.mask;
        }
        // Backward shift: move later entries of the cluster into the hole when their home
        // bucket does not lie (cyclically) strictly after the hole.
        let mut index = hole;
        loop {
            index = (index + 1) & self.mask;
            let bucket = self.buckets[index];
            if bucket == 0 {
                break;
            }
            let home = hash_id(id_of((bucket as u32) - 1)) as usize & self.mask;
            let distance_home = index.wrapping_sub(home) & self.mask;
            let distance_hole = index.wrapping_sub(hole) & self.mask;
            if distance_home >= distance_hole {
                self.buckets[hole] = bucket;
                hole = index;
            }
        }
        self.buckets[hole] = 0;
        self.count -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn insert_get_remove_against_a_map() {
        // Values index into `ids`; small table, many collisions, interleaved removals.
        let mut ids: Vec<u128> = Vec::new();
        let mut table = IdTable::new(64);
        let mut model: HashMap<u128, u32> = HashMap::new();
        let mut x: u64 = 1;
        for step in 0..20_000u32 {
            x = fmix64(x.wrapping_add(step as u64));
            let id = u128::from(x % 97) + 1;
            let present = model.contains_key(&id);
            let got = table.get(id, |v| ids[v as usize]);
            assert_eq!(got, model.get(&id).copied());
            if present && x % 3 == 0 {
                table.remove(id, |v| ids[v as usize]);
                model.remove(&id);
            } else if !present && model.len() < 64 {
                ids.push(id);
                let value = ids.len() as u32 - 1;
                table.insert(id, value);
                model.insert(id, value);
            }
            assert_eq!(table.len(), model.len());
        }
        for (&id, &v) in &model {
            assert_eq!(table.get(id, |v| ids[v as usize]), Some(v));
        }
        // try_insert refuses present ids and inserts absent ones; clear empties the table.
        let present: Vec<u128> = model.keys().copied().collect();
        for &id in &present {
            assert!(!table.try_insert(id, 0, |v| ids[v as usize]));
        }
        assert_eq!(table.len(), model.len());
        table.clear();
        assert!(table.is_empty());
        for &id in &present {
            assert_eq!(table.get(id, |v| ids[v as usize]), None);
        }
        let id = present.first().copied().unwrap_or(1);
        ids.push(id);
        let value = ids.len() as u32 - 1;
        assert!(table.try_insert(id, value, |v| ids[v as usize]));
        assert_eq!(table.get(id, |v| ids[v as usize]), Some(value));
    }
}
