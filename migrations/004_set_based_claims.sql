-- Consumers: cheaper claims and completions (issue 7's consume goal).
--
-- claim_events, set-based: same signature and the same rules as 002's (see its comment; the
-- registry contract, test/contract/registry.ts, checks them), in a few statements per batch
-- instead of about five per event:
--   1. the advisory locks of all the batch's (handler, aggregate) pairs in one statement, in
--      ascending lock-key order (every claim takes them in that order: no cycle between batches);
--   2. one statement reads, for every event at once, its row, its aggregate's version and whether
--      the aggregate has an open row (processing, retrying, failed, parked); decides the outcomes
--      of the aggregates without an open row and inserts their new rows in one INSERT … SELECT;
--   3. the other aggregates' events (an open row, or a row of the event that is not done or
--      skipped) go through 002's per-event loop, unchanged; so does the whole batch when step 2's
--      insert meets an existing event id (the same id twice in the batch, or inserted meanwhile
--      by a claim under another aggregate): step 2 is then undone.
--
-- Why step 2 gives 002's outcomes: under the aggregate's lock nobody else inserts rows of it, and
-- no row of it becomes open again except by a claim (which needs the lock), so "no open row" holds
-- to the end of the transaction. 002's loop, in (sequence, event id) order, then finds for each
-- event either a done or skipped row (duplicate), or none: stale when the version reached its
-- sequence (recorded skipped_stale, which is not open), else claimed unless an older event of the
-- batch was claimed just before it. That claim is the only processing row of the aggregate, so
-- the events at the lowest claimable sequence are claimed and the later ones wait: rank() = 1.

-- Fewer index entries per claim and completion. status(event_id) walks the few handlers on the
-- primary key instead (src/registry/processed-events.ts), so the event-id index, one more entry
-- at every claim and every completion, goes.
DROP INDEX IF EXISTS {{schema}}.processed_events_event_id;
-- Room on each page, so that moving a version up is a heap-only update (no new index entry).
ALTER TABLE {{schema}}.aggregate_versions SET (fillfactor = 50);

CREATE OR REPLACE FUNCTION {{schema}}.claim_events(
  p_handler text, p_owner text, p_events jsonb, p_lease_ms bigint, p_owner_timeout_ms bigint)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
  e         jsonb;
  v_fast    jsonb;
  v_slow    jsonb;
  outs      jsonb[] := '{}';
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
BEGIN
  -- Held to the end of the transaction. A volatile select-list item is evaluated after the sort.
  PERFORM pg_advisory_xact_lock(hashtext(p_handler), k)
     FROM (SELECT DISTINCT hashtext((value->>'aggregate_type') || '/' || (value->>'aggregate_id')) AS k
             FROM jsonb_array_elements(p_events)) AS keys
    ORDER BY k;
  v_now := clock_timestamp();

  BEGIN
    WITH ev AS (
      SELECT x.event_id, x.aggregate_type, x.aggregate_id, x.seq
        FROM jsonb_to_recordset(p_events)
             AS x(event_id text, aggregate_type text, aggregate_id text, seq bigint)
    ), known AS MATERIALIZED (
      -- Scalar subqueries: one primary-key or index probe per event, whatever the tables' sizes.
      SELECT ev.*,
             (SELECT p.status FROM {{schema}}.processed_events p
               WHERE p.handler = p_handler AND p.event_id = ev.event_id) AS row_status,
             (SELECT v.last_sequence FROM {{schema}}.aggregate_versions v
               WHERE v.handler = p_handler AND v.aggregate_type = ev.aggregate_type
                 AND v.aggregate_id = ev.aggregate_id) AS version,
             (SELECT true FROM {{schema}}.processed_events o
               WHERE o.handler = p_handler AND o.aggregate_type = ev.aggregate_type
                 AND o.aggregate_id = ev.aggregate_id
                 AND o.status IN ('processing', 'retrying', 'failed', 'parked')
               LIMIT 1) AS has_open
        FROM ev
    ), routed AS (
      SELECT known.*,
             bool_or(has_open IS NOT NULL
                     OR num_nulls(event_id, aggregate_type, aggregate_id, seq) > 0
                     OR coalesce(row_status NOT IN ('done', 'skipped_stale', 'skipped'), false))
               OVER (PARTITION BY aggregate_type, aggregate_id) AS slow,
             CASE WHEN row_status IS NOT NULL THEN 'duplicate'
                  WHEN version >= seq THEN 'stale' END AS settled
        FROM known
    ), decided AS (
      SELECT event_id, aggregate_type, aggregate_id, seq, version,
             coalesce(settled, CASE WHEN rank() OVER (PARTITION BY aggregate_type, aggregate_id,
                                                      settled IS NULL ORDER BY seq) = 1
                                    THEN 'claimed' ELSE 'in_progress' END) AS outcome
        FROM routed WHERE NOT slow
    ), ins AS (
      -- No ON CONFLICT (its extra probe per row): a conflict fails the block, see below.
      INSERT INTO {{schema}}.processed_events
             (handler, event_id, aggregate_type, aggregate_id, sequence_number, status, owner,
              lease_until, heartbeat_at, attempts, last_error)
      SELECT p_handler, event_id, aggregate_type, aggregate_id, seq,
             CASE outcome WHEN 'claimed' THEN 'processing' ELSE 'skipped_stale' END,
             CASE outcome WHEN 'claimed' THEN p_owner END,
             CASE outcome WHEN 'claimed' THEN v_now + make_interval(secs => p_lease_ms / 1000.0) END,
             CASE outcome WHEN 'claimed' THEN v_now END,
             CASE outcome WHEN 'claimed' THEN 1 ELSE 0 END,
             CASE outcome WHEN 'stale'
               THEN format('sequence %s is not after %s, already applied', seq, version) END
        FROM decided WHERE outcome IN ('claimed', 'stale')
    )
    SELECT (SELECT coalesce(jsonb_agg(jsonb_build_object('event_id', event_id, 'outcome', outcome)),
                            '[]'::jsonb)
              FROM decided),
           (SELECT coalesce(jsonb_agg(jsonb_build_object('event_id', event_id,
                     'aggregate_type', aggregate_type, 'aggregate_id', aggregate_id, 'seq', seq)
                     ORDER BY aggregate_type, aggregate_id, seq, event_id), '[]'::jsonb)
              FROM routed WHERE slow)
      INTO v_fast, v_slow;
  EXCEPTION WHEN unique_violation THEN
    -- An event id twice in the batch, or inserted meanwhile by a claim under another aggregate:
    -- nothing of the block is left, and every event of the batch takes 002's loop.
    v_fast := '[]'::jsonb;
    SELECT jsonb_agg(value ORDER BY value->>'aggregate_type', value->>'aggregate_id',
                     (value->>'seq')::bigint, value->>'event_id')
      INTO v_slow FROM jsonb_array_elements(p_events);
  END;

  -- 002's rules, one event at a time, for the aggregates step 2 left (their locks are held).
  FOR e IN SELECT value FROM jsonb_array_elements(v_slow) LOOP
    v_id := e->>'event_id';
    v_type := e->>'aggregate_type';
    v_agg := e->>'aggregate_id';
    v_seq := (e->>'seq')::bigint;
    v_outcome := NULL;
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
    outs := outs || jsonb_build_object('event_id', v_id, 'outcome', v_outcome);
  END LOOP;
  RETURN v_fast || to_jsonb(outs);
END
$$;
