-- Remote enforcement (远程执法处置): commands sent to devices, tracked until the device
-- acknowledges them or the time allowed runs out. Every command and outcome is in the ledger.
CREATE TABLE device_commands (
    id          text PRIMARY KEY,
    device_id   text        NOT NULL REFERENCES devices (id),
    case_id     text        REFERENCES cases (id),
    command     text        NOT NULL,
    params      jsonb       NOT NULL DEFAULT '{}',
    status      text        NOT NULL DEFAULT 'sent'
                            CHECK (status IN ('sent', 'acked', 'failed', 'timed_out')),
    reason      text,
    issued_by   text        NOT NULL,
    issued_at   timestamptz NOT NULL,
    deadline_at timestamptz NOT NULL,
    answered_at timestamptz,
    answer      jsonb
);
CREATE INDEX device_commands_pending_idx ON device_commands (deadline_at) WHERE status = 'sent';
