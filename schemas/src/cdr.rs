//! The CDR (v1): one call leg as the feed reports it, after validation and pseudonymisation.

use compact_str::CompactString;

use crate::line::LineIdx;
use crate::pseudonym::CallerHash;
use crate::region::RegionCode;

/// Version of the CDR contract; written into every Parquet file's key-value metadata.
pub const SCHEMA_VERSION: u32 = 1;

/// How the call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Disposition {
    /// An operator answered.
    Answered,
    /// Rang out unanswered (outside a queue, or a recorder took it).
    NoAnswer,
    /// The line was busy.
    Busy,
    /// Technical failure.
    Failed,
    /// Network congestion.
    Congestion,
    /// The caller hung up while waiting in the queue.
    Abandoned,
}

impl Disposition {
    /// Every disposition, in wire-code order.
    pub const ALL: [Disposition; 6] = [
        Disposition::Answered,
        Disposition::NoAnswer,
        Disposition::Busy,
        Disposition::Failed,
        Disposition::Congestion,
        Disposition::Abandoned,
    ];
    /// The JSON wire value.
    pub fn code(self) -> &'static str {
        match self {
            Disposition::Answered => "answered",
            Disposition::NoAnswer => "no_answer",
            Disposition::Busy => "busy",
            Disposition::Failed => "failed",
            Disposition::Congestion => "congestion",
            Disposition::Abandoned => "abandoned",
        }
    }
    /// Parses the JSON wire value.
    pub fn from_code(s: &str) -> Option<Disposition> {
        Self::ALL.into_iter().find(|d| d.code() == s)
    }
}

/// How the citizen reached the centre.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Channel {
    /// A phone call (the default).
    Voice,
    /// A text message.
    Sms,
    /// A social-network message.
    Social,
    /// The citizens' portal.
    Portal,
}

impl Channel {
    /// Every channel.
    pub const ALL: [Channel; 4] = [Channel::Voice, Channel::Sms, Channel::Social, Channel::Portal];
    /// The wire value.
    pub fn code(self) -> &'static str {
        match self {
            Channel::Voice => "voice",
            Channel::Sms => "sms",
            Channel::Social => "social",
            Channel::Portal => "portal",
        }
    }
    /// Parses the wire value.
    pub fn from_code(s: &str) -> Option<Channel> {
        Self::ALL.into_iter().find(|d| d.code() == s)
    }
}

/// The caller's age band, as the operator recorded it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AgeBand {
    /// Under 20.
    Under20,
    /// 20–30.
    From20To30,
    /// 30–40.
    From30To40,
    /// 40–60.
    From40To60,
    /// 60 and over.
    Over60,
}

impl AgeBand {
    /// Every band, youngest first.
    pub const ALL: [AgeBand; 5] =
        [AgeBand::Under20, AgeBand::From20To30, AgeBand::From30To40, AgeBand::From40To60, AgeBand::Over60];
    /// The wire value.
    pub fn code(self) -> &'static str {
        match self {
            AgeBand::Under20 => "under_20",
            AgeBand::From20To30 => "20_30",
            AgeBand::From30To40 => "30_40",
            AgeBand::From40To60 => "40_60",
            AgeBand::Over60 => "60_plus",
        }
    }
    /// Parses the wire value.
    pub fn from_code(s: &str) -> Option<AgeBand> {
        Self::ALL.into_iter().find(|d| d.code() == s)
    }
}

/// A validated call leg. Instants are UTC milliseconds since the Unix epoch.
///
/// There is no field for the raw caller number: decoders hash it on the way in.
/// Text fields are [`CompactString`]s: up to 24 bytes live inline, so a typical record
/// costs no heap allocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cdr {
    /// Unique within the feed; the same id twice is a re-send or a correction.
    pub call_id: CompactString,
    /// Joins the legs of one contact (transfers); `None` for a single-leg call.
    pub linked_id: Option<CompactString>,
    /// The federal subject whose centre took the call.
    pub region: RegionCode,
    /// The line the dialled number reaches.
    pub line: LineIdx,
    /// The dialled number, normalised (digits only).
    pub dialled: CompactString,
    /// Keyed hash of the normalised caller number; `None` if the number was withheld.
    pub caller: Option<CallerHash>,
    /// When the call reached the centre.
    pub start_ms: i64,
    /// When an operator answered, if one did.
    pub answer_ms: Option<i64>,
    /// When the call ended.
    pub end_ms: i64,
    /// Time spent waiting in the queue (ms): until answer, or until hang-up if abandoned.
    pub queue_wait_ms: u32,
    /// Time talking to an operator (ms).
    pub talk_ms: u32,
    /// How the call ended.
    pub disposition: Disposition,
    /// Where the call was transferred: a line id or a number; `None` if not transferred.
    pub transfer_to: Option<CompactString>,
    /// Topic slug as the operator classified it (`covid`, `mobilisation`, `housing`, …).
    pub topic: Option<CompactString>,
    /// Caller's age band, if recorded.
    pub age_band: Option<AgeBand>,
    /// How the citizen reached the centre.
    pub channel: Channel,
    /// Operator id, if known.
    pub operator_id: Option<CompactString>,
    /// Queue id, if known.
    pub queue_id: Option<CompactString>,
}

impl Cdr {
    /// Start of the UTC hour the call started in, in seconds since the epoch.
    #[inline]
    pub fn utc_hour(&self) -> i64 {
        self.start_ms.div_euclid(3_600_000) * 3600
    }
}
