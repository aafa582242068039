-- Write side: per-aggregate sequence allocation with optimistic concurrency, and the record of
-- appended event ids (idempotent append, forever). Both are derived data: they can be rebuilt
-- from the bucket, the single source of truth.

CREATE TABLE IF NOT EXISTS {{schema}}.aggregate_sequences (
  handler        text        NOT NULL,  -- '<EVENT_STORE_SEQUENCE_HANDLER_PREFIX>:<aggregate type>'
  aggregate_id   text        NOT NULL,
  last_sequence  bigint      NOT NULL CHECK (last_sequence >= 0),
  updated_at     timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (handler, aggregate_id)
);

-- One row per appended event id. state: 'reserved' (sequence taken, body or manifest not yet
-- confirmed), 'stored' (body and manifest written), 'gap' (the slot was given up and marked as a
-- gap in the bucket; the id may be appended again).
CREATE TABLE IF NOT EXISTS {{schema}}.appended_events (
  event_id        text        PRIMARY KEY,
  handler         text        NOT NULL,
  aggregate_id    text        NOT NULL,
  sequence_number bigint      NOT NULL,
  hash            text,                 -- idempotency hash of a command; null for domain events
  state           text        NOT NULL CHECK (state IN ('reserved', 'stored', 'gap')),
  reserved_at     timestamptz NOT NULL DEFAULT now(),
  UNIQUE (handler, aggregate_id, sequence_number)
);

CREATE INDEX IF NOT EXISTS appended_events_reserved
  ON {{schema}}.appended_events (reserved_at) WHERE state = 'reserved';

-- Reserves sequences for a group of appends in one round trip.
-- p_requests: [{i, handler, aggregate_id, expected_seq (number|null), ids: [event_id…], hashes: [text|null…]}]
-- p_stored: event ids whose body and manifest are now written (marked 'stored' first).
-- Returns {at_us, results: [{i, outcome: 'reserved', first_seq, prev_pending} | {i, outcome: 'conflict', actual_seq}
--          | {i, outcome: 'duplicate', rows: [{event_id, seq, state, hash}], prev_pending} | {i, outcome: 'mismatch', reason}]}.
-- at_us: the time of the reservation (microseconds); later reservations of an aggregate get later
-- times, since they wait for this transaction's row lock. prev_pending: the event just before the
-- first reserved sequence is itself reserved but not yet confirmed stored (the publisher then holds
-- these events until it has published that one, to keep per-aggregate order).
-- Requests are taken in (handler, aggregate_id, i) order so concurrent groups lock rows in one order.
CREATE OR REPLACE FUNCTION {{schema}}.reserve_sequences(p_requests jsonb, p_stored text[])
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
  r          jsonb;
  out        jsonb := '[]'::jsonb;
  v_handler  text;
  v_agg      text;
  v_expected bigint;
  v_ids      text[];
  v_hashes   text[];
  v_n        int;
  v_last     bigint;
  v_rows     jsonb;
  v_count    int;
  v_gaps     int;
  v_foreign  int;
  v_inserted int;
  v_prev     boolean;
