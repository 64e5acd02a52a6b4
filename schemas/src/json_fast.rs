//! A scanner for the common case of the JSON contract: a flat object whose strings need no
//! unescaping and whose numbers are integers. It reads each field straight into the
//! [`Draft`] that validation takes (instants parsed, vocabularies looked up, as it goes), so
//! everything after it — the checks, the pseudonym, the CDR — is the same code as serde's
//! path. It gives a draft only where serde's path would build the very same one without a
//! rejection; on anything else (an escape, a nested value, a fraction or exponent, a
//! duplicate field, a value of the wrong type or outside its vocabulary, a required field
//! absent or empty, bad grammar, trailing bytes) it returns `None` and the caller takes
//! serde's path, which gives the exact result or rejection it always did.
//! `tests/json_fast_differential.rs` checks that the two agree on the fuzz corpora, the
//! hostile cases and property-based inputs.

use std::borrow::Cow;

use crate::cdr::{AgeBand, Channel, Disposition};
use crate::time::{LastDate, parse_rfc3339_ms, parse_utc_z_ms};
use crate::validate::Draft;
use crate::word::{bytes_below, bytes_equal};

/// The record's fields as a draft, or `None` when serde's path must decide.
#[inline]
pub(crate) fn draft(text: &str) -> Option<Draft<'_>> {
    let b = text.as_bytes();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_ws(b, i + 1);
    let mut d = Draft::default();
    let mut last_date = LastDate::default();
    // Fields seen (null or not: a second one is a duplicate), and fields given a value.
    let (mut seen, mut given) = (0u32, 0u32);
    if b.get(i) == Some(&b'}') {
        return None; // no required field: serde's path names the first missing
    }
    // Producers write the fields in the contract's order (the generator does), so the
    // next key is first compared with the names that may follow the last one.
    let mut expect = 0;
    loop {
        // Key.
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let (index, after_colon) = match expected_key(b, i + 1, expect) {
            Some((index, next)) => (Some(index), next),
            // Another key, or one spaced from its colon.
            None => {
                let (key, next) = plain_string(b, i + 1)?;
                let colon = skip_ws(b, next);
                if b.get(colon) != Some(&b':') {
                    return None;
                }
                (FIELDS.iter().position(|f| *f == key), colon + 1)
            }
        };
        i = skip_ws(b, after_colon);
        // Value.
        let next = match index {
            // A field outside the contract: any scalar, ignored.
            None => scalar(b, i)?,
            Some(index) => {
                let bit = 1u32 << index;
                if seen & bit != 0 {
                    return None; // a duplicate field: serde names it
                }
                seen |= bit;
                expect = index + 1;
                if b.get(i) == Some(&b'n') && b[i..].starts_with(b"null") {
                    i + 4 // null: as absent
                } else {
                    given |= bit;
                    field(text, i, index, &mut d, &mut last_date)?
                }
            }
        };
        i = skip_ws(b, next);
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            Some(b'}') => return (end(b, i + 1) && given & REQUIRED == REQUIRED).then_some(d),
            _ => return None,
        }
    }
}

/// The fields a record must have (call_id, region, dialled, start, end, disposition), as
/// bits of their indices in [`FIELDS`].
const REQUIRED: u32 = 1 << 0 | 1 << 2 | 1 << 3 | 1 << 5 | 1 << 7 | 1 << 10;

