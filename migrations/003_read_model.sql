-- The reference domain's read model, kept by the projection worker from the domain events
-- (src/domain/projection.ts) and queried by the OMS (src/domain/read-model.ts).
--
-- `seq` is the aggregate's latest sequence number the projection applied (a client's next
-- expected_seq). Generations (see src/domain/decide.ts) decide visibility: a class row is visible
-- only under the database row of its `db_generation`, an instance row only under the class row of
-- its `class_generation`, so a database or class deleted and re-created shows none of its former
-- children even if a late event of theirs arrives after the delete. Ids sort bytewise (COLLATE
-- "C") so keyset paging is the same on every server.

CREATE TABLE IF NOT EXISTS {{schema}}.rm_databases (
  name        text COLLATE "C" PRIMARY KEY,
  description text,
  seq         bigint      NOT NULL,
  generation  bigint      NOT NULL,
  created_at  timestamptz NOT NULL,
  updated_at  timestamptz NOT NULL
);

CREATE TABLE IF NOT EXISTS {{schema}}.rm_classes (
  db            text COLLATE "C" NOT NULL,
  id            text COLLATE "C" NOT NULL,
  label         text,
  description   text,
  properties    jsonb       NOT NULL DEFAULT '[]'::jsonb,
  seq           bigint      NOT NULL,
  generation    bigint      NOT NULL,
  db_generation bigint      NOT NULL,
  created_at    timestamptz NOT NULL,
  updated_at    timestamptz NOT NULL,
  PRIMARY KEY (db, id)
);

CREATE TABLE IF NOT EXISTS {{schema}}.rm_instances (
  db               text COLLATE "C" NOT NULL,
  class_id         text COLLATE "C" NOT NULL,
  id               text COLLATE "C" NOT NULL,
  data             jsonb       NOT NULL,
  seq              bigint      NOT NULL,
  class_generation bigint      NOT NULL,
  db_generation    bigint      NOT NULL,
  created_at       timestamptz NOT NULL,
  updated_at       timestamptz NOT NULL,
  PRIMARY KEY (db, class_id, id)
);

-- Filters by property values: `data @> '{"sku":"a-1"}'`.
CREATE INDEX IF NOT EXISTS rm_instances_data
  ON {{schema}}.rm_instances USING gin (data jsonb_path_ops);
