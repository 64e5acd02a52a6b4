-- cdrflow migration 002: counting each call once, and rebuilding hours from the archive.
--
-- Versioned by `cdrflow migrate` (schema_migrations): each statement runs once per database.

-- The calls each counter row counted (XXH3-64 keys of their call ids, see
-- schemas/src/versions.rs). Written in the same insert as the counters, so the set of
-- counted calls is exactly as durable as the counts: an aggregator that takes over a
-- partition reads back the recent keys and skips re-sent CDRs of calls already counted.
ALTER TABLE cdrflow.counters_log ADD COLUMN call_ids Array(UInt64);

-- Hours rebuilt from the Parquet archive by `cdrflow backfill`, in the same shape as
-- counters_log: consumer_group 'backfill', no offsets, no call keys, and flushed_at the
-- time of the rebuild, which identifies it. One insert per rebuild, all rows with the same
-- flushed_at, so a rebuild is ONE part and lands whole or not at all (the argument of
-- counters_log). A cell (region, line, hour) present here replaces the streaming rows of
-- that cell; the latest rebuild of a cell wins. Cells a rebuild found empty are written
-- with zeros, so they are replaced too.
CREATE TABLE IF NOT EXISTS cdrflow.counters_rebuilt AS cdrflow.counters_log;

-- The counters in force: streaming rows of cells never rebuilt, and the latest rebuild of
-- every rebuilt cell. Every dashboard view reads this.
CREATE VIEW IF NOT EXISTS cdrflow.counters_current AS
SELECT
    region, line, hour, local_hour, offered, answered, abandoned, short_abandoned, unanswered,
    answered_within_sl, abandoned_after_sl, wait_sum_ms, wait_max_ms, talk_sum_ms, transferred_out,
    out_of_hours, topic_names, topic_calls, age_band_names, age_band_calls, channel_names, channel_calls
FROM cdrflow.counters_log
WHERE region != 0 AND (region, line, hour) NOT IN (SELECT region, line, hour FROM cdrflow.counters_rebuilt)
UNION ALL
SELECT
    region, line, hour, local_hour, offered, answered, abandoned, short_abandoned, unanswered,
    answered_within_sl, abandoned_after_sl, wait_sum_ms, wait_max_ms, talk_sum_ms, transferred_out,
    out_of_hours, topic_names, topic_calls, age_band_names, age_band_calls, channel_names, channel_calls
FROM cdrflow.counters_rebuilt
WHERE (region, line, hour, flushed_at) IN
    (SELECT region, line, hour, max(flushed_at) FROM cdrflow.counters_rebuilt GROUP BY region, line, hour);

-- The dashboard views of 001, now over counters_current (18.16 has no CREATE OR REPLACE
-- VIEW and no DROP VIEW; DROP TABLE drops a view on every version).
DROP TABLE IF EXISTS cdrflow.hourly;

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
FROM cdrflow.counters_current
GROUP BY region, line, hour, local_hour;

DROP TABLE IF EXISTS cdrflow.hourly_topics;

CREATE VIEW IF NOT EXISTS cdrflow.hourly_topics AS
SELECT region, line, hour, local_hour, topic_name AS topic, sum(topic_count) AS calls
FROM cdrflow.counters_current
ARRAY JOIN topic_names AS topic_name, topic_calls AS topic_count
GROUP BY region, line, hour, local_hour, topic;

DROP TABLE IF EXISTS cdrflow.hourly_age_bands;

CREATE VIEW IF NOT EXISTS cdrflow.hourly_age_bands AS
SELECT region, line, hour, local_hour, age_band_name AS age_band, sum(age_band_count) AS calls
FROM cdrflow.counters_current
ARRAY JOIN age_band_names AS age_band_name, age_band_calls AS age_band_count
GROUP BY region, line, hour, local_hour, age_band;

DROP TABLE IF EXISTS cdrflow.hourly_channels;

CREATE VIEW IF NOT EXISTS cdrflow.hourly_channels AS
SELECT region, line, hour, local_hour, channel_name AS channel, sum(channel_count) AS calls
FROM cdrflow.counters_current
ARRAY JOIN channel_names AS channel_name, channel_calls AS channel_count
GROUP BY region, line, hour, local_hour, channel;
