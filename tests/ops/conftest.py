"""Fixtures for the operations tests (helpers: tests/support/ops.py).

Every CLI run here is what cron does: stdin from /dev/null, stdout and stderr
captured (never a terminal), configuration only from the environment (the
``cli`` fixture of tests/conftest.py) or a config file.
"""

from __future__ import annotations

import pytest

from tests.support.ops import documented_schemas


@pytest.fixture(scope="session")
def schemas() -> dict[str, dict]:
    return documented_schemas()
