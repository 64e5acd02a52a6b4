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
use crate::time::{format_wall, parse_wall_seconds};
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
fn split(line: &str) -> Result<(usize, [Cow<'_, str>; FIELDS_MAX]), String> {
    let line = line.strip_suffix('\n').unwrap_or(line);
    let line = line.strip_suffix('\r').unwrap_or(line);
    let mut fields: [Cow<'_, str>; FIELDS_MAX] = Default::default();
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
                match memchr_quote(&b[j..]) {
                    None => return Err(format!("field {} ({}): unterminated quote", n + 1, NAMES[n])),
                    Some(k) => {
                        let q = j + k;
                        if b.get(q + 1) == Some(&b'"') {
                            if UNREAD & 1 << n == 0 {
                                owned.get_or_insert_with(String::new).push_str(&line[j..=q]);
                            }
                            j = q + 2;
                        } else {
                            fields[n] = match owned {
                                Some(mut s) => {
                                    s.push_str(&line[j..q]);
                                    Cow::Owned(s)
                                }
                                None => Cow::Borrowed(&line[start..q]),
                            };
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
            let end = memchr::memchr(b',', &b[i..]).map_or(b.len(), |k| i + k);
            fields[n] = Cow::Borrowed(&line[i..end]);
            n += 1;
            if end == b.len() {
                break;
            }
            i = end + 1;
        }
    }
    Ok((n, fields))
}

fn take<'a>(f: &mut [Cow<'a, str>; FIELDS_MAX], i: usize) -> Cow<'a, str> {
    std::mem::take(&mut f[i])
}

#[inline]
fn memchr_quote(b: &[u8]) -> Option<usize> {
    memchr::memchr(b'"', b)
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
    lastdata.split(',').next().filter(|q| !q.is_empty())
}

impl Decoder {
    /// Decodes and validates one Asterisk `cdr_csv` line of this feed.
    pub fn decode_asterisk_csv(&self, msg: &[u8], feed: &CsvFeed) -> Result<Cdr, Rejection> {
        let text = self.check_bytes(msg)?;
        let (n, mut f) = split(text).map_err(|m| Rejection::new(Reason::Malformed, None, m))?;
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
        let wall = |s: &str, field: &'static str| -> Result<Option<i64>, Rejection> {
            if s.is_empty() {
                return Ok(None);
            }
            let local = parse_wall_seconds(s.as_bytes())
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
        let lastapp = take(&mut f, 7);
        let in_queue = lastapp.eq_ignore_ascii_case("queue");
        let disposition = match f[14].as_ref() {
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
            call_id: if n > 16 && !f[16].is_empty() { take(&mut f, 16) } else { Cow::Owned(derived_call_id(text)) },
            region: region.0,
            dialled: take(&mut f, 2),
            caller: Some(take(&mut f, 1)),
            start_ms: start,
            answer_ms: answer,
            end_ms: end,
            queue_wait_ms: None,
            talk_ms: Some(billsec),
            disposition: Some(disposition),
            channel: Some(Channel::Voice),
            operator_id: part(take(&mut f, 6), operator),
            queue_id: if in_queue { part(take(&mut f, 8), first_argument) } else { None },
            ..Draft::default()
        };
        if n == 18 {
            match take(&mut f, 17) {
                Cow::Borrowed(uf) => userfield(uf, &mut draft, Cow::Borrowed)?,
                Cow::Owned(uf) => userfield(&uf, &mut draft, |v| Cow::Owned(v.to_owned()))?,
            }
        }
        self.finish(draft)
    }
}

fn operator(dstchannel: &str) -> Option<&str> {
    let peer = dstchannel.split_once('/').map_or(dstchannel, |(_, p)| p);
    let peer = peer.rsplit_once('-').map_or(peer, |(p, _)| p);
    (!peer.is_empty()).then_some(peer)
}

fn derived_call_id(line: &str) -> String {
    let digest = Sha256::digest(line.trim_end_matches(['\r', '\n']).as_bytes());
    format!("csv-{}", hex::encode(&digest[..12]))
}

/// Reads `userfield`'s `key=value;…` pairs into `d`; `keep` keeps a value (borrowed from the
/// message where the field is).
fn userfield<'a, 'u>(uf: &'u str, d: &mut Draft<'a>, keep: impl Fn(&'u str) -> Cow<'a, str>) -> Result<(), Rejection> {
    for pair in uf.split(';').filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(Rejection::field(Reason::Malformed, "userfield", "expected key=value pairs separated by ;"));
        };
        let v = keep(v);
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
        let (n, f) = split(r#""",79123456789,"a ""quoted"" name","d ""x""",,"x""#).unwrap();
        assert_eq!(n, 6);
        assert_eq!(f[1], "79123456789");
        assert_eq!(f[2], r#"a "quoted" name"#, "a field the decoder reads is unquoted");
        assert_eq!(f[3], r#"d ""x"""#, "one it never reads is kept as written");
        assert_eq!(f[4], "");
        assert_eq!(f[5], "x");
        assert!(split(r#""",1,2,"d ""x"#).unwrap_err().contains("unterminated"), "its quoting is still checked");
        assert!(split(r#""open,1"#).unwrap_err().contains("unterminated"));
        assert!(split(r#""a"b,1"#).unwrap_err().contains("after the closing quote"));
        assert!(split(&"x,".repeat(18)).unwrap_err().contains("more than"));
    }

    #[test]
    fn operator_from_dstchannel() {
        assert_eq!(operator("SIP/op0042-0000002a"), Some("op0042"));
        assert_eq!(operator(""), None);
    }
}
