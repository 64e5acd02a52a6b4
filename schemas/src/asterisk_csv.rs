//! Asterisk `cdr_csv` lines.
//!
//! Field order (Asterisk's `Master.csv`): `accountcode, src, dst, dcontext, clid, channel,
//! dstchannel, lastapp, lastdata, start, answer, end, duration, billsec, disposition,
//! amaflags` and optionally `uniqueid, userfield` — 16, 17 or 18 fields. Values may be
//! quoted (`"…"`, with `""` for a quote inside) or not; numbers come either way.
//!
//! How they become a CDR:
//! - `src` is the caller (hashed at once), `dst` the dialled number (→ line);
//! - `start`, `answer`, `end` are `YYYY-MM-DD HH:MM:SS` wall-clock times in the feed's zone
//!   (the region's IANA zone unless the feed states another, e.g. UTC for `usegmtime=yes`);
//!   an unanswered call has an empty `answer`;
//! - `duration` (start→end) and `billsec` (answer→end) are whole seconds and must agree with
//!   the instants to within a second; `billsec` is the talk time;
//! - `disposition` is `ANSWERED`, `NO ANSWER`, `BUSY`, `FAILED` or `CONGESTION`; a
//!   `NO ANSWER` whose `lastapp` is `Queue` is a caller who hung up in the queue: `abandoned`;
//! - queue wait is answer−start (answered) or end−start (not answered);
//! - `uniqueid` is the call id; without it the call id is `csv-` and the first 12 bytes of
//!   the SHA-256 of the line in hex, so an identical re-sent line gets the same id;
//! - `dstchannel` names the operator (`SIP/op0042-0000002a` → `op0042`), `lastdata` the
//!   queue when `lastapp` is `Queue`;
//! - `userfield` carries what Asterisk has no column for, as `key=value` pairs separated by
//!   `;`: `topic`, `age` (an age band), `channel`, `transfer` (transfer target), `linked`
//!   (linked id). Unknown keys are ignored.
//! - the region is not in the line: it comes from the feed's configuration ([`CsvFeed`]):
//!   either the whole feed is one region's, or its PBXs write the region code into
//!   `accountcode`.

use std::borrow::Cow;

use sha2::{Digest, Sha256};

use crate::cdr::{AgeBand, Cdr, Channel, Disposition};
use crate::region::{RegionCode, Regions};
use crate::reject::{Reason, Rejection};
use crate::time::{LastDate, format_wall, parse_wall_seconds_cached};
use crate::validate::{Decoder, Draft};

/// Where a CSV feed's region comes from: its configuration names it, or the PBX is
/// configured to write the region code into `accountcode` (one national feed of many PBXs).
/// Wall-clock times are read in the region's own IANA zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CsvFeed {
    /// Every line of this feed is from this region.
    Region(RegionCode),
    /// Each line's `accountcode` holds its region code.
    FromAccountcode,
}

const FIELDS_MIN: usize = 16;
const FIELDS_MAX: usize = 18;
const NAMES: [&str; FIELDS_MAX] = [
    "accountcode",
    "src",
    "dst",
    "dcontext",
    "clid",
    "channel",
    "dstchannel",
    "lastapp",
    "lastdata",
    "start",
    "answer",
    "end",
    "duration",
    "billsec",
    "disposition",
    "amaflags",
    "uniqueid",
    "userfield",
];

/// The fields the decoder never reads (`dcontext`, `clid`, `channel`, `amaflags`), as bits
/// by position: [`split`] checks their quoting but does not undo their doubled quotes (a
/// `clid` is `"Name" <number>`, so every line has some), which would cost an allocation.
const UNREAD: u32 = 1 << 3 | 1 << 4 | 1 << 5 | 1 << 15;

