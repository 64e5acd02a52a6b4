-- cdrflow migration 001: the counters.
--
-- Every statement runs on Debian's ClickHouse 18.16 (tests) and on ClickHouse 24-26
-- (checked through chdb in CI). Statements are separated by a line ending in ';'.

CREATE DATABASE IF NOT EXISTS cdrflow;

-- The aggregator's log of flushes: one row per (Kafka partition, region, line, UTC hour)
-- per flush, carrying the offset range [first_offset, last_offset] of that partition the
-- flush covers. Each flush is ONE insert of ONE block holding every partition's unit, and
-- the partition key (month of flushed_at) is constant within it, so it becomes exactly one
-- part: ClickHouse writes a part to a temporary directory and renames it into place when
-- complete, so an interrupted insert leaves nothing, and a finished one leaves the data
-- and its offsets together. On start-up an aggregator reads max(last_offset) per
-- partition back from here and continues after it. A partition's unit that held only
-- rejected records writes one checkpoint row with region 0 and zero counters, so its
-- offsets still advance.
CREATE TABLE IF NOT EXISTS cdrflow.counters_log
(
    consumer_group String,
    topic String,
    kafka_partition UInt16,
    first_offset UInt64,
    last_offset UInt64,
    flushed_at DateTime,
    region UInt8,
    line String,
    hour DateTime,
    local_hour DateTime,
    offered UInt64,
    answered UInt64,
    abandoned UInt64,
    short_abandoned UInt64,
    unanswered UInt64,
    answered_within_sl UInt64,
    abandoned_after_sl UInt64,
    wait_sum_ms UInt64,
    wait_max_ms UInt64,
    talk_sum_ms UInt64,
    transferred_out UInt64,
    out_of_hours UInt64,
    topic_names Array(String),
    topic_calls Array(UInt64),
    age_band_names Array(String),
    age_band_calls Array(UInt64),
    channel_names Array(String),
    channel_calls Array(UInt64)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(flushed_at)
ORDER BY (consumer_group, topic, kafka_partition, last_offset, region, line, hour);

-- The regions, for names and zones in dashboards (filled from the registry by `cdrflow migrate`).
CREATE TABLE IF NOT EXISTS cdrflow.regions
(
    region UInt8,
    name_ru String,
    name_en String,
    time_zone String
)
ENGINE = MergeTree
ORDER BY region;

-- What dashboards read: the counters per (region, line, UTC hour). `local_hour` is the
-- region's wall-clock hour (UTC hour + the region's offset then), stored as a DateTime
-- whose UTC rendering is the local time; `toDate(local_hour)` is the local day.
CREATE VIEW IF NOT EXISTS cdrflow.hourly AS
SELECT
    region,
    line,
    hour,
    local_hour,
    sum(offered) AS offered,
    sum(answered) AS answered,
    sum(abandoned) AS abandoned,
    sum(short_abandoned) AS short_abandoned,
    sum(unanswered) AS unanswered,
    sum(answered_within_sl) AS answered_within_sl,
    sum(abandoned_after_sl) AS abandoned_after_sl,
    sum(wait_sum_ms) AS wait_sum_ms,
    max(wait_max_ms) AS wait_max_ms,
    sum(talk_sum_ms) AS talk_sum_ms,
    sum(transferred_out) AS transferred_out,
    sum(out_of_hours) AS out_of_hours
FROM cdrflow.counters_log
WHERE region != 0
GROUP BY region, line, hour, local_hour;

-- Offered calls by topic per (region, line, hour).
CREATE VIEW IF NOT EXISTS cdrflow.hourly_topics AS
SELECT region, line, hour, local_hour, topic_name AS topic, sum(topic_count) AS calls
FROM cdrflow.counters_log
ARRAY JOIN topic_names AS topic_name, topic_calls AS topic_count
WHERE region != 0
GROUP BY region, line, hour, local_hour, topic;

-- Offered calls by age band per (region, line, hour).
CREATE VIEW IF NOT EXISTS cdrflow.hourly_age_bands AS
SELECT region, line, hour, local_hour, age_band_name AS age_band, sum(age_band_count) AS calls
FROM cdrflow.counters_log
ARRAY JOIN age_band_names AS age_band_name, age_band_calls AS age_band_count
WHERE region != 0
GROUP BY region, line, hour, local_hour, age_band;

-- Offered calls by channel per (region, line, hour).
CREATE VIEW IF NOT EXISTS cdrflow.hourly_channels AS
SELECT region, line, hour, local_hour, channel_name AS channel, sum(channel_count) AS calls
FROM cdrflow.counters_log
ARRAY JOIN channel_names AS channel_name, channel_calls AS channel_count
WHERE region != 0
GROUP BY region, line, hour, local_hour, channel;