BEGIN
  IF p_stored IS NOT NULL AND cardinality(p_stored) > 0 THEN
    UPDATE {{schema}}.appended_events SET state = 'stored'
     WHERE event_id = ANY (p_stored) AND state = 'reserved';
  END IF;

  FOR r IN
    SELECT value FROM jsonb_array_elements(p_requests)
     ORDER BY value->>'handler', value->>'aggregate_id', (value->>'i')::int
  LOOP
    v_handler := r->>'handler';
    v_agg := r->>'aggregate_id';
    v_expected := CASE WHEN jsonb_typeof(r->'expected_seq') = 'number' THEN (r->>'expected_seq')::bigint END;
    v_ids := ARRAY(SELECT jsonb_array_elements_text(r->'ids'));
    v_hashes := ARRAY(SELECT CASE WHEN jsonb_typeof(h) = 'string' THEN h #>> '{}' END
                        FROM jsonb_array_elements(r->'hashes') AS h);
    v_n := cardinality(v_ids);

    -- Lock the aggregate's row; create it at 0 when missing (a concurrent creator wins, we re-lock).
    LOOP
      SELECT last_sequence INTO v_last FROM {{schema}}.aggregate_sequences
       WHERE handler = v_handler AND aggregate_id = v_agg FOR UPDATE;
      EXIT WHEN FOUND;
      IF v_expected IS NOT NULL AND v_expected <> 0 THEN
        v_last := 0;  -- no row: the aggregate is new, so any other expectation conflicts
        EXIT;
      END IF;
      INSERT INTO {{schema}}.aggregate_sequences (handler, aggregate_id, last_sequence)
      VALUES (v_handler, v_agg, 0) ON CONFLICT DO NOTHING;
    END LOOP;

    -- Idempotency: the ids may have been appended before, at any time.
    SELECT coalesce(jsonb_agg(jsonb_build_object('event_id', e.event_id, 'seq', e.sequence_number,
                                                 'state', e.state, 'hash', e.hash)
                              ORDER BY e.sequence_number), '[]'::jsonb),
           count(*),
           count(*) FILTER (WHERE e.state = 'gap'),
           count(*) FILTER (WHERE e.handler <> v_handler OR e.aggregate_id <> v_agg)
      INTO v_rows, v_count, v_gaps, v_foreign
      FROM {{schema}}.appended_events e WHERE e.event_id = ANY (v_ids);
    IF v_foreign > 0 THEN
      out := out || jsonb_build_object('i', r->'i', 'outcome', 'mismatch',
                                       'reason', 'event id already appended to another aggregate');
      CONTINUE;
    END IF;
    IF v_count > 0 AND v_gaps = v_count THEN
      -- Every earlier attempt gave its slot up: forget it and append anew.
      DELETE FROM {{schema}}.appended_events WHERE event_id = ANY (v_ids);
    ELSIF v_count = v_n THEN
      SELECT EXISTS (SELECT 1 FROM {{schema}}.appended_events
                      WHERE handler = v_handler AND aggregate_id = v_agg AND state = 'reserved'
                        AND sequence_number = (v_rows->0->>'seq')::bigint - 1) INTO v_prev;
      out := out || jsonb_build_object('i', r->'i', 'outcome', 'duplicate', 'rows', v_rows,
                                       'prev_pending', v_prev);
      CONTINUE;
    ELSIF v_count > 0 THEN
      out := out || jsonb_build_object('i', r->'i', 'outcome', 'mismatch',
                                       'reason', 'some of these event ids were appended before, not all');
      CONTINUE;
    END IF;

    IF v_expected IS NOT NULL AND v_expected <> v_last THEN
      out := out || jsonb_build_object('i', r->'i', 'outcome', 'conflict', 'actual_seq', v_last);
      CONTINUE;
    END IF;

    INSERT INTO {{schema}}.appended_events (event_id, handler, aggregate_id, sequence_number, hash, state)
    SELECT ids.id, v_handler, v_agg, v_last + ids.ord, v_hashes[ids.ord], 'reserved'
      FROM unnest(v_ids) WITH ORDINALITY AS ids(id, ord)
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS v_inserted = ROW_COUNT;
    IF v_inserted <> v_n THEN
      -- Another group appended one of these ids in between (to another aggregate): undo ours.
      DELETE FROM {{schema}}.appended_events
       WHERE handler = v_handler AND aggregate_id = v_agg AND sequence_number > v_last
         AND event_id = ANY (v_ids);
      out := out || jsonb_build_object('i', r->'i', 'outcome', 'mismatch',
                                       'reason', 'event id appended concurrently elsewhere');
      CONTINUE;
    END IF;
    UPDATE {{schema}}.aggregate_sequences SET last_sequence = v_last + v_n, updated_at = now()
     WHERE handler = v_handler AND aggregate_id = v_agg;
    SELECT EXISTS (SELECT 1 FROM {{schema}}.appended_events
                    WHERE handler = v_handler AND aggregate_id = v_agg AND state = 'reserved'
                      AND sequence_number = v_last) INTO v_prev;
    out := out || jsonb_build_object('i', r->'i', 'outcome', 'reserved', 'first_seq', v_last + 1,
                                     'prev_pending', v_prev);
  END LOOP;
  RETURN jsonb_build_object('at_us', floor(extract(epoch FROM clock_timestamp()) * 1000000)::bigint,
                            'results', out);
END
$$;
