-- Rollups and retention on plain PostgreSQL, with the relations TimescaleDB has as
-- continuous aggregates: telemetry_gas_1m and telemetry_gas_1h (bucket, device_id, readings,
-- lel_avg, lel_min, lel_max, co_max). Here the writer keeps them incrementally: each batch
-- adds the readings it actually inserted (not the duplicates) to per-bucket accumulators, in
-- the same transaction, so a rollup never disagrees with the raw table.
CREATE TABLE telemetry_gas_1m_acc (
    device_id   text             NOT NULL,
    bucket      timestamptz      NOT NULL,
    readings    bigint           NOT NULL,
    lel_sum     double precision NOT NULL,
    lel_min     real             NOT NULL,
    lel_max     real             NOT NULL,
    co_max      real,
    PRIMARY KEY (device_id, bucket)
);
CREATE TABLE telemetry_gas_1h_acc (LIKE telemetry_gas_1m_acc INCLUDING ALL);

CREATE VIEW telemetry_gas_1m AS
    SELECT bucket, device_id, readings, lel_sum / readings AS lel_avg, lel_min, lel_max, co_max
    FROM telemetry_gas_1m_acc;
CREATE VIEW telemetry_gas_1h AS
    SELECT bucket, device_id, readings, lel_sum / readings AS lel_avg, lel_min, lel_max, co_max
    FROM telemetry_gas_1h_acc;

-- Retention: whole daily partitions older than `keep` are dropped (no row-by-row delete),
-- late rows in the default partition are deleted, and the rollups are kept longer (a year of
-- minutes is 525,600 rows a device; hours are cheap), like the TimescaleDB policies.
CREATE FUNCTION offsite_apply_retention(keep interval) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    part record;
    horizon date := (now() - keep)::date;
BEGIN
    FOR part IN
        SELECT c.relname
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'telemetry_gas'::regclass
          AND c.relname ~ '^telemetry_gas_p[0-9]{8}$'
    LOOP
        -- a partition holds one day; it goes when that whole day is past the horizon
        IF to_date(right(part.relname, 8), 'YYYYMMDD') < horizon THEN
            EXECUTE format('DROP TABLE %I', part.relname);
        END IF;
    END LOOP;
    DELETE FROM telemetry_gas_default WHERE time < now() - keep;
    DELETE FROM telemetry_gas_1m_acc WHERE bucket < now() - keep * 4;
    DELETE FROM telemetry_gas_1h_acc WHERE bucket < now() - keep * 20;
END $$;
