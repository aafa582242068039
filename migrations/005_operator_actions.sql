-- An operator's retry or skip of a failed or parked event is recorded with who did it and when
-- (the console's and the CLI's actor: `token:<name>`, `operator@<user>`). The row keeps them
-- after it is processed again, so that an event's record shows it was released by hand.
ALTER TABLE {{schema}}.processed_events
  ADD COLUMN IF NOT EXISTS resolved_by text,
  ADD COLUMN IF NOT EXISTS resolved_at timestamptz;
