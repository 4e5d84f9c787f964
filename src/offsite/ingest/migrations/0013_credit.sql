-- Risk tiers recomputed from a subject's own record (信用分级分类): the tier its clues and
-- cases earn over the last year, beside the tier the registry declares. Detection is as
-- strict as the higher of the two; as the record clears (clues closed as rectified, time
-- passing) the assessed tier comes back down (信用修复).
ALTER TABLE subjects
    ADD COLUMN assessed_tier text CHECK (assessed_tier IN ('A', 'B', 'C', 'D')),
    ADD COLUMN assessed_at   timestamptz,
    ADD COLUMN assessment    jsonb;
