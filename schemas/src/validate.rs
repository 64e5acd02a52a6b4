//! Validation shared by every wire format: a decoder reads its format into a `Draft`,
//! and `Decoder::finish` checks the draft against the registries and the plausibility
//! limits, hashes the caller and returns the [`Cdr`].

use std::borrow::Cow;
use std::sync::Arc;

use compact_str::CompactString;

use crate::cdr::{AgeBand, Cdr, Channel, Disposition};
use crate::line::LineRegistry;
use crate::pseudonym::Pseudonymiser;
use crate::region::{RegionCode, Regions};
use crate::reject::{Reason, Rejection};

/// 2000-01-01T00:00:00Z in milliseconds: anything earlier is `too_old`.
pub const EARLIEST_MS: i64 = 946_684_800_000;

/// Plausibility limits.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest accepted message, bytes (default 64 KiB).
    pub max_message_bytes: usize,
    /// Longest accepted call, start to end, ms (default 24 h).
    pub max_call_ms: i64,
    /// How far past the clock an instant may be, ms (default 24 h: feeds' clocks drift).
    pub future_tolerance_ms: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_message_bytes: 64 * 1024, max_call_ms: 86_400_000, future_tolerance_ms: 86_400_000 }
    }
}

/// Longest accepted text fields, bytes.
pub mod max_len {
    /// `call_id`, `linked_id`.
    pub const ID: usize = 128;
    /// `topic`, `transfer_to`, `operator_id`, `queue_id`.
    pub const LABEL: usize = 64;
}

/// The clock that `in_future` is judged against.
#[derive(Clone, Copy, Debug)]
pub enum Clock {
    /// The system clock.
    System,
    /// A fixed instant (UTC ms), for reproducible runs and tests.
    Fixed(i64),
}

impl Clock {
    fn now_ms(self) -> i64 {
        match self {
            Clock::System => jiff::Timestamp::now().as_millisecond(),
            Clock::Fixed(ms) => ms,
        }
    }
}

/// A record read off the wire, before validation. Strings borrow from the message.
#[derive(Debug, Default)]
pub(crate) struct Draft<'a> {
    pub call_id: Cow<'a, str>,
    pub linked_id: Option<Cow<'a, str>>,
    pub region: u8,
    pub dialled: Cow<'a, str>,
    pub caller: Option<Cow<'a, str>>,
    pub start_ms: i64,
    pub answer_ms: Option<i64>,
    pub end_ms: i64,
    /// As the feed stated it; derived from the instants when absent.
    pub queue_wait_ms: Option<i64>,
    /// As the feed stated it; derived from the instants when absent.
    pub talk_ms: Option<i64>,
    pub disposition: Option<Disposition>,
    pub transfer_to: Option<Cow<'a, str>>,
    pub topic: Option<Cow<'a, str>>,
    pub age_band: Option<AgeBand>,
    pub channel: Option<Channel>,
    pub operator_id: Option<Cow<'a, str>>,
    pub queue_id: Option<Cow<'a, str>>,
}

/// Decodes and validates records of every wire format. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Decoder {
    /// Dialled number → line.
    pub lines: Arc<LineRegistry>,
    /// Hashes caller numbers.
    pub pseudonymiser: Pseudonymiser,
    /// Plausibility limits.
    pub limits: Limits,
    /// What "now" is for `in_future`.
    pub clock: Clock,
    /// The last reading of the system clock (UTC ms), shared by clones: a record is
    /// judged against it, and the clock is read again only when an instant lies beyond it
    /// (records are almost always in the past, so the clock is almost never read). The
    /// cache is never ahead of the clock, so the verdict is the clock's.
    now_cache: Arc<std::sync::atomic::AtomicI64>,
    /// Avro writer schemas by registry id, shared by clones (filled by the worker from the
    /// schema registry before it decodes a message of a new id).
    pub avro: crate::avro::WriterSchemas,
}

impl Decoder {
    /// A decoder with the default limits and the system clock.
    pub fn new(lines: Arc<LineRegistry>, pseudonymiser: Pseudonymiser) -> Self {
        Decoder {
            lines,
            pseudonymiser,
            limits: Limits::default(),
            clock: Clock::System,
            now_cache: Arc::default(),
            avro: Default::default(),
        }
    }

