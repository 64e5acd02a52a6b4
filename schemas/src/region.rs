//! The region registry: every federal subject with its code, names and IANA time zone.
//!
//! The data lives in `schemas/data/regions.csv` and is compiled into the binary; a region
//! code on the wire is the two-digit subject code used by the tax service and by the
//! hotline operators' reports (77 Moscow, 38 Irkutsk Oblast, …).

use std::sync::LazyLock;

use jiff::tz::TimeZone;

/// A federal subject's code, e.g. `RegionCode(38)` for Irkutsk Oblast.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegionCode(pub u8);

impl std::fmt::Display for RegionCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:02}", self.0)
    }
}

/// One federal subject.
#[derive(Debug, Clone)]
pub struct Region {
    /// Subject code (01–95).
    pub code: RegionCode,
    /// Official Russian name.
    pub name_ru: &'static str,
    /// English name.
    pub name_en: &'static str,
    /// IANA time zone of the regional centre; local hours and days are derived with it.
    pub time_zone: TimeZone,
    /// IANA name of `time_zone`.
    pub time_zone_name: &'static str,
    /// Rounded census population in thousands; only the synthetic feed uses it.
    pub population_thousands: u32,
    /// From this UTC second on, `time_zone`'s offset never changes again (its last
    /// transition; Russia's zones have had none since 2011–2020), and is `settled_offset`.
    settled_from: i64,
    /// `time_zone`'s offset in seconds from `settled_from` on.
    settled_offset: i32,
}

impl Region {
    /// The zone's offset from UTC in seconds at a UTC second: a comparison for any instant
    /// after the zone's last transition, `time_zone`'s table only for older ones.
    #[inline]
    pub fn offset_seconds(&self, utc_second: i64) -> i32 {
        if utc_second >= self.settled_from {
            return self.settled_offset;
        }
        match jiff::Timestamp::from_second(utc_second) {
            Ok(t) => self.time_zone.to_offset(t).seconds(),
            Err(_) => self.settled_offset,
        }
    }

    /// UTC milliseconds of a local wall-clock second (seconds since 1970-01-01 of the local
    /// date and time): a subtraction where the zone's offset is long settled; within two
    /// days of its last transition or before it, `time_zone`'s rules, a wall time in a gap
    /// or a fold taking the earlier offset (jiff's `compatible`).
    #[inline]
    pub fn utc_ms_of_local(&self, local_second: i64) -> i64 {
        if local_second >= self.settled_from.saturating_add(2 * 86_400) {
            return (local_second - i64::from(self.settled_offset)) * 1000;
        }
        // Offsets are whole minutes and Russia has no DST; jiff still resolves any zone.
        let ts = jiff::Timestamp::from_second(local_second).expect("date within jiff's range");
        let wall = ts.to_zoned(TimeZone::UTC).datetime();
        match self.time_zone.to_ambiguous_timestamp(wall).compatible() {
            Ok(t) => t.as_millisecond(),
            Err(_) => local_second * 1000,
        }
    }
}

/// A zone's last transition and the offset after it (the offset at any instant for a zone
/// without transitions; never, for a zone with rules to the end of time).
fn settled(zone: &TimeZone) -> (i64, i32) {
    match zone.preceding(jiff::Timestamp::MAX).next() {
        Some(last) => (last.timestamp().as_second(), last.offset().seconds()),
        None => (i64::MIN, zone.to_offset(jiff::Timestamp::UNIX_EPOCH).seconds()),
    }
}

/// All regions, indexed by code for O(1) look-up.
#[derive(Debug)]
pub struct Regions {
    all: Vec<Region>,
    by_code: [Option<u8>; 256],
}

static REGIONS: LazyLock<Regions> =
    LazyLock::new(|| Regions::parse(include_str!("../data/regions.csv")).expect("built-in regions.csv is valid"));

