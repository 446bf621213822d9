"""Real simulated rounds per method: every field of every reply that left a
(virtual) device is on docs/privacy.md's list."""

from __future__ import annotations

import fnmatch
import json

import pytest

from fedsense_tools.experiment import run_experiment
from tests.conftest import SYNTHETIC
from tests.fl_client.test_message_privacy import allowed_fields

# The default method and the one with every statistics field run in the
# default suite; the others (each ~40 s of real Flower) under `make
# test-slow`. tests/fl_client/test_message_privacy.py checks every method of
# the registry without Flower.
METHODS = [
    pytest.param(("none", "federated", "fixed"), marks=pytest.mark.slow, id="none-federated-fixed"),
    pytest.param(("dann", "federated", "fixed"), marks=pytest.mark.slow, id="dann-federated-fixed"),
    pytest.param(("m3bat", "federated", "fixed"), marks=pytest.mark.slow, id="m3bat-federated-fixed"),
    pytest.param(("m3bat", "statistics", "shift"), id="m3bat-statistics-shift"),
    pytest.param(("fedbn", "federated", "fixed"), marks=pytest.mark.slow, id="fedbn-federated-fixed"),
    pytest.param(("m3bat_local", "statistics", "fixed"), id="m3bat_local-statistics-fixed"),
]


@pytest.mark.parametrize("method", METHODS)
def test_every_reply_field_is_listed(tmp_path, method):
    name, alignment, weights = method
    run = run_experiment(
        SYNTHETIC,
        ["fed.rounds=2", "output.message_log=true", f"data.cache_dir={tmp_path / 'c'}",
         f"adapt.method={name}", f"adapt.alignment={alignment}", f"adapt.branch_weights={weights}",
         "adapt.stats_min_count=8",
         # m3bat_local with its optional alignment on: the superset of its fields
         *(["adapt.align_branches=all"] if name == "m3bat_local" else [])],
        out=str(tmp_path / "run"),
    )
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
    allowed = allowed_fields()
    entries = [json.loads(line) for line in (run / "messages.jsonl").read_text().splitlines()]
    kinds = [e["type"] for e in entries]
    assert kinds.count("query") == 6 and kinds.count("train") == 12 and kinds.count("evaluate") == 12
    for entry in entries:
        for field in entry["fields"]:
            record, key = field.split(":", 1)
            patterns = allowed.get(f"{entry['type']}.{record}")
            assert patterns is not None and any(fnmatch.fnmatch(key, p) for p in patterns), (
                f"{entry['type']} reply field {field} is not in docs/privacy.md"
            )
    stats_sent = any(f.startswith("stats:") for e in entries for f in e["fields"])
    assert stats_sent == ((name in ("dann", "m3bat") and (alignment, weights) != ("federated", "fixed"))
                          or name == "m3bat_local")
