-- Status rows (meridian.nodes, meridian.members) are rewritten by every
-- heartbeat flush: with a fleet of 10,000 agents that is 20,000 updates a
-- second. Leave room on every page so an update can stay on its page
-- (a HOT update: no index entry, no new page), and let autovacuum clean
-- them up early, before the tables bloat.
ALTER TABLE meridian.nodes SET (fillfactor = 50, autovacuum_vacuum_scale_factor = 0.02,
                                autovacuum_vacuum_threshold = 1000);
ALTER TABLE meridian.members SET (fillfactor = 50, autovacuum_vacuum_scale_factor = 0.02,
                                  autovacuum_vacuum_threshold = 1000);

-- The standbys streaming from a member, as its agent read them from
-- pg_stat_replication (name, address, state, sync_state, sent/flush/replay
-- positions, replay_lag_ms).
ALTER TABLE meridian.members ADD COLUMN standbys jsonb NOT NULL DEFAULT '[]';
