-- Every running publisher says where it stands, about every heartbeat (5 s): its role (active,
-- standby, stopped), the position it publishes from, and when it last said so. The checkpoint
-- in the bucket names the active one only; this shows the standbys too (`cairn status`, the
-- console). Derived and disposable: nothing decides anything from it.
CREATE TABLE IF NOT EXISTS {{schema}}.publishers (
  id        text        PRIMARY KEY,
  role      text        NOT NULL,
  position  text,
  host      text        NOT NULL,
  seen_at   timestamptz NOT NULL DEFAULT now()
);
