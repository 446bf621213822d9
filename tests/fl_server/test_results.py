"""docs/results.md regeneration from run summaries (reused, so no run starts)."""

from __future__ import annotations

import json

from fl_server import results


def write(root, scenario, arm, seed, f1):
    d = root / scenario / arm / f"seed-{seed}"
    d.mkdir(parents=True)
    (d / "summary.json").write_text(json.dumps({
        "status": "completed", "rounds": 20, "seed": seed, "target": {"macro_f1": f1, "accuracy": f1},
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
    assert "recovers 75% of the source-only → target_oracle gap (meets the ≥ 50 % bar; seeds 0, 1)" in text
    assert "+0.200 vs federated DANN (beats it; seeds 0, 1)" in text
    assert "-0.020 vs centralized M3BAT (within 3 points; seeds 0, 1)" in text
    assert "fedsense results --scenarios cross_device --seeds 0,1" in text


def test_comparisons_use_only_seeds_all_arms_have(tmp_path):
    for seed, f1 in ((0, 0.5), (1, 0.1), (2, 0.1)):  # source-only has three seeds
        write(tmp_path, "cross_device", "source_only", seed, f1)
    write(tmp_path, "cross_device", "target_oracle", 0, 0.9)
    write(tmp_path, "cross_device", "m3bat_federated", 0, 0.8)
    load = lambda arm: [json.loads(p.read_text()) for p in sorted((tmp_path / "cross_device" / arm).glob("*/summary.json"))]  # noqa: E731
    lines = results.acceptance_lines({a: load(a) for a in ("source_only", "target_oracle", "m3bat_federated")})
    assert lines == ["- m3bat_federated: recovers 75% of the source-only → target_oracle gap (meets the ≥ 50 % bar; seeds 0)"]


def test_no_run_writes_a_partial_page_and_starts_nothing(tmp_path, monkeypatch):
    import fl_server.cli as cli

    monkeypatch.setattr(cli, "run_experiment", lambda *a, **k: (_ for _ in ()).throw(AssertionError("ran")))
    write(tmp_path / "runs", "cross_device", "source_only", 0, 0.4)
    write(tmp_path / "runs", "cross_device", "source_only", 1, 0.5)
    doc = results.regenerate(["cross_device"], ["source_only", "dann"], [0, 1, 2], tmp_path / "runs",
                             tmp_path / "r.md", reuse=False, run=False)
    text = doc.read_text()
    assert "| source_only | 0.450 ± 0.050 |" in text and "| 2 of 3 |" in text
    assert "| dann | — | — | — | — | 0 of 3 |" in text
    assert "**Partial:** 2 of 6 runs are in" in text and "runs the other 4" in text
    assert not (tmp_path / "runs" / "cross_device" / "dann").exists()


def test_a_gap_too_small_to_share_is_said_not_divided(tmp_path):
    def load(arm):
        return [json.loads((tmp_path / "cross_user" / arm / "seed-0" / "summary.json").read_text())]

    write(tmp_path, "cross_user", "source_only", 0, 0.974)
    write(tmp_path, "cross_user", "target_oracle", 0, 0.980)
    write(tmp_path, "cross_user", "m3bat_bn", 0, 0.962)
    lines = results.acceptance_lines({a: load(a) for a in ("source_only", "target_oracle", "m3bat_bn")})
    assert lines == ["- m3bat_bn: no gap to recover: target_oracle − source-only = +0.006 (under 0.02; seeds 0)"]
