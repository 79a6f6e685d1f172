"""The README's commands, as a newcomer copies them: each variable is used as it was defined."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_header_variables_are_passed_whole() -> None:
    """The README defines KEY and AUTH as whole headers (`KEY="Authorization: Bearer …"`); a
    command that wrote `-H "Authorization: Bearer $KEY"` sent the header twice over and got a
    401 (the monthly report's curl did)."""
    text = README.read_text(encoding="utf-8")
    defined = dict(re.findall(r'^(\w+)="(Authorization: Bearer [^"]*)"', text, re.MULTILINE))
    assert {"KEY", "AUTH"} <= set(defined)
    for name in defined:
        twice = re.findall(rf"Bearer \${{?{name}\b", text)
        assert not twice, f"README uses ${name} after 'Bearer ', but ${name} is a whole header"
