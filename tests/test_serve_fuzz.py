"""Property-based fuzz of the live service against its own OpenAPI document (schemathesis).

The schema is read from the running ``antssl serve`` of the ``demo_service`` fixture
(conftest.py: one per session, shared with tests/test_serve_readme.py and
tests/test_viewer.py), so what is fuzzed is what a client gets: the Ray Serve HTTP proxy,
the Api replica, the Embedder and the search, on 127.0.0.1. Every operation of the
document gets its examples, then generated requests that fit the schema (positive) and
requests that break it (negative). Each response must pass:

- ``not_a_server_error``: no 5xx;
- ``status_code_conformance``: the status is one the operation declares;
- ``content_type_conformance``: the Content-Type is one declared for that status;
- ``response_schema_conformance``: the body fits the declared schema (errors: ErrorBody).

The test suite runs a bounded, derandomized number of cases (the same ones every run;
a few hundred requests, 47 s on 2 busy cores);
``bench/fuzz.py`` runs many more, random, and prints a summary.

schemathesis' own pytest integration for a schema known only at run time
(``schemathesis.pytest.from_fixture``) fails under pytest 9 (it sets ``Function._nodeid``,
gone there), so :func:`fuzz` drives schemathesis' Hypothesis strategies itself: the same
cases and checks, one Hypothesis run per operation and mode.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
"""The checks every fuzzed response must pass."""

MAX_EXAMPLES = 25
"""Generated cases per operation and mode in the test suite (bench/fuzz.py: many more)."""


@dataclass
class Report:
    """What one fuzz run did: cases and statuses per operation, the failures found, and the
    runs skipped (a negative run of an operation that takes no input)."""

    cases: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, dict[int, int]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0


def fuzz(url: str, max_examples: int, derandomize: bool = True, timeout_s: float = 30) -> Report:
    """Fuzz every operation of ``url``/openapi.json: its examples, then ``max_examples``
    positive and ``max_examples`` negative cases; each response through :data:`CHECKS`."""
    t0 = time.perf_counter()
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json", timeout=timeout_s)
    report = Report()
    for result in schema.get_all_operations():
        op = result.ok()
        label = f"{op.method.upper()} {op.path}"
        report.cases[label], report.statuses[label] = 0, {}
        examples = schema.get_strategies_from_examples(op)
        runs: list[tuple[str, Any, int]] = []
        if examples:
            runs.append(("examples", st.one_of(examples), 2 * len(examples)))
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            runs.append((mode.value, op.as_strategy(generation_mode=mode), max_examples))
        for name, strategy, n in runs:
            check = _check(url, label, report, timeout_s)
            run = settings(
                max_examples=n,
                deadline=None,
                derandomize=derandomize,
                database=None,
                suppress_health_check=list(HealthCheck),
                print_blob=False,
            )(given(case=strategy)(check))
            try:
                run()
            except Unsatisfiable:  # no invalid request exists (no parameters, no body)
                report.skipped.append(f"{label} ({name})")
            except (Exception, BaseExceptionGroup) as err:  # noqa: BLE001 - report, go on
                report.failures.append(f"{label} ({name}): {err}")
    report.seconds = time.perf_counter() - t0
    return report


def _check(url: str, label: str, report: Report, timeout_s: float) -> Any:
    """One case: send it, count its status, run :data:`CHECKS` on the response."""

    def check(case: Any) -> None:
        response = case.call(base_url=url, timeout=timeout_s)
        report.cases[label] += 1
        seen = report.statuses[label]
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        case.validate_response(response, checks=CHECKS)

    return check


def test_live_openapi_fuzz(demo_service: dict) -> None:
    report = fuzz(demo_service["url"], MAX_EXAMPLES)
    assert not report.failures, "\n\n".join(report.failures)
    # every documented operation was reached, and some answered 200 (the examples name
    # tiles of the demo data), so the checks ran on successes as well as on errors
    assert len(report.cases) >= 10 and all(report.cases.values()), report.cases
    assert report.skipped == ["GET /healthz (negative)"], report.skipped  # no parameters
    ok = [op for op, seen in report.statuses.items() if 200 in seen]
    assert {"GET /v1/similar", "POST /v1/similar", "GET /v1/tiles/{tile_id}"} <= set(ok), ok