/// Reads the value at `i` of the field at `index` of [`FIELDS`] into `d`, as serde's path
/// converts it; the index after the value, or `None` where that path would reject it (or
/// the scanner cannot read it).
#[inline(always)]
fn field<'a>(text: &'a str, i: usize, index: usize, d: &mut Draft<'a>, last_date: &mut LastDate) -> Option<usize> {
    let b = text.as_bytes();
    match index {
        // start, answer, end.
        5..=7 => {
            let (ms, next) = instant(text, i, last_date)?;
            match index {
                5 => d.start_ms = ms,
                6 => d.answer_ms = Some(ms),
                _ => d.end_ms = ms,
            }
            Some(next)
        }
        // region: an integer that may be a subject code.
        2 => {
            let (n, next) = integer(b, i)?;
            d.region = u8::try_from(n).ok()?;
            Some(next)
        }
        // queue_wait_s, talk_s: whole seconds.
        8 | 9 => {
            let (n, next) = integer(b, i)?;
            let ms = Some(n.saturating_mul(1000));
            if index == 8 {
                d.queue_wait_ms = ms
            } else {
                d.talk_ms = ms
            }
            Some(next)
        }
        _ => {
            let (s, next) = string(text, i)?;
            match index {
                0 if !s.is_empty() => d.call_id = Cow::Borrowed(s),
                1 => d.linked_id = Some(Cow::Borrowed(s)),
                3 if !s.is_empty() => d.dialled = Cow::Borrowed(s),
                4 => d.caller = Some(Cow::Borrowed(s)),
                10 => d.disposition = Some(Disposition::from_code(s)?),
                11 => d.transfer_to = Some(Cow::Borrowed(s)),
                12 => d.topic = Some(Cow::Borrowed(s)),
                13 => d.age_band = vocabulary(s, AgeBand::from_code)?,
                14 => d.channel = vocabulary(s, Channel::from_code)?,
                15 => d.operator_id = Some(Cow::Borrowed(s)),
                16 => d.queue_id = Some(Cow::Borrowed(s)),
                // call_id or dialled empty: serde's path rejects it.
                _ => return None,
            }
            Some(next)
        }
    }
}

/// An instant at `i` (its opening quote): `"YYYY-MM-DDTHH:MM:SSZ"` read in place, its date
/// once per record ([`parse_utc_z_ms`]); any other string by [`parse_rfc3339_ms`]. The
/// milliseconds and the index after the closing quote.
#[inline(always)]
fn instant(text: &str, i: usize, last_date: &mut LastDate) -> Option<(i64, usize)> {
    let b = text.as_bytes();
    // Twenty bytes of digits and separators between two quotes hold no escape.
    if let Some(v) = b.get(i..i + 22)
        && v[0] == b'"'
        && v[21] == b'"'
        && let Some(ms) = parse_utc_z_ms(v[1..21].try_into().expect("twenty bytes"), last_date)
    {
        return Some((ms, i + 22));
    }
    let (s, next) = string(text, i)?;
    Some((parse_rfc3339_ms(s)?, next))
}

/// An optional vocabulary field: empty is absent; otherwise it must be in the vocabulary.
#[inline]
fn vocabulary<T>(s: &str, parse: fn(&str) -> Option<T>) -> Option<Option<T>> {
    if s.is_empty() { Some(None) } else { parse(s).map(Some) }
}

/// A plain string value at `i` (its opening quote): the text between the quotes and the
/// index after the closing one.
#[inline(always)]
fn string(text: &str, i: usize) -> Option<(&str, usize)> {
    let b = text.as_bytes();
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let (s, next) = plain_string(b, i + 1)?;
    // The message is valid UTF-8 and `s` lies between two ASCII quotes.
    Some((&text[i + 1..i + 1 + s.len()], next))
}

/// The contract's field names, in its order.
const FIELDS: [&[u8]; 17] = [
    b"call_id",
    b"linked_id",
    b"region",
    b"dialled",
    b"caller",
    b"start",
    b"answer",
    b"end",
    b"queue_wait_s",
    b"talk_s",
    b"disposition",
    b"transfer_to",
    b"topic",
    b"age_band",
    b"channel",
    b"operator_id",
    b"queue_id",
];

/// A field name, its closing quote and the colon after it (`name":`) as two little-endian
/// words (zero past the colon), with masks covering those bytes: a key is compared in two
/// loads, not a `memcmp` call.
struct Pattern {
    /// The bytes matched: the name's, its quote's and the colon's.
    len: usize,
    words: [u64; 2],
    masks: [u64; 2],
}

