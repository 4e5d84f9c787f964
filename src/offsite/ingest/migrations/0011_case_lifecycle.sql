-- The case lifecycle: filed (立案) -> investigating -> decision -> rectification -> closed;
-- transferred to another department on the way, or handed over to the judicial authorities
-- (移送), which ends the case here. Every step kept as an event (who, when, why); tasks with
-- an assignee and a due time; a hand-over keeps a record of what went.
ALTER TABLE cases
    ADD COLUMN closed_at timestamptz,
    ADD CONSTRAINT cases_status_known CHECK (
        status IN ('filed', 'investigating', 'decision', 'rectification', 'closed', 'handed_over')
    );

CREATE TABLE case_events (
    id          bigserial   PRIMARY KEY,
    case_id     text        NOT NULL REFERENCES cases (id),
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text        NOT NULL,
    action      text        NOT NULL,
    from_status text,
    to_status   text        NOT NULL,
    department  text,
    reason      text,
    details     jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX case_events_case_idx ON case_events (case_id, id);

CREATE TABLE case_tasks (
    id           bigserial   PRIMARY KEY,
    case_id      text        NOT NULL REFERENCES cases (id),
    title        text        NOT NULL,
    assignee     text        NOT NULL,
    due_at       timestamptz NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    created_by   text        NOT NULL,
    completed_at timestamptz,
    completed_by text,
    note         text
);
CREATE INDEX case_tasks_case_idx ON case_tasks (case_id, id);

-- What a case handed to the judicial authorities took with it, and the ledger head just
-- before the hand-over's own entry: the chain up to there is what the recipient can check.
CREATE TABLE case_handovers (
    case_id          text        PRIMARY KEY REFERENCES cases (id),
    at               timestamptz NOT NULL DEFAULT now(),
    actor            text        NOT NULL,
    recipient        text        NOT NULL,
    reason           text        NOT NULL,
    clue_ids         text[]      NOT NULL,
    evidence_ids     text[]      NOT NULL,
    ledger_head_seq  bigint      NOT NULL,
    ledger_head_hash text        NOT NULL CHECK (ledger_head_hash ~ '^[0-9a-f]{64}$'),
    ledger_seq       bigint      NOT NULL
);
