//! The synthetic national feed: a deterministic stream of hotline CDRs whose shape follows
//! the field reports the project started from (docs/design.md), with the exact ground-truth
//! counters of what it emitted.
//!
//! The model, one call at a time, in start order:
//! - **arrivals**: a national rate (`calls_per_day`, default 320 000 — 59 M calls a year
//!   with the February-2022 peak at about twice the mean) shared among regions by
//!   population and shaped by each region's *local* hour of day (night trough, late-morning
//!   peak) and day of week (Monday busiest, Sunday quietest); inter-arrival gaps are
//!   exponential, so hours differ by chance as they do in life;
//! - **lines**: 122 (55 %), 112 (25 %), 117 (7 %), the 8-800 social line (8 %) and the
//!   governor's hotline (5 %); a call to a closed line (its local working hours, from the
//!   line registry) goes to the recorder and is called back;
//! - **queue**: the wait is exponential around the line's mean, longer at peak hours; the
//!   caller's patience is exponential too: if it runs out first the call is abandoned (some
//!   within seconds: short abandons); a few calls are busy, failed or congested;
//! - **talk time**: log-normal around the line's median;
//! - **transfers**: 4 % of answered 122 calls are transferred (to 112, the social line or
//!   the governor's hotline) and make a second leg with the first leg's id as `linked_id`;
//! - **callers**: a pool of repeat callers, numbers written in the spellings feeds use
//!   (`+7…`, `8…`, `+7 (9xx) …`), 2 % withheld; age bands as the Irkutsk centre reported
//!   them (30–40: 45 %, 40–60: 35 %, 60+: 18 %, under 20: the rest); channels mostly voice;
//! - **topics** by date and line: COVID dominant until spring 2022, mobilisation after
//!   21 September 2022, contract service on 117, emergencies on 112, social support on the
//!   social line, housing, health, transport and others on 122;
//! - **delivery**: a CDR is emitted when its call ends; a share arrives late (10 min–6 h),
//!   a share is re-sent (the same bytes again, later), and a share of deliberately bad
//!   records (each kind of rejection, with its expected reason) is mixed in.
//!
//! Same seed and options, same bytes: the generator uses one seeded PCG stream and no
//! clock, hash-map order or thread timing.

use std::collections::{BTreeMap, BinaryHeap};
use std::io::Write;

use cdrflow_schemas::avro;
use cdrflow_schemas::{
    AgeBand, Cdr, Channel, CompactString, Counters, Disposition, Format, HourKey, LineIdx, LineRegistry, Reason,
    RegionCode, Regions, classify, encode_asterisk_csv, encode_json,
};
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Exp, LogNormal};
use rand_pcg::Pcg64Mcg;
use rustc_hash::FxHashMap;
use serde::Serialize;

/// What to generate.
#[derive(Clone, Debug)]
pub struct FeedOptions {
    /// Messages to emit (good, re-sent and bad together).
    pub cdrs: u64,
    /// Seed of the one random stream.
    pub seed: u64,
    /// Wire format.
    pub format: Format,
    /// First instant of the feed, UTC ms.
    pub start_ms: i64,
    /// National calls per day at the mean.
    pub calls_per_day: f64,
    /// Only this region (all regions when `None`).
    pub region: Option<RegionCode>,
    /// Share of deliberately bad records.
    pub bad_share: f64,
    /// Share of records delivered 10 min–6 h late.
    pub late_share: f64,
    /// Share of records re-sent a second time.
    pub resent_share: f64,
    /// Sequence numbers (in call ids) start after this: feeds generated in slices with
    /// disjoint ranges never share a call id.
    pub first_seq: u64,
    /// For [`Format::AvroConfluent`]: the writer schema and its registry id.
    pub avro: Option<AvroWriter>,
}

/// The writer schema an Avro feed is written with, and its id in the schema registry.
#[derive(Clone, Debug)]
pub struct AvroWriter {
    /// Registry id (goes into each message's frame).
    pub id: u32,
    /// The writer schema: the contract's (`cdr_v1.avsc`) or an evolution of it.
    pub schema: avro::Schema,
}

impl Default for FeedOptions {
    fn default() -> Self {
        FeedOptions {
            cdrs: 100_000,
            seed: 1,
            format: Format::Json,
            // 2022-02-01T00:00:00Z: the omicron peak the seeds report.
            start_ms: 1_643_673_600_000,
            calls_per_day: 320_000.0,
            region: None,
            bad_share: 0.005,
            late_share: 0.01,
            resent_share: 0.002,
            first_seq: 0,
            avro: None,
        }
    }
}

