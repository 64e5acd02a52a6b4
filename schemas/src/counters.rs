//! The call-centre counters per (region, line, UTC hour): their definitions live here, next
//! to the code that computes them, and every consumer (the streaming aggregator, the
//! archive backfill, the synthetic feed's ground truth) uses this one implementation.
//!
//! For one call leg `c` on line `L` (thresholds from the line registry):
//! - **offered**: every leg. `offered = answered + abandoned + short_abandoned + unanswered`.
//! - **answered**: disposition `answered`.
//! - **short_abandoned**: `abandoned` with queue wait `< L.short_abandon_s` — callers who
//!   hung up at once (misdials, IVR drops); reported apart and *not* counted as abandoned.
//! - **abandoned**: `abandoned` with queue wait `≥ L.short_abandon_s`.
//! - **unanswered**: `no_answer`, `busy`, `failed`, `congestion` (incl. recorder calls).
//! - **answered_within_sl**: answered with queue wait `≤ L.service_level_s`.
//! - **abandoned_after_sl**: abandoned (short or not) with queue wait `> L.service_level_s`.
//! - **Service level** (ICMI form) = `answered_within_sl / (answered + abandoned_after_sl)`:
//!   callers who gave up before the threshold neither help nor hurt it.
//! - **wait_sum_ms / wait_max_ms**: queue wait of answered legs; ASA = `wait_sum_ms / answered`.
//! - **talk_sum_ms**: talk time of answered legs.
//! - **transferred_out**: legs with a transfer target.
//! - **out_of_hours**: legs that arrived when the line was closed by its local working
//!   hours (they reach the recorder and are called back).
//! - breakdowns of **offered** by age band (incl. `unknown`), channel and topic (`unknown`
//!   when none was recorded).
//!
//! The hour is the UTC hour in which the call *started* (was offered); a late or re-sent
//! CDR lands in its own hour, whenever it arrives.

use compact_str::CompactString;

use crate::cdr::{AgeBand, Cdr, Channel, Disposition};
use crate::line::{Line, LineIdx, LineRegistry};
use crate::region::{RegionCode, Regions};

/// Which counters row a CDR belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HourKey {
    /// Region of the centre.
    pub region: RegionCode,
    /// Line.
    pub line: LineIdx,
    /// Start of the UTC hour, seconds since the epoch.
    pub hour: i64,
}

/// Name of the "not recorded" bucket in breakdowns.
pub const UNKNOWN: &str = "unknown";

/// The counters of one (region, line, hour).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// See the module docs for each definition.
    pub offered: u64,
    #[allow(missing_docs)]
    pub answered: u64,
    #[allow(missing_docs)]
    pub abandoned: u64,
    #[allow(missing_docs)]
    pub short_abandoned: u64,
    #[allow(missing_docs)]
    pub unanswered: u64,
    #[allow(missing_docs)]
    pub answered_within_sl: u64,
    #[allow(missing_docs)]
    pub abandoned_after_sl: u64,
    #[allow(missing_docs)]
    pub wait_sum_ms: u64,
    #[allow(missing_docs)]
    pub wait_max_ms: u64,
    #[allow(missing_docs)]
    pub talk_sum_ms: u64,
    #[allow(missing_docs)]
    pub transferred_out: u64,
    #[allow(missing_docs)]
    pub out_of_hours: u64,
    /// Offered by age band, in `AgeBand::ALL` order, then unknown.
    pub by_age_band: [u64; 6],
    /// Offered by channel, in `Channel::ALL` order.
    pub by_channel: [u64; 4],
    /// Offered by topic (`unknown` when none).
    pub by_topic: TopicCounts,
}

/// Calls by topic, sorted by name. A cell sees a dozen topics or so, so this is a short
/// sorted list, searched by a scan: per call that is cheaper than a B-tree's byte
/// comparisons on the way down, and a cell's topics take one allocation instead of a node
/// each. Each entry keeps its name's [`NameKey`] beside it, so the scan compares three
/// words per entry and never decodes a name; names are short slugs, kept inline.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TopicCounts(Vec<Topic>);

