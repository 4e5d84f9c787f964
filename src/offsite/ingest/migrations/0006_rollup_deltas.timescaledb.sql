-- Nothing to do on TimescaleDB: its continuous aggregates (0004) already read the newest
-- buckets from the raw rows, which is what the deltas of the plain-PostgreSQL variant give.
-- The step exists so that both flavours share one numbering.
SELECT 1;
