"""schemathesis against the bridge's own /openapi.json, every adapter on, over the ComfyUI protocol double: for
schema-valid and schema-invalid requests alike, no 5xx and no answer outside the spec (status, content type,
headers, body schema). Bounded: a few examples per operation."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import requests

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (content_type_conformance, response_headers_conformance,  # noqa: E402
                                               response_schema_conformance, status_code_conformance)

from tests.support.double import StyleDouble  # noqa: E402
from tests.support.live_bridge import live_bridge  # noqa: E402

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]
EXAMPLES = int(os.environ.get("PIXART_FUZZ_EXAMPLES", "8"))
# Streams never end by themselves; the reload route is covered by its own tests (it rereads the folders).
SKIP = {("GET", "/events")}


@pytest.fixture(scope="module")
def bridge_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    data = Path(tmp_path_factory.mktemp("fuzz"))
    # Short job timeouts: a schema-valid request for a 2048x2048, 150-step image still ends quickly on the double.
    with live_bridge(data, double=StyleDouble, job_timeout=20, max_queue=1000) as url:
        yield url


def _operations(base_url: str) -> list[tuple[str, object]]:
    spec = requests.get(f"{base_url}/openapi.json", timeout=30).json()
    schema = schemathesis.openapi.from_dict(spec)
    ops = []
    for result in schema.get_all_operations():
        op = result.ok()
        if (op.method.upper(), op.path) in SKIP:
            continue
        ops.append((f"{op.method.upper()} {op.path}", op))
    return ops


def test_every_operation_conforms_to_the_spec(bridge_url: str) -> None:
    ops = _operations(bridge_url)
    assert len(ops) > 40  # every adapter's routes, one per workflow among them
    session = requests.Session()
    failures: list[str] = []
    for label, op in ops:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategy = op.as_strategy(generation_mode=mode)

            @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                      phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
            @given(case=strategy)
            def run(case: object) -> None:
                response = case.call(base_url=bridge_url, session=session, timeout=60)
                case.validate_response(response, checks=CHECKS)

            try:
                run()
            except Unsatisfiable:
                # Nothing to make invalid: an operation without parameters or body has no negative cases.
                assert mode is GenerationMode.NEGATIVE, label
            except Exception as exc:  # noqa: BLE001 - collect every operation's failure, then report them all
                failures.append(f"{label} [{mode.value}]: {str(exc)[:1500]}")
    assert not failures, "\n\n".join(failures)