/// One topic of a [`TopicCounts`].
#[derive(Clone, PartialEq, Eq)]
struct Topic {
    /// Its name's key: what the scan compares.
    key: NameKey,
    /// Its name.
    name: CompactString,
    /// Its calls.
    calls: u64,
}

/// A name's length and its first and last eight bytes (zero-padded when shorter): for a
/// name of up to 16 bytes, equal keys mean equal names, so the scan needs nothing else;
/// a longer name is compared in full once its key matches.
#[derive(Clone, Copy, PartialEq, Eq)]
struct NameKey {
    len: usize,
    head: u64,
    tail: u64,
}

impl NameKey {
    #[inline(always)]
    fn of(name: &str) -> NameKey {
        let b = name.as_bytes();
        let word = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("eight bytes"));
        match b.len() {
            8.. => NameKey { len: b.len(), head: word(0), tail: word(b.len() - 8) },
            len => NameKey { len, head: short_word(b), tail: 0 },
        }
    }

    /// Whether this key's name, `mine`, is `other` (whose key is `key`).
    #[inline(always)]
    fn names(self, mine: &str, key: NameKey, other: &str) -> bool {
        self == key && (self.len <= 16 || mine == other)
    }
}

/// `b`'s bytes (fewer than eight) as a little-endian word, zero-padded: read as two loads
/// that overlap, or three bytes, rather than copied into a zeroed buffer and read back (a
/// copy of a length not known until run time is a call to `memcpy`, whose small stores the
/// load that follows then waits on). `rollup/update` takes 0.87x the time it took with the
/// copy, faster in 8 rounds of 8 run in turns (`benches/RESULTS.md` §26).
#[inline(always)]
fn short_word(b: &[u8]) -> u64 {
    let len = b.len();
    debug_assert!(len < 8);
    let half = |at: usize| u64::from(u32::from_le_bytes(b[at..at + 4].try_into().expect("four bytes")));
    match len {
        // The two halves overlap by 8 - len bytes, which are the same bytes in both.
        4.. => half(0) | half(len - 4) << (8 * (len - 4)),
        // Bytes 0, len / 2 and len - 1 are every byte of a name of one to three.
        1.. => u64::from(b[0]) | u64::from(b[len / 2]) << (8 * (len / 2)) | u64::from(b[len - 1]) << (8 * (len - 1)),
        0 => 0,
    }
}

impl TopicCounts {
    /// Adds `n` calls to `topic`.
    #[inline]
    pub fn add(&mut self, topic: &str, n: u64) {
        *self.calls_mut(topic) += n;
    }

    /// Sets `topic`'s calls to `n`.
    pub fn set(&mut self, topic: &str, n: u64) {
        *self.calls_mut(topic) = n;
    }

    /// `topic`'s calls, a new topic put in its place by name with none.
    #[inline]
    fn calls_mut(&mut self, topic: &str) -> &mut u64 {
        let key = NameKey::of(topic);
        match self.position(key, topic) {
            Some(at) => &mut self.0[at].calls,
            None => self.insert(key, topic),
        }
    }

    /// Where `topic` (whose key is `key`) is, if counted.
    #[inline]
    fn position(&self, key: NameKey, topic: &str) -> Option<usize> {
        self.0.iter().position(|t| t.key.names(&t.name, key, topic))
    }

    /// Puts a topic not yet counted in its place by name.
    #[cold]
    fn insert(&mut self, key: NameKey, topic: &str) -> &mut u64 {
        if self.0.capacity() == 0 {
            // Most cells see a handful of topics: one allocation for them all.
            self.0.reserve_exact(8);
        }
        let at = self.0.partition_point(|t| t.name.as_str() < topic);
        self.0.insert(at, Topic { key, name: CompactString::from(topic), calls: 0 });
        &mut self.0[at].calls
    }

    /// `topic`'s calls, if any were counted.
    pub fn get(&self, topic: &str) -> Option<u64> {
        self.calls(topic).copied()
    }

