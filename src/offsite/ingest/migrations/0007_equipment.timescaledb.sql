-- Special-equipment telemetry on TimescaleDB: the table of 0007_equipment.postgres.sql as a
-- hypertable. Equipment reports every few seconds, far below gas networks' rates, so chunks
-- of a day; compressed after two days, segmented by device like telemetry_gas (0004).
CREATE TABLE telemetry_equipment (
    time            timestamptz NOT NULL,
    device_id       text        NOT NULL,
    seq             bigint      NOT NULL,
    kind            text        NOT NULL,
    -- elevator
    speed_mps       real,
    rated_speed_mps real,
    floor           integer,
    door            text,
    moving          boolean,
    in_door_zone    boolean,
    alarm_button    boolean,
    load_kg         real,
    mains_power     boolean,
    -- boiler and pressure vessel
    pressure_mpa    real,
    temp_c          real,
    water_level_mm  real,
    -- crane
    load_t          real,
    rated_load_t    real,
    wind_mps        real,
    received_at     timestamptz NOT NULL
);
SELECT create_hypertable(
    'telemetry_equipment', by_range('time', INTERVAL '1 day'), create_default_indexes => false
);
CREATE UNIQUE INDEX telemetry_equipment_device_seq_idx
    ON telemetry_equipment (device_id, time, seq);
CREATE INDEX telemetry_equipment_time_brin ON telemetry_equipment USING brin (time);

ALTER TABLE telemetry_equipment SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'device_id',
    timescaledb.compress_orderby = 'time DESC, seq DESC'
);
SELECT add_compression_policy('telemetry_equipment', compress_after => INTERVAL '2 days');

-- Raw equipment rows are kept as long as raw gas rows; the policy follows offsite's setting.
CREATE OR REPLACE FUNCTION offsite_apply_retention(keep interval) RETURNS void
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
                              ('telemetry_equipment', keep),
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
