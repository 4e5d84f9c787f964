-- Joint random inspections (双随机): the roster of inspectors from the registry, and every
-- draw recorded with its inputs, so a plan can be shown to have been drawn, not chosen.
CREATE TABLE inspectors (
    id               text PRIMARY KEY,
    name             text NOT NULL,
    department       text NOT NULL REFERENCES departments (id),
    qualified_matters text[] NOT NULL DEFAULT '{}',
    active           boolean NOT NULL DEFAULT true
);

CREATE TABLE inspection_plans (
    id          text PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now(),
    matter_id   text NOT NULL REFERENCES matters (id),
    seed        text NOT NULL,
    params      jsonb NOT NULL,
    plan        text NOT NULL,          -- canonical JSON of the draw, as hashed
    sha256      text NOT NULL
);
