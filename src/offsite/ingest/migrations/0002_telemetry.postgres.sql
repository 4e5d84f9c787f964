-- Gas telemetry on plain PostgreSQL: declarative range partitions by day, created ahead of
-- time by offsite_ensure_partitions(); a default partition takes readings outside them so
-- that a late or early timestamp is never refused.
CREATE TABLE telemetry_gas (
    time        timestamptz      NOT NULL,
    device_id   text             NOT NULL,
    seq         bigint           NOT NULL,
    lel_pct     real             NOT NULL,
    co_ppm      real,
    valve       text,
    fault       text,
    received_at timestamptz      NOT NULL
) PARTITION BY RANGE (time);

CREATE TABLE telemetry_gas_default PARTITION OF telemetry_gas DEFAULT;

-- (device, seq, time) makes a redelivered reading a no-op; it also serves per-device ranges.
CREATE UNIQUE INDEX telemetry_gas_device_seq_idx ON telemetry_gas (device_id, time, seq);
CREATE INDEX telemetry_gas_time_brin ON telemetry_gas USING brin (time);

CREATE FUNCTION offsite_ensure_partitions(
    parent regclass, first_day date, last_day date
) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    day date := first_day;
    created integer := 0;
    part text;
    def text := parent::text || '_default';
BEGIN
    WHILE day <= last_day LOOP
        part := format('%s_p%s', parent::text, to_char(day, 'YYYYMMDD'));
        IF to_regclass(part) IS NULL THEN
            -- Rows already in the default partition for this day move into the new one.
            EXECUTE format('CREATE TEMP TABLE offsite_moving ON COMMIT DROP AS '
                           'SELECT * FROM %s WHERE time >= %L AND time < %L',
                           def, day, day + 1);
            EXECUTE format('DELETE FROM %s WHERE time >= %L AND time < %L', def, day, day + 1);
            EXECUTE format('CREATE TABLE %I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)',
                           part, parent::text, day::timestamptz, (day + 1)::timestamptz);
            EXECUTE format('INSERT INTO %s SELECT * FROM offsite_moving', parent::text);
            DROP TABLE offsite_moving;
            created := created + 1;
        END IF;
        day := day + 1;
    END LOOP;
    RETURN created;
END $$;

SELECT offsite_ensure_partitions('telemetry_gas', current_date - 2, current_date + 3);
