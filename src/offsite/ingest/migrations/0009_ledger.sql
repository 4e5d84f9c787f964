-- The casework ledger: every evidence and case action, hash-chained (each entry's hash covers
-- the previous entry's hash), so that a row changed, removed or reordered by someone with
-- database access breaks every hash after it. Appends are serialised by the application
-- (an advisory lock in the appending transaction); the constraints below make a fork
-- impossible even if that were bypassed: one entry per seq, one successor per hash.
CREATE TABLE ledger (
    seq             bigint      PRIMARY KEY CHECK (seq >= 1),
    at              timestamptz NOT NULL,
    actor           text        NOT NULL,
    action          text        NOT NULL,
    object_kind     text        NOT NULL,
    object_id       text        NOT NULL,
    -- The exact canonical JSON bytes that payload_sha256 is over (text, not jsonb, which
    -- would re-encode them).
    payload         text        NOT NULL,
    payload_sha256  text        NOT NULL CHECK (payload_sha256 ~ '^[0-9a-f]{64}$'),
    prev_hash       text        NOT NULL UNIQUE CHECK (prev_hash ~ '^[0-9a-f]{64}$'),
    hash            text        NOT NULL UNIQUE CHECK (hash ~ '^[0-9a-f]{64}$')
);
CREATE INDEX ledger_object_idx ON ledger (object_kind, object_id);

-- The head of the ledger signed (Ed25519) from time to time: a copy of a checkpoint kept
-- outside the database shows whether the chain up to it was rewritten since.
CREATE TABLE ledger_checkpoints (
    seq         bigint      NOT NULL REFERENCES ledger (seq),
    head_hash   text        NOT NULL CHECK (head_hash ~ '^[0-9a-f]{64}$'),
    at          timestamptz NOT NULL,
    key_id      text        NOT NULL,
    public_key  text        NOT NULL,
    signature   text        NOT NULL,
    PRIMARY KEY (seq, key_id)
);

CREATE FUNCTION offsite_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER ledger_append_only BEFORE UPDATE OR DELETE ON ledger
    FOR EACH ROW EXECUTE FUNCTION offsite_append_only();
CREATE TRIGGER ledger_no_truncate BEFORE TRUNCATE ON ledger
    FOR EACH STATEMENT EXECUTE FUNCTION offsite_append_only();
CREATE TRIGGER ledger_checkpoints_append_only BEFORE UPDATE OR DELETE ON ledger_checkpoints
    FOR EACH ROW EXECUTE FUNCTION offsite_append_only();
CREATE TRIGGER ledger_checkpoints_no_truncate BEFORE TRUNCATE ON ledger_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION offsite_append_only();
