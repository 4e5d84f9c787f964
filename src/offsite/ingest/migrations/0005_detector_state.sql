-- Detector state that matters (episode starts, durations, peaks) checkpointed per device, so
-- a restarted worker, or the worker a device moves to, resumes where the last one stopped.
CREATE TABLE detector_state (
    device_id   text NOT NULL,
    detector    text NOT NULL,
    state       jsonb NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, detector)
);
