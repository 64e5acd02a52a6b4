//! Fast conversions between UTC milliseconds and the two fixed textual forms the wire
//! formats use most: RFC 3339 `YYYY-MM-DDTHH:MM:SS[.fff]Z` and Asterisk's
//! `YYYY-MM-DD HH:MM:SS`. Anything else (offsets, other precisions) goes through jiff.
//! The fast paths are checked against jiff by property tests.

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
#[inline]
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number (inverse of [`days_from_civil`]).
#[inline]
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

#[inline]
fn digits<const N: usize>(b: &[u8]) -> Option<u32> {
    let mut v = 0u32;
    for &c in &b[..N] {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v * 10 + d as u32;
    }
    Some(v)
}

/// Parses `YYYY-MM-DD?HH:MM:SS` (any separator at `?`) into seconds since the epoch of that
/// wall-clock time read as UTC. `None` if it is not exactly that shape or not a real time.
#[inline]
pub fn parse_wall_seconds(b: &[u8]) -> Option<i64> {
    parse_wall_seconds_cached(b, &mut LastDate::default())
}

/// [`parse_wall_seconds`], the date's day number taken from `last` when it is the date
/// read last (a call's start, answer and end mostly share one).
#[inline]
pub fn parse_wall_seconds_cached(b: &[u8], last: &mut LastDate) -> Option<i64> {
    if b.len() < 19 || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let days = date_days(b, last)?;
    let (h, mi, s) = (digits::<2>(&b[11..])?, digits::<2>(&b[14..])?, digits::<2>(&b[17..])?);
    if h > 23 || mi > 59 || s > 59 {
        return None;
    }
    Some(days * 86_400 + (h * 3600 + mi * 60 + s) as i64)
}

/// The day number of the `YYYY-MM-DD` that `b` (of at least ten bytes) starts with, from
/// `last` when it is the date read last, else read, checked and kept in `last`; `None` if it
/// is not a real date.
#[inline(always)]
fn date_days(b: &[u8], last: &mut LastDate) -> Option<i64> {
    let date: &[u8; 10] = b[..10].try_into().expect("ten bytes");
    if let Some(days) = last.days
        && last.date == *date
    {
        return Some(days);
    }
    if date[4] != b'-' || date[7] != b'-' {
        return None;
    }
    let (y, mo, d) = (digits::<4>(date)? as i64, digits::<2>(&date[5..])?, digits::<2>(&date[8..])?);
    if !(1..=12).contains(&mo) || d == 0 || d > days_in_month(y, mo) {
        return None;
    }
    let days = days_from_civil(y, mo, d);
    *last = LastDate { date: *date, days: Some(days) };
    Some(days)
}

/// Parses an RFC 3339 instant into UTC milliseconds: the fast path takes
/// `YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z`; every other valid form goes through jiff.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() >= 20 && b[10] == b'T' && b[b.len() - 1] == b'Z' {
        let secs = parse_wall_seconds(b)?;
        let frac = &b[19..b.len() - 1];
        let ms = match frac {
            [] => 0,
            [b'.', rest @ ..] if (1..=9).contains(&rest.len()) && rest.iter().all(u8::is_ascii_digit) => {
                let mut ms = 0;
                for i in 0..3 {
                    ms = ms * 10 + rest.get(i).map_or(0, |c| (c - b'0') as i64);
                }
                ms
            }
            _ => return None,
        };
        return Some(secs * 1000 + ms);
    }
    s.parse::<jiff::Timestamp>().ok().map(|t| t.as_millisecond())
}

/// The last date [`parse_utc_z_ms`] read and its day number: a call's instants mostly
/// fall on one date, so the date is read once per call, not once per instant.
#[derive(Clone, Copy, Debug, Default)]
pub struct LastDate {
    /// `YYYY-MM-DD` as written.
    date: [u8; 10],
    /// Its day number since 1970-01-01, once a date was read.
    days: Option<i64>,
}

/// `YYYY-MM-DDTHH:MM:SSZ` exactly (the generator's form, and most feeds'), as UTC
/// milliseconds; the date's day number is taken from `last` when it is the same date.
/// `None` where [`parse_rfc3339_ms`] must decide (another form, or not a real time); where
/// it gives a value, it is [`parse_rfc3339_ms`]'s.
#[inline]
pub fn parse_utc_z_ms(b: &[u8; 20], last: &mut LastDate) -> Option<i64> {
    if b[10] != b'T' || b[13] != b':' || b[16] != b':' || b[19] != b'Z' {
        return None;
    }
    let days = date_days(b, last)?;
    let (h, mi, s) = (digits::<2>(&b[11..])?, digits::<2>(&b[14..])?, digits::<2>(&b[17..])?);
    if h > 23 || mi > 59 || s > 59 {
        return None;
    }
    Some((days * 86_400 + (h * 3600 + mi * 60 + s) as i64) * 1000)
}

/// Formats UTC milliseconds as `YYYY-MM-DDTHH:MM:SSZ` (whole seconds, the generator's
/// form) into `out`, returning the text. Years 0–9999 only.
#[inline]
pub fn format_rfc3339_secs(ms: i64, out: &mut [u8; 20]) -> &str {
    std::str::from_utf8(write_rfc3339_secs(ms, out)).expect("ASCII")
}

/// [`format_rfc3339_secs`] without the UTF-8 check, for writers of bytes.
#[inline]
pub fn write_rfc3339_secs(ms: i64, out: &mut [u8; 20]) -> &[u8] {
    format_wall(ms.div_euclid(1000), b'T', &mut out[..19]);
    out[19] = b'Z';
    &out[..]
}

