-- The clue lifecycle: new -> triaged -> assigned -> transferred -> handled -> closed, or
-- escalated to a case; every step kept as an event (who, when, why). Clues also come from
-- outside channels (12345 hotline, complaints, other departments), and a report about the
-- facts an open clue already covers joins it as one more source instead of opening another.
ALTER TABLE clues
    ADD COLUMN source       text NOT NULL DEFAULT 'detector',
    ADD COLUMN deadline_at  timestamptz,
    ADD COLUMN overdue      boolean NOT NULL DEFAULT false,
    ADD COLUMN disposition  text,
    ADD COLUMN closed_at    timestamptz,
    ADD CONSTRAINT clues_status_known CHECK (
        status IN ('new', 'triaged', 'assigned', 'transferred', 'handled', 'closed', 'escalated')
    );
-- The open clues of one subject and matter: where a new report looks for one to join.
CREATE INDEX clues_subject_matter_idx ON clues (subject_id, matter_id, opened_at DESC);
-- The deadline sweep reads only clues that are running and not yet flagged.
CREATE INDEX clues_deadline_idx ON clues (deadline_at)
    WHERE NOT overdue AND status NOT IN ('closed', 'escalated');

CREATE TABLE clue_events (
    id          bigserial   PRIMARY KEY,
    clue_id     text        NOT NULL REFERENCES clues (id),
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text        NOT NULL,
    action      text        NOT NULL,
    from_status text,
    to_status   text        NOT NULL,
    department  text,
    reason      text,
    details     jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX clue_events_clue_idx ON clue_events (clue_id, id);

CREATE TABLE clue_sources (
    id          bigserial   PRIMARY KEY,
    clue_id     text        NOT NULL REFERENCES clues (id),
    channel     text        NOT NULL,
    reference   text,
    description text        NOT NULL DEFAULT '',
    reported_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    actor       text        NOT NULL
);
CREATE INDEX clue_sources_clue_idx ON clue_sources (clue_id, id);

-- Per-department overrides of the settings' deadline per severity.
CREATE TABLE clue_deadlines (
    department  text    NOT NULL REFERENCES departments (id),
    severity    text    NOT NULL CHECK (severity IN ('red', 'orange', 'yellow', 'blue')),
    within_s    double precision NOT NULL CHECK (within_s > 0),
    PRIMARY KEY (department, severity)
);
