"""Learning-curve PNGs drawn from metrics lines."""

from __future__ import annotations

import pytest
from PIL import Image

from fedsense.plots import learning_curves, series


def records(f1s, disc=None):
    out = []
    for r, f1 in enumerate(f1s, start=1):
        rec = {"round": r, "target": {"macro_f1": f1}, "source": {"macro_f1": f1 + 0.1}}
        if disc is not None:
            rec["adapt"] = {"disc_acc": {"acc": disc[r - 1]}}
        out.append(rec)
    return out


def test_series_skips_rounds_without_the_key():
    recs = [{"round": 1, "target": {"macro_f1": 0.5}}, {"round": 2}, {"round": 3, "target": {"macro_f1": 0.7}}]
    assert series(recs, "target.macro_f1") == [(1.0, 0.5), (3.0, 0.7)]


def _colours(path):
    with Image.open(path) as png:
        return {c for _, c in png.convert("RGB").getcolors(maxcolors=1_000_000)}


def test_curves_are_drawn_in_each_runs_colour(tmp_path):
    paths = learning_curves({"a": records([0.2, 0.5, 0.8]), "b": records([0.1, 0.3, 0.4], disc=[0.9, 0.7, 0.5])}, tmp_path)
    assert [p.name for p in paths] == ["macro_f1.png", "disc_acc.png"]
    colours = _colours(paths[0])
    assert (31, 119, 180) in colours and (255, 127, 14) in colours  # matplotlib's first two colours


def test_a_single_round_is_visible_and_self_training_gets_its_own_figure(tmp_path):
    recs = records([0.5])
    recs[0]["adapt"] = {"targets": {"min_class_share": 0.12, "confident": 0.9, "kept": 1.0}}
    paths = learning_curves({"a": recs}, tmp_path)
    assert [p.name for p in paths] == ["macro_f1.png", "self_training.png"]
    assert (31, 119, 180) in _colours(paths[0])  # one point still draws a marker


def test_no_discriminator_plot_without_adaptation_and_no_runs_is_an_error(tmp_path):
    assert [p.name for p in learning_curves({"a": records([0.5])}, tmp_path)] == ["macro_f1.png"]
    with pytest.raises(ValueError, match="no runs"):
        learning_curves({}, tmp_path)
