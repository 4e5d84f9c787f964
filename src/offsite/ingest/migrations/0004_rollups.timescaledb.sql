-- Compression, rollups and retention on TimescaleDB. The relations, their columns and
-- offsite_apply_retention() are the same as in 0004_rollups.postgres.sql, so the API reads
-- either flavour alike.
--
-- This file runs inside one transaction (schema.py). Continuous aggregates are therefore
-- created WITH NO DATA (creating one WITH DATA, like refresh_continuous_aggregate(), cannot
-- run in a transaction block); their refresh policies fill them, and until then, and for the
-- newest buckets always, they read the raw rows (real time: materialized_only = false).

-- Databases made by an earlier 0002 (1-day chunks, a B-tree on time) get the current shape;
-- on the others these are no-ops. 0002 says why.
SELECT set_chunk_time_interval('telemetry_gas', INTERVAL '4 hours');
DROP INDEX IF EXISTS telemetry_gas_time_idx;
CREATE INDEX IF NOT EXISTS telemetry_gas_time_brin ON telemetry_gas USING brin (time);

-- Compression. Segmented by device: every read is of one device (API, evidence windows), and
-- an INSERT ... ON CONFLICT DO NOTHING into a compressed chunk decompresses only the batches
-- of that device to check the unique index. Ordered by time DESC, seq DESC, newest first, as
-- the reads want. After 2 days: late readings, the minutes' refresh window (23 h, below) and
-- the detectors' and evidence windows (minutes) all stay in uncompressed chunks.
ALTER TABLE telemetry_gas SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'device_id',
    timescaledb.compress_orderby = 'time DESC, seq DESC'
);
SELECT add_compression_policy('telemetry_gas', compress_after => INTERVAL '2 days');

-- One row per device per minute, bucket = start of the minute (UTC).
CREATE MATERIALIZED VIEW telemetry_gas_1m
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 minute', time) AS bucket,
       device_id,
       count(*) AS readings,
       avg(lel_pct) AS lel_avg,
       min(lel_pct) AS lel_min,
       max(lel_pct) AS lel_max,
       max(co_ppm) AS co_max
FROM telemetry_gas
GROUP BY time_bucket(INTERVAL '1 minute', time), device_id
WITH NO DATA;

-- One row per device per hour, built on the minutes (hierarchical: a sixth of the rows to
-- read, one a minute instead of six readings). The average is weighted by the readings of
-- each minute, so it is the average of the raw readings (up to floating-point rounding,
-- ~1e-15 relative; a plain avg(lel_avg) would be wrong where minutes have unequal counts).
CREATE MATERIALIZED VIEW telemetry_gas_1h
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 hour', bucket) AS bucket,
       device_id,
       sum(readings)::bigint AS readings,
       sum(lel_avg * readings) / sum(readings)::double precision AS lel_avg,
       min(lel_min) AS lel_min,
       max(lel_max) AS lel_max,
       max(co_max) AS co_max
FROM telemetry_gas_1m
GROUP BY time_bucket(INTERVAL '1 hour', bucket), device_id
WITH NO DATA;

-- Materialized chunks: 1 day of minutes is 14.4 M rows (~2 GB), 30 days of hours 7.2 M rows;
-- each gives every device a full compressed batch or close (1,440 and 720 rows).
SELECT set_chunk_time_interval(
    format('%I.%I', materialization_hypertable_schema, materialization_hypertable_name),
    CASE view_name WHEN 'telemetry_gas_1m' THEN INTERVAL '1 day' ELSE INTERVAL '30 days' END
)
FROM timescaledb_information.continuous_aggregates
WHERE view_schema = current_schema() AND view_name IN ('telemetry_gas_1m', 'telemetry_gas_1h');

-- Refresh. Minutes: every minute, the buckets closed at least a minute ago, reaching back
-- 23 hours for late readings (a gateway catching up on the broker's backlog after an outage);
-- hours: every 30 minutes, the hours closed at least an hour ago (their minutes are all
-- materialized by then), reaching back 2 days to take up whatever the minutes took up.
-- A refresh window must stay inside what its source still keeps: a refresh over a range whose
-- chunks were dropped empties the rollup there (tests/test_timescaledb.py shows it). Raw rows
-- are kept at least 1 day (offsite_apply_retention refuses less) > 23 hours, minutes at
-- least 4 days > 2 days.
-- Readings that arrive more than 23 hours late are stored but not taken into the rollups
-- (below the watermark, the real-time part does not read them either).
SELECT add_continuous_aggregate_policy('telemetry_gas_1m',
    start_offset => INTERVAL '23 hours', end_offset => INTERVAL '1 minute',
    schedule_interval => INTERVAL '1 minute');
SELECT add_continuous_aggregate_policy('telemetry_gas_1h',
    start_offset => INTERVAL '2 days', end_offset => INTERVAL '1 hour',
    schedule_interval => INTERVAL '30 minutes');

-- The rollups are kept longer than the raw rows (below), so they are compressed too, once
-- out of their refresh windows (TimescaleDB requires compress_after > start_offset).
ALTER MATERIALIZED VIEW telemetry_gas_1m SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'device_id',
    timescaledb.compress_orderby = 'bucket DESC'
);
SELECT add_compression_policy('telemetry_gas_1m', compress_after => INTERVAL '2 days');
ALTER MATERIALIZED VIEW telemetry_gas_1h SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'device_id',
    timescaledb.compress_orderby = 'bucket DESC'
);
SELECT add_compression_policy('telemetry_gas_1h', compress_after => INTERVAL '7 days');

-- Retention, called by the gateway at start-up and hourly with its retention_days. Raw rows
-- are kept `keep`, minutes 4x and hours 20x as long: per device a minute row stands for 6
-- readings and an hour row for 360, so the minutes cost 4/6 and the hours 20/360 of the raw
-- rows, and the history that is zoomed into (minutes) or compared across years (hours)
-- outlives the raw rows it summarizes. A policy whose drop_after is already right is left
-- alone (same job, schedule and history); a missing or different one is replaced, so any
-- number of calls leaves one retention job per relation.
CREATE FUNCTION offsite_apply_retention(keep interval) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    rel text;
    wanted interval;
    have interval;
BEGIN
    IF keep IS NULL OR keep < INTERVAL '1 day' THEN
        -- The minutes' refresh window reaches back 23 hours into the raw rows.
        RAISE EXCEPTION 'offsite_apply_retention: keep must be at least 1 day, not %', keep;
    END IF;
    FOR rel, wanted IN VALUES ('telemetry_gas', keep),
                              ('telemetry_gas_1m', keep * 4),
                              ('telemetry_gas_1h', keep * 20) LOOP
        SELECT (j.config ->> 'drop_after')::interval INTO have
        FROM timescaledb_information.jobs AS j
        LEFT JOIN timescaledb_information.continuous_aggregates AS c
            ON c.materialization_hypertable_schema = j.hypertable_schema
           AND c.materialization_hypertable_name = j.hypertable_name
        WHERE j.proc_name = 'policy_retention'
          AND coalesce(c.view_schema, j.hypertable_schema) = current_schema()
          AND coalesce(c.view_name, j.hypertable_name) = rel;
        IF have IS DISTINCT FROM wanted THEN
            PERFORM remove_retention_policy(rel, if_exists => true);
            PERFORM add_retention_policy(rel, drop_after => wanted);
        END IF;
    END LOOP;
END $$;