    /// Decodes and validates one message of `format` (an empty message is `malformed`).
    pub fn decode(&self, format: crate::Format, csv: &crate::CsvFeed, msg: &[u8]) -> Result<Cdr, Rejection> {
        if msg.is_empty() {
            return Err(Rejection::new(Reason::Malformed, None, "empty message"));
        }
        match format {
            crate::Format::Json => self.decode_json(msg),
            crate::Format::AsteriskCsv => self.decode_asterisk_csv(msg, csv),
            crate::Format::AvroConfluent => self.decode_avro_confluent(msg),
        }
    }

    /// Checks the size and the encoding of a message, before any format parsing.
    pub(crate) fn check_bytes<'m>(&self, msg: &'m [u8]) -> Result<&'m str, Rejection> {
        if msg.len() > self.limits.max_message_bytes {
            return Err(Rejection::new(
                Reason::Oversized,
                None,
                format!("{} bytes, limit {}", msg.len(), self.limits.max_message_bytes),
            ));
        }
        // simdutf8 checks several times faster; std's check says where the error is.
        simdutf8::basic::from_utf8(msg).or_else(|_| {
            std::str::from_utf8(msg).map_err(|e| {
                Rejection::new(Reason::NotUtf8, None, format!("invalid UTF-8 at byte {}", e.valid_up_to()))
            })
        })
    }

    /// "Now" for judging an instant as late as `latest`: the cached reading if `latest` is
    /// within the tolerance of it, else a fresh one (see `now_cache`).
    #[inline]
    fn now_for(&self, latest: i64) -> i64 {
        use std::sync::atomic::Ordering::Relaxed;
        match self.clock {
            Clock::Fixed(ms) => ms,
            Clock::System => {
                let cached = self.now_cache.load(Relaxed);
                if latest <= cached.saturating_add(self.limits.future_tolerance_ms) {
                    return cached;
                }
                let now = Clock::System.now_ms();
                self.now_cache.fetch_max(now, Relaxed);
                now
            }
        }
    }

    /// Validates a draft and turns it into a CDR.
    pub(crate) fn finish(&self, d: Draft<'_>) -> Result<Cdr, Rejection> {
        use Reason::*;
        let call_id =
            id_text(d.call_id, "call_id")?.ok_or_else(|| Rejection::field(MissingField, "call_id", "empty"))?;
        let linked_id = match d.linked_id {
            Some(s) => id_text(s, "linked_id")?,
            None => None,
        };
        let region = RegionCode(d.region);
        if Regions::get().by_code(d.region).is_none() {
            return Err(Rejection::field(
                UnknownRegion,
                "region",
                format!("{} is not a federal subject code", d.region),
            ));
        }
        if d.dialled.is_empty() {
            return Err(Rejection::field(MissingField, "dialled", "empty"));
        }
        let dialled = crate::line::normalise_number(&d.dialled)
            .ok_or_else(|| Rejection::field(InvalidValue, "dialled", "not a phone number"))?;
        let line = self.lines.by_normalised_number(&dialled).ok_or_else(|| {
            Rejection::field(UnknownLine, "dialled", format!("{dialled} is not a line in the registry"))
        })?;
        let caller = match d.caller.as_deref() {
            None | Some("") => None,
            Some(raw) => Some(
                self.pseudonymiser
                    .hash(raw)
                    // Never echo the raw value: it may be a real number with a typo.
                    .ok_or_else(|| Rejection::field(InvalidValue, "caller", "not a phone number"))?,
            ),
        };

        // Instants.
        let latest = d.start_ms.max(d.end_ms).max(d.answer_ms.unwrap_or(i64::MIN));
        let now = self.now_for(latest);
        for (ms, field) in
            [(d.start_ms, "start"), (d.end_ms, "end")].into_iter().chain(d.answer_ms.map(|a| (a, "answer")))
        {
            if ms < EARLIEST_MS {
                return Err(Rejection::field(TooOld, field, "before 2000-01-01"));
            }
            if ms > now.saturating_add(self.limits.future_tolerance_ms) {
                return Err(Rejection::field(InFuture, field, "further in the future than the tolerance"));
            }
        }
        if d.end_ms < d.start_ms {
            return Err(Rejection::field(
                EndBeforeStart,
                "end",
                format!("ends {} s before it starts", (d.start_ms - d.end_ms) / 1000),
            ));
        }
        let call_ms = d.end_ms - d.start_ms;
        if call_ms > self.limits.max_call_ms {
            return Err(Rejection::field(AbsurdDuration, "end", format!("call lasts {} h", call_ms / 3_600_000)));
        }
        if let Some(a) = d.answer_ms
            && (a < d.start_ms || a > d.end_ms)
        {
            return Err(Rejection::field(AnswerOutsideCall, "answer", "answer instant outside [start, end]"));
        }

        // Disposition against the instants.
        let disposition = d.disposition.ok_or_else(|| Rejection::field(MissingField, "disposition", "absent"))?;
        match (disposition, d.answer_ms) {
            (Disposition::Answered, None) => {
                return Err(Rejection::field(
                    InconsistentDisposition,
                    "answer",
                    "answered call without an answer instant",
                ));
            }
            (other, Some(_)) if other != Disposition::Answered => {
                return Err(Rejection::field(
                    InconsistentDisposition,
                    "answer",
                    format!("{} call with an answer instant", other.code()),
                ));
            }
            _ => {}
        }

        // Durations: stated ones must be non-negative, bounded and fit the instants.
        let waited_until = d.answer_ms.unwrap_or(d.end_ms);
        let queue_wait_ms = match d.queue_wait_ms {
            Some(w) => duration(w, "queue_wait_s", waited_until - d.start_ms, &self.limits)?,
            None => waited_until - d.start_ms,
        };
        let talk_span = d.answer_ms.map_or(0, |a| d.end_ms - a);
        let talk_ms = match d.talk_ms {
            Some(t) => duration(t, "talk_s", talk_span, &self.limits)?,
            None => talk_span,
        };

        Ok(Cdr {
            call_id,
            linked_id,
            region,
            line,
            dialled,
            caller,
            start_ms: d.start_ms,
            answer_ms: d.answer_ms,
            end_ms: d.end_ms,
            queue_wait_ms: queue_wait_ms as u32,
            talk_ms: talk_ms as u32,
            disposition,
            transfer_to: label(d.transfer_to, "transfer_to", false)?,
            topic: label(d.topic, "topic", true)?,
            age_band: d.age_band,
            channel: d.channel.unwrap_or(Channel::Voice),
            operator_id: label(d.operator_id, "operator_id", false)?,
            queue_id: label(d.queue_id, "queue_id", false)?,
        })
    }
}

