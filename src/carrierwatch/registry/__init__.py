"""Schema registry wiring: committed schemas, the embedded Confluent-compatible registry, the serde.

- :mod:`~carrierwatch.registry.schemas`: the committed ``schemas/canonical_event/v<N>.avsc`` versions,
  the parsed current schema, record validation;
- :mod:`~carrierwatch.registry.compatibility`: Confluent compatibility levels over the ``avro``
  package's reader/writer checker;
- :mod:`~carrierwatch.registry.store` and :mod:`~carrierwatch.registry.server`: the embedded
  registry (state and HTTP);
- :mod:`~carrierwatch.registry.client`: :func:`registry_client` (configured URL or embedded) and
  :func:`seed_canonical_schemas`;
- :mod:`~carrierwatch.registry.serde`: :class:`CanonicalSerde`, canonical events in the Confluent
  wire format.
"""

from __future__ import annotations

from carrierwatch.registry.client import registry_client, seed_canonical_schemas
from carrierwatch.registry.serde import CanonicalSerde
from carrierwatch.registry.server import EmbeddedSchemaRegistry

__all__ = ["CanonicalSerde", "EmbeddedSchemaRegistry", "registry_client", "seed_canonical_schemas"]
