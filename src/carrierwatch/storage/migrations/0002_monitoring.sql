-- 0002 monitoring: anomalies, synthetic-delivery heartbeats and alert events.
-- Same conventions as 0001 (UTC DateTime64(3), LowCardinality enums, ReplacingMergeTree keys).

-- One detector verdict per partner, metric stream, window and detector. Re-scoring a window (a
-- replay, late data) replaces the row: the last insert wins. detected_at is informational.
CREATE TABLE IF NOT EXISTS anomalies
(
    partner_id    LowCardinality(String),
    metric        LowCardinality(String) COMMENT 'volume, exception_rate, latency_p95, on_time_rate, ...',
    window_start  DateTime64(3, 'UTC'),
    detector      LowCardinality(String),
    value         Float64 COMMENT 'the metric value the detector scored',
    score         Float64 COMMENT 'detector score, high = anomalous',
    threshold     Float64,
    is_anomaly    Bool,
    detected_at   DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (partner_id, metric, window_start, detector);

-- Synthetic deliveries sent through each integration's real ingest path. A heartbeat row is
-- rewritten as its status progresses (pending -> seen | late | missing); updated_at, the time the
-- status was decided, is the version: the latest decision wins (a late arrival after "missing").
CREATE TABLE IF NOT EXISTS heartbeats
(
    partner_id    LowCardinality(String),
    heartbeat_id  String,
    package_id    Nullable(String) COMMENT 'the synthetic package, to join canonical_events',
    sent_at       DateTime64(3, 'UTC'),
    deadline_at   Nullable(DateTime64(3, 'UTC')),
    seen_at       Nullable(DateTime64(3, 'UTC')),
    latency_ms    Nullable(Float64) COMMENT 'seen_at - sent_at, end to end',
    status        LowCardinality(String) COMMENT 'pending, seen, late or missing',
    updated_at    DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
PARTITION BY toYYYYMM(sent_at)
ORDER BY (partner_id, heartbeat_id);

-- Alert events as Alertmanager reports them (webhook receiver). One row per alert instance
-- (fingerprint + starts_at); the resolved notification replaces the firing one (latest updated_at).
CREATE TABLE IF NOT EXISTS alerts
(
    partner_id   LowCardinality(String) COMMENT 'empty for alerts not about one partner',
    name         LowCardinality(String) COMMENT 'the alertname label',
    fingerprint  String,
    starts_at    DateTime64(3, 'UTC'),
    ends_at      Nullable(DateTime64(3, 'UTC')),
    severity     LowCardinality(String),
    state        LowCardinality(String) COMMENT 'firing or resolved',
    labels       Map(String, String),
    annotations  Map(String, String),
    updated_at   DateTime64(3, 'UTC') COMMENT 'when this state was received'
)
ENGINE = ReplacingMergeTree(updated_at)
PARTITION BY toYYYYMM(starts_at)
ORDER BY (partner_id, name, fingerprint, starts_at);
