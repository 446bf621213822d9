"""docs/results.md regeneration from run summaries (reused, so no run starts)."""

from __future__ import annotations

import json

from fl_server import results


def write(root, scenario, arm, seed, f1):
    d = root / scenario / arm / f"seed-{seed}"
    d.mkdir(parents=True)
    (d / "summary.json").write_text(json.dumps({
        "status": "completed", "rounds": 20, "target": {"macro_f1": f1, "accuracy": f1},
        "source": {"macro_f1": 0.95, "accuracy": 0.95}, "comm": {"bytes_up": 10, "bytes_down": 10},
    }))


def test_regenerate_renders_every_arm_and_the_acceptance_checks(tmp_path, monkeypatch):
    scores = {"source_only": 0.5, "dann": 0.6, "m3bat_federated": 0.8, "centralized_m3bat": 0.82, "target_oracle": 0.9}
    for arm, f1 in scores.items():
        for seed in (0, 1):
            write(tmp_path / "runs", "cross_device", arm, seed, f1 + 0.01 * seed)
    import fl_server.cli as cli

    def no_run(*args, **kwargs):
        raise AssertionError("a completed run was run again")

    monkeypatch.setattr(cli, "run_experiment", no_run)
    doc = results.regenerate(["cross_device"], list(scores), [0, 1], tmp_path / "runs", tmp_path / "r.md", reuse=True)
    text = doc.read_text()
    for arm in scores:
        assert f"| {arm} |" in text
    assert "| m3bat_federated | 0.805 ± 0.005 |" in text
    assert "recovers 75% of the source-only → oracle gap (meets" in text
    assert "+0.200 vs federated DANN (beats it)" in text
    assert "-0.020 vs centralized M3BAT (within 3 points)" in text
    assert "fedsense results --scenarios cross_device --seeds 0,1" in text