/// Formats seconds since the epoch as `YYYY-MM-DD?HH:MM:SS` with `sep` at `?`.
#[inline]
pub fn format_wall(secs: i64, sep: u8, out: &mut [u8]) {
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400) as u32;
    let put2 = |out: &mut [u8], at: usize, v: u32| {
        out[at] = b'0' + (v / 10) as u8;
        out[at + 1] = b'0' + (v % 10) as u8;
    };
    let put = |out: &mut [u8], at: usize, v: u32, _n: usize| {
        put2(out, at, v / 100);
        put2(out, at + 2, v % 100);
    };
    put(out, 0, y as u32, 4);
    out[4] = b'-';
    put2(out, 5, m);
    out[7] = b'-';
    put2(out, 8, d);
    out[10] = sep;
    put2(out, 11, sod / 3600);
    out[13] = b':';
    put2(out, 14, sod / 60 % 60);
    out[16] = b':';
    put2(out, 17, sod % 60);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn fast_paths_agree_with_jiff(secs in EARLY..LATE, ms in 0i64..1000) {
            let t = secs * 1000 + ms;
            let mut buf = [0u8; 20];
            let text = format_rfc3339_secs(t, &mut buf).to_string();
            let j = jiff::Timestamp::from_millisecond(t).unwrap();
            prop_assert_eq!(&text, &j.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
            prop_assert_eq!(parse_rfc3339_ms(&text), Some(secs * 1000));
            let with_ms = format!("{}.{:03}Z", &text[..19], ms);
            prop_assert_eq!(parse_rfc3339_ms(&with_ms), Some(t));
        }
    }

    proptest! {
        /// Where the cached fast path gives an instant, it is the general parser's, whatever
        /// date it read before (the same, another, or none) and whatever the bytes.
        #[test]
        fn the_cached_date_path_agrees_with_the_general_parser(
            secs in EARLY..LATE,
            later in 0i64..200_000,
            flip in proptest::option::of((0usize..20, any::<u8>())),
            first in any::<bool>(),
        ) {
            let mut last = LastDate::default();
            let mut buf = [0u8; 20];
            for (i, t) in [secs, secs + later].into_iter().enumerate() {
                if i == 0 && !first {
                    continue;
                }
                let mut text: [u8; 20] = write_rfc3339_secs(t * 1000, &mut buf).try_into().unwrap();
                if i == 1 && let Some((at, byte)) = flip {
                    text[at] = byte;
                }
                let general = std::str::from_utf8(&text).ok().and_then(parse_rfc3339_ms);
                match parse_utc_z_ms(&text, &mut last) {
                    Some(ms) => prop_assert_eq!(Some(ms), general, "{:?}", String::from_utf8_lossy(&text)),
                    None => prop_assert!(flip.is_some() && i == 1, "a plain instant is read: {:?}", String::from_utf8_lossy(&text)),
                }
            }
        }
    }

    proptest! {
        /// Asterisk's wall-clock times: with the date of the one before kept or not, the
        /// same seconds, or the same refusal, whatever the bytes.
        #[test]
        fn cached_wall_times_are_the_uncached_ones(
            secs in EARLY..LATE,
            later in 0i64..200_000,
            flip in proptest::option::of((0usize..19, any::<u8>())),
        ) {
            let mut last = LastDate::default();
            for (i, t) in [secs, secs + later].into_iter().enumerate() {
                let mut text = [0u8; 19];
                format_wall(t, b' ', &mut text);
                if i == 1 && let Some((at, byte)) = flip {
                    text[at] = byte;
                }
                let uncached = parse_wall_seconds(&text);
                prop_assert_eq!(parse_wall_seconds_cached(&text, &mut last), uncached, "{:?}", String::from_utf8_lossy(&text));
                if flip.is_none() {
                    prop_assert_eq!(uncached, Some(t));
                }
            }
        }
    }

    #[test]
    fn the_cached_date_path_checks_what_it_does_not_reread() {
        let mut last = LastDate::default();
        assert_eq!(parse_utc_z_ms(b"2024-02-29T23:59:59Z", &mut last), Some(1_709_251_199_000));
        // Same date: only the time is read, and still checked.
        assert_eq!(parse_utc_z_ms(b"2024-02-29T00:00:00Z", &mut last), Some(1_709_164_800_000));
        for bad in [b"2024-02-29T24:00:00Z", b"2024-02-29T00:60:00Z", b"2024-02-29T0a:00:00Z", b"2024-02-29 00:00:00Z"]
        {
            assert_eq!(parse_utc_z_ms(bad, &mut last), None, "{}", String::from_utf8_lossy(bad));
        }
        // Another date is read and checked afresh.
        assert_eq!(parse_utc_z_ms(b"2023-02-29T00:00:00Z", &mut last), None);
        assert_eq!(parse_utc_z_ms(b"2024-03-01T00:00:00Z", &mut last), Some(1_709_251_200_000));
    }

    const EARLY: i64 = -2_000_000_000;
    const LATE: i64 = 250_000_000_000;

    #[test]
    fn rejects_impossible_dates_and_shapes() {
        for bad in [
            "2022-02-29T00:00:00Z",
            "2022-13-01T00:00:00Z",
            "2022-01-01T24:00:00Z",
            "2022-01-01T00:00:00",
            "2022-01-01T00:00:00.Z",
            "2022-01-01T00:00:00.1234567890Z",
            "2022-1-01T00:00:00Z",
            "x",
        ] {
            assert_eq!(parse_rfc3339_ms(bad), None, "{bad}");
        }
        assert_eq!(parse_rfc3339_ms("2024-02-29T12:00:00+03:00"), Some(1_709_197_200_000));
    }
}