/// What was emitted, for checking any run against it.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct FeedSummary {
    /// Messages emitted.
    pub messages: u64,
    /// Valid messages (first sends and re-sends).
    pub valid_messages: u64,
    /// Distinct valid calls (legs): `valid_messages - resent`.
    pub distinct_calls: u64,
    /// Re-sent copies of valid messages.
    pub resent: u64,
    /// Messages emitted later than their end by 10 min–6 h.
    pub late: u64,
    /// Bad messages.
    pub bad: u64,
    /// Bad messages by the reason the validator must give.
    pub bad_by_reason: BTreeMap<String, u64>,
}

/// One emitted message.
pub struct Message<'a> {
    /// Kafka key: the region code, as hotline PBXs of one region feed one producer: each
    /// partition then carries a few regions (few archive files per unit), and a re-sent or
    /// corrected CDR lands in the same partition as its first version.
    pub key: &'a [u8],
    /// The record's bytes.
    pub payload: &'a [u8],
}

// --- the model's tables -------------------------------------------------------------

/// Relative call volume by local hour of day (0..24); mean 1.
const DIURNAL: [f64; 24] = [
    0.18, 0.12, 0.09, 0.08, 0.09, 0.15, 0.35, 0.75, 1.35, 1.85, 2.05, 2.0, 1.85, 1.75, 1.8, 1.75, 1.6, 1.45, 1.25, 1.0,
    0.8, 0.6, 0.42, 0.28,
];
/// Relative volume by local weekday from Monday; mean 1.
const WEEKLY: [f64; 7] = [1.22, 1.1, 1.05, 1.03, 1.0, 0.83, 0.77];

struct LineModel {
    id: &'static str,
    queue: &'static str,
    share: f64,
    mean_wait_s: f64,
    mean_patience_s: f64,
    median_talk_s: f64,
}

const LINES: [LineModel; 5] = [
    LineModel { id: "122", queue: "q122", share: 0.55, mean_wait_s: 16.0, mean_patience_s: 75.0, median_talk_s: 150.0 },
    LineModel { id: "112", queue: "q112", share: 0.25, mean_wait_s: 4.0, mean_patience_s: 40.0, median_talk_s: 95.0 },
    LineModel { id: "117", queue: "q117", share: 0.07, mean_wait_s: 22.0, mean_patience_s: 80.0, median_talk_s: 240.0 },
    LineModel {
        id: "social",
        queue: "qsocial",
        share: 0.08,
        mean_wait_s: 28.0,
        mean_patience_s: 90.0,
        median_talk_s: 210.0,
    },
    LineModel {
        id: "governor",
        queue: "qgovernor",
        share: 0.05,
        mean_wait_s: 35.0,
        mean_patience_s: 90.0,
        median_talk_s: 180.0,
    },
];

/// Age bands in `AgeBand::ALL` order (the Irkutsk report: under 20 is "the rest").
const AGE_WEIGHTS: [f64; 5] = [0.02, 0.0, 0.45, 0.35, 0.18];
const CHANNEL_WEIGHTS: [f64; 4] = [0.9, 0.01, 0.05, 0.04];

/// 2022-09-21: partial mobilisation announced.
const MOBILISATION_MS: i64 = 1_663_718_400_000;
/// 2022-04-01: COVID topics fade.
const COVID_FADE_MS: i64 = 1_648_771_200_000;

fn topic(rng: &mut Pcg64Mcg, line: &str, at_ms: i64) -> Option<&'static str> {
    let u: f64 = rng.random();
    match line {
        "117" => Some(if u < 0.85 { "contract_service" } else { "social_support" }),
        "112" => Some(if u < 0.45 {
            "medical_emergency"
        } else if u < 0.7 {
            "police"
        } else if u < 0.85 {
            "fire"
        } else {
            "other"
        }),
        "social" => Some(if u < 0.55 {
            "social_support"
        } else if u < 0.75 {
            "child_benefits"
        } else if u < 0.9 {
            "svo_families"
        } else {
            "other"
        }),
        _ => {
            let covid = if at_ms < COVID_FADE_MS { 0.45 } else { 0.08 };
            let mobil = if at_ms >= MOBILISATION_MS { 0.25 } else { 0.0 };
            let rest = 1.0 - covid - mobil;
            if u < covid {
                Some("covid")
            } else if u < covid + mobil {
                Some("mobilisation")
            } else {
                let v = (u - covid - mobil) / rest;
                if v < 0.3 {
                    Some("housing")
                } else if v < 0.55 {
                    Some("health")
                } else if v < 0.7 {
                    Some("social_support")
                } else if v < 0.8 {
                    Some("transport")
                } else if v < 0.93 {
                    Some("other")
                } else {
                    None
                }
            }
        }
    }
}

