-- Registry: departments, the matters list, subjects and devices.
CREATE TABLE registry_loads (
    id          bigserial PRIMARY KEY,
    version     text        NOT NULL,
    sha256      text        NOT NULL,
    source      text        NOT NULL,
    loaded_at   timestamptz NOT NULL DEFAULT now(),
    counts      jsonb       NOT NULL
);

CREATE TABLE departments (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    name_zh     text NOT NULL DEFAULT '',
    active      boolean NOT NULL DEFAULT true
);

CREATE TABLE matters (
    id                      text PRIMARY KEY,
    name                    text NOT NULL,
    domain                  text,
    lead_department         text NOT NULL REFERENCES departments (id),
    cooperating_departments text[] NOT NULL DEFAULT '{}',
    legal_basis             text[] NOT NULL,
    object_type             text NOT NULL,
    inspection_method       text NOT NULL,
    active                  boolean NOT NULL DEFAULT true
);

CREATE TABLE subjects (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    kind        text NOT NULL,
    address     text NOT NULL DEFAULT '',
    tags        text[] NOT NULL DEFAULT '{}',
    risk_tier   text NOT NULL,
    active      boolean NOT NULL DEFAULT true
);

CREATE TABLE devices (
    id                  text PRIMARY KEY,
    domain              text NOT NULL,
    kind                text NOT NULL,
    subject_id          text NOT NULL REFERENCES subjects (id),
    matter_id           text NOT NULL REFERENCES matters (id),
    model               text NOT NULL DEFAULT '',
    expected_interval_s double precision NOT NULL,
    attributes          jsonb NOT NULL DEFAULT '{}',
    active              boolean NOT NULL DEFAULT true
);
CREATE INDEX devices_subject_idx ON devices (subject_id);

-- Last known state of each device, from its retained status topic and its readings.
CREATE TABLE device_status (
    device_id       text PRIMARY KEY,
    status          text,
    status_at       timestamptz,
    last_reading_ts timestamptz,
    last_seq        bigint,
    last_seen_at    timestamptz
);

-- Whatever the gateway refused, kept with the raw bytes and the reason.
CREATE TABLE quarantine (
    id          bigserial PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    topic       text NOT NULL,
    device_id   text,
    reason      text NOT NULL,
    payload     bytea NOT NULL
);
CREATE INDEX quarantine_received_idx ON quarantine (received_at);
