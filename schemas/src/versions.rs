//! Re-sent and corrected CDRs: which version of a call counts.
//!
//! A call leg is identified by its `call_id`. A feed may send the same leg again: a
//! **re-send** (the same record again, after a timeout or a PBX restart) or a
//! **correction** (the same `call_id` with, say, a later end after a transfer settled).
//!
//! **The rule: a call counts once, as its latest version — the one with the latest `end`;
//! between versions with the same `end`, the one read last (higher Kafka partition, then
//! offset, which for one feed keyed by region is the one sent last).**
//!
//! Where the rule is applied:
//! - `cdrflow backfill` (and `cdrflow reconcile`, which recomputes counters the same way)
//!   applies it exactly: it sees every version in the archive, which keeps them all.
//! - The streaming aggregator counts a call the first time it sees it, and skips every
//!   later version of a call it has already counted within its window (48 h of call start
//!   times per Kafka partition by default): re-sends are never counted twice, and the
//!   skipped corrections are counted in `cdrflow_records_duplicate_total`. A correction
//!   reaches the dashboards when the hours it touches are rebuilt from the archive with
//!   `cdrflow backfill`, which replaces those hours at once. The window is durable: every
//!   counter row carries the [`call_key`]s it counted, written in the same atomic insert
//!   as the counters, and read back when a partition is assigned.

/// A stable 64-bit key of a call id (XXH3): what the aggregator's window and the counter
/// rows store instead of the id itself. Collisions need ~4·10⁹ calls in one window.
#[inline]
pub fn call_key(call_id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(call_id.as_bytes())
}

/// Where a version of a call stands in the rule's order: `(end_ms, partition, offset)`.
pub type VersionOrder = (i64, i32, i64);

/// Whether version `new` replaces version `old` of the same call under the rule.
#[inline]
pub fn supersedes(new: VersionOrder, old: VersionOrder) -> bool {
    new > old
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_end_wins_then_the_later_read() {
        assert!(supersedes((2_000, 0, 5), (1_000, 3, 900)), "a later end wins whatever the offset");
        assert!(!supersedes((1_000, 3, 900), (2_000, 0, 5)));
        assert!(supersedes((1_000, 0, 6), (1_000, 0, 5)), "a re-send: the later read");
        assert!(!supersedes((1_000, 0, 5), (1_000, 0, 5)), "the same version does not replace itself");
    }

    #[test]
    fn call_keys_are_stable() {
        // Stored in ClickHouse: the key of an id must never change between versions.
        assert_eq!(call_key("122-000000001"), xxhash_rust::xxh3::xxh3_64(b"122-000000001"));
        assert_ne!(call_key("a"), call_key("b"));
        assert_eq!(call_key(""), 0x2d06800538d394c2, "XXH3-64 of the empty input");
    }
}
