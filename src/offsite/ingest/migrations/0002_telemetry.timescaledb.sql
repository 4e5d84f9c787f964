-- Gas telemetry on TimescaleDB: a hypertable chunked every 4 hours.
--
-- Chunk interval. A city has ~10,000 detectors reading every 10 s: 1,000 rows/s, 86.4 M rows
-- a day. Measured on PostgreSQL with 10,000 interleaved devices, a row takes ~85 B of heap and
-- ~75 B in the unique index below: ~160 B, ~14 GB a day before compression. TimescaleDB's
-- guidance is that the recent chunks, indexes included, fit in ~25 % of memory: 6 GB of our
-- 24 GB machines. Two chunks are hot around each boundary (late readings, and the 1-minute
-- rollup's refresh reads back across it), so one chunk may take ~3 GB: 4 hours is 14.4 M rows,
-- ~2.3 GB (two: ~4.6 GB). A day (~14 GB) is far over; 6 hours (two: ~7 GB) is over too.
-- 4 hours also gives each device 1,440 readings per chunk, more than the 1,000 rows of a full
-- compressed batch when compression segments by device (0004), and 6 chunks a day keeps the
-- chunk count of long retentions in the low thousands.
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
-- No default B-tree on time: readings come in time order, so it is filled from the left
-- (time DESC) and its pages split half full, ~40 B a row (+25 %). Every read of a device
-- goes through the unique index; only the rollups scan all devices by time, which a BRIN
-- serves as well at a few KB per chunk (as on plain PostgreSQL).
SELECT create_hypertable(
    'telemetry_gas', by_range('time', INTERVAL '4 hours'), create_default_indexes => false
);

-- (device, time, seq) makes a redelivered reading a no-op; it also serves per-device ranges.
CREATE UNIQUE INDEX telemetry_gas_device_seq_idx ON telemetry_gas (device_id, time, seq);
CREATE INDEX telemetry_gas_time_brin ON telemetry_gas USING brin (time);

-- Same maintenance entry point as on plain PostgreSQL: TimescaleDB makes chunks itself.
CREATE FUNCTION offsite_ensure_partitions(
    parent regclass, first_day date, last_day date
) RETURNS integer LANGUAGE sql AS $$ SELECT 0 $$;
