-- Write side: a group commit's reservation in a few set-based statements (issue 7).
--
-- reserve_batch: the same rules and outcomes as reserve_sequences (001), with the group as
-- parallel arrays and the outcomes as arrays. 001 runs six to seven statements per append (lock,
-- id look-up, insert, update, pending check, JSON building); on one connection that cost 200 to
-- 1,000 µs of PostgreSQL CPU per event (docs/performance.md). Here a group costs about ten
-- statements, whatever its size:
--   1. ids confirmed stored since the last round trip are marked 'stored';
--   2. every aggregate of the group gets its row (at 0 when new; a row at 0 is the same as no row)
--      and all rows are locked, in (handler, aggregate_id) order, as 001 locks them, so groups
--      of either function never wait on each other in a cycle. A group that reserved on one of
--      these aggregates and has not committed holds us here until it has;
--   3. only then are the ids looked up, so an id reserved by a group we waited for is seen. When
--      the group is plain (each aggregate once, each id once, and none of its ids recorded
--      before), each append is compared with its aggregate's sequence under the lock: a conflict,
--      or a reservation (its ids recorded 'reserved', the row moved forward, and whether the
--      event just before is itself still 'reserved');
--   4. anything else (a retried id, an aggregate twice in a group, an id twice) goes to
--      reserve_sequences itself, under the locks already held, and its answer is returned as
--      arrays.
-- An id inserted concurrently by another group for another aggregate (not visible at the look-up,
-- committed before our insert) makes the insert come short; the statement is then abandoned with
-- a serialization failure (40001), which the allocator retries, and the retry finds the id and
-- takes step 4 (a mismatch, as in 001).
--
-- Plans. The statements take arrays, so PostgreSQL would plan them anew at every call (about
-- 50-100 µs each) or, once it keeps a generic plan, pick joins from the statistics of the moment:
-- for a new, small table a hash join over a sequential scan, kept until the next ANALYZE while
-- the table grows. The function therefore keeps generic plans and does not consider sequential
-- scans, hash or merge joins: every access is an index probe, whatever the statistics say.
-- Conditions on `state` are written so that they cannot use the partial index of open
-- reservations (appended_events_reserved): its entries of reservations since confirmed stay until
-- a vacuum, and a plan through it reads all of them (one stored marking read 8,000 entries in a
-- test).
--
-- Arguments: p_handlers, p_aggs, p_expected (null: no expectation), p_counts (ids per append), one
-- element per append; p_ids, p_hashes (null: not compared), the appends' ids in order; p_stored.
-- Outputs, one element per append, in the order given: outcomes ('reserved', 'conflict',
-- 'duplicate', 'mismatch'), seqs (the first reserved sequence, or the actual one of a conflict),
-- prev_pending, reasons (of a mismatch); and the rows of the duplicates, flattened: dup_req (the
-- append's position, from 1), dup_ids, dup_seqs, dup_states, dup_hashes, in sequence order.
-- at_us: as in 001, the time of the reservation (microseconds), taken under the locks.

CREATE OR REPLACE FUNCTION {{schema}}.reserve_batch(
  p_handlers text[], p_aggs text[], p_expected bigint[], p_counts int[],
  p_ids text[], p_hashes text[], p_stored text[],
  OUT at_us bigint, OUT outcomes text[], OUT seqs bigint[], OUT prev_pending boolean[],
  OUT reasons text[], OUT dup_req int[], OUT dup_ids text[], OUT dup_seqs bigint[],
  OUT dup_states text[], OUT dup_hashes text[])
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
DECLARE
  v_n        int := coalesce(cardinality(p_handlers), 0);
  v_req      int[];
  v_ord      int[];
  v_last     bigint[];
  v_conflict boolean[];
  v_want     int;
  v_inserted int;
  v_legacy   jsonb;
BEGIN
  IF p_stored IS NOT NULL AND cardinality(p_stored) > 0 THEN
    UPDATE {{schema}}.appended_events SET state = 'stored'
     WHERE event_id = ANY (p_stored) AND state <> 'stored' AND state <> 'gap';
  END IF;
  IF v_n = 0 THEN
    at_us := floor(extract(epoch FROM clock_timestamp()) * 1000000)::bigint;
    RETURN;
  END IF;

  -- Each id's append and its position in it.
  SELECT array_agg(r.i ORDER BY r.i, g.ord), array_agg(g.ord ORDER BY r.i, g.ord)
    INTO v_req, v_ord
    FROM unnest(p_counts) WITH ORDINALITY AS r(cnt, i), generate_series(1, r.cnt) AS g(ord);
  IF cardinality(p_aggs) <> v_n OR cardinality(p_expected) <> v_n OR cardinality(p_counts) <> v_n
     OR coalesce(cardinality(v_req), 0) <> coalesce(cardinality(p_ids), 0)
     OR coalesce(cardinality(p_hashes), 0) <> coalesce(cardinality(p_ids), 0) THEN
    RAISE EXCEPTION 'reserve_batch: arrays of unequal length' USING ERRCODE = '22023';
  END IF;

  INSERT INTO {{schema}}.aggregate_sequences (handler, aggregate_id, last_sequence)
  SELECT DISTINCT r.h, r.a, 0 FROM unnest(p_handlers, p_aggs) AS r(h, a)
   ORDER BY r.h, r.a
  ON CONFLICT DO NOTHING;

  SELECT array_agg(l.last_sequence ORDER BY l.i) INTO v_last
    FROM (SELECT r.i, s.last_sequence
            FROM unnest(p_handlers, p_aggs) WITH ORDINALITY AS r(h, a, i)
            JOIN {{schema}}.aggregate_sequences s ON s.handler = r.h AND s.aggregate_id = r.a
           ORDER BY s.handler, s.aggregate_id
             FOR UPDATE OF s) AS l;
  IF coalesce(cardinality(v_last), 0) <> v_n THEN
    -- A row vanished between its creation and its lock (the registry was being emptied).
    RAISE EXCEPTION 'reserve_batch: an aggregate row went missing; retry' USING ERRCODE = '40001';
  END IF;

  IF (SELECT count(DISTINCT (r.h, r.a)) FROM unnest(p_handlers, p_aggs) AS r(h, a)) <> v_n
     OR (SELECT count(DISTINCT x) FROM unnest(p_ids) AS x) <> cardinality(p_ids)
     OR EXISTS (SELECT 1 FROM {{schema}}.appended_events WHERE event_id = ANY (p_ids)) THEN
    v_legacy := {{schema}}.reserve_sequences(
      (SELECT jsonb_agg(jsonb_build_object(
                'i', r.i - 1, 'handler', r.h, 'aggregate_id', r.a, 'expected_seq', r.e,
                'ids', coalesce((SELECT jsonb_agg(p_ids[k] ORDER BY k)
                                   FROM generate_subscripts(p_ids, 1) AS k WHERE v_req[k] = r.i),
                                '[]'::jsonb),
                'hashes', coalesce((SELECT jsonb_agg(p_hashes[k] ORDER BY k)
                                      FROM generate_subscripts(p_ids, 1) AS k WHERE v_req[k] = r.i),
                                   '[]'::jsonb)))
         FROM unnest(p_handlers, p_aggs, p_expected) WITH ORDINALITY AS r(h, a, e, i)),
      NULL);
    at_us := (v_legacy->>'at_us')::bigint;
    SELECT array_agg(x.outcome ORDER BY x.i), array_agg(coalesce(x.first_seq, x.actual_seq) ORDER BY x.i),
           array_agg(coalesce(x.prev_pending, false) ORDER BY x.i), array_agg(x.reason ORDER BY x.i)
      INTO outcomes, seqs, prev_pending, reasons
      FROM jsonb_to_recordset(v_legacy->'results')
           AS x(i int, outcome text, first_seq bigint, actual_seq bigint, prev_pending boolean,
                reason text);
    SELECT array_agg(x.i + 1 ORDER BY x.i, d.seq), array_agg(d.event_id ORDER BY x.i, d.seq),
           array_agg(d.seq ORDER BY x.i, d.seq), array_agg(d.state ORDER BY x.i, d.seq),
           array_agg(d.hash ORDER BY x.i, d.seq)
      INTO dup_req, dup_ids, dup_seqs, dup_states, dup_hashes
      FROM jsonb_to_recordset(v_legacy->'results') AS x(i int, outcome text, rows jsonb),
           jsonb_to_recordset(x.rows) AS d(event_id text, seq bigint, state text, hash text)
     WHERE x.outcome = 'duplicate';
    RETURN;
  END IF;

  -- The plain group: decide under the locks.
  SELECT array_agg(e IS NOT NULL AND e <> v_last[i] ORDER BY i) INTO v_conflict
    FROM unnest(p_expected) WITH ORDINALITY AS r(e, i);
  SELECT coalesce(sum(c), 0) INTO v_want
    FROM unnest(p_counts, v_conflict) AS r(c, conflict) WHERE NOT conflict;

  IF v_want > 0 THEN
    INSERT INTO {{schema}}.appended_events (event_id, handler, aggregate_id, sequence_number, hash, state)
    SELECT p_ids[k], p_handlers[v_req[k]], p_aggs[v_req[k]], v_last[v_req[k]] + v_ord[k], p_hashes[k],
           'reserved'
      FROM generate_subscripts(p_ids, 1) AS k
     WHERE NOT v_conflict[v_req[k]]
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS v_inserted = ROW_COUNT;
    IF v_inserted <> v_want THEN
      RAISE EXCEPTION 'reserve_batch: an event id was appended concurrently; retry'
        USING ERRCODE = '40001';
    END IF;

    UPDATE {{schema}}.aggregate_sequences s
       SET last_sequence = r.last + r.cnt, updated_at = now()
      FROM unnest(p_handlers, p_aggs, v_last, p_counts, v_conflict) AS r(h, a, last, cnt, conflict)
     WHERE s.handler = r.h AND s.aggregate_id = r.a AND NOT r.conflict;
  END IF;

  SELECT array_agg(CASE WHEN r.conflict THEN 'conflict' ELSE 'reserved' END ORDER BY r.i),
         array_agg(CASE WHEN r.conflict THEN r.last ELSE r.last + 1 END ORDER BY r.i),
         array_agg(NOT r.conflict AND r.last > 0 AND coalesce(
                     (SELECT e.state = 'reserved' FROM {{schema}}.appended_events e
                       WHERE e.handler = r.h AND e.aggregate_id = r.a
                         AND e.sequence_number = r.last), false) ORDER BY r.i),
         array_agg(NULL::text ORDER BY r.i)
    INTO outcomes, seqs, prev_pending, reasons
    FROM unnest(p_handlers, p_aggs, v_last, v_conflict) WITH ORDINALITY AS r(h, a, last, conflict, i);
  at_us := floor(extract(epoch FROM clock_timestamp()) * 1000000)::bigint;
END
$$;