/// `RR-NNNNNNNNN`: region and sequence, zero-padded.
fn call_id(region: RegionCode, seq: u64) -> CompactString {
    let mut buf = [b'0'; 32];
    let n = zero_pad(&mut buf, 0, region.0 as u64, 2);
    buf[n] = b'-';
    let n = zero_pad(&mut buf, n + 1, seq, 9);
    CompactString::from_utf8(&buf[..n]).expect("ASCII digits")
}

/// `prefix` then `n` zero-padded to `width` digits (prefix ≤ 8 bytes).
fn padded(prefix: &str, n: u64, width: usize) -> CompactString {
    let mut buf = [b'0'; 32];
    buf[..prefix.len()].copy_from_slice(prefix.as_bytes());
    let end = zero_pad(&mut buf, prefix.len(), n, width);
    CompactString::from_utf8(&buf[..end]).expect("ASCII")
}

/// Writes `n` at `at`, zero-padded to `width` digits, into a buffer pre-filled with '0';
/// returns the end.
fn zero_pad(buf: &mut [u8; 32], at: usize, n: u64, width: usize) -> usize {
    let mut digits = itoa::Buffer::new();
    let d = digits.format(n).as_bytes();
    let start = at + width.saturating_sub(d.len());
    buf[at..start].fill(b'0');
    buf[start..start + d.len()].copy_from_slice(d);
    start + d.len()
}

fn pick(rng: &mut Pcg64Mcg, weights: &[f64]) -> usize {
    let total: f64 = weights.iter().sum();
    let mut u = rng.random::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        if u < *w {
            return i;
        }
        u -= w;
    }
    weights.len() - 1
}

// --- the generator ----------------------------------------------------------------------

/// A leg waiting to be emitted (at its end, or later).
struct Pending {
    /// When it is due, UTC ms.
    at: i64,
    /// Tie-breaker: creation order, so equal instants come out deterministically.
    seq: u64,
    cdr: Box<Cdr>,
    caller: Option<CompactString>,
    late: bool,
    /// `Some((key, bytes))` for a re-send of an already emitted message.
    resend: Option<Box<(Vec<u8>, Vec<u8>)>>,
}

impl PartialEq for Pending {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pending {
    /// Reversed: the heap's top is the earliest due.
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

/// Streams the synthetic feed.
pub struct Generator {
    opts: FeedOptions,
    lines: std::sync::Arc<LineRegistry>,
    rng: Pcg64Mcg,
    /// Regions in the feed with their population weights.
    regions: Vec<(RegionCode, f64)>,
    /// The hour whose rates are in `cum_rates`, UTC seconds.
    rate_hour: i64,
    /// Cumulative per-region call rates (calls/s) for `rate_hour`.
    cum_rates: Vec<f64>,
    /// Line indices in `LINES` order.
    line_idx: Vec<LineIdx>,
    /// Current arrival time, UTC ms.
    now_ms: i64,
    seq: u64,
    /// Legs waiting for their end (or their late delivery), earliest first.
    heap: BinaryHeap<Pending>,
    truth: FxHashMap<HourKey, Counters>,
    summary: FeedSummary,
    caller_pool: u64,
    key: Vec<u8>,
    payload: Vec<u8>,
}

impl Generator {
    /// A generator with the built-in line registry.
    pub fn new(opts: FeedOptions) -> Self {
        let lines = LineRegistry::builtin();
        let first_seq = opts.first_seq;
        let regions: Vec<(RegionCode, f64)> = Regions::get()
            .all()
            .iter()
            .filter(|r| opts.region.is_none_or(|only| only == r.code))
            .map(|r| (r.code, r.population_thousands as f64))
            .collect();
        let line_idx = LINES.iter().map(|m| lines.by_id(m.id).expect("model lines are in the registry")).collect();
        Generator {
            rng: Pcg64Mcg::seed_from_u64(opts.seed),
            now_ms: opts.start_ms,
            caller_pool: (opts.cdrs / 3).max(1000),
            opts,
            lines,
            regions,
            rate_hour: i64::MIN,
            cum_rates: Vec::new(),
            line_idx,
            seq: first_seq,
            heap: BinaryHeap::new(),
            truth: FxHashMap::default(),
            summary: FeedSummary::default(),
            key: Vec::new(),
            payload: Vec::new(),
        }
    }

