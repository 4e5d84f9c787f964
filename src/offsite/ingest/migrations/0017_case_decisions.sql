-- A case's decision (处罚决定, or 不予处罚 when no violation is found), one per case: its
-- kind, the fine for a fine, the legal basis it rests on, who took it and when.
CREATE TABLE case_decisions (
    case_id     text        PRIMARY KEY REFERENCES cases (id),
    kind        text        NOT NULL CHECK (
                    kind IN ('warning', 'fine', 'suspension', 'revocation', 'no_violation')
                ),
    amount_cny  numeric(14, 2) CHECK (amount_cny > 0),
    legal_basis text[]      NOT NULL CHECK (cardinality(legal_basis) > 0),
    note        text,
    decided_at  timestamptz NOT NULL DEFAULT now(),
    decided_by  text        NOT NULL,
    -- an amount is what makes a fine, and only a fine has one
    CONSTRAINT case_decisions_fine_amount CHECK ((kind = 'fine') = (amount_cny IS NOT NULL))
);
