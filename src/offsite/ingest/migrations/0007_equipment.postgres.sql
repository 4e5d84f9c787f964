-- Special-equipment telemetry (elevators, boilers, pressure vessels, cranes) on plain
-- PostgreSQL: one table for every kind, a column per field of the payload contracts (a kind
-- leaves the others' columns null, which costs a bit in the row's null bitmap). Daily range
-- partitions made ahead like telemetry_gas (0002), and the same duplicate rule.
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
) PARTITION BY RANGE (time);

CREATE TABLE telemetry_equipment_default PARTITION OF telemetry_equipment DEFAULT;
CREATE UNIQUE INDEX telemetry_equipment_device_seq_idx
    ON telemetry_equipment (device_id, time, seq);
CREATE INDEX telemetry_equipment_time_brin ON telemetry_equipment USING brin (time);

SELECT offsite_ensure_partitions('telemetry_equipment', current_date - 2, current_date + 3);

-- Retention covers both telemetry tables now: whole daily partitions past the horizon go.
CREATE OR REPLACE FUNCTION offsite_apply_retention(keep interval) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    part record;
    horizon date := (now() - keep)::date;
BEGIN
    FOR part IN
        SELECT c.relname
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent IN ('telemetry_gas'::regclass, 'telemetry_equipment'::regclass)
          AND c.relname ~ '^telemetry_(gas|equipment)_p[0-9]{8}$'
    LOOP
        -- a partition holds one day; it goes when that whole day is past the horizon
        IF to_date(right(part.relname, 8), 'YYYYMMDD') < horizon THEN
            EXECUTE format('DROP TABLE %I', part.relname);
        END IF;
    END LOOP;
    DELETE FROM telemetry_gas_default WHERE time < now() - keep;
    DELETE FROM telemetry_equipment_default WHERE time < now() - keep;
    DELETE FROM telemetry_gas_1m_acc WHERE bucket < now() - keep * 4;
    DELETE FROM telemetry_gas_1h_acc WHERE bucket < now() - keep * 20;
END $$;
