//! A scanner for the common case of the JSON contract: a flat object whose strings need no
//! unescaping and whose numbers are integers. It fills the same [`WireJson`] that serde
//! does, so everything after it — types, vocabularies, validation, rejections — is the same
//! code; on anything else (an escape, a nested value, a fraction or exponent, a duplicate
//! field, bad grammar, trailing bytes) it returns `None` and the caller takes serde's path,
//! which gives the exact same result or rejection as before. `tests/json_fast_differential.rs`
//! checks that the two agree on the fuzz corpora, the hostile cases and property-based
//! inputs.

use std::borrow::Cow;

use crate::json::{Scalar, WireJson};

/// The object's fields, or `None` when serde must decide.
#[inline]
pub(crate) fn scan(text: &str) -> Option<WireJson<'_>> {
    let b = text.as_bytes();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_ws(b, i + 1);
    let mut w = WireJson::default();
    let mut seen = 0u32;
    if b.get(i) == Some(&b'}') {
        return end(b, i + 1).then_some(w);
    }
    loop {
        // Key.
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let (key, next) = plain_string(b, i + 1)?;
        i = skip_ws(b, next);
        if b.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(b, i + 1);
        // Value.
        let (value, next) = scalar(text, i)?;
        i = skip_ws(b, next);
        if let Some((slot, bit)) = field(&mut w, key) {
            if seen & bit != 0 {
                return None; // a duplicate field: serde names it
            }
            seen |= bit;
            *slot = value;
        }
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            Some(b'}') => return end(b, i + 1).then_some(w),
            _ => return None,
        }
    }
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
#[inline]
fn plain_string(b: &[u8], i: usize) -> Option<(&[u8], usize)> {
    let rest = &b[i..];
    let len = rest.iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
    (rest[len] == b'"').then(|| (&rest[..len], i + len + 1))
}

/// One value: a plain string, an integer that fits i64, `true`, `false` or `null`
/// (`None` as serde gives for an `Option`); `None` for anything else.
#[inline]
fn scalar(text: &str, i: usize) -> Option<(Option<Scalar<'_>>, usize)> {
    let b = text.as_bytes();
    match *b.get(i)? {
        b'"' => {
            let (s, next) = plain_string(b, i + 1)?;
            // The message is valid UTF-8 and `s` lies between two ASCII quotes.
            let s = &text[i + 1..i + 1 + s.len()];
            Some((Some(Scalar::Str(Cow::Borrowed(s))), next))
        }
        b'-' | b'0'..=b'9' => {
            let (n, next) = integer(b, i)?;
            Some((Some(Scalar::Int(n)), next))
        }
        b't' if b[i..].starts_with(b"true") => Some((Some(Scalar::Bool(true)), i + 4)),
        b'f' if b[i..].starts_with(b"false") => Some((Some(Scalar::Bool(false)), i + 5)),
        b'n' if b[i..].starts_with(b"null") => Some((None, i + 4)),
        _ => None,
    }
}

/// JSON's integer grammar, `-?(0|[1-9][0-9]*)`, within i64, not followed by a fraction
/// or an exponent.
#[inline]
fn integer(b: &[u8], mut i: usize) -> Option<(i64, usize)> {
    let neg = b[i] == b'-';
    if neg {
        i += 1;
    }
    let start = i;
    let mut n: i64 = 0;
    while let Some(&c @ b'0'..=b'9') = b.get(i) {
        let d = (c - b'0') as i64;
        n = if neg { n.checked_mul(10)?.checked_sub(d)? } else { n.checked_mul(10)?.checked_add(d)? };
        i += 1;
    }
    let digits = i - start;
    if digits == 0 || (digits > 1 && b[start] == b'0') || (neg && n == 0) {
        return None;
    }
    if matches!(b.get(i), Some(b'.' | b'e' | b'E')) {
        return None;
    }
    Some((n, i))
}

/// The slot of a known field and its bit in the `seen` mask; `None` for a field the
/// contract does not know (skipped, as serde skips it).
#[inline]
fn field<'w, 'a>(w: &'w mut WireJson<'a>, key: &[u8]) -> Option<(&'w mut Option<Scalar<'a>>, u32)> {
    Some(match key {
        b"call_id" => (&mut w.call_id, 1 << 0),
        b"linked_id" => (&mut w.linked_id, 1 << 1),
        b"region" => (&mut w.region, 1 << 2),
        b"dialled" => (&mut w.dialled, 1 << 3),
        b"caller" => (&mut w.caller, 1 << 4),
        b"start" => (&mut w.start, 1 << 5),
        b"answer" => (&mut w.answer, 1 << 6),
        b"end" => (&mut w.end, 1 << 7),
        b"queue_wait_s" => (&mut w.queue_wait_s, 1 << 8),
        b"talk_s" => (&mut w.talk_s, 1 << 9),
        b"disposition" => (&mut w.disposition, 1 << 10),
        b"transfer_to" => (&mut w.transfer_to, 1 << 11),
        b"topic" => (&mut w.topic, 1 << 12),
        b"age_band" => (&mut w.age_band, 1 << 13),
        b"channel" => (&mut w.channel, 1 << 14),
        b"operator_id" => (&mut w.operator_id, 1 << 15),
        b"queue_id" => (&mut w.queue_id, 1 << 16),
        _ => return None,
    })
}
