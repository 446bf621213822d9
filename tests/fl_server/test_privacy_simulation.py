"""Real simulated rounds per method: every field of every reply that left a
(virtual) device is on docs/privacy.md's list."""

from __future__ import annotations

import fnmatch
import json

import pytest

from fedsense_tools.experiment import run_experiment
from tests.conftest import SYNTHETIC
from tests.fl_client.test_message_privacy import allowed_fields

METHODS = [
    ("none", "federated", "fixed"),
    ("dann", "federated", "fixed"),
    ("m3bat", "federated", "fixed"),
    ("m3bat", "statistics", "shift"),
    ("fedbn", "federated", "fixed"),
    ("m3bat_local", "statistics", "fixed"),
]


@pytest.mark.parametrize("method", METHODS, ids=["-".join(m) for m in METHODS])
def test_every_reply_field_is_listed(tmp_path, method):
    name, alignment, weights = method
    run = run_experiment(
        SYNTHETIC,
        ["fed.rounds=2", "output.message_log=true", f"data.cache_dir={tmp_path / 'c'}",
         f"adapt.method={name}", f"adapt.alignment={alignment}", f"adapt.branch_weights={weights}",
         "adapt.stats_min_count=8"],
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
