-- Consumers: a transactional handler's claims are recorded done, once, when its transaction has
-- applied them (issue 7's consume goal).
--
-- A transactional worker claims, applies and marks done a batch in ONE transaction, so nobody
-- else ever sees its claims as `processing`. Writing a `processing` row and then updating it to
-- `done` costs two row versions and three index entries per event; this writes one row and one
-- index entry.
--
-- claim_events_in_tx: same arguments, rules and outcomes as claim_events (004). Only callable in
-- the caller's transaction that will apply the events (the locks it takes are held to its end):
--   1. the advisory locks of the batch's (handler, aggregate) pairs, as in claim_events;
--   2. 004's step 2 for the aggregates without an open row, except that the claimed events get
--      no row here: they are returned with `"deferred": true`, and the caller inserts their rows
--      as done once applied (src/registry/processed-events.ts, recordDone), in the same
--      transaction. Stale ones are recorded skipped_stale as before;
--   3. every other event (an open row, or a row that is not done or skipped, or a unique
--      violation in step 2 which undoes it) goes to claim_events itself: its rows are
--      `processing`, marked done by mark_done as usual.
--
-- Why this is safe: 004's argument for step 2 holds while the aggregate's lock is held, and it is
-- held to the end of this transaction. Until then no other claim of the aggregate can run, so the
-- row inserted later in the transaction is the first one of its event; if the transaction rolls
-- back, nothing of it is left, as with claim_events in a transaction.

CREATE OR REPLACE FUNCTION {{schema}}.claim_events_in_tx(
  p_handler text, p_owner text, p_events jsonb, p_lease_ms bigint, p_owner_timeout_ms bigint)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
  v_fast jsonb;
  v_slow jsonb;
BEGIN
  PERFORM pg_advisory_xact_lock(hashtext(p_handler), k)
     FROM (SELECT DISTINCT hashtext((value->>'aggregate_type') || '/' || (value->>'aggregate_id')) AS k
             FROM jsonb_array_elements(p_events)) AS keys
    ORDER BY k;

  BEGIN
    WITH ev AS (
      SELECT x.event_id, x.aggregate_type, x.aggregate_id, x.seq
        FROM jsonb_to_recordset(p_events)
             AS x(event_id text, aggregate_type text, aggregate_id text, seq bigint)
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
             -- The same event id twice in the batch: claim_events sorts that out.
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
    SELECT (SELECT coalesce(jsonb_agg(jsonb_build_object('event_id', event_id, 'outcome', outcome,
                                                         'deferred', outcome = 'claimed')),
                            '[]'::jsonb)
              FROM decided),
           (SELECT coalesce(jsonb_agg(jsonb_build_object('event_id', event_id,
                     'aggregate_type', aggregate_type, 'aggregate_id', aggregate_id, 'seq', seq)),
                     '[]'::jsonb)
              FROM routed, flags WHERE slow OR any_repeated)
      INTO v_fast, v_slow;
  EXCEPTION WHEN unique_violation THEN
    -- A stale event's id inserted meanwhile under another aggregate: all of it to claim_events.
    v_fast := '[]'::jsonb;
    v_slow := p_events;
  END;

  IF jsonb_array_length(v_slow) = 0 THEN RETURN v_fast; END IF;
  RETURN v_fast || {{schema}}.claim_events(p_handler, p_owner, v_slow, p_lease_ms,
                                           p_owner_timeout_ms);
END
$$;
