"""The `evidence` marker: a test proves a named result of the evidence bundle.

    @pytest.mark.evidence("database_restore")
    def test_...

The mark lands in the JUnit XML as the test case's property
`<property name="evidence" value="database_restore"/>` (pytest writes
`item.user_properties` there, as `record_property` does), and
`symphony evidence bundle --test-results junit.xml` fills the named result
from those cases only: nothing is inferred from test names, and a result no
marked test ran for is `not_run`. The names are repair.evidence.EVIDENCE_RESULTS;
any other name stops the run at collection.

Loaded by tests/conftest.py (`pytest_plugins`); another test run can load it
with `-p tests.evidence_plugin`.
"""

from __future__ import annotations

import pytest

from repair.evidence import EVIDENCE_PROPERTY, EVIDENCE_RESULTS


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "evidence(name): this test proves the named evidence-bundle result")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for mark in item.iter_markers(name="evidence"):
            names = list(mark.args)
            if not names or mark.kwargs or any(name not in EVIDENCE_RESULTS for name in names):
                raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.evidence takes names from "
                                        f"{sorted(EVIDENCE_RESULTS)}, got {mark.args!r} {mark.kwargs!r}")
            for name in names:
                if (EVIDENCE_PROPERTY, name) not in item.user_properties:
                    item.user_properties.append((EVIDENCE_PROPERTY, name))
