"""Regenerate docs/results.md: every arm of every scenario, over seeds.

    fedsense results [--scenarios cross_device,mirror,...] [--arms a,b]
                     [--seeds 0,1,2] [--out runs/results] [--doc docs/results.md] [--reuse]

Each arm is a file in ``configs/experiments/<scenario>/``; each run lands in
``OUT/<scenario>/<arm>/seed-<s>/``. ``--reuse`` keeps runs that already
completed there (to resume an interrupted regeneration); without it every
number comes from a fresh run. A failed run is reported in the table, not
hidden, and the others go on.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from fedsense.config import to_dict
from fedsense.configfile import load
from fedsense.methods import METHODS
from fedsense.report import arm_table, fmt, mean_std
from fedsense_tools.experiment import run_experiment
from fedsense_tools.launcher import RunFailed

EXPERIMENTS = Path(__file__).resolve().parent.parent / "configs" / "experiments"
# Table order: baselines, the methods, the default and its ablations, upper bounds, ceilings.
ARM_ORDER = [
    "source_only", "adabn", "fedbn_stats", "fedbn", "dann", "m3bat_federated", "m3bat_statistics", "m3bat_bn",
    "m3bat_local", "ablation_no_calibration", "ablation_no_self_training", "ablation_norm_scope",
    "alignment", "alignment_fused", "alignment_marginal", "alignment_no_calibration",
    "centralized_source_only", "centralized_dann", "centralized_m3bat", "target_oracle", "target_oracle_bn",
]
SCENARIO_ORDER = ["cross_device", "mirror", "rotation_x", "sensor", "cross_user"]
DEFAULT = "m3bat_local"  # configs/default.yaml's method
# The comparisons each scenario reports (arm, against): differences of mean
# target macro-F1 over the seeds both completed, with each seed's difference.
COMPARISONS = [
    (DEFAULT, "adabn"), (DEFAULT, "source_only"), (DEFAULT, "m3bat_bn"), (DEFAULT, "centralized_m3bat"),
    (DEFAULT, "target_oracle_bn"),
    # what the multi-branch alignment adds: with calibration, and where calibration does not undo the shift
    ("alignment", DEFAULT), ("alignment_no_calibration", "ablation_no_calibration"),
]
ABLATIONS = {
    "ablation_no_calibration": "without calibration",
    "ablation_no_self_training": "without self-training",
    "ablation_norm_scope": "self-training of calibration and BatchNorm affine only (the default until 2026-12-01)",
    "alignment": "with class-conditional multi-branch alignment",
    "alignment_fused": "with class-conditional alignment of the fused embedding only (DANN-style)",
    "alignment_marginal": "with multi-branch alignment without class conditioning",
    "alignment_no_calibration": "without calibration, with multi-branch alignment (against 'without "
                                "calibration': what alignment adds where calibration does not undo the shift)",
}
OVERVIEW = ["source_only", "adabn", "m3bat_bn", DEFAULT, "centralized_m3bat", "target_oracle_bn"]


def arms_of(scenario: str) -> list[str]:
    found = {p.stem for p in (EXPERIMENTS / scenario).glob("*.yaml")}
    if not found:
        raise FileNotFoundError(f"no experiment configs in {EXPERIMENTS / scenario}")
    return [a for a in ARM_ORDER if a in found] + sorted(found - set(ARM_ORDER))


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def stale_keys(run_dir: Path, arm_file: Path, seed: int) -> list[str]:
    """Keys whose value in ``run_dir``'s config.yaml differs from what
    ``arm_file`` resolves to now (a default changed since the run, or the
    arm's file): such a run is not this arm's any more. Not compared: keys
    the run's config does not have (added since), ``output.*``, and the
    options only another method reads (:attr:`Method.own_options`)."""
    try:
        then = _flat(yaml.safe_load((run_dir / "config.yaml").read_text()) or {})
    except (OSError, yaml.YAMLError):
        return ["config.yaml"]
    cfg = load(arm_file, [f"seed={seed}"])
    now = _flat(to_dict(cfg))
    others = {f"adapt.{k}" for name in METHODS if name != cfg.adapt.method for k in METHODS[name].own_options}
    return sorted(k for k in then.keys() & now.keys()
                  if not k.startswith("output.") and k not in others and then[k] != now[k])


def run_arm(scenario: str, arm: str, seed: int, out: Path, reuse: bool, run: bool = True) -> dict[str, Any]:
    """One run's summary (fresh, or reused when asked, complete and still
    the arm's: :func:`stale_keys`). With ``run=False`` nothing starts: a run
    not completed yet, or stale, is ``missing``."""

    run_dir = out / scenario / arm / f"seed-{seed}"
    summary_path = run_dir / "summary.json"
    if (reuse or not run) and summary_path.exists():
        summary = json.loads(summary_path.read_text())
        stale = stale_keys(run_dir, EXPERIMENTS / scenario / f"{arm}.yaml", seed)
        if summary.get("status") == "completed" and not stale:
            return summary
        if stale:
            print(f"{scenario} / {arm} / seed {seed}: the run's config differs from the arm's now in "
                  f"{', '.join(stale[:5])}{' ...' if len(stale) > 5 else ''}: not reported", file=sys.stderr)
    if not run:
        return {"status": "missing", "seed": seed}
    print(f"\n== {scenario} / {arm} / seed {seed} ==", flush=True)
    if run_dir.exists():  # a fresh run: nothing of an earlier one may be reported as it
        shutil.rmtree(run_dir)
    try:
        run_experiment(EXPERIMENTS / scenario / f"{arm}.yaml", [f"seed={seed}"], str(run_dir))
    except (RunFailed, OSError) as err:
        print(f"run failed: {err}", file=sys.stderr)
    if summary_path.exists():
        return json.loads(summary_path.read_text())
    return {"status": "failed", "error": "no summary written"}


def _by_seed(runs: list[dict]) -> dict[int, float]:
    return {int(r["seed"]): float(r["target"]["macro_f1"]) for r in runs
            if r.get("status") == "completed" and (r.get("target") or {}).get("macro_f1") is not None}


def comparison_lines(arms: dict[str, list[dict]]) -> list[str]:
    """Each of :data:`COMPARISONS` present: the mean difference over the seeds
    both arms completed, and every seed's difference (a method that loses is
    reported as losing)."""
    lines = []
    for arm, other in COMPARISONS:
        a, b = _by_seed(arms.get(arm, [])), _by_seed(arms.get(other, []))
        common = sorted(set(a) & set(b))
        if not common:
            continue
        diffs = [a[s] - b[s] for s in common]
        per_seed = ", ".join(f"{d:+.3f}" for d in diffs)
        lines.append(f"- {arm} − {other}: {float(np.mean(diffs)):+.3f} (seeds {', '.join(map(str, common))}: "
                     f"{per_seed})")
    return lines


def overview_table(results: dict[str, dict[str, list[dict]]]) -> str:
    """Target macro-F1 of the main arms (rows) in every scenario (columns)."""
    scenarios = list(results)
    lines = ["| arm | " + " | ".join(s.replace("_", "-") for s in scenarios) + " |",
             "|---|" + "---|" * len(scenarios)]
    for arm in OVERVIEW:
        if not any(arm in results[s] for s in scenarios):
            continue
        cells = [fmt(mean_std(results[s].get(arm, []), "target.macro_f1")) for s in scenarios]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ablation_table(results: dict[str, dict[str, list[dict]]]) -> str:
    """The default against each ablation: target macro-F1 and the difference, per scenario."""
    scenarios = [s for s in results if DEFAULT in results[s]]
    lines = ["| variant | " + " | ".join(s.replace("_", "-") for s in scenarios) + " |",
             "|---|" + "---|" * len(scenarios)]
    lines.append(f"| {DEFAULT} (default) | " + " | ".join(fmt(mean_std(results[s][DEFAULT], "target.macro_f1"))
                                                       for s in scenarios) + " |")
    for arm, what in ABLATIONS.items():
        cells = []
        for s in scenarios:
            if arm not in results[s]:
                cells.append("—")
                continue
            d, a = _by_seed(results[s][DEFAULT]), _by_seed(results[s][arm])
            common = sorted(set(d) & set(a))
            stat = fmt(mean_std(results[s][arm], "target.macro_f1"))
            delta = f" ({float(np.mean([a[k] - d[k] for k in common])):+.3f})" if common else ""
            cells.append(stat + delta)
        lines.append(f"| {what} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render(results: dict[str, dict[str, list[dict]]], seeds: list[int], command: str) -> str:
    parts = [
        "# Results",
        "",
        "Target macro-F1 is measured on the targets' held-out windows, from",
        "confusion matrices summed over clients; mean ± std over seeds "
        f"{', '.join(map(str, seeds))}. Hyperparameters are the defaults of",
        "`fedsense/config.py`, fixed in advance; no target label was used to choose anything.",
        "Scenarios are in `configs/experiments/<scenario>/`; docs/methods.md describes the arms.",
        "",
        f"Regenerate with `{command}` (written {time.strftime('%Y-%m-%d')}).",
    ]
    runs = [r for arms in results.values() for rs in arms.values() for r in rs]
    done = sum(r.get("status") == "completed" for r in runs)
    parts.insert(1, f"{RUNS_MARK}{done} -->")
    missing = sum(r.get("status") == "missing" for r in runs)
    if missing:
        parts += ["", f"**Partial:** {len(runs) - missing} of {len(runs)} runs are in (the `runs` column says "
                  f"which arm has how many); `{command} --reuse` runs the other {missing} and keeps these."]
    parts += ["", "## Overview", "", overview_table(results)]
    if any(DEFAULT in arms for arms in results.values()):
        parts += ["", "## Ablation and variants of the default", "",
                  "Target macro-F1 of each variant, and in brackets its difference to the default over the "
                  "seeds both completed.", "", ablation_table(results)]
    for scenario, arms in results.items():
        parts += ["", f"## {scenario.replace('_', '-')}", "", arm_table(arms), ""]
        parts += comparison_lines(arms) or ["(no comparison has both arms yet)"]
    return "\n".join(parts) + "\n"


def regenerate(
    scenarios: list[str], arms: list[str] | None, seeds: list[int], out: Path, doc: Path, reuse: bool,
    run: bool = True,
) -> Path:
    """Run (or, with ``run=False``, only collect) every arm over the seeds and
    write the Markdown page."""
    results: dict[str, dict[str, list[dict]]] = {}
    text = ""
    for scenario in scenarios:
        chosen = [a for a in arms_of(scenario) if arms is None or a in arms]
        results[scenario] = {a: [run_arm(scenario, a, s, out, reuse, run) for s in seeds] for a in chosen}
        text = render(results, seeds, _command(scenarios, arms, seeds))
        if run:  # rewritten after each scenario: progress survives
            doc.parent.mkdir(parents=True, exist_ok=True)
            doc.write_text(text)
    if not run:  # only collecting: never replace the page with one that reports fewer runs
        if completed_runs(text) < completed_runs(doc.read_text() if doc.exists() else ""):
            print(f"{doc}: left as it is: it reports {completed_runs(doc.read_text())} completed runs, "
                  f"the runs under {out} only {completed_runs(text)} (a run whose config no longer matches "
                  f"its arm's is not counted); delete {doc} to write it anyway", file=sys.stderr)
            return doc
        doc.parent.mkdir(parents=True, exist_ok=True)
        doc.write_text(text)
    return doc


RUNS_MARK = "<!-- completed runs: "


def completed_runs(page: str) -> int:
    """The completed runs a results page reports (its machine-readable mark; 0 without one)."""
    start = page.find(RUNS_MARK)
    if start < 0:
        return 0
    digits = page[start + len(RUNS_MARK):].split(" ", 1)[0]
    return int(digits) if digits.isdigit() else 0


def _command(scenarios: list[str], arms: list[str] | None, seeds: list[int]) -> str:
    cmd = f"fedsense results --scenarios {','.join(scenarios)} --seeds {','.join(map(str, seeds))}"
    return cmd + (f" --arms {','.join(arms)}" if arms else "")
