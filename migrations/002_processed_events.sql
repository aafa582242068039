-- Consumers: the processed-event registry (exactly-once side effects per handler and event id),
-- the per-aggregate ordering guard, and the liveness of registry owners (fast crash recovery).

-- status: 'processing' (claimed by owner until lease_until), 'retrying' (released after a
-- retryable failure or an operator's retry: claimable by anyone), 'done', 'skipped_stale' (older
-- than what the handler already applied), 'failed' (dead-lettered; never re-claimed by a
-- redelivery), 'parked' (waits behind a failed or parked predecessor of its aggregate),
-- 'skipped' (an operator skipped it).
CREATE TABLE IF NOT EXISTS {{schema}}.processed_events (
  handler         text        NOT NULL,
  event_id        text        NOT NULL,
  aggregate_type  text        NOT NULL,
  aggregate_id    text        NOT NULL,
  sequence_number bigint      NOT NULL,
  status          text        NOT NULL CHECK (status IN
                    ('processing', 'retrying', 'done', 'skipped_stale', 'failed', 'parked', 'skipped')),
  owner           text,
  lease_until     timestamptz,
  heartbeat_at    timestamptz,
  attempts        integer     NOT NULL DEFAULT 0,
  last_error      text,
  result          jsonb,
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (handler, event_id)
);

-- Open rows of an aggregate (the predecessor rule) and the operator's views.
CREATE INDEX IF NOT EXISTS processed_events_open
  ON {{schema}}.processed_events (handler, aggregate_type, aggregate_id, sequence_number)
  WHERE status IN ('processing', 'retrying', 'failed', 'parked');

-- The ordering guard: per handler and aggregate, the highest sequence applied; only moves up.
CREATE TABLE IF NOT EXISTS {{schema}}.aggregate_versions (
  handler        text        NOT NULL,
  aggregate_type text        NOT NULL,
  aggregate_id   text        NOT NULL,
  last_sequence  bigint      NOT NULL,
  updated_at     timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (handler, aggregate_type, aggregate_id)
);

-- Registry owners (one per worker process): an owner whose heartbeat is old, or who stopped, is
-- gone, and its claims can be taken at once instead of waiting out their leases.
CREATE TABLE IF NOT EXISTS {{schema}}.registry_owners (
  owner        text        PRIMARY KEY,
  member       text        NOT NULL,
  started_at   timestamptz NOT NULL DEFAULT now(),
  heartbeat_at timestamptz NOT NULL DEFAULT now(),
  stopped_at   timestamptz
);

-- status(event_id) reads all handlers' rows of one event: the primary key leads with handler.
CREATE INDEX IF NOT EXISTS processed_events_event_id ON {{schema}}.processed_events (event_id);

