-- Consumers: the processed-event registry (exactly-once side effects per handler and event id),
-- the per-aggregate ordering guard, the liveness of registry owners (fast crash recovery), and the
-- claim functions. Code: src/registry/processed-events.ts; rules checked by the registry contract
-- (test/contract/registry.ts).

-- status: 'processing' (claimed by owner until lease_until), 'retrying' (released after a
-- retryable failure or an operator's retry: claimable by anyone), 'done', 'skipped_stale' (older
-- than what the handler already applied), 'failed' (dead-lettered; never re-claimed by a
-- redelivery), 'parked' (waits behind a failed or parked predecessor of its aggregate),
-- 'skipped' (an operator skipped it).
-- status(event_id) reads all handlers' rows of one event by walking the few handlers on the
-- primary key: an index on event_id would cost one more entry at every claim and completion.
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
-- Room on each page (fillfactor 50), so that moving a version up is a heap-only update (no new
-- index entry).
CREATE TABLE IF NOT EXISTS {{schema}}.aggregate_versions (
  handler        text        NOT NULL,
  aggregate_type text        NOT NULL,
  aggregate_id   text        NOT NULL,
  last_sequence  bigint      NOT NULL,
  updated_at     timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (handler, aggregate_type, aggregate_id)
) WITH (fillfactor = 50);

-- Registry owners (one per worker process): an owner whose heartbeat is old, or who stopped, is
-- gone, and its claims can be taken at once instead of waiting out their leases.
CREATE TABLE IF NOT EXISTS {{schema}}.registry_owners (
  owner        text        PRIMARY KEY,
  member       text        NOT NULL,
  started_at   timestamptz NOT NULL DEFAULT now(),
  heartbeat_at timestamptz NOT NULL DEFAULT now(),
  stopped_at   timestamptz
);

-- claim_events: claims a batch of events for one handler in one round trip.
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
--
-- The rules are applied set-based, in a few statements per batch (one event at a time only where
-- step 3 says):
--   step 1. the advisory locks of all the batch's (handler, aggregate) pairs in one statement, in
--      ascending lock-key order (every claim takes them in that order: no cycle between batches);
--   step 2. one statement reads, for every event at once, its row, its aggregate's version and
--      whether the aggregate has an open row (processing, retrying, failed, parked); decides the
--      outcomes of the aggregates without an open row and inserts their new rows in one
--      INSERT … SELECT;
--   step 3. the other aggregates' events (an open row, or a row of the event that is not done or
--      skipped) go through the rules one event at a time; so does the whole batch when step 2's
--      insert meets an existing event id (the same id twice in the batch, or inserted meanwhile
--      by a claim under another aggregate): step 2 is then undone.
--
-- Why step 2 gives the rules' outcomes: under the aggregate's lock nobody else inserts rows of it,
-- and no row of it becomes open again except by a claim (which needs the lock), so "no open row"
-- holds to the end of the transaction. The rules, one event at a time in (sequence, event id)
-- order, then find for each event either a done or skipped row (duplicate), or none: stale when
-- the version reached its sequence (recorded skipped_stale, which is not open), else claimed
-- unless an older event of the batch was claimed just before it. That claim is the only
-- processing row of the aggregate, so the events at the lowest claimable sequence are claimed and
-- the later ones wait: rank() = 1.
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
  -- Step 1. Held to the end of the transaction. A volatile select-list item is evaluated after
  -- the sort.
  PERFORM pg_advisory_xact_lock(hashtext(p_handler), k)
     FROM (SELECT DISTINCT hashtext((value->>'aggregate_type') || '/' || (value->>'aggregate_id')) AS k
             FROM jsonb_array_elements(p_events)) AS keys
    ORDER BY k;
  v_now := clock_timestamp();

  -- Step 2.
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
    -- nothing of the block is left, and every event of the batch takes step 3.
    v_fast := '[]'::jsonb;
    SELECT jsonb_agg(value ORDER BY value->>'aggregate_type', value->>'aggregate_id',
                     (value->>'seq')::bigint, value->>'event_id')
      INTO v_slow FROM jsonb_array_elements(p_events);
  END;

  -- Step 3: the rules, one event at a time, for the aggregates step 2 left (their locks are held).
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

