-- 0004 heartbeat integrations: what the heartbeat monitor records beside 0002's columns.
-- A heartbeat row's status is pending, seen, slow, late, missing or rejected (see
-- carrierwatch.synthetic.heartbeat); state is the integration's state (healthy, slow, silent)
-- right after that row's decision, so the rows of one partner and integration ordered by
-- updated_at are its state history.
ALTER TABLE heartbeats ADD COLUMN IF NOT EXISTS integration LowCardinality(String) DEFAULT ''
    COMMENT 'webhook, poll or drop';
ALTER TABLE heartbeats ADD COLUMN IF NOT EXISTS state LowCardinality(String) DEFAULT ''
    COMMENT 'healthy, slow or silent after this decision (empty while pending)';
ALTER TABLE heartbeats ADD COLUMN IF NOT EXISTS expected_events UInt32 DEFAULT 0
    COMMENT 'canonical events the heartbeat must produce';
ALTER TABLE heartbeats ADD COLUMN IF NOT EXISTS seen_events UInt32 DEFAULT 0
    COMMENT 'of which stored when the row was written';
ALTER TABLE heartbeats ADD COLUMN IF NOT EXISTS slow_ms Int64 DEFAULT 0
    COMMENT 'latency above which the heartbeat is slow';
ALTER TABLE heartbeats ADD COLUMN IF NOT EXISTS interval_ms Int64 DEFAULT 0
    COMMENT 'the sender''s interval for this integration';
ALTER TABLE heartbeats ADD COLUMN IF NOT EXISTS detail String DEFAULT ''
    COMMENT 'why a heartbeat was rejected (the ingest path''s answer)';
