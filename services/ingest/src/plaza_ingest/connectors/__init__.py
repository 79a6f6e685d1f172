"""Ingest connectors: each follows one platform's live stream of posts for the city (mentions,
hashtags), catches up after a gap and keeps its cursor durably; the runner publishes."""

from plaza_ingest.connectors.base import Batch, Connector, RetryAfter
from plaza_ingest.connectors.runner import ConnectorRunner

__all__ = ["Batch", "Connector", "ConnectorRunner", "RetryAfter"]