/// Slack for stated durations against the instants: feeds round to whole seconds.
const ROUNDING_SLACK_MS: i64 = 1000;

fn duration(ms: i64, field: &'static str, span_ms: i64, limits: &Limits) -> Result<i64, Rejection> {
    if ms < 0 {
        return Err(Rejection::field(Reason::NegativeDuration, field, "negative"));
    }
    if ms > limits.max_call_ms {
        return Err(Rejection::field(Reason::AbsurdDuration, field, format!("{} h", ms / 3_600_000)));
    }
    if ms > span_ms + ROUNDING_SLACK_MS {
        return Err(Rejection::field(
            Reason::InconsistentDurations,
            field,
            format!("{} s stated, but the instants allow {} s", ms / 1000, span_ms / 1000),
        ));
    }
    Ok(ms.min(span_ms))
}

fn id_text(s: Cow<'_, str>, field: &'static str) -> Result<Option<CompactString>, Rejection> {
    if s.is_empty() {
        return Ok(None);
    }
    if s.len() > max_len::ID {
        return Err(Rejection::field(Reason::FieldTooLong, field, format!("{} bytes, limit {}", s.len(), max_len::ID)));
    }
    if has_control(&s) {
        return Err(Rejection::field(Reason::InvalidValue, field, "control character"));
    }
    Ok(Some(CompactString::from(s.as_ref())))
}

