-- Rollups on plain PostgreSQL, cheaper per batch and still exact at every commit.
-- Each batch appends its per-minute aggregates to telemetry_gas_1m_delta in its own
-- transaction: a plain insert into a table without indexes, where upserting two accumulator
-- tables cost the database more than the readings themselves. offsite_fold_rollups(), run
-- every few seconds, moves the deltas into the accumulators; the views add what is not
-- folded yet, so a rollup never disagrees with the raw table.
CREATE TABLE telemetry_gas_1m_delta (
    device_id   text             NOT NULL,
    bucket      timestamptz      NOT NULL,
    readings    bigint           NOT NULL,
    lel_sum     double precision NOT NULL,
    lel_min     real             NOT NULL,
    lel_max     real             NOT NULL,
    co_max      real
);

CREATE OR REPLACE VIEW telemetry_gas_1m AS
    SELECT bucket, device_id, sum(readings)::bigint AS readings,
           sum(lel_sum) / sum(readings) AS lel_avg, min(lel_min) AS lel_min,
           max(lel_max) AS lel_max, max(co_max) AS co_max
    FROM (SELECT * FROM telemetry_gas_1m_acc UNION ALL SELECT * FROM telemetry_gas_1m_delta) u
    GROUP BY bucket, device_id;

CREATE OR REPLACE VIEW telemetry_gas_1h AS
    SELECT bucket, device_id, sum(readings)::bigint AS readings,
           sum(lel_sum) / sum(readings) AS lel_avg, min(lel_min) AS lel_min,
           max(lel_max) AS lel_max, max(co_max) AS co_max
    FROM (
        SELECT * FROM telemetry_gas_1h_acc
        UNION ALL
        SELECT device_id, date_bin('1 hour', bucket, TIMESTAMPTZ '2000-01-01'), readings,
               lel_sum, lel_min, lel_max, co_max
        FROM telemetry_gas_1m_delta
    ) u
    GROUP BY bucket, device_id;

-- Each delta row is deleted, and so added, exactly once even when two workers fold at the
-- same time (the second waits on the row and then finds it gone); accumulator rows are
-- taken in key order so that folds cannot deadlock.
CREATE FUNCTION offsite_fold_rollups() RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    folded integer;
BEGIN
    WITH moved AS (
        DELETE FROM telemetry_gas_1m_delta RETURNING *
    ), minutes AS (
        SELECT device_id, bucket, sum(readings) AS readings, sum(lel_sum) AS lel_sum,
               min(lel_min) AS lel_min, max(lel_max) AS lel_max, max(co_max) AS co_max,
               count(*) AS deltas
        FROM moved GROUP BY device_id, bucket
    ), into_minutes AS (
        INSERT INTO telemetry_gas_1m_acc AS a
            (device_id, bucket, readings, lel_sum, lel_min, lel_max, co_max)
        SELECT device_id, bucket, readings, lel_sum, lel_min, lel_max, co_max
        FROM minutes ORDER BY device_id, bucket
        ON CONFLICT (device_id, bucket) DO UPDATE SET
            readings = a.readings + excluded.readings,
            lel_sum = a.lel_sum + excluded.lel_sum,
            lel_min = least(a.lel_min, excluded.lel_min),
            lel_max = greatest(a.lel_max, excluded.lel_max),
            co_max = greatest(a.co_max, excluded.co_max)
    ), into_hours AS (
        INSERT INTO telemetry_gas_1h_acc AS a
            (device_id, bucket, readings, lel_sum, lel_min, lel_max, co_max)
        SELECT device_id, date_bin('1 hour', bucket, TIMESTAMPTZ '2000-01-01'), sum(readings),
               sum(lel_sum), min(lel_min), max(lel_max), max(co_max)
        FROM minutes GROUP BY 1, 2 ORDER BY 1, 2
        ON CONFLICT (device_id, bucket) DO UPDATE SET
            readings = a.readings + excluded.readings,
            lel_sum = a.lel_sum + excluded.lel_sum,
            lel_min = least(a.lel_min, excluded.lel_min),
            lel_max = greatest(a.lel_max, excluded.lel_max),
            co_max = greatest(a.co_max, excluded.co_max)
    )
    SELECT coalesce(sum(deltas), 0) INTO folded FROM minutes;
    RETURN folded;
END $$;
