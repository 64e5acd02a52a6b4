//! The line registry: dialled number → hotline, with per-line thresholds and working hours.
//!
//! The built-in registry is `schemas/data/lines.toml`; an operator's own file has the same
//! format (`LineRegistry::from_toml_file`). Each field is documented in that file.

use rustc_hash::FxHashMap;
use std::path::Path;
use std::sync::{Arc, LazyLock};

use serde::Deserialize;

/// Index of a line in the registry it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LineIdx(pub u16);

/// Opening hours in local time, per weekday (Monday = 0), as minutes of the day `[open, close)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    days: [Option<(u16, u16)>; 7],
    /// Open all day every day (computed once: the rollup asks for every call).
    always_open: bool,
}

impl Schedule {
    /// Always open.
    pub const ALWAYS: Schedule = Schedule { days: [Some((0, 24 * 60)); 7], always_open: true };

    /// Parses `"24/7"` or `"mon-fri 08:00-20:00; sat 08:00-13:00"`.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let text = text.trim();
        if text == "24/7" {
            return Ok(Schedule::ALWAYS);
        }
        let mut days = [None; 7];
        for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (dayspec, hours) = part
                .split_once(' ')
                .ok_or_else(|| format!("`{part}`: expected `DAYS HH:MM-HH:MM`, e.g. `mon-fri 08:00-20:00`"))?;
            let (a, b) = match dayspec.split_once('-') {
                Some((a, b)) => (weekday(a)?, weekday(b)?),
                None => (weekday(dayspec)?, weekday(dayspec)?),
            };
            if a > b {
                return Err(format!("`{dayspec}`: day range runs backwards"));
            }
            let (open, close) =
                hours.trim().split_once('-').ok_or_else(|| format!("`{hours}`: expected HH:MM-HH:MM"))?;
            let (open, close) = (minute(open)?, minute(close)?);
            if open >= close {
                return Err(format!("`{hours}`: opening must be before closing"));
            }
            days[a..=b].fill(Some((open, close)));
        }
        Ok(Schedule { days, always_open: days == Schedule::ALWAYS.days })
    }

    /// Whether the line is open at this local weekday (Monday = 0) and minute of the day.
    #[inline]
    pub fn is_open(&self, weekday_from_monday: usize, minute_of_day: u16) -> bool {
        matches!(self.days[weekday_from_monday], Some((o, c)) if minute_of_day >= o && minute_of_day < c)
    }

    /// Whether the line never closes.
    #[inline]
    pub fn is_always_open(&self) -> bool {
        self.always_open
    }
}

fn weekday(s: &str) -> Result<usize, String> {
    const NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    NAMES
        .iter()
        .position(|n| n.eq_ignore_ascii_case(s.trim()))
        .ok_or_else(|| format!("`{s}`: expected a weekday mon..sun"))
}

fn minute(s: &str) -> Result<u16, String> {
    let (h, m) = s.trim().split_once(':').ok_or_else(|| format!("`{s}`: expected HH:MM"))?;
    let (h, m): (u16, u16) =
        (h.parse().map_err(|_| format!("`{s}`: bad hour"))?, m.parse().map_err(|_| format!("`{s}`: bad minute"))?);
    if h > 24 || m > 59 || (h == 24 && m != 0) {
        return Err(format!("`{s}`: not a time of day"));
    }
    Ok(h * 60 + m)
}

