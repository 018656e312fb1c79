-- 0004 escalations: what the decision tables decided (docs/decisions.md).
-- One row per escalation id (a hash of partner, package, table and rule): a replay or a restarted
-- worker that decides the same escalation again replaces the row, never adds one.
CREATE TABLE IF NOT EXISTS escalations
(
    escalation_id   String,
    partner_id      LowCardinality(String),
    package_id      String,
    decision_table  LowCardinality(String),
    rule            LowCardinality(String),
    actions         Array(LowCardinality(String)),
    priority        LowCardinality(String) COMMENT 'critical, high, normal, low',
    trigger         LowCardinality(String) COMMENT 'event or sweep (open exceptions)',
    decided_at      DateTime64(3, 'UTC') COMMENT 'event time of the trigger',
    facts           Map(String, String) COMMENT 'the table inputs the rule saw'
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(decided_at)
ORDER BY (partner_id, escalation_id);
