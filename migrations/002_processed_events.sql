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

-- Claims a batch of events for one handler in one round trip.
-- p_events: [{event_id, aggregate_type, aggregate_id, seq}]; returns [{event_id, outcome, status?}]
-- with outcome one of claimed, duplicate, stale, in_progress, failed, parked.
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
  v_version bigint;
  v_blocker text;
  v_gone    boolean;
  v_outcome text;
  v_lease   timestamptz := clock_timestamp() + make_interval(secs => p_lease_ms / 1000.0);
BEGIN
  FOR e IN
    SELECT value FROM jsonb_array_elements(p_events)
     ORDER BY value->>'aggregate_type', value->>'aggregate_id', (value->>'seq')::bigint
  LOOP
    v_id := e->>'event_id';
    v_type := e->>'aggregate_type';
    v_agg := e->>'aggregate_id';
    v_seq := (e->>'seq')::bigint;
    v_outcome := NULL;
    <<attempt>>
    FOR i IN 1..2 LOOP
      SELECT * INTO v_row FROM {{schema}}.processed_events
       WHERE handler = p_handler AND event_id = v_id FOR UPDATE;
      IF FOUND THEN
        IF v_row.status IN ('done', 'skipped_stale', 'skipped') THEN
          v_outcome := 'duplicate';
        ELSIF v_row.status = 'failed' THEN
          v_outcome := 'failed';
        ELSIF v_row.status = 'parked' THEN
          v_outcome := 'parked';
        ELSIF v_row.status = 'retrying' THEN
          UPDATE {{schema}}.processed_events
             SET status = 'processing', owner = p_owner, lease_until = v_lease,
                 heartbeat_at = clock_timestamp(), attempts = attempts + 1, updated_at = clock_timestamp()
           WHERE handler = p_handler AND event_id = v_id;
          v_outcome := 'claimed';
        ELSE
          -- processing: someone else's (or an earlier instance's) claim
          SELECT (o.owner IS NULL OR o.stopped_at IS NOT NULL
                  OR o.heartbeat_at < clock_timestamp() - make_interval(secs => p_owner_timeout_ms / 1000.0))
            INTO v_gone
            FROM (SELECT 1) AS one
            LEFT JOIN {{schema}}.registry_owners o ON o.owner = v_row.owner;
          -- Our own claim again (a retry after a pause) is ours; another's once it lapsed.
          IF v_row.owner = p_owner OR v_row.lease_until < clock_timestamp() OR v_gone THEN
            UPDATE {{schema}}.processed_events
               SET owner = p_owner, lease_until = v_lease, heartbeat_at = clock_timestamp(),
                   attempts = attempts + 1, updated_at = clock_timestamp()
             WHERE handler = p_handler AND event_id = v_id;
            v_outcome := 'claimed';
          ELSE
            v_outcome := 'in_progress';
          END IF;
        END IF;
        EXIT attempt;
      END IF;

      -- A new event for this handler: the ordering guard first.
      SELECT last_sequence INTO v_version FROM {{schema}}.aggregate_versions
       WHERE handler = p_handler AND aggregate_type = v_type AND aggregate_id = v_agg;
      IF v_version IS NOT NULL AND v_version >= v_seq THEN
        INSERT INTO {{schema}}.processed_events
               (handler, event_id, aggregate_type, aggregate_id, sequence_number, status, last_error)
        VALUES (p_handler, v_id, v_type, v_agg, v_seq, 'skipped_stale',
                format('sequence %s is not after %s, already applied', v_seq, v_version))
        ON CONFLICT DO NOTHING;
        IF FOUND THEN v_outcome := 'stale'; EXIT attempt; END IF;
        CONTINUE attempt;
      END IF;

      -- An older event of the aggregate still open: wait for it, or park behind a failed one.
      SELECT status INTO v_blocker FROM {{schema}}.processed_events
       WHERE handler = p_handler AND aggregate_type = v_type AND aggregate_id = v_agg
         AND sequence_number < v_seq AND status IN ('processing', 'retrying', 'failed', 'parked')
       ORDER BY CASE WHEN status IN ('failed', 'parked') THEN 0 ELSE 1 END
       LIMIT 1;
      IF v_blocker IN ('failed', 'parked') THEN
        INSERT INTO {{schema}}.processed_events
               (handler, event_id, aggregate_type, aggregate_id, sequence_number, status, last_error)
        VALUES (p_handler, v_id, v_type, v_agg, v_seq, 'parked',
                'an earlier event of this aggregate failed or is parked')
        ON CONFLICT DO NOTHING;
        IF FOUND THEN v_outcome := 'parked'; EXIT attempt; END IF;
        CONTINUE attempt;
      ELSIF v_blocker IS NOT NULL THEN
        v_outcome := 'in_progress';
        EXIT attempt;
      END IF;

      INSERT INTO {{schema}}.processed_events
             (handler, event_id, aggregate_type, aggregate_id, sequence_number, status, owner,
              lease_until, heartbeat_at, attempts)
      VALUES (p_handler, v_id, v_type, v_agg, v_seq, 'processing', p_owner, v_lease, clock_timestamp(), 1)
      ON CONFLICT DO NOTHING;
      IF FOUND THEN v_outcome := 'claimed'; EXIT attempt; END IF;
      -- Another claimer inserted it meanwhile: look again (now it exists).
    END LOOP;
    out := out || jsonb_build_object('event_id', v_id, 'outcome', coalesce(v_outcome, 'in_progress'));
  END LOOP;
  RETURN out;
END
$$;