    /// Recomputes the per-region rates for the hour containing `now_ms`.
    fn rates_for_hour(&mut self) {
        let hour = self.now_ms.div_euclid(3_600_000) * 3600;
        if hour == self.rate_hour {
            return;
        }
        self.rate_hour = hour;
        let pop_total: f64 = Regions::get().all().iter().map(|r| r.population_thousands as f64).sum();
        self.cum_rates.clear();
        let mut acc = 0.0;
        for (code, pop) in &self.regions {
            let region = Regions::get().by_code(code.0).expect("registry region");
            let local = hour + i64::from(region.offset_seconds(hour));
            let h = (local.rem_euclid(86_400) / 3600) as usize;
            let wd = (local.div_euclid(86_400) + 3).rem_euclid(7) as usize;
            acc += self.opts.calls_per_day / 86_400.0 * pop / pop_total * DIURNAL[h] * WEEKLY[wd];
            self.cum_rates.push(acc);
        }
    }

    /// Makes the next call (one or two legs) and queues its legs for emission.
    fn next_call(&mut self) {
        self.rates_for_hour();
        let total = *self.cum_rates.last().expect("at least one region");
        let gap_s = Exp::new(total).expect("positive rate").sample(&mut self.rng);
        let next = self.now_ms + (gap_s * 1000.0) as i64;
        if next.div_euclid(3_600_000) != self.now_ms.div_euclid(3_600_000) {
            // The rate changes at the hour: restart the memoryless clock there.
            self.now_ms = (self.now_ms.div_euclid(3_600_000) + 1) * 3_600_000;
            return self.next_call();
        }
        // Whole seconds, as PBXs write them.
        self.now_ms = next;
        let start_ms = next - next.rem_euclid(1000);
        let u = self.rng.random::<f64>() * total;
        let ri = self.cum_rates.partition_point(|&c| c <= u).min(self.regions.len() - 1);
        let region = self.regions[ri].0;
        let li = pick(&mut self.rng, &LINES.map(|l| l.share));
        let caller = self.caller();
        let first = self.leg(region, li, start_ms, None);
        // Transfers out of 122 make a second leg on the target line.
        if LINES[li].id == "122" && first.disposition == Disposition::Answered && self.rng.random::<f64>() < 0.04 {
            let target = [1usize, 3, 4][pick(&mut self.rng, &[0.5, 0.3, 0.2])];
            let mut first = first;
            first.transfer_to = Some(CompactString::const_new(LINES[target].id));
            first.linked_id = Some(first.call_id.clone());
            let mut second = self.leg(region, target, first.end_ms, first.topic.clone());
            second.linked_id = Some(first.call_id.clone());
            self.queue(first, caller.clone());
            self.queue(second, caller);
        } else {
            self.queue(first, caller);
        }
    }

    fn caller(&mut self) -> Option<CompactString> {
        if self.rng.random::<f64>() < 0.02 {
            return None;
        }
        let n = 9_000_000_000 + self.rng.random_range(0..self.caller_pool) * 7919 % 999_999_999;
        let mut digits = itoa::Buffer::new();
        let s = digits.format(n);
        let mut out = CompactString::with_capacity(20);
        match self.rng.random_range(0..10) {
            0..5 => {
                out.push_str("+7");
                out.push_str(s);
            }
            5..9 => {
                out.push('8');
                out.push_str(s);
            }
            _ => {
                for (part, text) in [("+7 (", &s[..3]), (") ", &s[3..6]), ("-", &s[6..8]), ("-", &s[8..])] {
                    out.push_str(part);
                    out.push_str(text);
                }
            }
        }
        Some(out)
    }

