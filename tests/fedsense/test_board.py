"""TensorBoard views computed from numbers: tags, confusion image, hparams."""

from __future__ import annotations

import numpy as np
import pytest

from fedsense.board import confusion_image, final_metrics, flatten, hparams_of, nodes_text, scalar_tags


def test_flatten_keeps_finite_numbers_only() -> None:
    tree = {"a": {"b": 1, "c": {"d": 2.5}}, "e": "s", "f": False, "g": [1, 2], "h": 3, "i": None, "j": float("nan")}
    assert flatten(tree) == {"a/b": 1.0, "a/c/d": 2.5, "h": 3.0}


def test_scalar_tags_put_evaluation_under_eval_and_time_under_round() -> None:
    record = {
        "target": {"macro_f1": 0.9, "f1": {"0": 0.8}},
        "source": {"accuracy": 0.7},
        "client": {"4": {"macro_f1": 0.6}},
        "train": {"loss_task": 1.0, "loss_domain": {"acc": 0.69}},
        "adapt": {"lambda": 0.5, "disc_acc": {"gyro": 0.55}},
        "comm": {"bytes_up": 10},
        "clients": {"sampled": 3, "replied": 2, "failed": 1},
        "nodes": {"sampled": [1, 2, 3]},
        "seconds": 4.5,
    }
    assert scalar_tags(record) == {
        "eval/target/macro_f1": 0.9, "eval/target/f1/0": 0.8, "eval/source/accuracy": 0.7,
        "eval/client/4/macro_f1": 0.6, "train/loss_task": 1.0, "train/loss_domain/acc": 0.69,
        "adapt/lambda": 0.5, "adapt/disc_acc/gyro": 0.55, "comm/bytes_up": 10.0,
        "clients/sampled": 3.0, "clients/replied": 2.0, "clients/failed": 1.0, "round/seconds": 4.5,
    }


def test_confusion_image_is_row_normalised_and_sized_by_cell() -> None:
    img = confusion_image(np.array([[8, 2], [0, 0]]), cell=10)
    assert img.shape == (3, 20, 20) and img.dtype == np.uint8
    inside = lambda r, c: img[:, r * 10 + 5, c * 10 + 5]  # noqa: E731  (centre of a cell)
    assert inside(0, 0)[0] < inside(0, 1)[0] < 255  # 0.8 darker than 0.2
    assert (inside(1, 0) == 255).all() and (inside(1, 1) == 255).all()  # an empty row stays white
    with pytest.raises(ValueError, match="square"):
        confusion_image(np.zeros((2, 3)))


def test_hparams_flatten_the_config_and_metrics_skip_unknowns() -> None:
    hp = hparams_of({"seed": 1, "adapt": {"method": "m3bat", "weights": {}}, "data": {"target_domains": [1, 2], "path": None}})
    assert hp == {"seed": 1, "adapt.method": "m3bat", "adapt.weights": "{}", "data.target_domains": "[1, 2]", "data.path": "null"}
    assert final_metrics({"target": {"macro_f1": 0.5}, "source": {"macro_f1": None}}) == {"hparam/target_macro_f1": 0.5}


def test_nodes_text_lists_ids_per_outcome() -> None:
    text = nodes_text({"sampled": [1, 2], "replied": [2], "failed": [1]})
    assert text == "**sampled** (2): 1, 2\n\n**replied** (1): 2\n\n**failed** (1): 1"
    assert "—" in nodes_text({"failed": []})
