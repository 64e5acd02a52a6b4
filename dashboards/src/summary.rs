//! The national summary in plain text, as `cdrflow demo` prints it: the national totals and
//! service figures, the leading topics and the top regions, from the rows of the named
//! dashboard queries `region_quality` and `topic_shares`.

use std::io::{self, Write};

use cdrflow_schemas::Counters;
use serde_json::Value;

/// What the summary shows.
pub struct NationalSummary<'a> {
    /// The national totals (every stored counter merged).
    pub national: &'a Counters,
    /// Rows of `region_quality`, largest first.
    pub regions: &'a [Value],
    /// Rows of `topic_shares`, largest first.
    pub topics: &'a [Value],
    /// Seconds the run took end to end.
    pub seconds: f64,
}

/// A number from a ClickHouse JSON row (numbers may come quoted).
fn num(v: &Value) -> f64 {
    v.as_f64().or_else(|| v.as_str().and_then(|s| s.parse().ok())).unwrap_or(0.0)
}

impl NationalSummary<'_> {
    /// Writes the summary and a table of the top 15 regions.
    pub fn write(&self, out: &mut impl Write) -> io::Result<()> {
        let n = self.national;
        writeln!(
            out,
            "\nNational summary ({} CDRs from {} regions, {:.1} s end to end)",
            n.offered,
            self.regions.len(),
            self.seconds
        )?;
        writeln!(
            out,
            "  offered {:>9}   answered {:>9}   abandoned {:>7}   short abandons {:>6}   out of hours {:>6}",
            n.offered, n.answered, n.abandoned, n.short_abandoned, n.out_of_hours
        )?;
        writeln!(
            out,
            "  service level (ICMI) {:.1} %   ASA {:.1} s   abandon rate {:.1} %   transfers {}",
            100.0 * n.service_level().unwrap_or(0.0),
            n.asa_s().unwrap_or(0.0),
            100.0 * n.abandoned as f64 / n.offered.max(1) as f64,
            n.transferred_out
        )?;
        let top_topics: Vec<String> = self
            .topics
            .iter()
            .take(5)
            .map(|t| format!("{} {:.0} %", t["topic"].as_str().unwrap_or("?"), 100.0 * num(&t["share"])))
            .collect();
        writeln!(out, "  topics: {}", top_topics.join(", "))?;
        writeln!(out, "\nTop regions by offered calls")?;
        writeln!(
            out,
            "  {:<4} {:<34} {:>9} {:>9} {:>9} {:>8} {:>7}",
            "code", "region", "offered", "answered", "abandon%", "SL %", "ASA s"
        )?;
        for r in self.regions.iter().take(15) {
            writeln!(
                out,
                "  {:<4} {:<34} {:>9} {:>9} {:>9.1} {:>8.1} {:>7.1}",
                r["region"].as_u64().unwrap_or(0),
                r["name_en"].as_str().unwrap_or("?"),
                num(&r["offered_calls"]),
                num(&r["answered_calls"]),
                100.0 * num(&r["abandon_rate"]),
                100.0 * num(&r["service_level"]),
                num(&r["asa_s"])
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_the_totals_the_topics_and_the_regions_in_order() {
        let national =
            Counters { offered: 1200, answered: 1000, abandoned: 150, transferred_out: 7, ..Default::default() };
        let regions = [
            serde_json::json!({"region": 77, "name_en": "Moscow", "offered_calls": "700", "answered_calls": 600,
                "abandon_rate": 0.1, "service_level": "0.8", "asa_s": 12.5}),
            serde_json::json!({"region": 38, "name_en": "Irkutsk Oblast", "offered_calls": 500, "answered_calls": 400,
                "abandon_rate": 0.15, "service_level": 0.7, "asa_s": 20}),
        ];
        let topics = [serde_json::json!({"topic": "pensions", "share": 0.25})];
        let mut out = Vec::new();
        NationalSummary { national: &national, regions: &regions, topics: &topics, seconds: 3.25 }
            .write(&mut out)
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("National summary (1200 CDRs from 2 regions, 3.2 s end to end)"), "{text}");
        assert!(text.contains("abandon rate 12.5 %   transfers 7"), "{text}");
        assert!(text.contains("topics: pensions 25 %"), "{text}");
        let moscow = text.find("Moscow").unwrap();
        assert!(moscow < text.find("Irkutsk").unwrap(), "{text}");
        assert!(
            text.contains("  77   Moscow                                   700       600      10.0     80.0    12.5"),
            "{text}"
        );
    }
}
