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


def test_confusion_image_is_labelled_and_coloured_by_the_share_of_the_true_class() -> None:
    cm = np.array([[8, 2, 0], [0, 0, 0], [1, 1, 10]])
    img = confusion_image(cm, names=("walking", "sitting", "laying"), title="target")
    assert img.ndim == 3 and img.shape[0] == 3 and img.dtype == np.uint8 and min(img.shape[1:]) > 200
    colours = {tuple(px) for px in img.reshape(3, -1).T[::7]}
    assert len(colours) > 50  # text and a colour scale, not a bare grid
    assert (img.reshape(3, -1) < 80).all(axis=0).any()  # dark text or cells drawn
    bare = confusion_image(np.zeros((2, 2)))  # no windows: still an image, indices as names
    assert bare.shape[0] == 3
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
    named = nodes_text({"sampled": [7, 9]}, {7: "client 3 (source)"})
    assert named == "**sampled** (2): client 3 (source), 9"  # an unknown node keeps its id


def test_the_custom_scalars_layout_puts_the_headline_first_and_matches_real_tags(tmp_path):
    """The Custom Scalars tab: headline, adaptation, clients and cost; every
    chart's patterns match tags a round of the default method writes."""
    import re

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.custom_scalar import layout_pb2

    from fedsense.board import layout, scalar_tags
    from fedsense.config import Config
    from fedsense.rundir import RunDir

    run = RunDir(tmp_path / "run", Config())
    record = {"target": {"macro_f1": 0.9, "accuracy": 0.9}, "source": {"macro_f1": 0.8, "accuracy": 0.8},
              "adapt": {"lambda": 0.5, "weight": {"acc": 1.1}, "shift": {"acc": 0.4},
                        "targets": {"min_class_share": 0.1, "confident": 0.9, "kept": 1.0, "disc_acc.acc": 0.6}},
              "clients": {"sampled": 30}, "comm": {"bytes_up": 10}, "seconds": 6.0,
              "compute": {"train": {"source": {"cpu_seconds": 0.3}}}}
    run.log_round(1, record)
    run.close()
    acc = EventAccumulator(str(tmp_path / "run" / "tb"), size_guidance={"tensors": 0})
    acc.Reload()
    stored = acc.Tensors("custom_scalars__config__")[0].tensor_proto.string_val[0]
    parsed = layout_pb2.Layout.FromString(stored)
    titles = [c.title for c in parsed.category]
    assert titles == sorted(titles) and titles[0].startswith("1 headline")
    tags = set(scalar_tags(record))
    for category, charts in layout().items():
        for title, (_, patterns) in charts.items():
            assert any(re.fullmatch(p, t) for p in patterns for t in tags), (category, title)


def test_projector_points_are_coloured_by_class_and_shaped_by_role():
    from fedsense.board import SPRITE, point_sprites

    sprites = point_sprites([["source", "1", "0"], ["source", "2", "1"], ["target", "5", "0"], ["target", "5", "x"]])
    assert sprites.shape == (4, 3, SPRITE, SPRITE) and sprites.min() >= 0 and sprites.max() <= 1
    centre = SPRITE // 2
    assert not np.allclose(sprites[0][:, centre, centre], sprites[1][:, centre, centre])  # classes differ
    np.testing.assert_allclose(sprites[2][:, 0, 0], sprites[0][:, 0, 0])  # same class, same colour on the border
    np.testing.assert_allclose(sprites[2][:, centre, centre], 1.0)  # a target is an open square: white inside
    np.testing.assert_allclose(sprites[3][:, 0, 0], 0.5)  # no class: grey