    fn leg(&mut self, region: RegionCode, li: usize, start_ms: i64, topic_of: Option<CompactString>) -> Cdr {
        let model = &LINES[li];
        let line = self.line_idx[li];
        self.seq += 1;
        let call_id = call_id(region, self.seq);
        let spec = self.lines.line(line);
        let dialled = CompactString::from(spec.numbers[region.0 as usize % spec.numbers.len()].as_str());
        let age_band = {
            let i = pick(
                &mut self.rng,
                &[AGE_WEIGHTS[0], AGE_WEIGHTS[1], AGE_WEIGHTS[2], AGE_WEIGHTS[3], AGE_WEIGHTS[4], 0.08],
            );
            AgeBand::ALL.get(i).copied()
        };
        let channel = Channel::ALL[pick(&mut self.rng, &CHANNEL_WEIGHTS)];
        let topic = topic_of.or_else(|| topic(&mut self.rng, model.id, start_ms).map(CompactString::const_new));
        let mut cdr = Cdr {
            call_id,
            linked_id: None,
            region,
            line,
            dialled,
            caller: None,
            start_ms,
            answer_ms: None,
            end_ms: start_ms,
            queue_wait_ms: 0,
            talk_ms: 0,
            disposition: Disposition::NoAnswer,
            transfer_to: None,
            topic,
            age_band,
            channel,
            operator_id: None,
            queue_id: None,
        };
        let (_, out_of_hours) = classify(&cdr, &self.lines);
        if out_of_hours {
            // The recorder takes a message; the centre calls back.
            let secs = self.rng.random_range(20..90);
            cdr.end_ms = start_ms + secs * 1000;
            cdr.queue_wait_ms = (secs * 1000) as u32;
            return cdr;
        }
        let hour_load = DIURNAL[((start_ms / 3_600_000 + 3) % 24) as usize].max(0.5);
        cdr.queue_id = Some(CompactString::const_new(model.queue));
        let u: f64 = self.rng.random();
        if u < 0.01 {
            cdr.disposition = Disposition::Busy;
            cdr.queue_id = None;
            cdr.end_ms = start_ms + 1000;
            cdr.queue_wait_ms = 1000;
            return cdr;
        } else if u < 0.015 {
            cdr.disposition = Disposition::Failed;
            cdr.queue_id = None;
            return cdr;
        } else if u < 0.02 {
            cdr.disposition = Disposition::Congestion;
            cdr.queue_id = None;
            return cdr;
        }
        let wait = Exp::new(1.0 / (model.mean_wait_s * hour_load)).expect("rate").sample(&mut self.rng).round() as i64;
        let patience = Exp::new(1.0 / model.mean_patience_s).expect("rate").sample(&mut self.rng).round() as i64;
        if patience < wait {
            cdr.disposition = Disposition::Abandoned;
            cdr.end_ms = start_ms + patience * 1000;
            cdr.queue_wait_ms = (patience * 1000) as u32;
            return cdr;
        }
        let talk = LogNormal::new(model.median_talk_s.ln(), 0.7)
            .expect("params")
            .sample(&mut self.rng)
            .round()
            .clamp(5.0, 7200.0) as i64;
        cdr.disposition = Disposition::Answered;
        cdr.answer_ms = Some(start_ms + wait * 1000);
        cdr.end_ms = start_ms + (wait + talk) * 1000;
        cdr.queue_wait_ms = (wait * 1000) as u32;
        cdr.talk_ms = (talk * 1000) as u32;
        cdr.operator_id = Some(padded("op", self.rng.random_range(0..400u64), 4));
        cdr
    }

    fn queue(&mut self, cdr: Cdr, caller: Option<CompactString>) {
        let late = self.rng.random::<f64>() < self.opts.late_share;
        let mut at = cdr.end_ms;
        if late {
            at += self.rng.random_range(600_000..21_600_000);
        }
        let seq = self.seq_pending();
        self.heap.push(Pending { at, seq, cdr: Box::new(cdr), caller, late, resend: None });
    }

