-- The people who use the API, their roles and their tokens. A department officer belongs to
-- one department and sees only what was routed to it; the other roles see everything.
CREATE TABLE people (
    id            bigserial   PRIMARY KEY,
    name          text        NOT NULL UNIQUE CHECK (name ~ '^[^:\s][^:]*$'),
    role          text        NOT NULL CHECK (role IN ('admin', 'duty', 'department', 'auditor')),
    department_id text        REFERENCES departments (id),
    active        boolean     NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now(),
    created_by    text        NOT NULL,
    CONSTRAINT people_department_officer_has_one CHECK (
        role <> 'department' OR department_id IS NOT NULL
    )
);

-- Only the SHA-256 of a token is kept: a copy of this table does not let anyone call the API.
-- A token is `ofs_<id>_<secret>`, so it is looked up by id and its hash compared in constant
-- time; every token expires.
CREATE TABLE api_tokens (
    id           bigserial   PRIMARY KEY,
    person_id    bigint      NOT NULL REFERENCES people (id),
    sha256       bytea       NOT NULL CHECK (length(sha256) = 32),
    name         text        NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    created_by   text        NOT NULL,
    expires_at   timestamptz NOT NULL,
    revoked_at   timestamptz,
    revoked_by   text,
    last_used_at timestamptz,
    CHECK (expires_at > created_at)
);
CREATE INDEX api_tokens_person_idx ON api_tokens (person_id, id);
