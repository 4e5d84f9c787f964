-- Camera frames fixed as evidence of a clue: the JPEG bytes as the camera sent them, each
-- with its SHA-256. The evidence content (0003) lists every frame's hash, so the content's
-- own hash covers the frames too; verification recomputes both.
CREATE TABLE evidence_frames (
    evidence_id text        NOT NULL REFERENCES evidence (id),
    idx         integer     NOT NULL,
    ts          timestamptz NOT NULL,
    seq         bigint,
    sha256      text        NOT NULL,
    jpeg        bytea       NOT NULL,
    PRIMARY KEY (evidence_id, idx)
);
