-- The peer: ClickHouse's own Kafka table engine reading the bench topic, with a materialized
-- view into a summing table, computing hourly counters per region and dialled number.
-- Placeholders {db}, {brokers}, {topic}, {group} are filled by benches/src/bin/pipeline.rs.
-- Every JSON field of the CDR contract is a column (18.16 cannot skip unknown fields here);
-- times stay strings and are parsed in the view.
CREATE DATABASE IF NOT EXISTS {db};
CREATE TABLE {db}.queue (
    call_id String, region UInt8, dialled String, caller String,
    start String, answer String, end String, queue_wait_s Float64, talk_s Float64,
    disposition String, topic String, age_band String, channel String,
    operator_id String, queue_id String, transfer_to String, linked_id String
) ENGINE = Kafka SETTINGS kafka_broker_list = '{brokers}', kafka_topic_list = '{topic}',
    kafka_group_name = '{group}', kafka_format = 'JSONEachRow', kafka_num_consumers = 1;
CREATE TABLE {db}.hourly (
    region UInt8, dialled String, hour DateTime,
    offered UInt64, answered UInt64, abandoned UInt64, wait_sum_s Float64
) ENGINE = SummingMergeTree ORDER BY (region, dialled, hour);
CREATE MATERIALIZED VIEW {db}.hourly_mv TO {db}.hourly AS
SELECT region, dialled, toStartOfHour(parseDateTimeBestEffort(start)) AS hour,
       count() AS offered,
       countIf(disposition = 'answered') AS answered,
       countIf(disposition = 'abandoned') AS abandoned,
       sumIf(queue_wait_s, disposition = 'answered') AS wait_sum_s
FROM {db}.queue GROUP BY region, dialled, hour;
