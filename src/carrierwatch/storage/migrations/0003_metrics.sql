-- 0003: package outcomes and windowed SLA metrics, the rows of carrierwatch.core.pipeline
-- (PackageOutcomeRow) and carrierwatch.core.windows (MetricWindowRow). Column names and order
-- equal the dataclass fields and their to_row() keys. Rows are replacement rows: the latest
-- version per key wins (read with FINAL or argMax). No semicolons in comments: the migration
-- runner splits statements on them.

CREATE TABLE IF NOT EXISTS package_outcomes
(
    partner_id            LowCardinality(String),
    package_id            String,
    shard                 UInt16,
    version               UInt64,
    region                LowCardinality(String),
    service_level         LowCardinality(String),
    synthetic             Bool,
    status                LowCardinality(String),
    events                UInt32,
    first_event_time      Nullable(DateTime64(3, 'UTC')),
    last_event_time       Nullable(DateTime64(3, 'UTC')),
    promised_by           Nullable(DateTime64(3, 'UTC')),
    promise_source        LowCardinality(Nullable(String)),
    pickup_due            Nullable(DateTime64(3, 'UTC')),
    picked_up_at          Nullable(DateTime64(3, 'UTC')),
    pickup_on_time        Nullable(Bool),
    delivered_at          Nullable(DateTime64(3, 'UTC')),
    proof_of_delivery     LowCardinality(Nullable(String)),
    on_time               Nullable(Bool),
    decided_at            Nullable(DateTime64(3, 'UTC')),
    attempts              UInt16,
    first_attempt_success Nullable(Bool),
    first_attempt_reason  LowCardinality(Nullable(String)),
    exceptions            UInt16,
    open_exception_since  Nullable(DateTime64(3, 'UTC')),
    flags                 UInt16,
    last_eta              Nullable(DateTime64(3, 'UTC'))
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (partner_id, package_id);

CREATE TABLE IF NOT EXISTS metric_windows
(
    partner_id              LowCardinality(String),
    region                  LowCardinality(String),
    service_level           LowCardinality(String),
    granularity             LowCardinality(String),
    window_start            DateTime64(3, 'UTC'),
    shard                   UInt16,
    version                 UInt64,
    events                  Int64,
    codebook_gap_events     Int64,
    synthetic_events        Int64,
    too_late_events         Int64,
    latency_count           Int64,
    latency_sum_ms          Int64,
    carrier_lag_count       Int64,
    carrier_lag_sum_ms      Int64,
    ingest_lag_count        Int64,
    ingest_lag_sum_ms       Int64,
    packages_decided        Int64,
    packages_on_time        Int64,
    packages_with_exception Int64,
    first_attempts          Int64,
    first_attempt_successes Int64,
    pickups_due             Int64,
    pickups_on_time         Int64,
    deliveries              Int64,
    tracking_compliant      Int64,
    lateness_count          Int64,
    lateness_sum_s          Int64,
    lateness_sum_sq_s2      Int128,
    eta_checked             Int64,
    eta_accurate            Int64,
    exceptions_opened       Int64,
    exceptions_resolved     Int64,
    resolution_sum_ms       Int64,
    events_by_status        Map(LowCardinality(String), Int64),
    latency_hist            Map(UInt16, Int64),
    carrier_lag_hist        Map(UInt16, Int64),
    ingest_lag_hist         Map(UInt16, Int64),
    resolution_hist         Map(UInt16, Int64)
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY (granularity, toYYYYMM(window_start))
ORDER BY (partner_id, region, service_level, granularity, window_start, shard);