const fn pattern(name: &[u8]) -> Pattern {
    assert!(name.len() + 2 <= 16, "a field name, its quote and its colon fit in two words");
    let mut p = Pattern { len: name.len() + 2, words: [0; 2], masks: [0; 2] };
    let mut i = 0;
    while i < p.len {
        let byte = if i < name.len() {
            name[i]
        } else if i == name.len() {
            b'"'
        } else {
            b':'
        };
        p.words[i / 8] |= (byte as u64) << (8 * (i % 8));
        p.masks[i / 8] |= 0xff << (8 * (i % 8));
        i += 1;
    }
    p
}

/// [`FIELDS`] as [`Pattern`]s.
const PATTERNS: [Pattern; 17] = {
    let mut out = [const { Pattern { len: 0, words: [0; 2], masks: [0; 2] } }; 17];
    let mut i = 0;
    while i < FIELDS.len() {
        out[i] = pattern(FIELDS[i]);
        i += 1;
    }
    out
};

/// The key at `i` (after its opening quote) if it is one of the fields from `from` on,
/// spelled plainly and followed by its colon at once, as producers write it: its index and
/// the index after the colon. `None` for anything else, which the caller reads in full.
#[inline]
fn expected_key(b: &[u8], i: usize, from: usize) -> Option<(usize, usize)> {
    let rest = &b[i..];
    let Some(head) = rest.get(..16) else {
        // Near the end of the message: byte by byte.
        for (index, name) in FIELDS.iter().enumerate().skip(from) {
            if rest.len() > name.len() + 1 && rest[name.len()..].starts_with(b"\":") && rest.starts_with(name) {
                return Some((index, i + name.len() + 2));
            }
        }
        return None;
    };
    let w0 = u64::from_le_bytes(head[..8].try_into().expect("eight bytes"));
    let w1 = u64::from_le_bytes(head[8..].try_into().expect("eight bytes"));
    for (index, p) in PATTERNS.iter().enumerate().skip(from) {
        if w0 & p.masks[0] == p.words[0] && w1 & p.masks[1] == p.words[1] {
            return Some((index, i + p.len));
        }
    }
    None
}

/// Only whitespace after the object.
#[inline]
fn end(b: &[u8], i: usize) -> bool {
    skip_ws(b, i) == b.len()
}

#[inline]
fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while let Some(c) = b.get(i) {
        if !matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
            break;
        }
        i += 1;
    }
    i
}

/// A string body from `i` (after the opening quote) to the closing quote, if it needs no
/// unescaping and holds no control character; the index after the closing quote.
#[inline(always)]
fn plain_string(b: &[u8], i: usize) -> Option<(&[u8], usize)> {
    let rest = &b[i..];
    let len = special_byte(rest)?;
    (rest[len] == b'"').then(|| (&rest[..len], i + len + 1))
}

/// The first `"`, `\\` or control byte (< 0x20), eight bytes at a time.
#[inline]
fn special_byte(s: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(chunk) = s.get(i..i + 8) {
        let w = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let found = bytes_equal(w, b'"') | bytes_equal(w, b'\\') | bytes_below(w, 0x20);
        if found != 0 {
            return Some(i + found.trailing_zeros() as usize / 8);
        }
        i += 8;
    }
    s[i..].iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20).map(|p| i + p)
}

/// Skips one value of a field outside the contract: a plain string, an integer
/// ([`integer`]), `true`, `false` or `null`; the index after it, or `None` for anything else.
#[inline]
fn scalar(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => plain_string(b, i + 1).map(|(_, next)| next),
        b'0'..=b'9' => integer(b, i).map(|(_, next)| next),
        b't' if b[i..].starts_with(b"true") => Some(i + 4),
        b'f' if b[i..].starts_with(b"false") => Some(i + 5),
        b'n' if b[i..].starts_with(b"null") => Some(i + 4),
        _ => None,
    }
}