/// A short label; topics must be slugs (`[a-z0-9_-]`), others only free of control characters.
fn label(s: Option<Cow<'_, str>>, field: &'static str, slug: bool) -> Result<Option<CompactString>, Rejection> {
    let Some(s) = s else { return Ok(None) };
    if s.is_empty() {
        return Ok(None);
    }
    if s.len() > max_len::LABEL {
        return Err(Rejection::field(
            Reason::FieldTooLong,
            field,
            format!("{} bytes, limit {}", s.len(), max_len::LABEL),
        ));
    }
    let ok = if slug { s.bytes().all(|b| SLUG[b as usize]) } else { !has_control(&s) };
    if !ok {
        let what = if slug { "must be a slug of a-z, 0-9, _ and -" } else { "control character" };
        return Err(Rejection::field(Reason::InvalidValue, field, what));
    }
    Ok(Some(CompactString::from(s.as_ref())))
}

/// The bytes of a slug: `[a-z0-9_-]`.
static SLUG: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = matches!(b as u8, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-');
        b += 1;
    }
    t
};

/// Whether a text holds a control character (`char::is_control`: U+0000–U+001F and
/// U+007F–U+009F). Its UTF-8 holds one only if it holds a byte below 0x20, the byte 0x7F,
/// or 0xC2 (the lead byte of U+0080–U+00BF); texts without any of the three, almost all,
/// are cleared eight bytes at a time, the others are checked character by character.
#[inline]
fn has_control(s: &str) -> bool {
    may_hold_control(s.as_bytes()) && s.chars().any(char::is_control)
}

/// Whether `b` holds a byte below 0x20, 0x7F or 0xC2.
#[inline]
fn may_hold_control(b: &[u8]) -> bool {
    use crate::word::{bytes_below, bytes_equal};
    let any = |w: u64| bytes_below(w, 0x20) | bytes_equal(w, 0x7f) | bytes_equal(w, 0xc2) != 0;
    if b.len() < 8 {
        if b.len() < 4 {
            return b.iter().any(|&c| c < 0x20 || c == 0x7f || c == 0xc2);
        }
        // The first four bytes and the last four (overlapping) in one word.
        let half = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().expect("four bytes")) as u64;
        return any(half(0) | half(b.len() - 4) << 32);
    }
    let word = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("eight bytes"));
    let mut at = 0;
    while at + 8 <= b.len() {
        if any(word(at)) {
            return true;
        }
        at += 8;
    }
    // The last eight bytes, overlapping the words already read.
    at != b.len() && any(word(b.len() - 8))
}

#[cfg(test)]
mod tests {
    #[test]
    fn slug_bytes_are_the_slug_alphabet() {
        for b in 0..=255u8 {
            let want = b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-';
            assert_eq!(super::SLUG[b as usize], want, "{b:#04x}");
        }
    }

    #[test]
    fn has_control_finds_a_control_at_every_position_of_every_length() {
        // The word-at-a-time test reads whole words, then the last eight bytes.
        let controls = ['\0', '\u{1f}', '\n', '\u{7f}', '\u{80}', '\u{9f}'];
        let plain = ['a', ' ', '~', '\u{a0}', '©', 'я', '\u{2028}', '\u{c0}'];
        for len in 0..40 {
            for &fill in &plain {
                let text: String = std::iter::repeat_n(fill, len).collect();
                assert!(!super::has_control(&text), "{text:?}");
                for at in 0..len {
                    for c in controls {
                        let mut chars: Vec<char> = text.chars().collect();
                        chars[at] = c;
                        let text: String = chars.into_iter().collect();
                        assert!(super::has_control(&text), "{text:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn has_control_agrees_with_char_is_control() {
        for c in (0..0x200).filter_map(char::from_u32).chain(['\u{2028}', '\u{feff}', 'я']) {
            for text in [format!("{c}"), format!("ab{c}"), format!("{c}я"), format!("op-{c}-1")] {
                assert_eq!(super::has_control(&text), text.chars().any(char::is_control), "{text:?}");
            }
        }
    }
}
