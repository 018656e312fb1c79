"""The ingest edge: how partner data gets into ``raw.<partner>``.

* :mod:`~carrierwatch.ingest.gateway`: the webhook gateway (``carrierwatch gateway``, aiohttp);
* :mod:`~carrierwatch.ingest.auth`: verification of each partner's declared auth scheme;
* :mod:`~carrierwatch.ingest.secrets`: webhook secrets from the environment or a secrets file;
* :mod:`~carrierwatch.ingest.spool`: the write-ahead spool used while Kafka is unreachable;
* :mod:`~carrierwatch.ingest.kafka`: the producer with delivery reports and the spool drainer;
* :mod:`~carrierwatch.ingest.limits`: per-partner token buckets and the webhook-id replay cache.
"""
