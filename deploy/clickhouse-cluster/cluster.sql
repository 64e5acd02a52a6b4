CREATE DATABASE IF NOT EXISTS cdrflow ON CLUSTER 'hotlines';

CREATE TABLE IF NOT EXISTS cdrflow.schema_migrations_local ON CLUSTER 'hotlines'
(
    version UInt32,
    name String,
    applied_at DateTime
)
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/cdrflow/schema_migrations', '{replica}')
ORDER BY version;

CREATE TABLE IF NOT EXISTS cdrflow.schema_migrations ON CLUSTER 'hotlines' AS cdrflow.schema_migrations_local
ENGINE = Distributed('hotlines', cdrflow, schema_migrations_local, rand());

CREATE DATABASE IF NOT EXISTS cdrflow ON CLUSTER 'hotlines';

CREATE TABLE IF NOT EXISTS cdrflow.counters_log_local ON CLUSTER 'hotlines'
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
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/cdrflow/counters_log', '{replica}')
PARTITION BY toYYYYMM(flushed_at)
ORDER BY (consumer_group, topic, kafka_partition, last_offset, region, line, hour);

CREATE TABLE IF NOT EXISTS cdrflow.counters_log ON CLUSTER 'hotlines' AS cdrflow.counters_log_local
ENGINE = Distributed('hotlines', cdrflow, counters_log_local, kafka_partition);

CREATE TABLE IF NOT EXISTS cdrflow.regions_local ON CLUSTER 'hotlines'
(
    region UInt8,
    name_ru String,
    name_en String,
    time_zone String
)
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/cdrflow/regions', '{replica}')
ORDER BY region;

CREATE TABLE IF NOT EXISTS cdrflow.regions ON CLUSTER 'hotlines' AS cdrflow.regions_local
ENGINE = Distributed('hotlines', cdrflow, regions_local, rand());

CREATE VIEW IF NOT EXISTS cdrflow.hourly ON CLUSTER 'hotlines' AS
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

CREATE VIEW IF NOT EXISTS cdrflow.hourly_topics ON CLUSTER 'hotlines' AS
SELECT region, line, hour, local_hour, topic_name AS topic, sum(topic_count) AS calls
FROM cdrflow.counters_log
ARRAY JOIN topic_names AS topic_name, topic_calls AS topic_count
WHERE region != 0
GROUP BY region, line, hour, local_hour, topic;

CREATE VIEW IF NOT EXISTS cdrflow.hourly_age_bands ON CLUSTER 'hotlines' AS
SELECT region, line, hour, local_hour, age_band_name AS age_band, sum(age_band_count) AS calls
FROM cdrflow.counters_log
ARRAY JOIN age_band_names AS age_band_name, age_band_calls AS age_band_count
WHERE region != 0
GROUP BY region, line, hour, local_hour, age_band;

CREATE VIEW IF NOT EXISTS cdrflow.hourly_channels ON CLUSTER 'hotlines' AS
SELECT region, line, hour, local_hour, channel_name AS channel, sum(channel_count) AS calls
FROM cdrflow.counters_log
ARRAY JOIN channel_names AS channel_name, channel_calls AS channel_count
WHERE region != 0
GROUP BY region, line, hour, local_hour, channel;

ALTER TABLE cdrflow.counters_log_local ON CLUSTER 'hotlines' ADD COLUMN call_ids Array(UInt64);

DROP TABLE IF EXISTS cdrflow.counters_log ON CLUSTER 'hotlines';

CREATE TABLE IF NOT EXISTS cdrflow.counters_log ON CLUSTER 'hotlines' AS cdrflow.counters_log_local
ENGINE = Distributed('hotlines', cdrflow, counters_log_local, kafka_partition);

CREATE TABLE IF NOT EXISTS cdrflow.counters_rebuilt_local ON CLUSTER 'hotlines' AS cdrflow.counters_log_local
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/cdrflow/counters_rebuilt', '{replica}')
PARTITION BY toYYYYMM(flushed_at)
ORDER BY (consumer_group, topic, kafka_partition, last_offset, region, line, hour);

CREATE TABLE IF NOT EXISTS cdrflow.counters_rebuilt ON CLUSTER 'hotlines' AS cdrflow.counters_rebuilt_local
ENGINE = Distributed('hotlines', cdrflow, counters_rebuilt_local, toUInt32(flushed_at));

CREATE VIEW IF NOT EXISTS cdrflow.counters_current ON CLUSTER 'hotlines' AS
SELECT
    region, line, hour, local_hour, offered, answered, abandoned, short_abandoned, unanswered,
    answered_within_sl, abandoned_after_sl, wait_sum_ms, wait_max_ms, talk_sum_ms, transferred_out,
    out_of_hours, topic_names, topic_calls, age_band_names, age_band_calls, channel_names, channel_calls
FROM cdrflow.counters_log
WHERE region != 0 AND (region, line, hour) GLOBAL NOT IN (SELECT region, line, hour FROM cdrflow.counters_rebuilt)
UNION ALL
SELECT
    region, line, hour, local_hour, offered, answered, abandoned, short_abandoned, unanswered,
    answered_within_sl, abandoned_after_sl, wait_sum_ms, wait_max_ms, talk_sum_ms, transferred_out,
    out_of_hours, topic_names, topic_calls, age_band_names, age_band_calls, channel_names, channel_calls
FROM cdrflow.counters_rebuilt
WHERE (region, line, hour, flushed_at) GLOBAL IN
    (SELECT region, line, hour, max(flushed_at) FROM cdrflow.counters_rebuilt GROUP BY region, line, hour);

DROP TABLE IF EXISTS cdrflow.hourly ON CLUSTER 'hotlines';

CREATE VIEW IF NOT EXISTS cdrflow.hourly ON CLUSTER 'hotlines' AS
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

DROP TABLE IF EXISTS cdrflow.hourly_topics ON CLUSTER 'hotlines';

CREATE VIEW IF NOT EXISTS cdrflow.hourly_topics ON CLUSTER 'hotlines' AS
SELECT region, line, hour, local_hour, topic_name AS topic, sum(topic_count) AS calls
FROM cdrflow.counters_current
ARRAY JOIN topic_names AS topic_name, topic_calls AS topic_count
GROUP BY region, line, hour, local_hour, topic;

DROP TABLE IF EXISTS cdrflow.hourly_age_bands ON CLUSTER 'hotlines';

CREATE VIEW IF NOT EXISTS cdrflow.hourly_age_bands ON CLUSTER 'hotlines' AS
SELECT region, line, hour, local_hour, age_band_name AS age_band, sum(age_band_count) AS calls
FROM cdrflow.counters_current
ARRAY JOIN age_band_names AS age_band_name, age_band_calls AS age_band_count
GROUP BY region, line, hour, local_hour, age_band;

DROP TABLE IF EXISTS cdrflow.hourly_channels ON CLUSTER 'hotlines';

CREATE VIEW IF NOT EXISTS cdrflow.hourly_channels ON CLUSTER 'hotlines' AS
SELECT region, line, hour, local_hour, channel_name AS channel, sum(channel_count) AS calls
FROM cdrflow.counters_current
ARRAY JOIN channel_names AS channel_name, channel_calls AS channel_count
GROUP BY region, line, hour, local_hour, channel;

