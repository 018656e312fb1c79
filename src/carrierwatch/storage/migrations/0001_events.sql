-- 0001 events: the raw log, canonical events and dead letters.
--
-- Conventions for every carrierwatch table (0001 onwards):
--   * times are DateTime64(3, 'UTC'); enumerations are LowCardinality(String) (free to evolve);
--   * every table has a deterministic key and a ReplacingMergeTree engine, so writing the same input
--     twice (a replay, a restarted worker) leaves one row per key: read with FINAL (or argMax);
--   * statements are idempotent (IF NOT EXISTS): a migration interrupted half-way can run again;
--   * plain ClickHouse SQL that runs the same on chDB and on a ClickHouse server.

-- The immutable raw log as received, kept only briefly: it is the ONLY table allowed to hold
-- personal data (payload bytes and headers exactly as the partner sent them). Rows expire 7 days
-- after carrierwatch stored them (stored_at, not received_time: a backfill of old payloads is
-- kept for the same short while instead of vanishing on insert).
CREATE TABLE IF NOT EXISTS raw_events
(
    raw_event_id   String COMMENT 'blake2b-128 of partner, received time and payload bytes',
    partner_id     LowCardinality(String),
    received_time  DateTime64(3, 'UTC'),
    source         LowCardinality(String) COMMENT 'webhook, poll, batch or synthetic',
    headers        Map(String, String),
    raw            String COMMENT 'payload bytes exactly as received (may hold personal data)',
    stored_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toDate(received_time)
ORDER BY (partner_id, received_time, raw_event_id)
TTL toDateTime(stored_at) + INTERVAL 7 DAY DELETE
SETTINGS ttl_only_drop_parts = 1;

-- Canonical events, one row per event id. The key ends with event_id, a hash of partner, package,
-- status and event time, so duplicates collapse; the version column received_time keeps the latest
-- delivery of an event (a partner repeating a checkpoint with more detail wins).
CREATE TABLE IF NOT EXISTS canonical_events
(
    event_id                String,
    partner_id              LowCardinality(String),
    package_id              String,
    tracking_number         String,
    shipment_id             Nullable(String),
    status                  LowCardinality(String),
    reason                  LowCardinality(Nullable(String)),
    confidence              Float64,
    raw_code                String,
    event_time              DateTime64(3, 'UTC'),
    received_time           DateTime64(3, 'UTC'),
    partner_received_time   Nullable(DateTime64(3, 'UTC')),
    timezone_ambiguous      Bool,
    event_time_local        Nullable(String),
    location_country        LowCardinality(Nullable(String)),
    location_region         LowCardinality(Nullable(String)),
    location_city           Nullable(String),
    location_postal_prefix  Nullable(String),
    location_latitude       Nullable(Float64),
    location_longitude      Nullable(Float64),
    promised_by             Nullable(DateTime64(3, 'UTC')),
    eta_start               Nullable(DateTime64(3, 'UTC')),
    eta_end                 Nullable(DateTime64(3, 'UTC')),
    attempt_number          Nullable(Int32),
    proof_of_delivery       LowCardinality(Nullable(String)),
    service_level           LowCardinality(Nullable(String)),
    synthetic               Bool,
    payload_schema_version  LowCardinality(String)
)
ENGINE = ReplacingMergeTree(received_time)
PARTITION BY toYYYYMM(event_time)
ORDER BY (partner_id, package_id, event_time, event_id);

-- Payloads (or parts of one) that could not be parsed or validated. One row per partner + payload
-- bytes + offending path; the latest receipt wins. The raw bytes are blanked 14 days after they
-- were stored (column TTL: long enough to fix the cause and replay, short enough for data
-- minimisation); the error, path and partner stay.
CREATE TABLE IF NOT EXISTS dead_letters
(
    dead_letter_id  String COMMENT 'blake2b-128 of partner, payload bytes and path',
    partner_id      LowCardinality(String),
    received_time   DateTime64(3, 'UTC'),
    error           String,
    path            String,
    raw             String TTL toDateTime(stored_at) + INTERVAL 14 DAY,
    stored_at       DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(received_time)
ORDER BY (partner_id, dead_letter_id);
