-- A duty officer acknowledges an alert (签收): somebody has seen it. Kept apart from the
-- lifecycle status, since a clue is acknowledged whatever step it is at, and only once: the
-- first officer and time stay.
ALTER TABLE clues
    ADD COLUMN acknowledged_at timestamptz,
    ADD COLUMN acknowledged_by text,
    ADD CONSTRAINT clues_acknowledged_whole CHECK (
        (acknowledged_at IS NULL) = (acknowledged_by IS NULL)
    );