    fn calls(&self, topic: &str) -> Option<&u64> {
        self.position(NameKey::of(topic), topic).map(|at| &self.0[at].calls)
    }

    /// The topics and their calls, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&CompactString, &u64)> {
        self.0.iter().map(|t| (&t.name, &t.calls))
    }

    /// The topics, by name.
    pub fn keys(&self) -> impl Iterator<Item = &CompactString> {
        self.0.iter().map(|t| &t.name)
    }

    /// Their calls, in [`TopicCounts::keys`] order.
    pub fn values(&self) -> impl Iterator<Item = &u64> {
        self.0.iter().map(|t| &t.calls)
    }

    /// How many topics.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no call was counted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for TopicCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl std::ops::Index<&str> for TopicCounts {
    type Output = u64;
    /// `topic`'s calls; panics if none were counted.
    fn index(&self, topic: &str) -> &u64 {
        self.calls(topic).unwrap_or_else(|| panic!("no topic {topic:?}"))
    }
}

impl Counters {
    /// Adds one leg.
    #[inline]
    pub fn record(&mut self, c: &Cdr, line: &Line, out_of_hours: bool) {
        self.offered += 1;
        let wait = c.queue_wait_ms as u64;
        let sl_ms = line.service_level_s as u64 * 1000;
        match c.disposition {
            Disposition::Answered => {
                self.answered += 1;
                self.answered_within_sl += (wait <= sl_ms) as u64;
                self.wait_sum_ms += wait;
                self.wait_max_ms = self.wait_max_ms.max(wait);
                self.talk_sum_ms += c.talk_ms as u64;
            }
            Disposition::Abandoned => {
                if wait < line.short_abandon_s as u64 * 1000 {
                    self.short_abandoned += 1;
                } else {
                    self.abandoned += 1;
                }
                self.abandoned_after_sl += (wait > sl_ms) as u64;
            }
            Disposition::NoAnswer | Disposition::Busy | Disposition::Failed | Disposition::Congestion => {
                self.unanswered += 1;
            }
        }
        self.transferred_out += c.transfer_to.is_some() as u64;
        self.out_of_hours += out_of_hours as u64;
        self.by_age_band[c.age_band.map_or(5, |b| b as usize)] += 1;
        self.by_channel[c.channel as usize] += 1;
        self.by_topic.add(c.topic.as_deref().unwrap_or(UNKNOWN), 1);
    }

    /// Adds another row's counters to this one.
    pub fn merge(&mut self, o: &Counters) {
        self.offered += o.offered;
        self.answered += o.answered;
        self.abandoned += o.abandoned;
        self.short_abandoned += o.short_abandoned;
        self.unanswered += o.unanswered;
        self.answered_within_sl += o.answered_within_sl;
        self.abandoned_after_sl += o.abandoned_after_sl;
        self.wait_sum_ms += o.wait_sum_ms;
        self.wait_max_ms = self.wait_max_ms.max(o.wait_max_ms);
        self.talk_sum_ms += o.talk_sum_ms;
        self.transferred_out += o.transferred_out;
        self.out_of_hours += o.out_of_hours;
        for (a, b) in self.by_age_band.iter_mut().zip(o.by_age_band) {
            *a += b;
        }
        for (a, b) in self.by_channel.iter_mut().zip(o.by_channel) {
            *a += b;
        }
        for (k, v) in o.by_topic.iter() {
            self.by_topic.add(k, *v);
        }
    }

    /// Service level, ICMI form; `None` when nobody was answered or abandoned after T.
    pub fn service_level(&self) -> Option<f64> {
        let d = self.answered + self.abandoned_after_sl;
        (d > 0).then(|| self.answered_within_sl as f64 / d as f64)
    }

    /// Average speed of answer, seconds.
    pub fn asa_s(&self) -> Option<f64> {
        (self.answered > 0).then(|| self.wait_sum_ms as f64 / 1000.0 / self.answered as f64)
    }

    /// The non-zero age bands, by name.
    pub fn named_age_bands(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Self::age_band_names().into_iter().zip(self.by_age_band).filter(|(_, n)| *n > 0)
    }