/// Splits one CSV line into at most 18 fields, strictly: a quoted field must close, and
/// only a comma or the end may follow its closing quote. A field in [`UNREAD`] is kept as
/// written between its quotes, doubled quotes and all.
///
/// A line of up to [`Marks::BYTES`] bytes (every line a PBX writes) is scanned once, 64
/// bytes at a time, for its commas and quotes ([`Marks`]); the fields are then cut at those
/// marks. A longer line looks each one up with `memchr`, as every line did before: eighteen
/// look-ups a line, whose set-up cost more than the scan (`benches/RESULTS.md` §22).
fn split(line: &str) -> Result<Fields<'_>, String> {
    let line = line.strip_suffix('\n').unwrap_or(line);
    let line = line.strip_suffix('\r').unwrap_or(line);
    match Marks::of(line.as_bytes(), LINE) {
        Some(marks) => split_at(line, &marks),
        // Spans are kept as `u32`: only a line too long to mark can outgrow them.
        None if u32::try_from(line.len()).is_err() => Err(format!("a line of {} bytes", line.len())),
        None => split_at(line, &Memchr(line.as_bytes(), LINE)),
    }
}

/// One line's fields: where each lies in the line, and the few whose doubled quotes were
/// undone (a name with quotes in it), which need a string of their own.
#[derive(Debug, PartialEq)]
struct Fields<'l> {
    /// The line, without its line end.
    line: &'l str,
    /// How many fields it has.
    n: usize,
    /// Each field's bytes in `line` (a quoted one's, between its quotes); empty past `n`.
    at: [(u32, u32); FIELDS_MAX],
    /// The fields unquoted into strings of their own, by position.
    unquoted: Vec<(usize, String)>,
}

impl<'l> Fields<'l> {
    /// Field `i` (empty past the last).
    #[inline]
    fn get(&self, i: usize) -> &str {
        match self.unquoted.iter().find(|(j, _)| *j == i) {
            Some((_, s)) => s,
            None => self.span(i),
        }
    }

    /// Field `i`, borrowed from the line where it can be.
    #[inline]
    fn take(&mut self, i: usize) -> Cow<'l, str> {
        match self.unquoted.iter().position(|(j, _)| *j == i) {
            Some(k) => Cow::Owned(self.unquoted.swap_remove(k).1),
            None => Cow::Borrowed(self.span(i)),
        }
    }

    /// Field `i` as it lies in the line (between its quotes, if quoted).
    #[inline]
    fn span(&self, i: usize) -> &'l str {
        let (a, b) = self.at[i];
        &self.line[a as usize..b as usize]
    }
}

impl std::ops::Index<usize> for Fields<'_> {
    type Output = str;
    #[inline]
    fn index(&self, i: usize) -> &str {
        self.get(i)
    }
}

/// Where the next of one of two bytes is in a text, at or after a position.
trait Find {
    /// The next of byte `which` (0 or 1) at or after `from`.
    fn next(&self, which: usize, from: usize) -> Option<usize>;
}

/// The bytes a line is split at: its commas and its quotes.
const LINE: [u8; 2] = [b',', b'"'];
const COMMA: usize = 0;
const QUOTE: usize = 1;

/// Where each of two bytes is in a text: for each, one bit per byte of the text (bit
/// `i % 64` of word `i / 64`).
struct Marks {
    bits: [[u64; Marks::WORDS]; 2],
}

impl Marks {
    const WORDS: usize = 8;
    /// The longest text marked; a longer one is searched with `memchr`.
    const BYTES: usize = Marks::WORDS * 64;

