//! The hot-path benches' inputs, shared by the criterion benches (`benches/hot_path.rs`) and
//! the instruction counts (`examples/steps.rs`), so both measure the same records.

use cdrflow_aggregate::rollup::CountedCalls;
use cdrflow_archive::encode::ArchivedCdr;
use cdrflow_feed::{AvroWriter, FeedOptions, Generator, Message};
use cdrflow_schemas::avro;
use cdrflow_schemas::{Cdr, Decoder, Format, LineRegistry, Pseudonymiser};

/// Records per input.
pub const N: usize = 20_000;

/// The Avro feed's writer schema: the contract's, as registry id 1.
pub fn avro_writer() -> AvroWriter {
    AvroWriter { id: 1, schema: avro::Schema::parse_str(avro::CDR_V1_AVSC).expect("the contract's schema parses") }
}

/// [`N`] messages of the synthetic national feed in `format` (seed 3, none bad).
pub fn feed(format: Format) -> Vec<Vec<u8>> {
    let opts = FeedOptions {
        cdrs: N as u64,
        seed: 3,
        format,
        bad_share: 0.0,
        avro: Some(avro_writer()),
        ..FeedOptions::default()
    };
    let mut g = Generator::new(opts);
    let mut out = Vec::with_capacity(N);
    while g
        .emit_next(&mut |m: Message<'_>| {
            out.push(m.payload.to_vec());
            Ok(())
        })
        .expect("the generator writes to memory")
    {}
    out
}

/// The ingest worker's decoder: the built-in lines, a fixed caller key, the Avro writer
/// schema known.
pub fn decoder() -> Decoder {
    let d = Decoder::new(
        LineRegistry::builtin(),
        Pseudonymiser::new(b"bench key, 32 bytes long........").expect("a 32-byte key"),
    );
    d.avro.insert(avro::WriterSchema::parse(1, avro::CDR_V1_AVSC));
    d
}

/// The JSON feed's records, decoded.
pub fn cdrs() -> Vec<Cdr> {
    let d = decoder();
    feed(Format::Json).iter().filter_map(|m| d.decode_json(m).ok()).collect()
}

/// The same records as an ingest worker archives them: partition 0, offsets in order.
pub fn archived() -> Vec<ArchivedCdr> {
    cdrs().into_iter().enumerate().map(|(i, cdr)| ArchivedCdr { partition: 0, offset: i as i64, cdr }).collect()
}

/// The aggregator's re-send window (48 hours) as a long-running aggregator holds it when
/// `cdrs` arrive: full of the calls of the 48 hours before them, counted at the same hourly
/// rate as `cdrs`. Rolling `cdrs` up then evicts those hours one by one as their own hours
/// begin, as an aggregator does every hour. (A window that starts empty evicts nothing and
/// grows its map as it goes: `rollup/update_empty_window` measures that, an aggregator's
/// first hours.)
pub fn window_in_steady_state(cdrs: &[Cdr]) -> CountedCalls {
    let mut window = CountedCalls::new(48);
    let (Some(first), Some(last)) = (cdrs.iter().map(Cdr::utc_hour).min(), cdrs.iter().map(Cdr::utc_hour).max()) else {
        return window;
    };
    let per_hour = cdrs.len() as u64 / ((last - first) / 3600 + 1) as u64;
    let mut key = u64::MAX;
    for hours_before in (1..=48).rev() {
        for _ in 0..per_hour {
            // Keys no call of `cdrs` has (a call key is XXH3 of its id).
            window.first_time(key, first - hours_before * 3600);
            key -= 1;
        }
    }
    window
}