    /// The non-zero channels, by name.
    pub fn named_channels(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Self::channel_names().into_iter().zip(self.by_channel).filter(|(_, n)| *n > 0)
    }

    /// Age-band names in `by_age_band` order.
    pub fn age_band_names() -> [&'static str; 6] {
        let mut n = [UNKNOWN; 6];
        for (i, b) in AgeBand::ALL.iter().enumerate() {
            n[i] = b.code();
        }
        n
    }

    /// Channel names in `by_channel` order.
    pub fn channel_names() -> [&'static str; 4] {
        Channel::ALL.map(Channel::code)
    }
}

/// The row a CDR belongs to, and whether it arrived out of the line's working hours.
#[inline]
pub fn classify(c: &Cdr, lines: &LineRegistry) -> (HourKey, bool) {
    let key = HourKey { region: c.region, line: c.line, hour: c.utc_hour() };
    let line = lines.line(c.line);
    let ooh = !line.hours.is_always_open() && {
        let region = Regions::get().by_code(c.region.0).expect("validated region");
        let utc = c.start_ms.div_euclid(1000);
        let local = utc + i64::from(region.offset_seconds(utc));
        let days = local.div_euclid(86_400);
        // 1970-01-01 was a Thursday (3 counting from Monday = 0).
        let weekday = (days + 3).rem_euclid(7) as usize;
        let minute = (local.rem_euclid(86_400) / 60) as u16;
        !line.hours.is_open(weekday, minute)
    };
    (key, ooh)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn a_short_name_is_its_bytes_zero_padded() {
        let bytes: Vec<u8> = (0..8u8).map(|i| 0xA1u8.wrapping_mul(i + 3)).collect();
        for len in 0..8 {
            let mut padded = [0u8; 8];
            padded[..len].copy_from_slice(&bytes[..len]);
            assert_eq!(short_word(&bytes[..len]), u64::from_le_bytes(padded), "length {len}");
        }
    }

    #[test]
    fn name_keys_tell_names_apart_at_every_length_and_position() {
        let same = |a: &str, b: &str| NameKey::of(a).names(a, NameKey::of(b), b);
        for len in 0..40 {
            let a: String = (0..len).map(|i| (b'a' + (i % 26) as u8) as char).collect();
            assert!(same(&a, &a.clone()));
            for at in 0..len {
                let mut b = a.clone().into_bytes();
                b[at] = b'_';
                let b = String::from_utf8(b).unwrap();
                assert!(!same(&a, &b), "{a:?} {b:?}");
            }
            assert!(!same(&a, &format!("{a}x")) && !same(&format!("{a}x"), &a));
            // Zero padding must not make a short name equal to one ending in NUL bytes.
            assert!(!same(&a, &format!("{a}\0")) && !same(&format!("{a}\0"), &a));
        }
    }

    #[test]
    fn topic_counts_keep_the_totals_and_order_of_a_sorted_map() {
        // Prefixes of one another, one byte apart, and lengths alike: what a scan by length
        // and bytes, and a sorted insert, could get wrong.
        let names = ["covid", "housing", UNKNOWN, "mobilisation", "a", "zz", "transport", "covid19", "cov", "covie"];
        let mut topics = TopicCounts::default();
        let mut reference: BTreeMap<String, u64> = BTreeMap::new();
        let mut x = 12_345u64;
        for _ in 0..10_000 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let (name, n) = (names[(x >> 33) as usize % names.len()], (x >> 60) + 1);
            topics.add(name, n);
            *reference.entry(name.to_owned()).or_default() += n;
        }
        let got: Vec<(String, u64)> = topics.iter().map(|(k, n)| (k.to_string(), *n)).collect();
        assert_eq!(got, reference.into_iter().collect::<Vec<_>>());
        topics.set("covid", 7);
        topics.set("b", 2);
        assert_eq!((topics.get("covid"), topics["b"], topics.get("nope")), (Some(7), 2, None));
        assert!(topics.keys().is_sorted(), "set keeps the order");
        assert_eq!(topics.len(), names.len() + 1);
    }
}
