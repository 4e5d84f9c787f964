-- A case task past its due time raises an alert once, like an overdue clue: the sweep stamps
-- when it flagged the task, so that it never alerts for the same task twice.
ALTER TABLE case_tasks ADD COLUMN overdue_at timestamptz;
-- The sweep reads only the tasks still running and not yet flagged.
CREATE INDEX case_tasks_due_idx ON case_tasks (due_at)
    WHERE completed_at IS NULL AND overdue_at IS NULL;