    fn seq_pending(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Emits the next message through `sink`; `false` once `cdrs` messages are out.
    pub fn emit_next(&mut self, sink: &mut impl FnMut(Message<'_>) -> std::io::Result<()>) -> std::io::Result<bool> {
        if self.summary.messages >= self.opts.cdrs {
            return Ok(false);
        }
        // Bad records are mixed in as they would be: between good ones.
        if self.rng.random::<f64>() < self.opts.bad_share {
            let reason = self.bad_record()?;
            *self.summary.bad_by_reason.entry(reason.code().to_owned()).or_default() += 1;
            self.summary.bad += 1;
            self.summary.messages += 1;
            sink(Message { key: &self.key, payload: &self.payload })?;
            return Ok(true);
        }
        // Generate calls until the earliest pending leg is due (its end has passed).
        while self.heap.peek().is_none_or(|p| p.at > self.now_ms) {
            self.next_call();
        }
        let p = self.heap.pop().expect("a due leg");
        self.summary.messages += 1;
        if let Some(resend) = p.resend {
            let (key, payload) = *resend;
            self.summary.resent += 1;
            self.summary.valid_messages += 1;
            return sink(Message { key: &key, payload: &payload }).map(|_| true);
        }
        self.key.clear();
        self.key.extend_from_slice(p.cdr.region.to_string().as_bytes());
        self.payload.clear();
        self.encode(&p.cdr, p.caller.as_deref())?;
        let (hour_key, ooh) = classify(&p.cdr, &self.lines);
        self.truth.entry(hour_key).or_default().record(&p.cdr, self.lines.line(p.cdr.line), ooh);
        self.summary.valid_messages += 1;
        self.summary.distinct_calls += 1;
        self.summary.late += p.late as u64;
        if self.rng.random::<f64>() < self.opts.resent_share {
            let at = self.now_ms + self.rng.random_range(60_000..1_800_000);
            let seq = self.seq_pending();
            let resend = Some(Box::new((self.key.clone(), self.payload.clone())));
            self.heap.push(Pending { at, seq, cdr: p.cdr, caller: None, late: false, resend });
        }
        sink(Message { key: &self.key, payload: &self.payload })?;
        Ok(true)
    }

    fn encode(&mut self, cdr: &Cdr, caller: Option<&str>) -> std::io::Result<()> {
        match self.opts.format {
            Format::Json => encode_json(cdr, caller, &mut self.payload),
            Format::AsteriskCsv => {
                let quote = cdr.start_ms / 1000 % 5 != 0;
                encode_asterisk_csv(cdr, caller, quote, &mut self.payload)
            }
            Format::AvroConfluent => self.encode_avro(avro::cdr_fields(cdr, caller))?,
        }
        Ok(())
    }

    fn encode_avro(&mut self, fields: Vec<(&'static str, Option<avro::Value>)>) -> std::io::Result<()> {
        let w = self.opts.avro.as_ref().ok_or_else(|| {
            std::io::Error::other("an Avro feed needs its writer schema and registry id (FeedOptions::avro)")
        })?;
        avro::write_confluent(w.id, &w.schema, fields, &mut self.payload).map_err(std::io::Error::other)
    }

    /// A bad Avro record of `reason` from a call already broken at the CDR level.
    fn bad_avro(&mut self, reason: Reason, c: &Cdr, caller: Option<&str>) -> std::io::Result<Reason> {
        use avro::Value;
        let mut fields = avro::cdr_fields(c, caller);
        let mut set = |name: &str, v: Value| {
            if let Some(f) = fields.iter_mut().find(|(n, _)| *n == name) {
                f.1 = Some(v);
            }
        };
        match reason {
            // The whole message over the limit, whichever fields the writer schema has.
            Reason::Oversized => set("call_id", Value::String("x".repeat(70_000))),
            Reason::MissingField => set("dialled", Value::String(String::new())),
            Reason::InvalidValue => set("disposition", Value::String("maybe".into())),
            Reason::UnknownRegion => set("region", Value::Int(99)),
            Reason::NegativeDuration => set("queue_wait_s", Value::Double(-5.0)),
            _ => {}
        }
        self.encode_avro(fields)?;
        if reason == Reason::Malformed {
            let keep = (self.payload.len() / 2).max(6);
            self.payload.truncate(keep);
        }
        self.key.clear();
        self.key.extend_from_slice(c.region.to_string().as_bytes());
        Ok(reason)
    }

    /// Builds one bad record into `key`/`payload`; returns the reason the validator must give.
    fn bad_record(&mut self) -> std::io::Result<Reason> {
        use Reason::*;
        self.seq += 1;
        let region = self.regions[self.rng.random_range(0..self.regions.len())].0;
        let mut c = self.leg(region, 0, self.now_ms - self.now_ms.rem_euclid(1000), None);
        c.call_id = padded("bad-", self.seq, 9);
        let caller = Some(CompactString::const_new("+79990000000"));
        let csv = self.opts.format == Format::AsteriskCsv;
        // Every reason this format can meet, but the two of the schema registry (a writer
        // schema unknown or unreadable is the feed's set-up, not a record's fault).
        let mut kinds: Vec<Reason> = Reason::possible_in(self.opts.format);
        kinds.retain(|r| !matches!(r, SchemaMismatch | UnknownSchema));
        if csv && self.opts.region.is_some() {
            kinds.retain(|r| *r != UnknownRegion);
        }
        let reason = kinds[self.rng.random_range(0..kinds.len())];
        // Start from a valid answered call and break exactly one thing.
        c.disposition = Disposition::Answered;
        c.answer_ms = Some(c.start_ms + 5000);
        c.end_ms = c.start_ms + 125_000;
        c.queue_wait_ms = 5000;
        c.talk_ms = 120_000;
        match reason {
            EndBeforeStart => {
                c.disposition = Disposition::NoAnswer;
                c.answer_ms = None;
                c.talk_ms = 0;
                c.queue_wait_ms = 0;
                c.end_ms = c.start_ms - 60_000;
            }
            AnswerOutsideCall => {
                c.answer_ms = Some(c.end_ms + 100_000);
                c.talk_ms = 0;
            }
            TooOld | InFuture => {
                let shift = if reason == TooOld { -(30 * 365 * 86_400_000) } else { 70 * 365 * 86_400_000 };
                c.start_ms += shift;
                c.end_ms += shift;
                c.answer_ms = c.answer_ms.map(|a| a + shift);
            }
            AbsurdDuration => {
                c.end_ms = c.start_ms + 3 * 86_400_000;
                c.talk_ms = 0;
            }
            InconsistentDisposition => {
                c.answer_ms = None;
                c.talk_ms = 0;
            }
            InconsistentDurations if !csv => c.talk_ms = 720_000,
            UnknownLine => {
                c.dialled = "555".into();
            }
            FieldTooLong => {
                c.call_id = CompactString::from(format!("bad-{}", "x".repeat(200)));
            }
            _ => {}
        }
        self.payload.clear();
        if self.opts.format == Format::AvroConfluent {
            return self.bad_avro(reason, &c, caller.as_deref());
        }
        self.encode(&c, caller.as_deref())?;
        if csv && reason == InconsistentDurations {
            // duration is field 13 (index 12); add 100 s to it.
            let text = String::from_utf8(std::mem::take(&mut self.payload)).expect("ASCII");
            let d: i64 = raw_fields(&text)[12].parse().expect("duration is written bare");
            self.payload = replace_field(&text, 12, &(d + 100).to_string()).into_bytes();
        }
        let text = String::from_utf8(std::mem::take(&mut self.payload)).expect("encoders write UTF-8");
        let bytes: Vec<u8> = match (reason, csv) {
            (Oversized, _) if csv => {
                replace_field(&text, 17, &format!("\"topic=x;note={}\"", "n".repeat(70_000))).into_bytes()
            }
            (Oversized, _) => text.replacen('{', &format!("{{\"note\":\"{}\",", "n".repeat(70_000)), 1).into_bytes(),
            (NotUtf8, _) => {
                let mut b = text.into_bytes();
                let at = b.len() / 2;
                b.insert(at, 0xff);
                b
            }
            (Malformed, true) => text.splitn(11, ',').take(10).collect::<Vec<_>>().join(",").into_bytes(),
            (Malformed, false) => text.as_bytes()[..text.len() / 2].to_vec(),
            (MissingField, true) => replace_field(&text, 9, "\"\"").into_bytes(),
            (MissingField, false) => drop_json_field(&text, "start").into_bytes(),
            (WrongType, true) => replace_field(&text, 12, "abc").into_bytes(),
            (WrongType, false) => text
                .replacen(&format!("\"region\":{}", c.region.0), &format!("\"region\":\"{}\"", c.region.0), 1)
                .into_bytes(),
            (InvalidValue, true) => replace_field(&text, 14, "\"MAYBE\"").into_bytes(),
            (InvalidValue, false) => {
                text.replacen("\"disposition\":\"answered\"", "\"disposition\":\"maybe\"", 1).into_bytes()
            }
            (BadTimestamp, true) => replace_field(&text, 9, "\"14/02/2022 09:00:00\"").into_bytes(),
            (BadTimestamp, false) => {
                let f = json_string_field(&text, "start").to_owned();
                text.replacen(&f, "14/02/2022 09:00", 1).into_bytes()
            }
            (UnknownRegion, true) => replace_field(&text, 0, "\"99\"").into_bytes(),
            (UnknownRegion, false) => {
                text.replacen(&format!("\"region\":{}", c.region.0), "\"region\":99", 1).into_bytes()
            }
            (NegativeDuration, true) => replace_field(&text, 13, "-5").into_bytes(),
            (NegativeDuration, false) => text.replacen("\"queue_wait_s\":5", "\"queue_wait_s\":-5", 1).into_bytes(),
            _ => text.into_bytes(),
        };
        self.payload = bytes;
        self.key.clear();
        self.key.extend_from_slice(c.region.to_string().as_bytes());
        Ok(reason)
    }

    /// The summary of what has been emitted so far.
    pub fn summary(&self) -> &FeedSummary {
        &self.summary
    }

    /// Writes the ground truth: one JSON object per (region, line, UTC hour), sorted.
    pub fn write_truth(&self, out: &mut impl Write) -> std::io::Result<()> {
        let mut keys: Vec<&HourKey> = self.truth.keys().collect();
        keys.sort();
        for k in keys {
            serde_json::to_writer(&mut *out, &TruthRow::new(k, &self.truth[k], &self.lines))?;
            out.write_all(b"\n")?;
        }
        Ok(())
    }

    /// The ground-truth counters so far.
    pub fn truth(&self) -> &FxHashMap<HourKey, Counters> {
        &self.truth
    }
}

/// One line of the ground-truth file.
#[derive(Serialize, serde::Deserialize, Debug, Default, PartialEq, Eq)]
pub struct TruthRow {
    /// Region code.
    pub region: u8,
    /// Line id.
    pub line: String,
    /// UTC hour, RFC 3339.
    pub hour: String,
    #[allow(missing_docs)]
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
    /// Offered by age band.
    pub age_bands: BTreeMap<String, u64>,
    /// Offered by channel.
    pub channels: BTreeMap<String, u64>,
    /// Offered by topic.
    pub topics: BTreeMap<String, u64>,
}

impl TruthRow {
    /// The row of one key.
    pub fn new(k: &HourKey, c: &Counters, lines: &LineRegistry) -> Self {
        let mut hour = [0u8; 20];
        TruthRow {
            region: k.region.0,
            line: lines.line(k.line).id.clone(),
            hour: cdrflow_schemas::time::format_rfc3339_secs(k.hour * 1000, &mut hour).to_owned(),
            offered: c.offered,
            answered: c.answered,
            abandoned: c.abandoned,
            short_abandoned: c.short_abandoned,
            unanswered: c.unanswered,
            answered_within_sl: c.answered_within_sl,
            abandoned_after_sl: c.abandoned_after_sl,
            wait_sum_ms: c.wait_sum_ms,
            wait_max_ms: c.wait_max_ms,
            talk_sum_ms: c.talk_sum_ms,
            transferred_out: c.transferred_out,
            out_of_hours: c.out_of_hours,
            age_bands: c.named_age_bands().map(|(k, n)| (k.to_owned(), n)).collect(),
            channels: c.named_channels().map(|(k, n)| (k.to_owned(), n)).collect(),
            topics: c.by_topic.iter().map(|(k, n)| (k.to_string(), *n)).collect(),
        }
    }

    /// Adds another row's counters to this one (its key is left as it is).
    pub fn add(&mut self, o: &TruthRow) {
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
        for (mine, theirs) in
            [(&mut self.age_bands, &o.age_bands), (&mut self.channels, &o.channels), (&mut self.topics, &o.topics)]
        {
            for (k, n) in theirs {
                *mine.entry(k.clone()).or_default() += n;
            }
        }
    }
}

/// The raw fields (quotes kept) of one of the generator's own CSV lines.
fn raw_fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(ch) = chars.next() {
        match ch {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push_str("\"\"");
                chars.next();
            }
            '"' => {
                quoted = !quoted;
                cur.push('"');
            }
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            _ => cur.push(ch),
        }
    }
    out.push(cur);
    out
}

fn replace_field(line: &str, index: usize, raw: &str) -> String {
    let mut f = raw_fields(line);
    f[index] = raw.to_owned();
    f.join(",")
}

fn json_string_field<'a>(text: &'a str, name: &str) -> &'a str {
    let pat = format!("\"{name}\":\"");
    let at = text.find(&pat).expect("field present") + pat.len();
    let end = text[at..].find('"').expect("closing quote") + at;
    &text[at..end]
}

fn drop_json_field(text: &str, name: &str) -> String {
    let v = json_string_field(text, name);
    text.replacen(&format!("\"{name}\":\"{v}\","), "", 1)
}
