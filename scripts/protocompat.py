"""The wire-compatibility lock of the contracts: every field ever published, with number and type.

`make proto` adds new fields to proto/compat.lock.json; tests/unit/test_contracts.py fails when
a locked field disappears or changes its number, type or cardinality (an old consumer would
then misread new records) unless its number is reserved.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from google.protobuf.descriptor import Descriptor, FileDescriptor
from plaza.contracts.v1 import events_pb2

LOCK = Path(__file__).resolve().parent.parent / "proto" / "compat.lock.json"
Fields = dict[str, dict[str, str]]


def _walk(desc: Descriptor, out: Fields) -> None:
    fields = {}
    for f in desc.fields:
        kind = (
            f.message_type.full_name
            if f.message_type
            else (f.enum_type.full_name if f.enum_type else str(f.type))
        )
        repeated = f.is_repeated if hasattr(f, "is_repeated") else f.label == f.LABEL_REPEATED
        fields[str(f.number)] = f"{f.name}:{kind}:{'repeated' if repeated else 'single'}"
    out[desc.full_name] = fields
    for nested in desc.nested_types:
        if not nested.GetOptions().map_entry:
            _walk(nested, out)


def current(file: FileDescriptor = events_pb2.DESCRIPTOR) -> Fields:
    out: Fields = {}
    for desc in file.message_types_by_name.values():
        _walk(desc, out)
    return out


def reserved_numbers(file: FileDescriptor = events_pb2.DESCRIPTOR) -> dict[str, set[int]]:
    from google.protobuf import descriptor_pb2

    proto = descriptor_pb2.FileDescriptorProto()
    file.CopyToProto(proto)
    return {
        f"{proto.package}.{m.name}": {n for r in m.reserved_range for n in range(r.start, r.end)}
        for m in proto.message_type
    }


def breaking_changes(locked: Fields, now: Fields, reserved: dict[str, set[int]]) -> list[str]:
    problems = []
    for message, fields in locked.items():
        for number, spec in fields.items():
            if int(number) in reserved.get(message, set()):
                continue
            got = now.get(message, {}).get(number)
            if got is None:
                problems.append(
                    f"{message} field {number} ({spec}) was removed without `reserved {number};`"
                )
            elif got.split(":", 1)[1] != spec.split(":", 1)[1]:
                problems.append(f"{message} field {number} changed from {spec} to {got}")
    return problems


def update_lock() -> None:
    locked: Fields = json.loads(LOCK.read_text()) if LOCK.exists() else {}
    problems = breaking_changes(locked, current(), reserved_numbers())
    if problems:
        raise SystemExit("breaking contract changes:\n" + "\n".join(problems))
    for message, fields in current().items():
        locked.setdefault(message, {}).update(fields)
    LOCK.write_text(json.dumps(locked, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    update_lock()
    print(f"wrote {LOCK}", file=sys.stderr)
