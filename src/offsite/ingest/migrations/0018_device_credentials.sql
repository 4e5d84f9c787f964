-- Each device's MQTT credentials (issue 6): the broker's password and ACL files are made
-- from this table (`offsite devices credentials export-mosquitto`). Only a hash is kept, in
-- mosquitto's own PBKDF2-SHA512 format ($7$), so that the export needs no secret; the
-- plaintext is shown once, when it is issued.
-- (Numbered 0018: 0015 to 0017 are taken by people and casework.)
CREATE TABLE device_credentials (
    device_id   text PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
    secret_hash text NOT NULL,
    issued_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz,
    CONSTRAINT device_credentials_hash_format CHECK (secret_hash LIKE '$7$%')
);