impl Regions {
    /// The built-in registry.
    pub fn get() -> &'static Regions {
        &REGIONS
    }

    fn parse(text: &'static str) -> Result<Regions, String> {
        let mut all = Vec::new();
        let mut by_code = [None; 256];
        for (n, line) in text.lines().enumerate() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let f: Vec<&'static str> = line.split(',').collect();
            let [code, name_ru, name_en, tz, pop] = f[..] else {
                return Err(format!("regions.csv line {}: expected 5 fields", n + 1));
            };
            let code: u8 = code.parse().map_err(|e| format!("line {}: {e}", n + 1))?;
            let time_zone = TimeZone::get(tz).map_err(|e| format!("line {}: {tz}: {e}", n + 1))?;
            if by_code[code as usize].is_some() {
                return Err(format!("regions.csv: duplicate code {code}"));
            }
            by_code[code as usize] = Some(all.len() as u8);
            let (settled_from, settled_offset) = settled(&time_zone);
            all.push(Region {
                settled_from,
                settled_offset,
                code: RegionCode(code),
                name_ru,
                name_en,
                time_zone,
                time_zone_name: tz,
                population_thousands: pop.parse().map_err(|e| format!("line {}: {e}", n + 1))?,
            });
        }
        Ok(Regions { all, by_code })
    }

    /// The region with this code, if it exists.
    #[inline]
    pub fn by_code(&self, code: u8) -> Option<&Region> {
        self.by_code[code as usize].map(|i| &self.all[i as usize])
    }

    /// All regions in code order.
    pub fn all(&self) -> &[Region] {
        &self.all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_has_every_subject_with_a_zone() {
        let r = Regions::get();
        assert_eq!(r.all().len(), 89);
        let irkutsk = r.by_code(38).unwrap();
        assert_eq!(irkutsk.name_en, "Irkutsk Oblast");
        // Irkutsk is five hours ahead of Moscow.
        let t = jiff::Timestamp::from_second(1_700_000_000).unwrap();
        let irk = irkutsk.time_zone.to_offset(t).seconds();
        let msk = r.by_code(77).unwrap().time_zone.to_offset(t).seconds();
        assert_eq!(irk - msk, 5 * 3600);
        assert!(r.by_code(84).is_none());
        assert!(r.by_code(0).is_none());
        // Russia spans eleven time zones, UTC+2 to UTC+12.
        let mut offsets: Vec<i32> = r.all().iter().map(|x| x.time_zone.to_offset(t).seconds() / 3600).collect();
        offsets.sort();
        offsets.dedup();
        assert_eq!(offsets, (2..=12).collect::<Vec<_>>());
    }

    #[test]
    fn the_settled_offset_is_the_zone_s_own_at_every_instant() {
        // Every region, every 7 h 13 min from 1995 to 2040: the offset, and local → UTC as
        // the CSV decoder resolves it (jiff's `compatible`), settled or not.
        for region in Regions::get().all() {
            let zone = &region.time_zone;
            assert!(region.settled_from < 1_700_000_000, "{}: settled by 2023", region.name_en);
            let mut settled = 0;
            for utc in (788_918_400..2_208_988_800i64).step_by(26_000) {
                let t = jiff::Timestamp::from_second(utc).unwrap();
                assert_eq!(region.offset_seconds(utc), zone.to_offset(t).seconds(), "{} at {t}", region.name_en);
                let local = t.to_zoned(TimeZone::UTC).datetime();
                let wall = local.to_zoned(TimeZone::UTC).unwrap().timestamp().as_second();
                let jiff = zone.to_ambiguous_timestamp(local).compatible().unwrap().as_millisecond();
                assert_eq!(region.utc_ms_of_local(wall), jiff, "{} at local {local}", region.name_en);
                settled += usize::from(wall >= region.settled_from + 2 * 86_400);
            }
            assert!(settled > 1000, "{}: the subtraction answers for recent years", region.name_en);
        }
    }
}
