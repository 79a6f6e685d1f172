"""The statuses the partial indexes of service_requests are written with are the ones the code
calls open and waiting: a status added to plaza.requests and not to an index's predicate would
leave its requests out of the duplicate search, the open queues and the SLA scan, and a query
whose IN list is no longer implied by the predicate would not use the index at all."""

from __future__ import annotations

import re

from plaza.db.models import ServiceRequest
from plaza.requests import OPEN_STATUSES, WAITING


def _statuses(predicate: str) -> frozenset[str]:
    found = re.search(r"status IN \(([^)]*)\)", predicate)
    assert found, predicate
    return frozenset(re.findall(r"'(\w+)'", found[1]))


def test_each_partial_index_of_requests_names_the_open_or_the_waiting_statuses() -> None:
    predicates = {
        index.name: str(index.dialect_options["postgresql"]["where"])
        for index in ServiceRequest.__table__.indexes
        if index.dialect_options["postgresql"]["where"] is not None
        and "status IN" in str(index.dialect_options["postgresql"]["where"])
    }
    expected = {
        "ix_service_requests_dedupe_near": OPEN_STATUSES,
        "ix_service_requests_dedupe_barri": OPEN_STATUSES,
        "ix_service_requests_dedupe_address_key": OPEN_STATUSES,
        "ix_service_requests_open_queue": OPEN_STATUSES,
        "ix_service_requests_resolve_due": OPEN_STATUSES,
        "ix_service_requests_ack_due": WAITING,
    }
    assert set(predicates) == set(expected)
    for name, statuses in expected.items():
        assert _statuses(predicates[name]) == statuses, name