/// One hotline.
#[derive(Clone, Debug)]
pub struct Line {
    /// Short stable id, e.g. `"122"`, `"social"`: the `line` column everywhere.
    pub id: String,
    /// Human name.
    pub name: String,
    /// Normalised dialled numbers that reach this line.
    pub numbers: Vec<String>,
    /// Answered within this queue wait (seconds) counts as within service level.
    pub service_level_s: u32,
    /// The service level the line aims at, e.g. 0.8 (for dashboards).
    pub service_level_target: f64,
    /// An abandon before this queue wait (seconds) is a short abandon.
    pub short_abandon_s: u32,
    /// Local opening hours.
    pub hours: Schedule,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LinesFile {
    line: Vec<LineEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LineEntry {
    id: String,
    name: String,
    numbers: Vec<String>,
    service_level_s: u32,
    service_level_target: f64,
    short_abandon_s: u32,
    hours: String,
}

/// All lines, with a number → line index.
#[derive(Debug)]
pub struct LineRegistry {
    lines: Vec<Line>,
    by_number: FxHashMap<String, LineIdx>,
}

static DEFAULT_LINES: LazyLock<Arc<LineRegistry>> = LazyLock::new(|| {
    Arc::new(LineRegistry::from_toml(include_str!("../data/lines.toml")).expect("built-in lines.toml is valid"))
});

impl LineRegistry {
    /// The built-in registry (`schemas/data/lines.toml`).
    pub fn builtin() -> Arc<LineRegistry> {
        DEFAULT_LINES.clone()
    }

    /// Reads an operator's registry file.
    pub fn from_toml_file(path: &Path) -> Result<LineRegistry, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read line registry {}: {e}", path.display()))?;
        LineRegistry::from_toml(&text).map_err(|e| format!("line registry {}: {e}", path.display()))
    }

    /// Parses a registry from TOML text.
    pub fn from_toml(text: &str) -> Result<LineRegistry, String> {
        let file: LinesFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut lines = Vec::new();
        let mut by_number = FxHashMap::default();
        for e in file.line {
            if e.id.is_empty() || e.id.len() > 32 {
                return Err(format!("line id `{}` must be 1–32 characters", e.id));
            }
            if lines.iter().any(|l: &Line| l.id == e.id) {
                return Err(format!("line id `{}` appears twice", e.id));
            }
            if !(0.0..=1.0).contains(&e.service_level_target) {
                return Err(format!("line {}: service_level_target must be within 0..1", e.id));
            }
            if e.short_abandon_s > e.service_level_s {
                return Err(format!("line {}: short_abandon_s must not exceed service_level_s", e.id));
            }
            let hours = Schedule::parse(&e.hours).map_err(|m| format!("line {}: hours {m}", e.id))?;
            let idx = LineIdx(lines.len() as u16);
            let mut numbers = Vec::new();
            for n in &e.numbers {
                let norm = normalise_number(n).ok_or_else(|| format!("line {}: `{n}` is not a phone number", e.id))?;
                if let Some(prev) = by_number.insert(norm.to_string(), idx) {
                    return Err(format!(
                        "number {n} belongs to two lines ({} and {})",
                        lines[prev.0 as usize].id, e.id
                    ));
                }
                numbers.push(norm.to_string());
            }
            lines.push(Line {
                id: e.id,
                name: e.name,
                numbers,
                service_level_s: e.service_level_s,
                service_level_target: e.service_level_target,
                short_abandon_s: e.short_abandon_s,
                hours,
            });
        }
        if lines.is_empty() {
            return Err("the registry has no [[line]]".into());
        }
        Ok(LineRegistry { lines, by_number })
    }

    /// The line a dialled number reaches.
    pub fn by_number(&self, dialled: &str) -> Option<LineIdx> {
        let mut buf = [0u8; 20];
        let n = normalise_into(dialled, &mut buf)?;
        self.by_number.get(std::str::from_utf8(&buf[..n]).ok()?).copied()
    }

    /// The line a number already in [`normalise_number`]'s form reaches.
    #[inline]
    pub fn by_normalised_number(&self, normalised: &str) -> Option<LineIdx> {
        self.by_number.get(normalised).copied()
    }

    /// The line with this index.
    #[inline]
    pub fn line(&self, idx: LineIdx) -> &Line {
        &self.lines[idx.0 as usize]
    }

    /// The line with this id.
    pub fn by_id(&self, id: &str) -> Option<LineIdx> {
        self.lines.iter().position(|l| l.id == id).map(|i| LineIdx(i as u16))
    }

    /// All lines.
    pub fn lines(&self) -> &[Line] {
        &self.lines
    }
}

/// Normalises a phone number: digits only (spaces, dashes, brackets and a leading `+`
/// dropped), and an 11-digit Russian number starting with 7 written with the trunk prefix 8.
/// Returns `None` if anything else is in it, or it has no digits or more than 20.
pub fn normalise_number(s: &str) -> Option<compact_str::CompactString> {
    let mut buf = [0u8; 20];
    let n = normalise_into(s, &mut buf)?;
    // normalise_into writes ASCII digits only.
    std::str::from_utf8(&buf[..n]).ok().map(compact_str::CompactString::from)
}

/// [`normalise_number`] into `buf`, without making a string: the number of digits written.
pub(crate) fn normalise_into(s: &str, buf: &mut [u8; 20]) -> Option<usize> {
    let mut n = 0;
    for (i, b) in s.bytes().enumerate() {
        match b {
            b'0'..=b'9' => {
                if n == buf.len() {
                    return None;
                }
                buf[n] = b;
                n += 1;
            }
            b' ' | b'-' | b'(' | b')' => {}
            b'+' if i == 0 => {}
            _ => return None,
        }
    }
    if n == 0 {
        return None;
    }
    if n == 11 && buf[0] == b'7' {
        buf[0] = b'8';
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_reach_their_lines() {
        let r = LineRegistry::builtin();
        let l = |n| r.by_number(n).map(|i| r.line(i).id.as_str());
        assert_eq!(l("122"), Some("122"));
        assert_eq!(l("112"), Some("112"));
        assert_eq!(l("8-800-222-71-52"), Some("social"));
        assert_eq!(l("+7 800 222 71 52"), Some("social"));
        assert_eq!(l("78002227152"), Some("social"));
        assert_eq!(l("555"), None);
        assert_eq!(l("12a"), None);
        assert_eq!(l(""), None);
    }

    #[test]
    fn schedules_parse_and_answer() {
        let s = Schedule::parse("mon-fri 08:00-20:00; sat 08:00-13:00").unwrap();
        assert!(s.is_open(0, 8 * 60));
        assert!(!s.is_open(0, 20 * 60));
        assert!(!s.is_open(0, 7 * 60 + 59));
        assert!(s.is_open(5, 12 * 60 + 59));
        assert!(!s.is_open(5, 13 * 60));
        assert!(!s.is_open(6, 12 * 60));
        assert!(Schedule::parse("24/7").unwrap().is_always_open());
        assert!(Schedule::parse("fri-mon 08:00-20:00").is_err());
        assert!(Schedule::parse("mon 20:00-08:00").is_err());
        assert!(Schedule::parse("mon 25:00-26:00").is_err());
        assert!(Schedule::parse("someday 08:00-09:00").is_err());
    }

    #[test]
    fn registry_rejects_bad_files_with_reasons() {
        let bad = r#"[[line]]
id = "a"
name = "A"
numbers = ["122"]
service_level_s = 5
service_level_target = 0.8
short_abandon_s = 10
hours = "24/7""#;
        let e = LineRegistry::from_toml(bad).unwrap_err();
        assert!(e.contains("short_abandon_s"), "{e}");
        let dup = format!("{bad}\n{bad}").replace("short_abandon_s = 10", "short_abandon_s = 1");
        assert!(LineRegistry::from_toml(&dup).unwrap_err().contains("twice"));
    }
}
