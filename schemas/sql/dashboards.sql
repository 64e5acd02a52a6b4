-- cdrflow dashboard queries: each is named, documented and run by a test against the real
-- server and checked against ground truth; CI also runs them through chdb (ClickHouse 26).
-- Parameters are written {name:Type} (ClickHouse's own query-parameter syntax); cdrflow
-- renders them from typed, validated values only, never from record content.
-- Times are UTC; `local_hour`/`local_day` are each region's wall clock.

-- name: national_calls_per_hour
-- National calls per UTC hour: offered, answered, abandoned (the national view adds up UTC hours).
SELECT
    hour,
    sum(offered) AS offered,
    sum(answered) AS answered,
    sum(abandoned) AS abandoned
FROM cdrflow.hourly
WHERE hour >= {from:DateTime} AND hour < {to:DateTime}
GROUP BY hour
ORDER BY hour;

-- name: region_local_day
-- Per region per local day (the region's own calendar), with the region's name.
SELECT
    region,
    name_en,
    local_day,
    offered,
    answered,
    abandoned
FROM
(
    SELECT
        region,
        toDate(local_hour) AS local_day,
        sum(offered) AS offered,
        sum(answered) AS answered,
        sum(abandoned) AS abandoned
    FROM cdrflow.hourly
    WHERE hour >= {from:DateTime} AND hour < {to:DateTime}
    GROUP BY region, local_day
) AS per_day
ANY LEFT JOIN cdrflow.regions AS names USING (region)
ORDER BY region, local_day;

-- name: line_region_quality
-- Per line and region: abandon rate (abandoned / offered), service level in the ICMI form
-- (answered within the line's threshold / (answered + abandoned after it)) and ASA
-- (average queue wait of answered calls, seconds).
SELECT
    line,
    region,
    sum(offered) AS offered_calls,
    sum(answered) AS answered_calls,
    sum(abandoned) AS abandoned_calls,
    if(offered_calls = 0, 0, abandoned_calls / offered_calls) AS abandon_rate,
    if(answered_calls + sum(abandoned_after_sl) = 0, 0,
       sum(answered_within_sl) / (answered_calls + sum(abandoned_after_sl))) AS service_level,
    if(answered_calls = 0, 0, sum(wait_sum_ms) / answered_calls / 1000) AS asa_s
FROM cdrflow.hourly
WHERE hour >= {from:DateTime} AND hour < {to:DateTime}
GROUP BY line, region
ORDER BY line, region;

-- name: top_regions
-- The regions with the most offered calls.
SELECT
    region,
    name_en,
    offered
FROM
(
    SELECT region, sum(offered) AS offered
    FROM cdrflow.hourly
    WHERE hour >= {from:DateTime} AND hour < {to:DateTime}
    GROUP BY region
) AS per_region
ANY LEFT JOIN cdrflow.regions AS names USING (region)
ORDER BY offered DESC, region
LIMIT {limit:UInt32};

-- name: topic_shares
-- Share of offered calls by topic (`unknown` when none was recorded).
SELECT
    topic,
    sum(calls) AS topic_calls,
    topic_calls / (SELECT sum(offered) FROM cdrflow.hourly WHERE hour >= {from:DateTime} AND hour < {to:DateTime}) AS share
FROM cdrflow.hourly_topics
WHERE hour >= {from:DateTime} AND hour < {to:DateTime}
GROUP BY topic
ORDER BY topic_calls DESC, topic;

-- name: age_band_shares
-- Share of offered calls by caller age band (`unknown` when none was recorded).
SELECT
    age_band,
    sum(calls) AS band_calls,
    band_calls / (SELECT sum(offered) FROM cdrflow.hourly WHERE hour >= {from:DateTime} AND hour < {to:DateTime}) AS share
FROM cdrflow.hourly_age_bands
WHERE hour >= {from:DateTime} AND hour < {to:DateTime}
GROUP BY age_band
ORDER BY band_calls DESC, age_band;

-- name: region_quality
-- Per region: offered, answered, abandon rate, service level (ICMI) and ASA over every line.
SELECT
    region,
    name_en,
    offered_calls,
    answered_calls,
    abandon_rate,
    service_level,
    asa_s
FROM
(
    SELECT
        region,
        sum(offered) AS offered_calls,
        sum(answered) AS answered_calls,
        if(offered_calls = 0, 0, sum(abandoned) / offered_calls) AS abandon_rate,
        if(answered_calls + sum(abandoned_after_sl) = 0, 0,
           sum(answered_within_sl) / (answered_calls + sum(abandoned_after_sl))) AS service_level,
        if(answered_calls = 0, 0, sum(wait_sum_ms) / answered_calls / 1000) AS asa_s
    FROM cdrflow.hourly
    WHERE hour >= {from:DateTime} AND hour < {to:DateTime}
    GROUP BY region
) AS per_region
ANY LEFT JOIN cdrflow.regions AS names USING (region)
ORDER BY offered_calls DESC, region;

-- name: regions
-- The regions, for a dashboard's region picker.
SELECT region, name_en, name_ru, time_zone
FROM cdrflow.regions
ORDER BY region;

-- name: lines
-- The lines with calls in the range, for a dashboard's line picker.
SELECT line, sum(offered) AS offered_calls
FROM cdrflow.hourly
WHERE hour >= {from:DateTime} AND hour < {to:DateTime}
GROUP BY line
ORDER BY line;

-- name: line_hourly
-- Per line per UTC hour, of one region (0: every region) and one line ('': every line):
-- offered, answered and service level (ICMI).
SELECT
    hour,
    line,
    sum(offered) AS offered_calls,
    sum(answered) AS answered_calls,
    if(answered_calls + sum(abandoned_after_sl) = 0, 0,
       sum(answered_within_sl) / (answered_calls + sum(abandoned_after_sl))) AS service_level
FROM cdrflow.hourly
WHERE hour >= {from:DateTime} AND hour < {to:DateTime}
  AND ({region:UInt8} = 0 OR region = {region:UInt8})
  AND ({line:String} = '' OR line = {line:String})
GROUP BY hour, line
ORDER BY hour, line;

-- name: region_line_quality
-- One region's lines (0: every region): offered, answered, abandon rate, service level (ICMI), ASA.
SELECT
    line,
    sum(offered) AS offered_calls,
    sum(answered) AS answered_calls,
    if(offered_calls = 0, 0, sum(abandoned) / offered_calls) AS abandon_rate,
    if(answered_calls + sum(abandoned_after_sl) = 0, 0,
       sum(answered_within_sl) / (answered_calls + sum(abandoned_after_sl))) AS service_level,
    if(answered_calls = 0, 0, sum(wait_sum_ms) / answered_calls / 1000) AS asa_s
FROM cdrflow.hourly
WHERE hour >= {from:DateTime} AND hour < {to:DateTime}
  AND ({region:UInt8} = 0 OR region = {region:UInt8})
GROUP BY line
ORDER BY offered_calls DESC, line;

-- name: region_local_hour_profile
-- One region's calls by hour of its own wall clock (0–23), over the range.
SELECT
    toHour(local_hour) AS local_hour_of_day,
    sum(offered) AS offered_calls,
    sum(answered) AS answered_calls,
    sum(abandoned) AS abandoned_calls
FROM cdrflow.hourly
WHERE hour >= {from:DateTime} AND hour < {to:DateTime} AND region = {region:UInt8}
GROUP BY local_hour_of_day
ORDER BY local_hour_of_day;

-- name: region_topics
-- One region's calls by topic.
SELECT topic, sum(calls) AS topic_calls
FROM cdrflow.hourly_topics
WHERE hour >= {from:DateTime} AND hour < {to:DateTime} AND region = {region:UInt8}
GROUP BY topic
ORDER BY topic_calls DESC, topic;