    /// Where `bytes` are in `b`, if it is at most [`Marks::BYTES`] long.
    #[inline]
    fn of(b: &[u8], bytes: [u8; 2]) -> Option<Marks> {
        if b.len() > Marks::BYTES {
            return None;
        }
        let mut m = Marks { bits: [[0; Marks::WORDS]; 2] };
        let blocks = b.chunks_exact(64);
        let rest = blocks.remainder();
        let whole = blocks.len();
        for (w, block) in blocks.enumerate() {
            let found = marks64(block.try_into().expect("64 bytes"), bytes);
            (m.bits[0][w], m.bits[1][w]) = (found[0], found[1]);
        }
        if !rest.is_empty() {
            // Zeros past the end may be what is looked for: their bits are cleared.
            let mut last = [0u8; 64];
            last[..rest.len()].copy_from_slice(rest);
            let found = marks64(&last, bytes).map(|f| f & ((1u64 << rest.len()) - 1));
            (m.bits[0][whole], m.bits[1][whole]) = (found[0], found[1]);
        }
        Some(m)
    }
}

impl Find for Marks {
    #[inline]
    fn next(&self, which: usize, from: usize) -> Option<usize> {
        let bits = &self.bits[which];
        let mut w = from / 64;
        let mut word = *bits.get(w)? & (!0u64 << (from % 64));
        loop {
            if word != 0 {
                return Some(w * 64 + word.trailing_zeros() as usize);
            }
            w += 1;
            word = *bits.get(w)?;
        }
    }
}

/// Where each of two bytes is among 64, a bit each: for each sixteen bytes, two compares
/// and two move-masks (SSE2, which every x86-64 has).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn marks64(block: &[u8; 64], bytes: [u8; 2]) -> [u64; 2] {
    use std::arch::x86_64::{__m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8};
    let mut found = [0u64; 2];
    for (k, chunk) in block.chunks_exact(16).enumerate() {
        // SAFETY: SSE2 is part of every x86-64 CPU; the load reads the sixteen bytes of
        // `chunk`, unaligned.
        let bits = unsafe {
            let v = _mm_loadu_si128(chunk.as_ptr().cast::<__m128i>());
            bytes.map(|byte| _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(byte as i8))) as u16)
        };
        for (f, b) in found.iter_mut().zip(bits) {
            *f |= u64::from(b) << (16 * k);
        }
    }
    found
}

/// Where each of two bytes is among 64, a bit each.
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn marks64(block: &[u8; 64], bytes: [u8; 2]) -> [u64; 2] {
    bytes.map(|byte| block.iter().enumerate().fold(0u64, |m, (i, &x)| m | u64::from(x == byte) << i))
}

/// A text too long to mark: each look-up is a `memchr`.
struct Memchr<'a>(&'a [u8], [u8; 2]);

impl Find for Memchr<'_> {
    fn next(&self, which: usize, from: usize) -> Option<usize> {
        memchr::memchr(self.1[which], self.0.get(from..)?).map(|k| from + k)
    }
}

/// [`split`], with the marks found by `find`.
#[inline]
fn split_at<'l>(line: &'l str, find: &impl Find) -> Result<Fields<'l>, String> {
    let mut f = Fields { line, n: 0, at: [(0, 0); FIELDS_MAX], unquoted: Vec::new() };
    let b = line.as_bytes();
    let (mut i, mut n) = (0, 0);
    loop {
        if n == FIELDS_MAX {
            return Err(format!("more than {FIELDS_MAX} fields"));
        }
        if b.get(i) == Some(&b'"') {
            let start = i + 1;
            let mut j = start;
            let mut owned: Option<String> = None;
            loop {
                match find.next(QUOTE, j) {
                    None => return Err(format!("field {} ({}): unterminated quote", n + 1, NAMES[n])),
                    Some(q) => {
                        if b.get(q + 1) == Some(&b'"') {
                            if UNREAD & 1 << n == 0 {
                                owned.get_or_insert_with(String::new).push_str(&line[j..=q]);
                            }
                            j = q + 2;
                        } else {
                            if let Some(mut s) = owned {
                                s.push_str(&line[j..q]);
                                f.unquoted.push((n, s));
                            }
                            f.at[n] = (start as u32, q as u32);
                            i = q + 1;
                            break;
                        }
                    }
                }
            }
            n += 1;
            match b.get(i) {
                None => break,
                Some(b',') => i += 1,
                Some(_) => return Err(format!("field {} ({}): text after the closing quote", n, NAMES[n - 1])),
            }
        } else {
            let end = find.next(COMMA, i).unwrap_or(b.len());
            f.at[n] = (i as u32, end as u32);
            n += 1;
            if end == b.len() {
                break;
            }
            i = end + 1;
        }
    }
    f.n = n;
    Ok(f)
}