-- claim_batch_in_tx: claims a batch for one handler with claim_events' rules and outcomes, inside
-- the caller's transaction that will apply the events (the locks it takes are held to its end).
-- Nobody else ever sees these claims as processing, so a claimed event of an aggregate without an
-- open row gets no row here: it comes back deferred, and the caller inserts its one row, already
-- done, once applied (src/registry/processed-events.ts, recordDone), in the same transaction: one
-- row version and one index entry per event instead of a processing row and its update to done
-- (two row versions, three index entries).
--   1. the advisory locks of the batch's (handler, aggregate) pairs, as claim_events takes them;
--   2. claim_events' step 2 for the aggregates without an open row, except that the claimed
--      events get no row (deferred); stale ones are recorded skipped_stale;
--   3. every other event (an open row, a row that is not done or skipped, an id twice in the
--      batch, or a unique violation in step 2, which undoes it) goes to claim_events itself: its
--      rows are processing, marked done by markDone; none of these is deferred.
-- Why this is safe: claim_events' argument for its step 2 holds while the aggregate's lock is
-- held, and it is held to the end of this transaction. Until then no other claim of the aggregate
-- can run, so the row inserted later in the transaction is the first one of its event; if the
-- transaction rolls back, nothing of it is left, as with claim_events in a transaction.
--
-- The batch comes as parallel arrays (event ids, aggregate types, aggregate ids, sequences) and
-- the outcomes go back as three arrays (event ids, outcomes, deferred):
-- reading the batch once with unnest and aggregating arrays costs PostgreSQL less CPU than
-- parsing and building JSON per event.
CREATE OR REPLACE FUNCTION {{schema}}.claim_batch_in_tx(
  p_handler text, p_owner text, p_ids text[], p_types text[], p_aggs text[], p_seqs bigint[],
  p_lease_ms bigint, p_owner_timeout_ms bigint,
  OUT event_ids text[], OUT outcomes text[], OUT deferred boolean[])
LANGUAGE plpgsql AS $$
DECLARE
  v_slow jsonb;
  v_more jsonb;
BEGIN
  -- The same locks, in the same order, as claim_events takes.
  PERFORM pg_advisory_xact_lock(hashtext(p_handler), k)
     FROM (SELECT DISTINCT hashtext(t || '/' || a) AS k FROM unnest(p_types, p_aggs) AS u(t, a)) AS keys
    ORDER BY k;

  BEGIN
    WITH ev AS (
      SELECT * FROM unnest(p_ids, p_types, p_aggs, p_seqs)
                    AS x(event_id, aggregate_type, aggregate_id, seq)
    ), known AS MATERIALIZED (
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
             count(*) OVER (PARTITION BY event_id) > 1 AS repeated,
             CASE WHEN row_status IS NOT NULL THEN 'duplicate'
                  WHEN version >= seq THEN 'stale' END AS settled
        FROM known
    ), flags AS (
      SELECT coalesce(bool_or(repeated), false) AS any_repeated FROM routed
    ), fast AS (
      SELECT routed.* FROM routed, flags WHERE NOT slow AND NOT any_repeated
    ), decided AS (
      SELECT event_id, aggregate_type, aggregate_id, seq, version,
             coalesce(settled, CASE WHEN rank() OVER (PARTITION BY aggregate_type, aggregate_id,
                                                      settled IS NULL ORDER BY seq) = 1
                                    THEN 'claimed' ELSE 'in_progress' END) AS outcome
        FROM fast
    ), ins AS (
      INSERT INTO {{schema}}.processed_events
             (handler, event_id, aggregate_type, aggregate_id, sequence_number, status, attempts,
              last_error)
      SELECT p_handler, event_id, aggregate_type, aggregate_id, seq, 'skipped_stale', 0,
             format('sequence %s is not after %s, already applied', seq, version)
        FROM decided WHERE outcome = 'stale'
    )
    SELECT (SELECT array_agg(event_id) FROM decided),
           (SELECT array_agg(outcome) FROM decided),
           (SELECT array_agg(outcome = 'claimed') FROM decided),
           (SELECT jsonb_agg(jsonb_build_object('event_id', event_id,
                     'aggregate_type', aggregate_type, 'aggregate_id', aggregate_id, 'seq', seq))
              FROM routed, flags WHERE slow OR any_repeated)
      INTO event_ids, outcomes, deferred, v_slow;
  EXCEPTION WHEN unique_violation THEN
    -- A stale event's id inserted meanwhile under another aggregate: all of it to claim_events.
    event_ids := NULL;
    outcomes := NULL;
    deferred := NULL;
    SELECT jsonb_agg(jsonb_build_object('event_id', x.e, 'aggregate_type', x.t,
                                        'aggregate_id', x.a, 'seq', x.s))
      INTO v_slow FROM unnest(p_ids, p_types, p_aggs, p_seqs) AS x(e, t, a, s);
  END;

  -- Every other event (an open row, a row that is not done or skipped, an id twice in the
  -- batch): claim_events decides it and writes its row; none of these is deferred.
  IF v_slow IS NOT NULL THEN
    v_more := {{schema}}.claim_events(p_handler, p_owner, v_slow, p_lease_ms, p_owner_timeout_ms);
    SELECT coalesce(event_ids, '{}') || array_agg(r.event_id),
           coalesce(outcomes, '{}') || array_agg(r.outcome),
           coalesce(deferred, '{}') || array_agg(false)
      INTO event_ids, outcomes, deferred
      FROM jsonb_to_recordset(v_more) AS r(event_id text, outcome text);
  END IF;
END
$$;
