-- Clues, evidence, cases and the alert stream.
CREATE TABLE clues (
    id                      text PRIMARY KEY,
    key                     text NOT NULL UNIQUE,
    rule                    text NOT NULL,
    severity                text NOT NULL CHECK (severity IN ('red', 'orange', 'yellow', 'blue')),
    domain                  text NOT NULL,
    device_id               text,
    subject_id              text,
    matter_id               text,
    department              text NOT NULL,
    cooperating_departments text[] NOT NULL DEFAULT '{}',
    status                  text NOT NULL DEFAULT 'new',
    title                   text NOT NULL,
    triggered_at            timestamptz NOT NULL,
    opened_at               timestamptz NOT NULL,
    last_at                 timestamptz NOT NULL,
    cleared_at              timestamptz,
    value                   double precision,
    peak                    double precision,
    threshold               double precision,
    updates                 integer NOT NULL DEFAULT 0,
    evidence_id             text,
    case_id                 text,
    details                 jsonb NOT NULL DEFAULT '{}',
    created_at              timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX clues_opened_idx ON clues (opened_at DESC);
CREATE INDEX clues_device_idx ON clues (device_id, opened_at DESC);

CREATE TABLE evidence (
    id              text PRIMARY KEY,
    clue_id         text NOT NULL REFERENCES clues (id),
    kind            text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    window_from     timestamptz NOT NULL,
    window_to       timestamptz NOT NULL,
    item_count      integer NOT NULL,
    -- The exact bytes that were hashed (canonical JSON), not jsonb, which would re-encode them.
    content         text NOT NULL,
    sha256          text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$')
);
CREATE INDEX evidence_clue_idx ON evidence (clue_id);

CREATE SEQUENCE case_number_seq;
CREATE TABLE cases (
    id                      text PRIMARY KEY,
    number                  text NOT NULL UNIQUE,
    title                   text NOT NULL,
    status                  text NOT NULL DEFAULT 'filed',
    matter_id               text,
    subject_id              text,
    department              text NOT NULL,
    cooperating_departments text[] NOT NULL DEFAULT '{}',
    legal_basis             text[] NOT NULL DEFAULT '{}',
    opened_at               timestamptz NOT NULL DEFAULT now(),
    opened_by               text NOT NULL
);
CREATE TABLE case_clues (
    case_id text NOT NULL REFERENCES cases (id),
    clue_id text NOT NULL REFERENCES clues (id),
    PRIMARY KEY (case_id, clue_id)
);

-- Every alert pushed to duty consoles, numbered so a reconnecting console resumes losing none.
CREATE TABLE alerts (
    seq         bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    type        text NOT NULL,
    clue_id     text,
    severity    text,
    department  text,
    body        jsonb NOT NULL
);