/// A non-negative integer in JSON's grammar (`0|[1-9][0-9]*`) of at most 18 digits, which
/// cannot overflow, not followed by a fraction or an exponent. A negative or longer one goes
/// to serde's path (`None`), which decides it as it always did.
#[inline(always)]
fn integer(b: &[u8], i: usize) -> Option<(i64, usize)> {
    let mut j = i;
    let mut n: i64 = 0;
    while let Some(&c @ b'0'..=b'9') = b.get(j) {
        if j - i == 18 {
            return None;
        }
        n = n * 10 + (c - b'0') as i64;
        j += 1;
    }
    let digits = j - i;
    if digits == 0 || (digits > 1 && b[i] == b'0') || matches!(b.get(j), Some(b'.' | b'e' | b'E')) {
        return None;
    }
    Some((n, j))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_byte_finds_the_first_quote_backslash_or_control_byte() {
        for len in 0..40 {
            for at in 0..len {
                for special in [b'"', b'\\', 0u8, 0x1f] {
                    let mut s = vec![b'a'; len];
                    s[at] = special;
                    // Bytes that must not match: just above the control range, and UTF-8.
                    if at + 1 < len {
                        s[at + 1] = b'"';
                    }
                    if at > 0 {
                        s[at - 1] = 0xd0;
                    }
                    assert_eq!(special_byte(&s), Some(at), "{s:?}");
                }
            }
            let plain: Vec<u8> = (0..len).map(|i| [b' ', b'~', 0x80, 0xff, b'!', b'#', b'['][i % 7]).collect();
            assert_eq!(special_byte(&plain), None, "{plain:?}");
        }
    }

    #[test]
    fn records_as_producers_write_them_take_the_scanner() {
        // Serde's path would decode these too, only slower: a scanner that gave them up
        // would pass the differential test and lose its point.
        let answered = r#"{"call_id":"61-000000017","region":61,"dialled":"112","caller":"89007816053","start":"2022-02-01T00:00:04Z","answer":"2022-02-01T00:00:05Z","end":"2022-02-01T00:00:17Z","queue_wait_s":1,"talk_s":12,"disposition":"answered","topic":"medical_emergency","age_band":"40_60","channel":"voice","operator_id":"op0124","queue_id":"q112"}"#;
        let abandoned = r#"{"call_id":"27-000000041","region":27,"dialled":"122","caller":"+79005503705","start":"2022-02-01T00:00:11Z","end":"2022-02-01T00:00:12Z","queue_wait_s":1,"talk_s":0,"disposition":"abandoned","topic":"transport","age_band":"30_40","channel":"social","queue_id":"q122"}"#;
        let spaced = r#"{ "call_id" : "1", "region" : 77, "dialled" : "122", "start" : "2022-02-01T00:00:11Z", "end" : "2022-02-01T00:00:12Z", "disposition" : "abandoned", "extra" : -5 }"#;
        for record in [answered, abandoned] {
            assert!(draft(record).is_some(), "{record}");
        }
        assert!(draft(spaced).is_none(), "a negative number goes to serde's path");
        assert!(draft(&spaced.replace("-5", "5")).is_some(), "spaced keys and values are read");
    }

    #[test]
    fn a_key_is_matched_by_its_words_exactly() {
        for (index, name) in FIELDS.iter().enumerate() {
            for pad in [&b""[..], b" \"x\", \"x\": 1, \"padding\": true}"] {
                let key = [*name, b"\":", pad].concat();
                assert_eq!(expected_key(&key, 0, 0), Some((index, name.len() + 2)), "{key:?}");
                assert_eq!(expected_key(&key, 0, index + 1).map(|k| k.0), None, "only fields from `from` on");
                // One byte off, one byte longer, no closing quote, or space before the
                // colon (read by the general path): not this field.
                let mut off = key.clone();
                off[name.len() - 1] ^= 1;
                let longer = [*name, b"s\":", pad].concat();
                let open = [*name, b" :", pad].concat();
                let spaced = [*name, b"\" :", pad].concat();
                let no_colon = [*name, b"\",", pad].concat();
                for other in [off, longer, open, spaced, no_colon] {
                    assert_ne!(expected_key(&other, 0, 0).map(|k| k.0), Some(index), "{other:?}");
                }
            }
        }
    }
}
