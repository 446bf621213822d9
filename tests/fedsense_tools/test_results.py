"""docs/results.md regeneration from run summaries (reused, so no run starts)."""

from __future__ import annotations

import json

from fedsense.configfile import dump, load
from fedsense_tools import results


def write(root, scenario, arm, seed, f1, cpu=None, overrides=()):
    """A completed run of ``arm``: its summary and its config (the arm's file, plus ``overrides``)."""
    d = root / scenario / arm / f"seed-{seed}"
    d.mkdir(parents=True)
    cfg = load(results.EXPERIMENTS / scenario / f"{arm}.yaml", [f"seed={seed}", f"output.dir={d}", *overrides])
    (d / "config.yaml").write_text(dump(cfg))
    (d / "summary.json").write_text(json.dumps({
        "status": "completed", "rounds": 20, "seed": seed, "target": {"macro_f1": f1, "accuracy": f1},
        "source": {"macro_f1": 0.95, "accuracy": 0.95}, "comm": {"bytes_up": 10, "bytes_down": 10},
        "compute": {"target_cpu_seconds_per_round": cpu, "source_cpu_seconds_per_round": 0.5},
    }))


def test_regenerate_renders_every_arm_the_overview_the_ablation_and_the_comparisons(tmp_path, monkeypatch):
    scores = {"source_only": 0.5, "adabn": 0.6, "m3bat_local": 0.8, "ablation_no_calibration": 0.65,
              "centralized_m3bat": 0.82}
    for scenario in ("cross_device", "mirror"):
        for arm, f1 in scores.items():
            for seed in (0, 1):
                write(tmp_path / "runs", scenario, arm, seed, f1 + 0.01 * seed, cpu=1.5)
    def no_run(*args, **kwargs):
        raise AssertionError("a completed run was run again")

    monkeypatch.setattr(results, "run_experiment", no_run)
    doc = results.regenerate(["cross_device", "mirror"], list(scores), [0, 1], tmp_path / "runs",
                             tmp_path / "r.md", reuse=True)
    text = doc.read_text()
    for arm in scores:
        assert f"| {arm} |" in text
    assert "| m3bat_local | 0.805 ± 0.005 | 0.805 ± 0.005 | 0.950 ± 0.000 | 0.00 | 1.50 | 2 |" in text
    assert "| m3bat_local | 0.805 ± 0.005 | 0.805 ± 0.005 |" in text.split("## Ablation")[0]  # overview row
    assert "| without calibration | 0.655 ± 0.005 (-0.150) | 0.655 ± 0.005 (-0.150) |" in text
    assert "- m3bat_local − adabn: +0.200 (seeds 0, 1: +0.200, +0.200)" in text
    assert "- m3bat_local − centralized_m3bat: -0.020 (seeds 0, 1: -0.020, -0.020)" in text
    assert "fedsense results --scenarios cross_device,mirror --seeds 0,1" in text


def test_comparisons_use_only_seeds_both_arms_have_and_report_losses():
    def run(seed, f1):
        return {"status": "completed", "seed": seed, "target": {"macro_f1": f1}}

    arms = {"m3bat_local": [run(0, 0.5), run(1, 0.1), run(2, 0.1)], "adabn": [run(0, 0.6)],
            "source_only": [run(2, 0.2), {"status": "failed", "seed": 1}]}
    assert results.comparison_lines(arms) == [
        "- m3bat_local − adabn: -0.100 (seeds 0: -0.100)",
        "- m3bat_local − source_only: -0.100 (seeds 2: -0.100)",
    ]


def test_no_run_writes_a_partial_page_and_starts_nothing(tmp_path, monkeypatch):

    monkeypatch.setattr(results, "run_experiment", lambda *a, **k: (_ for _ in ()).throw(AssertionError("ran")))
    write(tmp_path / "runs", "cross_device", "source_only", 0, 0.4)
    write(tmp_path / "runs", "cross_device", "source_only", 1, 0.5)
    doc = results.regenerate(["cross_device"], ["source_only", "dann"], [0, 1, 2], tmp_path / "runs",
                             tmp_path / "r.md", reuse=False, run=False)
    text = doc.read_text()
    assert "| source_only | 0.450 ± 0.050 |" in text and "| 2 of 3 |" in text
    assert "| dann | — | — | — | — | — | 0 of 3 |" in text
    assert "**Partial:** 2 of 6 runs are in" in text and "runs the other 4" in text
    assert not (tmp_path / "runs" / "cross_device" / "dann").exists()