/// The part of a field that `pick` finds, borrowed from the message where the field is.
fn part<'a>(field: Cow<'a, str>, pick: fn(&str) -> Option<&str>) -> Option<Cow<'a, str>> {
    match field {
        Cow::Borrowed(s) => pick(s).map(Cow::Borrowed),
        Cow::Owned(s) => pick(&s).map(|p| Cow::Owned(p.to_owned())),
    }
}

/// A queue's name: the first of `lastdata`'s arguments (`Queue(q122,t,,,300)` → `q122`).
fn first_argument(lastdata: &str) -> Option<&str> {
    let q = &lastdata[..lastdata.bytes().position(|c| c == b',').unwrap_or(lastdata.len())];
    (!q.is_empty()).then_some(q)
}

impl Decoder {
    /// Decodes and validates one Asterisk `cdr_csv` line of this feed.
    pub fn decode_asterisk_csv(&self, msg: &[u8], feed: &CsvFeed) -> Result<Cdr, Rejection> {
        let text = self.check_bytes(msg)?;
        let mut f = split(text).map_err(|m| Rejection::new(Reason::Malformed, None, m))?;
        let n = f.n;
        if n < FIELDS_MIN {
            return Err(Rejection::new(Reason::Malformed, None, format!("{n} fields; cdr_csv has 16 to 18")));
        }
        let region = match feed {
            CsvFeed::Region(r) => *r,
            CsvFeed::FromAccountcode => match f[0].parse::<u8>() {
                Ok(code) => RegionCode(code),
                Err(_) if f[0].is_empty() => {
                    return Err(Rejection::field(
                        Reason::MissingField,
                        "accountcode",
                        "empty: the feed takes the region from accountcode",
                    ));
                }
                Err(_) => {
                    return Err(Rejection::field(Reason::UnknownRegion, "accountcode", "not a federal subject code"));
                }
            },
        };
        let subject = Regions::get().by_code(region.0).ok_or_else(|| {
            Rejection::field(Reason::UnknownRegion, "accountcode", format!("{region} is not a federal subject code"))
        })?;
        let mut last_date = LastDate::default();
        let mut wall = |s: &str, field: &'static str| -> Result<Option<i64>, Rejection> {
            if s.is_empty() {
                return Ok(None);
            }
            let local = parse_wall_seconds_cached(s.as_bytes(), &mut last_date)
                .filter(|_| s.len() == 19 && s.as_bytes()[10] == b' ')
                .ok_or_else(|| Rejection::field(Reason::BadTimestamp, field, "expected YYYY-MM-DD HH:MM:SS"))?;
            Ok(Some(subject.utc_ms_of_local(local)))
        };
        let secs = |s: &str, field: &'static str| -> Result<i64, Rejection> {
            if s.is_empty() {
                return Err(Rejection::field(Reason::MissingField, field, "empty"));
            }
            let v: i64 = s.parse().map_err(|_| Rejection::field(Reason::WrongType, field, "expected whole seconds"))?;
            if v < 0 {
                return Err(Rejection::field(Reason::NegativeDuration, field, "negative"));
            }
            Ok(v.saturating_mul(1000))
        };
        let start = wall(&f[9], "start")?.ok_or_else(|| Rejection::field(Reason::MissingField, "start", "empty"))?;
        let answer = wall(&f[10], "answer")?;
        let end = wall(&f[11], "end")?.ok_or_else(|| Rejection::field(Reason::MissingField, "end", "empty"))?;
        if end < start {
            return Err(Rejection::field(
                Reason::EndBeforeStart,
                "end",
                format!("ends {} s before it starts", (start - end) / 1000),
            ));
        }
        let duration = secs(&f[12], "duration")?;
        let billsec = secs(&f[13], "billsec")?;
        let lastapp = f.take(7);
        let in_queue = lastapp.eq_ignore_ascii_case("queue");
        let disposition = match &f[14] {
            "ANSWERED" => Disposition::Answered,
            "NO ANSWER" if in_queue => Disposition::Abandoned,
            "NO ANSWER" => Disposition::NoAnswer,
            "BUSY" => Disposition::Busy,
            "FAILED" => Disposition::Failed,
            "CONGESTION" => Disposition::Congestion,
            "" => return Err(Rejection::field(Reason::MissingField, "disposition", "empty")),
            _ => return Err(Rejection::field(Reason::InvalidValue, "disposition", "not an Asterisk disposition")),
        };
        if (duration - (end - start)).abs() > 1000 {
            return Err(Rejection::field(
                Reason::InconsistentDurations,
                "duration",
                format!("{} s, but start→end is {} s", duration / 1000, (end - start) / 1000),
            ));
        }
        if billsec > duration {
            return Err(Rejection::field(Reason::InconsistentDurations, "billsec", "longer than duration"));
        }

        let mut draft = Draft {
            call_id: if n > 16 && !f[16].is_empty() { f.take(16) } else { Cow::Owned(derived_call_id(text)) },
            region: region.0,
            dialled: f.take(2),
            caller: Some(f.take(1)),
            start_ms: start,
            answer_ms: answer,
            end_ms: end,
            queue_wait_ms: None,
            talk_ms: Some(billsec),
            disposition: Some(disposition),
            channel: Some(Channel::Voice),
            operator_id: part(f.take(6), operator),
            queue_id: if in_queue { part(f.take(8), first_argument) } else { None },
            ..Draft::default()
        };
        if n == 18 {
            match f.take(17) {
                Cow::Borrowed(uf) => userfield(uf, &mut draft, Cow::Borrowed)?,
                Cow::Owned(uf) => userfield(&uf, &mut draft, |v| Cow::Owned(v.to_owned()))?,
            }
        }
        self.finish(draft)
    }
}

