-- Snapshots of aggregates' states (src/application/snapshots.ts): derived data, kept to load a
-- long stream without folding it from the start. Never needed for correctness: a snapshot whose
-- `version` is not the aggregate's current `evolve` version is ignored and replaced, and the
-- table may be emptied at any time (`cairn` rebuilds nothing from it; the bucket is the truth).

CREATE TABLE IF NOT EXISTS {{schema}}.snapshots (
  aggregate_type text COLLATE "C" NOT NULL,
  aggregate_id   text COLLATE "C" NOT NULL,
  version        integer     NOT NULL,
  seq            bigint      NOT NULL,
  state          jsonb       NOT NULL,
  taken_at       timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (aggregate_type, aggregate_id)
);