def test_no_run_keeps_a_fuller_page_and_replaces_an_emptier_one_over_all_scenarios(tmp_path, monkeypatch):
    """The page is compared once every scenario is collected: runs of a later
    scenario count (a first scenario alone may hold fewer than the page)."""
    monkeypatch.setattr(results, "run_experiment", lambda *a, **k: (_ for _ in ()).throw(AssertionError("ran")))
    runs, doc = tmp_path / "runs", tmp_path / "r.md"
    write(runs, "cross_device", "source_only", 0, 0.4)
    for seed in (0, 1):
        write(runs, "mirror", "source_only", seed, 0.4)
    results.regenerate(["cross_device", "mirror"], ["source_only"], [0, 1], runs, doc, reuse=False, run=False)
    assert results.completed_runs(doc.read_text()) == 3
    write(runs, "mirror", "adabn", 0, 0.6)  # one more, in the second scenario
    results.regenerate(["cross_device", "mirror"], ["source_only", "adabn"], [0, 1], runs, doc, reuse=False,
                       run=False)
    assert results.completed_runs(doc.read_text()) == 4
    before = doc.read_bytes()
    results.regenerate(["cross_device"], ["source_only"], [0, 1], runs, doc, reuse=False, run=False)
    assert doc.read_bytes() == before  # 1 run < 4: the page stays byte for byte


def test_every_scenario_has_every_arm_and_loads():
    from fedsense.configfile import load

    for scenario in results.SCENARIO_ORDER:
        arms = results.arms_of(scenario)
        assert arms[: len(results.ARM_ORDER)] == results.ARM_ORDER, scenario
        for arm in arms:
            load(results.EXPERIMENTS / scenario / f"{arm}.yaml")


def test_a_run_whose_config_is_no_longer_the_arms_is_not_reported(tmp_path, monkeypatch, capsys):
    """A default or an arm's file changed after the run: its numbers are not
    the arm's any more, so the page leaves it out and says why."""
    monkeypatch.setattr(results, "run_experiment", lambda *a, **k: (_ for _ in ()).throw(AssertionError("ran")))
    write(tmp_path / "runs", "cross_device", "m3bat_local", 0, 0.9)
    write(tmp_path / "runs", "cross_device", "m3bat_local", 1, 0.5, overrides=["adapt.align_branches=all"])
    assert results.stale_keys(tmp_path / "runs" / "cross_device" / "m3bat_local" / "seed-1",
                              results.EXPERIMENTS / "cross_device" / "m3bat_local.yaml", 1) == ["adapt.align_branches"]
    doc = results.regenerate(["cross_device"], ["m3bat_local"], [0, 1], tmp_path / "runs", tmp_path / "r.md",
                             reuse=True, run=False)
    assert "| m3bat_local | 0.900 (one run) |" in doc.read_text() and "| 1 of 2 |" in doc.read_text()
    assert "differs from the arm's now in adapt.align_branches" in capsys.readouterr().err



def test_options_only_another_method_reads_do_not_make_a_run_stale(tmp_path):
    """m3bat_local's own options changing (a default, say) leave adabn's runs as they were."""
    write(tmp_path / "runs", "cross_device", "adabn", 0, 0.8, overrides=["adapt.self_training_scope=norm"])
    write(tmp_path / "runs", "cross_device", "adabn", 1, 0.8, overrides=["adapt.stats_min_count=64"])
    arm = results.EXPERIMENTS / "cross_device" / "adabn.yaml"
    assert results.stale_keys(tmp_path / "runs" / "cross_device" / "adabn" / "seed-0", arm, 0) == []
    assert results.stale_keys(tmp_path / "runs" / "cross_device" / "adabn" / "seed-1", arm, 1) == [
        "adapt.stats_min_count"]
