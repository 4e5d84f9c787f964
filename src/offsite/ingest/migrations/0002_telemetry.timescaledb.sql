-- Gas telemetry on TimescaleDB: a hypertable chunked by day.
CREATE TABLE telemetry_gas (
    time        timestamptz      NOT NULL,
    device_id   text             NOT NULL,
    seq         bigint           NOT NULL,
    lel_pct     real             NOT NULL,
    co_ppm      real,
    valve       text,
    fault       text,
    received_at timestamptz      NOT NULL
);
SELECT create_hypertable('telemetry_gas', by_range('time', INTERVAL '1 day'));

-- (device, time, seq) makes a redelivered reading a no-op; it also serves per-device ranges.
CREATE UNIQUE INDEX telemetry_gas_device_seq_idx ON telemetry_gas (device_id, time, seq);

-- Same maintenance entry point as on plain PostgreSQL: TimescaleDB makes chunks itself.
CREATE FUNCTION offsite_ensure_partitions(
    parent regclass, first_day date, last_day date
) RETURNS integer LANGUAGE sql AS $$ SELECT 0 $$;
