//! Why a record was rejected: one typed reason for every way a record can be wrong.
//!
//! The reason's code (`Reason::code`) is stable: it is the key of `cdrflow validate`'s
//! `reasons` object, the `cdrflow-reason` header on the dead-letter topic and the `reason`
//! label of the rejects metric.

use std::fmt;

/// Every way a record can be wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// The message is larger than the configured limit (default 64 KiB).
    Oversized,
    /// The bytes are not valid UTF-8.
    NotUtf8,
    /// The bytes are not a well-formed record of the format (JSON syntax, CSV quoting, field count, nesting).
    Malformed,
    /// A required field is absent, null or empty.
    MissingField,
    /// A field has the wrong JSON type (e.g. a string where a number is required).
    WrongType,
    /// A field has a value outside its vocabulary or syntax (disposition, channel, age band, topic, digits).
    InvalidValue,
    /// A timestamp could not be read.
    BadTimestamp,
    /// The region code is not a federal subject in the registry.
    UnknownRegion,
    /// The dialled number is not a line in the line registry.
    UnknownLine,
    /// The call ends before it starts.
    EndBeforeStart,
    /// The answer instant is outside [start, end].
    AnswerOutsideCall,
    /// An instant before 2000-01-01.
    TooOld,
    /// An instant further in the future than the tolerance (default 24 h).
    InFuture,
    /// A negative duration (queue wait, talk time, CSV duration/billsec).
    NegativeDuration,
    /// A duration longer than the maximum call length (default 24 h).
    AbsurdDuration,
    /// Durations that contradict the instants (e.g. talk time longer than answer→end).
    InconsistentDurations,
    /// Disposition contradicts the instants (answered without an answer instant, or the reverse).
    InconsistentDisposition,
    /// A text field is longer than its limit.
    FieldTooLong,
    /// Avro: the writer schema cannot be resolved to the contract's reader schema.
    SchemaMismatch,
    /// Avro: the schema registry does not know the message's writer schema id (given up
    /// after waiting for it).
    UnknownSchema,
}

impl Reason {
    /// Every reason, in a stable order.
    pub const ALL: [Reason; 20] = [
        Reason::Oversized,
        Reason::NotUtf8,
        Reason::Malformed,
        Reason::MissingField,
        Reason::WrongType,
        Reason::InvalidValue,
        Reason::BadTimestamp,
        Reason::UnknownRegion,
        Reason::UnknownLine,
        Reason::EndBeforeStart,
        Reason::AnswerOutsideCall,
        Reason::TooOld,
        Reason::InFuture,
        Reason::NegativeDuration,
        Reason::AbsurdDuration,
        Reason::InconsistentDurations,
        Reason::InconsistentDisposition,
        Reason::FieldTooLong,
        Reason::SchemaMismatch,
        Reason::UnknownSchema,
    ];

    /// The reasons a message of `format` can be rejected for: the text formats never meet
    /// a writer schema; Avro's bytes are typed by the schema, so a wrong type, a timestamp
    /// string or bad UTF-8 surface as `schema_mismatch` or `malformed` instead.
    pub fn possible_in(format: crate::Format) -> Vec<Reason> {
        use Reason::*;
        let avro_only = [SchemaMismatch, UnknownSchema];
        let text_only = [NotUtf8, WrongType, BadTimestamp];
        Reason::ALL
            .into_iter()
            .filter(|r| match format {
                crate::Format::Json | crate::Format::AsteriskCsv => !avro_only.contains(r),
                crate::Format::AvroConfluent => !text_only.contains(r),
            })
            .collect()
    }

    /// The stable snake_case code.
    pub fn code(self) -> &'static str {
        match self {
            Reason::Oversized => "oversized",
            Reason::NotUtf8 => "not_utf8",
            Reason::Malformed => "malformed",
            Reason::MissingField => "missing_field",
            Reason::WrongType => "wrong_type",
            Reason::InvalidValue => "invalid_value",
            Reason::BadTimestamp => "bad_timestamp",
            Reason::UnknownRegion => "unknown_region",
            Reason::UnknownLine => "unknown_line",
            Reason::EndBeforeStart => "end_before_start",
            Reason::AnswerOutsideCall => "answer_outside_call",
            Reason::TooOld => "too_old",
            Reason::InFuture => "in_future",
            Reason::NegativeDuration => "negative_duration",
            Reason::AbsurdDuration => "absurd_duration",
            Reason::InconsistentDurations => "inconsistent_durations",
            Reason::InconsistentDisposition => "inconsistent_disposition",
            Reason::FieldTooLong => "field_too_long",
            Reason::SchemaMismatch => "schema_mismatch",
            Reason::UnknownSchema => "unknown_schema",
        }
    }

    /// The reason with this code.
    pub fn from_code(code: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.code() == code)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A rejected record: the reason, the field concerned (if any) and a human detail.
///
/// The detail never contains the raw caller number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// What is wrong.
    pub reason: Reason,
    /// Which wire field, if the problem is in one.
    pub field: Option<&'static str>,
    /// A short human explanation.
    pub detail: String,
}

/// The most bytes of a rejection's detail: one that quotes a hostile value (an Avro value of
/// the wrong type, a decoder's message) is cut there, so that it stays a short line in a log
/// and a small header of a dead letter.
pub const MAX_DETAIL: usize = 512;

impl Rejection {
    pub(crate) fn new(reason: Reason, field: Option<&'static str>, detail: impl Into<String>) -> Self {
        let mut detail = detail.into();
        if detail.len() > MAX_DETAIL {
            let size = detail.len();
            let mut cut = MAX_DETAIL;
            while !detail.is_char_boundary(cut) {
                cut -= 1;
            }
            detail.truncate(cut);
            detail.push_str(&format!("… ({size} bytes in all)"));
        }
        Rejection { reason, field, detail }
    }
    pub(crate) fn field(reason: Reason, field: &'static str, detail: impl Into<String>) -> Self {
        Self::new(reason, Some(field), detail)
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.field {
            Some(field) => write!(f, "{} ({}): {}", self.reason, field, self.detail),
            None => write!(f, "{}: {}", self.reason, self.detail),
        }
    }
}

impl std::error::Error for Rejection {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_detail_is_cut_on_a_character_boundary_and_says_how_long_it_was() {
        // Two-byte characters, so that the cut falls inside one.
        let long = format!("expected a string, found {}", "й".repeat(100_000));
        let r = Rejection::new(Reason::WrongType, Some("call_id"), long.clone());
        assert!(r.detail.len() <= MAX_DETAIL + 40, "{} bytes", r.detail.len());
        assert!(long.starts_with(r.detail.split('…').next().unwrap()));
        assert!(r.detail.ends_with(&format!("… ({} bytes in all)", long.len())), "{}", r.detail);
        let short = Rejection::new(Reason::WrongType, None, "expected a string, found an int");
        assert_eq!(short.detail, "expected a string, found an int", "a short detail is kept whole");
    }
}