fn operator(dstchannel: &str) -> Option<&str> {
    // Byte scans: a channel name is a few dozen bytes, too short for `memchr` to pay its way.
    let from = dstchannel.bytes().position(|c| c == b'/').map_or(0, |slash| slash + 1);
    let peer = &dstchannel[from..];
    let peer = &peer[..peer.bytes().rposition(|c| c == b'-').unwrap_or(peer.len())];
    (!peer.is_empty()).then_some(peer)
}

fn derived_call_id(line: &str) -> String {
    let digest = Sha256::digest(line.trim_end_matches(['\r', '\n']).as_bytes());
    format!("csv-{}", hex::encode(&digest[..12]))
}

/// The bytes `userfield` is split at: between pairs, and between a key and its value.
const PAIRS: [u8; 2] = [b';', b'='];
const SEMICOLON: usize = 0;
const EQUALS: usize = 1;

/// Reads `userfield`'s `key=value;…` pairs into `d`; `keep` keeps a value (borrowed from the
/// message where the field is). Empty pairs are skipped; a pair's key ends at its first `=`.
fn userfield<'a, 'u>(uf: &'u str, d: &mut Draft<'a>, keep: impl Fn(&'u str) -> Cow<'a, str>) -> Result<(), Rejection> {
    match Marks::of(uf.as_bytes(), PAIRS) {
        Some(marks) => pairs(uf, &marks, d, keep),
        None => pairs(uf, &Memchr(uf.as_bytes(), PAIRS), d, keep),
    }
}

/// [`userfield`], with the marks found by `find`.
#[inline]
fn pairs<'a, 'u>(
    uf: &'u str,
    find: &impl Find,
    d: &mut Draft<'a>,
    keep: impl Fn(&'u str) -> Cow<'a, str>,
) -> Result<(), Rejection> {
    let mut i = 0;
    while i < uf.len() {
        let end = find.next(SEMICOLON, i).unwrap_or(uf.len());
        if end > i {
            let Some(eq) = find.next(EQUALS, i).filter(|&eq| eq < end) else {
                return Err(Rejection::field(
                    Reason::Malformed,
                    "userfield",
                    "expected key=value pairs separated by ;",
                ));
            };
            pair(&uf[i..eq], keep(&uf[eq + 1..end]), d)?;
        }
        i = end + 1;
    }
    Ok(())
}

/// Reads one of `userfield`'s pairs into `d`; unknown keys are ignored.
#[inline]
fn pair<'a>(k: &str, v: Cow<'a, str>, d: &mut Draft<'a>) -> Result<(), Rejection> {
    match k {
        "topic" => d.topic = Some(v),
        "transfer" => d.transfer_to = Some(v),
        "linked" => d.linked_id = Some(v),
        "age" => {
            d.age_band = Some(
                AgeBand::from_code(&v)
                    .ok_or_else(|| Rejection::field(Reason::InvalidValue, "userfield", "age: not an age band"))?,
            )
        }
        "channel" => {
            d.channel = Some(
                Channel::from_code(&v)
                    .ok_or_else(|| Rejection::field(Reason::InvalidValue, "userfield", "channel: not a channel"))?,
            )
        }
        _ => {}
    }
    Ok(())
}

/// Writes a CDR as one Asterisk `cdr_csv` line (18 fields, no newline) with times in the
/// region's zone and the region code in `accountcode`, as a hotline PBX would.
/// `quote_numbers` writes `src`/`dst` quoted, as Asterisk does, or bare, as some exports do.
pub fn encode_asterisk_csv(cdr: &Cdr, caller: Option<&str>, quote_numbers: bool, out: &mut Vec<u8>) {
    let zone = &Regions::get().by_code(cdr.region.0).expect("a CDR's region is in the registry").time_zone;
    use std::io::Write;
    let q = |out: &mut Vec<u8>, s: &str| {
        out.push(b'"');
        for c in s.bytes() {
            if c == b'"' {
                out.push(b'"');
            }
            out.push(c);
        }
        out.extend_from_slice(b"\",");
    };
    let num = |out: &mut Vec<u8>, s: &str| {
        if quote_numbers {
            q(out, s)
        } else {
            out.extend_from_slice(s.as_bytes());
            out.push(b',');
        }
    };
    let time = |out: &mut Vec<u8>, ms: Option<i64>| {
        out.push(b'"');
        if let Some(ms) = ms {
            let t = jiff::Timestamp::from_millisecond(ms).expect("valid instant");
            let local = t.as_second() + zone.to_offset(t).seconds() as i64;
            let mut buf = [0u8; 19];
            format_wall(local, b' ', &mut buf);
            out.extend_from_slice(&buf);
        }
        out.extend_from_slice(b"\",");
    };
    let caller = caller.unwrap_or("");
    q(out, &cdr.region.to_string());
    num(out, caller);
    num(out, &cdr.dialled);
    q(out, "hotline");
    q(out, &format!("\"Citizen\" <{caller}>"));
    q(out, "SIP/trunk-00000001");
    q(out, &cdr.operator_id.as_deref().map(|o| format!("SIP/{o}-0000002a")).unwrap_or_default());
    let (lastapp, lastdata) = match (&cdr.queue_id, cdr.disposition) {
        (Some(qid), _) => ("Queue", format!("{qid},t,,,300")),
        (None, Disposition::NoAnswer) => ("VoiceMail", "recorder@hotline".to_owned()),
        (None, _) => ("Dial", "SIP/operators".to_owned()),
    };
    q(out, lastapp);
    q(out, &lastdata);
    time(out, Some(cdr.start_ms));
    time(out, cdr.answer_ms);
    time(out, Some(cdr.end_ms));
    let duration = (cdr.end_ms - cdr.start_ms) / 1000;
    let _ = write!(out, "{},{},", duration, cdr.talk_ms / 1000);
    q(
        out,
        match cdr.disposition {
            Disposition::Answered => "ANSWERED",
            Disposition::NoAnswer | Disposition::Abandoned => "NO ANSWER",
            Disposition::Busy => "BUSY",
            Disposition::Failed => "FAILED",
            Disposition::Congestion => "CONGESTION",
        },
    );
    q(out, "DOCUMENTATION");
    q(out, &cdr.call_id);
    let mut uf = String::new();
    let mut kv = |k: &str, v: Option<&str>| {
        if let Some(v) = v {
            if !uf.is_empty() {
                uf.push(';');
            }
            uf.push_str(k);
            uf.push('=');
            uf.push_str(v);
        }
    };
    kv("topic", cdr.topic.as_deref());
    kv("age", cdr.age_band.map(AgeBand::code));
    kv("channel", Some(cdr.channel.code()));
    kv("transfer", cdr.transfer_to.as_deref());
    kv("linked", cdr.linked_id.as_deref());
    q(out, &uf);
    out.pop(); // the last comma
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_quotes_escapes_and_bare_values() {
        let mut f = split(r#""",79123456789,"a ""quoted"" name","d ""x""",,"x""#).unwrap();
        assert_eq!(f.n, 6);
        assert_eq!(&f[1], "79123456789");
        assert_eq!(&f[2], r#"a "quoted" name"#, "a field the decoder reads is unquoted");
        assert_eq!(&f[3], r#"d ""x"""#, "one it never reads is kept as written");
        assert_eq!(&f[4], "");
        assert_eq!(&f[5], "x");
        assert_eq!((f.take(2), f.take(1)), (Cow::Owned(r#"a "quoted" name"#.into()), Cow::Borrowed("79123456789")));
        assert_eq!(&f[6], "", "a field past the last is empty");
        assert!(split(r#""",1,2,"d ""x"#).unwrap_err().contains("unterminated"), "its quoting is still checked");
        assert!(split(r#""open,1"#).unwrap_err().contains("unterminated"));
        assert!(split(r#""a"b,1"#).unwrap_err().contains("after the closing quote"));
        assert!(split(&"x,".repeat(18)).unwrap_err().contains("more than"));
    }

    /// Splits `line` both ways: cut at its [`Marks`], and at what `memchr` finds.
    fn both_ways(line: &str) -> [Result<Fields<'_>, String>; 2] {
        let marks = Marks::of(line.as_bytes(), LINE).expect("a line short enough to mark");
        [split_at(line, &marks), split_at(line, &Memchr(line.as_bytes(), LINE))]
    }

    #[test]
    fn the_fuzz_corpus_splits_the_same_at_marks_and_with_memchr() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/decode_asterisk_csv");
        let mut n = 0;
        for f in std::fs::read_dir(&dir).unwrap() {
            let bytes = std::fs::read(f.unwrap().path()).unwrap();
            let Ok(line) = std::str::from_utf8(&bytes) else { continue };
            if line.len() <= Marks::BYTES {
                let [marks, memchr] = both_ways(line);
                assert_eq!(marks, memchr, "{line:?}");
                n += 1;
            }
        }
        assert!(n >= 50, "only {n} corpus lines were split: is {} there?", dir.display());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Commas and quotes at every place, in every number, around chunk and word
        /// boundaries, with multi-byte text between them.
        #[test]
        fn lines_split_the_same_at_marks_and_with_memchr(line in "[,\"a я]{0,400}") {
            proptest::prop_assume!(line.len() <= Marks::BYTES);
            let [marks, memchr] = both_ways(&line);
            proptest::prop_assert_eq!(marks, memchr);
        }

        #[test]
        fn marks_find_what_memchr_finds_from_every_place(line in "[,\"a я]{0,400}") {
            proptest::prop_assume!(line.len() <= Marks::BYTES);
            let b = line.as_bytes();
            for bytes in [LINE, [b'"', b'a'], [b' ', 0xd1]] {
                let marks = Marks::of(b, bytes).unwrap();
                for from in 0..=b.len() + 1 {
                    for which in [0, 1] {
                        proptest::prop_assert_eq!(marks.next(which, from), Memchr(b, bytes).next(which, from), "{:?} from {}", bytes[which], from);
                    }
                }
            }
        }
    }

    /// `userfield` as it was read with `str::split`: what [`pairs`] must agree with.
    fn userfield_with_str_split<'u>(uf: &'u str, d: &mut Draft<'u>) -> Result<(), Rejection> {
        for p in uf.split(';').filter(|p| !p.is_empty()) {
            let Some((k, v)) = p.split_once('=') else {
                return Err(Rejection::field(
                    Reason::Malformed,
                    "userfield",
                    "expected key=value pairs separated by ;",
                ));
            };
            pair(k, Cow::Borrowed(v), d)?;
        }
        Ok(())
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]

        /// Pairs, empty pairs, keys without values, values with `=`, known keys with good
        /// and bad values, and text too long to mark.
        #[test]
        fn userfield_reads_what_str_split_reads(
            parts in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::strategy::Just("topic=vaccination".to_owned()),
                    proptest::strategy::Just("age=40_60".to_owned()),
                    proptest::strategy::Just("channel=sms".to_owned()),
                    "(topic|age|channel|transfer|linked|x)=[a-z0-9_=я]{0,12}",
                    "[;=a я]{0,8}",
                ],
                0..12,
            ),
            long in proptest::option::of(0usize..600),
        ) {
            let mut uf = parts.join(";");
            if let Some(n) = long {
                uf = format!("linked={};{uf}", "я".repeat(n));
            }
            let (mut marked, mut split) = (Draft::default(), Draft::default());
            let got = userfield(&uf, &mut marked, Cow::Borrowed);
            let want = userfield_with_str_split(&uf, &mut split);
            proptest::prop_assert_eq!(&got, &want, "{:?}", uf);
            proptest::prop_assert_eq!(format!("{marked:?}"), format!("{split:?}"), "{:?}", uf);
        }
    }

    #[test]
    fn a_line_too_long_to_mark_is_split_all_the_same() {
        let field = format!("\"{}\"\"x\"", "я".repeat(300));
        let line = format!("1,{field},{}", "2,".repeat(15)) + "end";
        assert!(line.len() > Marks::BYTES && Marks::of(line.as_bytes(), LINE).is_none());
        let f = split(&line).unwrap();
        assert_eq!(f.n, 18);
        assert_eq!(&f[1], format!("{}\"x", "я".repeat(300)));
        assert_eq!(&f[17], "end");
    }

    #[test]
    fn operator_from_dstchannel() {
        assert_eq!(operator("SIP/op0042-0000002a"), Some("op0042"));
        assert_eq!(operator(""), None);
        for (channel, peer) in [
            ("op0042", Some("op0042")),
            ("SIP/op-1-2", Some("op-1")),
            ("PJSIP/a/b-c", Some("a/b")),
            ("SIP/-1", None),
            ("Local/оператор-1", Some("оператор")),
        ] {
            assert_eq!(operator(channel), peer, "{channel}");
        }
        assert_eq!(first_argument("q122,t,,,300"), Some("q122"));
        assert_eq!((first_argument("q112"), first_argument(",t"), first_argument("")), (Some("q112"), None, None));
    }
}
