//! Latency histograms the replica keeps for the operator (`vsr start --metrics`, served by
//! `io::metrics`): fixed buckets, so observing allocates nothing and memory does not grow.

/// Bucket upper bounds in nanoseconds: 100 µs to 10 s, about three a decade (Prometheus's
/// `le` labels, in seconds, are these over 1e9). Observations above the last fall in `+Inf`.
pub const BUCKETS_NS: [u64; 16] = [
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Observations at most `BUCKETS_NS[i]` and above the bucket before (not cumulative).
    buckets: [u64; BUCKETS_NS.len()],
    /// Observations above the last bound.
    above: u64,
    count: u64,
    sum_ns: u64,
}

impl Histogram {
    pub fn observe(&mut self, duration_ns: u64) {
        let index = BUCKETS_NS.partition_point(|&bound| bound < duration_ns);
        match self.buckets.get_mut(index) {
            Some(bucket) => *bucket += 1,
            None => self.above += 1,
        }
        self.count += 1;
        self.sum_ns = self.sum_ns.saturating_add(duration_ns);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn sum_ns(&self) -> u64 {
        self.sum_ns
    }

    /// Observations at most `BUCKETS_NS[i]`, cumulative as Prometheus counts them, for each
    /// bound in order.
    pub fn cumulative(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let mut total = 0;
        BUCKETS_NS.iter().zip(self.buckets).map(move |(&bound, n)| {
            total += n;
            (bound, total)
        })
    }
}

/// The replica's latencies.
#[derive(Clone, Copy, Debug, Default)]
pub struct Latencies {
    /// Primary: a client request received until its reply is ready (committed and executed).
    pub request: Histogram,
    /// Primary: an op prepared until it committed (a replication quorum made it durable).
    pub prepare_commit: Histogram,
    /// A checkpoint started until it was durable (written and recorded in the superblock).
    pub checkpoint: Histogram,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_take_their_bound_and_count_cumulatively() {
        let mut h = Histogram::default();
        h.observe(100_000); // on the first bound: the first bucket
        h.observe(100_001); // just above: the second
        h.observe(3_000_000);
        h.observe(20_000_000_000); // above every bound
        let cumulative: Vec<(u64, u64)> = h.cumulative().collect();
        assert_eq!(cumulative[0], (100_000, 1));
        assert_eq!(cumulative[1], (250_000, 2));
        assert_eq!(cumulative[4], (2_500_000, 2));
        assert_eq!(cumulative[5], (5_000_000, 3));
        assert_eq!(cumulative.last().unwrap().1, 3);
        assert_eq!(h.count(), 4);
        assert_eq!(h.sum_ns(), 100_000 + 100_001 + 3_000_000 + 20_000_000_000);
    }
}