-- Claims a batch of events for one handler in one round trip.
-- p_events: [{event_id, aggregate_type, aggregate_id, seq}]; returns [{event_id, outcome}] with
-- outcome one of claimed, duplicate, stale, in_progress, failed, parked. The rules, per event, in
-- (aggregate, sequence) order, under the lock of the event's (handler, aggregate):
--   1. recorded done, skipped_stale or skipped → duplicate; failed → failed; parked → parked;
--      processing under a live lease of another owner that is not known gone → in_progress.
--      Otherwise (new, retrying, this owner's own claim, lapsed lease, owner gone) it is a
--      candidate for rules 2-5.
--   2. the handler applied this sequence or a later one → stale (recorded skipped_stale).
--   3. an older event of the aggregate is failed or parked → parked (recorded).
--   4. an older event is processing or retrying, or a newer one is processing → in_progress
--      (nothing changes: a newer one that completes makes this one stale).
--   5. claimed: processing, owned by p_owner until now + p_lease_ms, attempts + 1.
-- An owner is known gone when its registry_owners row is stopped or its heartbeat is older than
-- p_owner_timeout_ms; an owner without a row is not known gone (only its lease frees its claims).
CREATE OR REPLACE FUNCTION {{schema}}.claim_events(
  p_handler text, p_owner text, p_events jsonb, p_lease_ms bigint, p_owner_timeout_ms bigint)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
  e         jsonb;
  out       jsonb := '[]'::jsonb;
  v_id      text;
  v_type    text;
  v_agg     text;
  v_seq     bigint;
  v_row     {{schema}}.processed_events%ROWTYPE;
  v_found   boolean;
  v_version bigint;
  v_blocker text;
  v_gone    boolean;
  v_outcome text;
  v_now     timestamptz;
  v_locked  text;
BEGIN
  FOR e IN
    SELECT value FROM jsonb_array_elements(p_events)
     ORDER BY value->>'aggregate_type', value->>'aggregate_id', (value->>'seq')::bigint,
              value->>'event_id'
  LOOP
    v_id := e->>'event_id';
    v_type := e->>'aggregate_type';
    v_agg := e->>'aggregate_id';
    v_seq := (e->>'seq')::bigint;
    v_outcome := NULL;
    -- Held to the end of the transaction; batches lock aggregates in the same order.
    IF v_locked IS DISTINCT FROM v_type || '/' || v_agg THEN
      v_locked := v_type || '/' || v_agg;
      PERFORM pg_advisory_xact_lock(hashtext(p_handler), hashtext(v_locked));
    END IF;
    v_now := clock_timestamp();

    SELECT * INTO v_row FROM {{schema}}.processed_events
     WHERE handler = p_handler AND event_id = v_id FOR UPDATE;
    v_found := FOUND;
    IF v_found THEN
      IF v_row.status IN ('done', 'skipped_stale', 'skipped') THEN
        v_outcome := 'duplicate';
      ELSIF v_row.status IN ('failed', 'parked') THEN
        v_outcome := v_row.status;
      ELSIF v_row.status = 'processing' AND v_row.owner IS DISTINCT FROM p_owner
            AND v_row.lease_until >= v_now THEN
        SELECT o.stopped_at IS NOT NULL
               OR o.heartbeat_at < v_now - make_interval(secs => p_owner_timeout_ms / 1000.0)
          INTO v_gone
          FROM {{schema}}.registry_owners o WHERE o.owner = v_row.owner;
        IF v_gone IS NOT TRUE THEN v_outcome := 'in_progress'; END IF;
      END IF;
    END IF;

    IF v_outcome IS NULL THEN
      SELECT last_sequence INTO v_version FROM {{schema}}.aggregate_versions
       WHERE handler = p_handler AND aggregate_type = v_type AND aggregate_id = v_agg;
      v_blocker := NULL;
      IF v_version IS NOT NULL AND v_version >= v_seq THEN
        v_outcome := 'stale';
      ELSE
        SELECT status INTO v_blocker FROM {{schema}}.processed_events
         WHERE handler = p_handler AND aggregate_type = v_type AND aggregate_id = v_agg
           AND sequence_number < v_seq AND status IN ('processing', 'retrying', 'failed', 'parked')
         ORDER BY CASE WHEN status IN ('failed', 'parked') THEN 0 ELSE 1 END
         LIMIT 1;
        IF NOT FOUND THEN
          SELECT status INTO v_blocker FROM {{schema}}.processed_events
           WHERE handler = p_handler AND aggregate_type = v_type AND aggregate_id = v_agg
             AND sequence_number > v_seq AND status = 'processing'
           LIMIT 1;
        END IF;
        IF FOUND AND v_blocker IN ('failed', 'parked') THEN
          v_outcome := 'parked';
        ELSIF FOUND THEN
          v_outcome := 'in_progress';
        ELSE
          v_outcome := 'claimed';
        END IF;
      END IF;

      IF v_outcome = 'stale' THEN
        IF v_found THEN
          UPDATE {{schema}}.processed_events
             SET status = 'skipped_stale', lease_until = NULL, updated_at = v_now,
                 last_error = format('sequence %s is not after %s, already applied', v_seq, v_version)
           WHERE handler = p_handler AND event_id = v_id;
        ELSE
          INSERT INTO {{schema}}.processed_events
                 (handler, event_id, aggregate_type, aggregate_id, sequence_number, status, last_error)
          VALUES (p_handler, v_id, v_type, v_agg, v_seq, 'skipped_stale',
                  format('sequence %s is not after %s, already applied', v_seq, v_version))
          ON CONFLICT DO NOTHING;
          IF NOT FOUND THEN v_outcome := 'in_progress'; END IF;
        END IF;
      ELSIF v_outcome = 'parked' THEN
        IF v_found THEN
          UPDATE {{schema}}.processed_events
             SET status = 'parked', owner = NULL, lease_until = NULL, updated_at = v_now,
                 last_error = 'an earlier event of this aggregate failed or is parked'
           WHERE handler = p_handler AND event_id = v_id;
        ELSE
          INSERT INTO {{schema}}.processed_events
                 (handler, event_id, aggregate_type, aggregate_id, sequence_number, status, last_error)
          VALUES (p_handler, v_id, v_type, v_agg, v_seq, 'parked',
                  'an earlier event of this aggregate failed or is parked')
          ON CONFLICT DO NOTHING;
          IF NOT FOUND THEN v_outcome := 'in_progress'; END IF;
        END IF;
      ELSIF v_outcome = 'claimed' THEN
        IF v_found THEN
          UPDATE {{schema}}.processed_events
             SET status = 'processing', owner = p_owner,
                 lease_until = v_now + make_interval(secs => p_lease_ms / 1000.0),
                 heartbeat_at = v_now, attempts = attempts + 1, updated_at = v_now
           WHERE handler = p_handler AND event_id = v_id;
        ELSE
          INSERT INTO {{schema}}.processed_events
                 (handler, event_id, aggregate_type, aggregate_id, sequence_number, status, owner,
                  lease_until, heartbeat_at, attempts)
          VALUES (p_handler, v_id, v_type, v_agg, v_seq, 'processing', p_owner,
                  v_now + make_interval(secs => p_lease_ms / 1000.0), v_now, 1)
          ON CONFLICT DO NOTHING;
          -- Only an insert of the same event id under another aggregate gets here.
          IF NOT FOUND THEN v_outcome := 'in_progress'; END IF;
        END IF;
      END IF;
    END IF;
    out := out || jsonb_build_object('event_id', v_id, 'outcome', v_outcome);
  END LOOP;
  RETURN out;
END
$$;
