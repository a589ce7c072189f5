"""pipeline/web/app.py fuzzed from its own OpenAPI schema (schemathesis): 1,000 and more generated requests, valid
and invalid, over every operation of ``serve``'s app but the live feed's event stream (it never ends; its
parameters are tested in test_feed.py) on a seeded SQLite match log: no 5xx, every response within the schema
(status, content type, headers, body), a missing or wrong token refused.

In process (ASGI), no network; bounded by hypothesis' example counts, no deadline per example.
"""

from __future__ import annotations

import logging
import time
from collections import Counter

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="the fuzz test needs schemathesis (the dev extra)")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402  (after the importorskip above)
from schemathesis import GenerationMode  # noqa: E402

from gallery.db import Database  # noqa: E402
from gallery.thumbnails import ThumbnailStore  # noqa: E402
from pipeline.web.app import create_app, trusted_hosts  # noqa: E402
from tests.gallery.helpers import seed_log  # noqa: E402

logger = logging.getLogger(__name__)

TOKEN = "fuzz-token-0123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
REQUESTS = 1000  # at least this many in all
EXAMPLES = {GenerationMode.POSITIVE: 100, GenerationMode.NEGATIVE: 50}  # per operation (about 35 of them)
LIMIT_S = 240.0
STREAMS = {"/api/feed"}  # answers that never end (server-sent events): tests/pipeline/web/test_feed.py
# Schema-valid requests may still be refused for what no schema says: since >= until, a page past the offset
# bound for its page size, a name not in the log (404 for an identity, 400 for a source), a time that leaves
# years 1..9999 once in UTC. Never with 422, which would mean the schema and the validation disagree.
CONFIG = schemathesis.Config.from_dict(
    {
        "auth": {"openapi": {"HTTPBearer": {"bearer": TOKEN}}},
        "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "3xx", "400", "401", "404"]}},
    }
)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    store = ThumbnailStore(root / "thumbs")
    with Database(f"sqlite:///{root / 'log.db'}") as db:
        seed_log(db, store)
        # the in-process client names its host "testserver"
        yield create_app(db, store, token=TOKEN, allowed_hosts=trusted_hosts("127.0.0.1", ["testserver"]))


def _fuzz(operation, mode: GenerationMode, seen: list[int], stop: float) -> None:
    @settings(
        max_examples=EXAMPLES[mode],
        deadline=None,
        database=None,
        derandomize=True,  # the same requests on every run: a failure is reproducible
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case) -> None:
        assert time.monotonic() < stop, f"fuzzing ran past {LIMIT_S:.0f} s"
        response = case.call()
        seen.append(response.status_code)
        assert response.status_code < 500, f"{case.method} {case.formatted_path} -> {response.status_code}"
        case.validate_response(response)

    run()


@pytest.mark.slow
def test_fuzzed_api_answers_within_its_schema(app):
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=CONFIG, headers=AUTH)
    operations = [
        op for op in (result.ok() for result in schema.get_all_operations()) if op.path not in STREAMS
    ]
    assert {op.path for op in operations} >= {
        "/api/matches",
        "/api/tracks",
        "/api/identities",
        "/thumbnails/{rel}",
        "/",
    }
    seen: list[int] = []
    stop = time.monotonic() + LIMIT_S
    for operation in operations:
        for mode in EXAMPLES:
            _fuzz(operation, mode, seen, stop)
    logger.info("fuzzed %d requests: %s", len(seen), Counter(seen))
    assert len(seen) >= REQUESTS and max(seen) < 500
    assert {200, 400, 422} <= set(seen)  # valid requests answered, invalid ones refused
