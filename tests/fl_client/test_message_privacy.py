"""Every field of every reply is on docs/privacy.md's list, and no array
grows with the number of a device's windows."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, MessageType

from fedsense import protocol
from fl_client.client_app import app, evaluate, query, train
from strategies.bundle import carry_evaluation
from tests.conftest import REPO
from tests.fl_client.messages import device_context, server_message

from fedsense.methods import METHODS as REGISTRY

# every registered method (statistics alignment, fixed weights), plus the
# other settings that change what adversarial methods send
METHODS = [(name, "statistics", "fixed") for name in REGISTRY] + [
    ("dann", "federated", "fixed"),
    ("m3bat", "federated", "shift"),
    ("m3bat_bn", "federated", "fixed"),
]
# Documented exceptions to "every reply of a round has the same keys" (docs/privacy.md):
# under `generated` only sources can send their own BatchNorm statistics.
ROLE_ONLY = {"generated": {"evaluate.norm"}}


def allowed_fields() -> dict[str, list[str]]:
    text = (REPO / "docs" / "privacy.md").read_text()
    block = re.search(r"```fields\n(.*?)```", text, re.S).group(1)
    return {k.strip(): v.split() for k, v in (line.split(":", 1) for line in block.strip().splitlines())}


def inventory(kind: str, reply) -> dict[str, object]:
    """``record.field -> shape or 'number'/'list'`` of a reply's content."""
    out: dict[str, object] = {}
    for name, record in reply.content.array_records.items():
        record_kind = "arrays" if name == protocol.ARRAYS else name
        for key, arr in record.items():
            out[f"{kind}.{record_kind}:{key}"] = tuple(arr.shape)
    for name, record in reply.content.metric_records.items():
        for key, value in record.items():
            out[f"{kind}.{name}:{key}"] = ("list", len(value)) if isinstance(value, list) else "number"
    return out


def replies(tmp_path: Path, method: tuple[str, str, str], windows: int, encoding: str = "float32") -> dict[str, object]:
    name, alignment, weights = method
    overrides = (f"adapt.method={name}\nadapt.alignment={alignment}\nadapt.branch_weights={weights}\n"
                 f"data.synthetic.windows_per_class={windows}\nadapt.stats_min_count=8")
    from fedsense.configfile import from_dict
    from fedsense.models import DataSpec
    from fedsense.runmodel import build_run_model, sharing_of
    from fedsense.params import shared_arrays

    cfg = from_dict({"model": {"channels": [16, 32], "embed_dim": 32},
                     "adapt": {"method": name, "alignment": alignment}})
    model = build_run_model(DataSpec({"acc": (3, 64), "gyro": (3, 64)}, 4), cfg)
    start = shared_arrays(model, sharing_of(cfg))
    per_client = []
    for pid in (0, 5):  # a source and the target
        ctx = device_context(pid, tmp_path, overrides)
        found = inventory("query", query(server_message(protocol.QUERY_MESSAGE, None), ctx))
        instruction = server_message(MessageType.TRAIN, start)
        instruction.content[protocol.CONFIG][protocol.CFG_UPDATE_ENCODING] = encoding
        found |= inventory("train", train(instruction, ctx))
        found |= inventory("evaluate", evaluate(server_message(MessageType.EVALUATE, start), ctx))
        per_client.append(found)
        # one message a round: the same fields, the evaluate reply's under "evaluation."
        carrying = server_message(MessageType.TRAIN, start, server_round=2)
        carrying.content[protocol.CONFIG][protocol.CFG_UPDATE_ENCODING] = encoding
        carry_evaluation([carrying], server_message(MessageType.EVALUATE, None).content[protocol.CONFIG], {},
                         lambda node: {})
        one = inventory("train", app(carrying, device_context(pid, tmp_path / "one", overrides)))
        evaluation = f"train.{protocol.EVALUATION}"
        assert {k for k in one if not k.startswith(evaluation)} == {k for k in found if k.startswith("train.")}
        assert {"evaluate." + k[len(evaluation):] for k in one if k.startswith(evaluation)} \
            == {k for k in found if k.startswith("evaluate.")}
    # every reply of a round has the same keys and shapes, whatever the role
    exempt = ROLE_ONLY.get(name, set())
    keep = [{k: v for k, v in found.items() if k.split(":")[0] not in exempt} for found in per_client]
    assert keep[0] == keep[1]
    return {**per_client[1], **per_client[0]}


@pytest.mark.parametrize("method", METHODS, ids=["-".join(m) for m in METHODS])
def test_replies_carry_only_listed_fields_of_fixed_size(tmp_path, method):
    allowed = allowed_fields()
    small = replies(tmp_path / "a", method, windows=20)
    large = replies(tmp_path / "b", method, windows=40)
    assert small.keys() == large.keys()
    for field, shape in small.items():
        record, key = field.split(":", 1)
        patterns = allowed.get(record)
        assert patterns is not None, f"record '{record}' is not in docs/privacy.md"
        assert any(fnmatch.fnmatch(key, p) for p in patterns), f"{field} is not in docs/privacy.md"
        assert large[field] == shape, f"{field} changes size with the number of windows"
    if (method[0] in ("dann", "m3bat", "m3bat_bn") and method[1:] != ("federated", "fixed")) \
            or method[0] == "m3bat_local":
        assert any(f.startswith("evaluate.stats:") for f in small)  # statistics did travel
    else:
        assert not any(f.startswith("evaluate.stats:") for f in small)


@pytest.mark.parametrize("encoding", ["float16", "int8"])
def test_compressed_updates_carry_only_listed_fields_of_fixed_size(tmp_path, encoding):
    allowed = allowed_fields()
    small = replies(tmp_path / "a", ("m3bat_bn", "statistics", "fixed"), windows=20, encoding=encoding)
    large = replies(tmp_path / "b", ("m3bat_bn", "statistics", "fixed"), windows=40, encoding=encoding)
    train_fields = {f for f in small if f.startswith("train.") and not f.startswith("train.metrics")}
    assert train_fields == {"train.update:values", "train.update:scales"}
    for field, shape in small.items():
        record, key = field.split(":", 1)
        assert any(fnmatch.fnmatch(key, p) for p in allowed[record]), f"{field} is not in docs/privacy.md"
        assert large[field] == shape, f"{field} changes size with the number of windows"


@pytest.mark.parametrize(
    "method,alignment",
    [("m3bat", "federated"), ("m3bat", "statistics"), ("dann", "federated"), ("fedbn", "federated")],
)
def test_scrambling_target_labels_changes_no_trained_weight(tmp_path, monkeypatch, method, alignment):
    """A target device's labels never reach training: scrambled labels give
    bit-identical replies (only evaluation, on held-out windows, reads them).

    The evaluation protocol splits each device's windows class by class, so
    the split itself is held fixed (computed from the true labels): what is
    tested is that no training step reads a target label."""
    from fedsense.data import partition
    from dataclasses import replace

    from fedsense import configfile as config_mod
    from fedsense.data.loaders import build_dataset
    from fedsense.data.npz import save_npz
    from tests.conftest import SYNTHETIC

    cfg = config_mod.load(SYNTHETIC, [f"data.cache_dir={tmp_path}"])
    ds = build_dataset(cfg.data, cfg.seed)
    target = ds.subset(ds.subject == 6)
    scrambled = replace(target, y=np.random.default_rng(0).permutation(target.y))
    assert not np.array_equal(scrambled.y, target.y)
    save_npz(target, tmp_path / "true.npz")
    save_npz(scrambled, tmp_path / "scrambled.npz")
    true_split = partition.split_indices(target.y, cfg.data.test_fraction)
    monkeypatch.setattr(partition, "split_indices", lambda y, f: true_split)

    from fedsense.configfile import from_dict
    from fedsense.models import DataSpec
    from fedsense.runmodel import build_run_model
    from fedsense.adaptation.statistics import to_wire
    from fedsense.adaptation.training import embedding_stats
    from fedsense.params import shared_arrays
    from fedsense.runmodel import sharing_of

    run_cfg = from_dict({"model": {"channels": [16, 32], "embed_dim": 32},
                         "adapt": {"method": method, "alignment": alignment}})
    model = build_run_model(DataSpec({"acc": (3, 64), "gyro": (3, 64)}, 4), run_cfg)
    start = shared_arrays(model, sharing_of(run_cfg))
    out = {}
    for name in ("true", "scrambled"):
        ctx = device_context(0, tmp_path, f"adapt.method={method}\nadapt.alignment={alignment}")
        ctx.node_config = {protocol.NODE_DATA_PATH: str(tmp_path / f"{name}.npz")}
        msg = server_message(MessageType.TRAIN, start, server_round=3)
        msg.content[protocol.CONFIG] = ConfigRecord({**dict(msg.content[protocol.CONFIG]), protocol.CFG_COEFF: 0.5})
        if alignment == "statistics":  # a reference to align to (the sources' statistics)
            arrays, counts = to_wire(embedding_stats(model, ds.subset(ds.subject != 6)))
            msg.content[protocol.REFERENCE] = ArrayRecord({k: Array(v) for k, v in arrays.items()})
            msg.content[protocol.CONFIG] = ConfigRecord({**dict(msg.content[protocol.CONFIG]), **counts})
        reply = train(msg, ctx)
        assert reply.content[protocol.METRICS][protocol.IS_TARGET] == 1
        out[name] = {k: v.numpy() for k, v in reply.content[protocol.ARRAYS].items()}
        out[name + "-local"] = {k: v.numpy() for k, v in ctx.state["fedsense-local"].items()}
    changed = [k for k in start if not np.array_equal(out["true"][k], start[k])]
    if method != "fedbn":
        assert changed, "the target must actually train"
    for k in out["true"]:
        assert np.array_equal(out["true"][k], out["scrambled"][k]), k
    for k in out["true-local"]:
        assert np.array_equal(out["true-local"][k], out["scrambled-local"][k]), k


@pytest.mark.parametrize("options", ["", "\nadapt.align_branches=all"], ids=["default", "with-alignment"])
def test_scrambling_target_labels_changes_nothing_m3bat_local_adapts(tmp_path, monkeypatch, options):
    """m3bat_local adapts an unlabeled device when it evaluates: with its
    training labels scrambled, every parameter it adapted (calibration,
    BatchNorm, encoders, with alignment its discriminators, what it evaluated
    with) is bit-identical; only the confusion matrix of its held-out
    windows, which reads their labels, may differ."""
    from dataclasses import replace

    from fedsense import configfile as config_mod
    from fedsense.configfile import from_dict
    from fedsense.data import partition
    from fedsense.data.loaders import build_dataset
    from fedsense.data.npz import save_npz
    from fedsense.models import DataSpec
    from fedsense.runmodel import build_run_model, sharing_of
    from fedsense.params import shared_arrays
    from tests.conftest import SYNTHETIC

    cfg = config_mod.load(SYNTHETIC, [f"data.cache_dir={tmp_path}"])
    ds = build_dataset(cfg.data, cfg.seed)
    target = ds.subset(ds.subject == 6)
    scrambled = replace(target, y=np.random.default_rng(0).permutation(target.y))
    save_npz(target, tmp_path / "true.npz")
    save_npz(scrambled, tmp_path / "scrambled.npz")
    true_split = partition.split_indices(target.y, cfg.data.test_fraction)
    monkeypatch.setattr(partition, "split_indices", lambda y, f: true_split)
    align = "align_branches" in options
    run_cfg = from_dict({"model": {"channels": [16, 32], "embed_dim": 32},
                         "adapt": {"method": "m3bat_local", "align_branches": "all" if align else "none"}})
    model = build_run_model(DataSpec({"acc": (3, 64), "gyro": (3, 64)}, 4), run_cfg)
    start = shared_arrays(model, sharing_of(run_cfg))
    message = server_message(MessageType.EVALUATE, start, server_round=3)
    if align:  # the sources' class statistics to align to, and a reversal coefficient, as the server sends them
        from fedsense.adaptation.classwise import class_stats
        from fedsense.methods import wire

        reference = class_stats(model, ds.subset(ds.subject != 6), 4, min_count=2)
        message.content[protocol.CLASS_STATS] = ArrayRecord(
            {k: Array(v) for b, st in reference.items() for k, v in wire.class_arrays(b, st).items()})
        message.content[protocol.CONFIG] = ConfigRecord({**dict(message.content[protocol.CONFIG]),
                                                         protocol.CFG_COEFF: 0.5})
    out = {}
    for name in ("true", "scrambled"):
        ctx = device_context(0, tmp_path, "adapt.method=m3bat_local\nadapt.self_training_threshold=0" + options)
        ctx.node_config = {protocol.NODE_DATA_PATH: str(tmp_path / f"{name}.npz")}
        reply = evaluate(message, ctx)
        assert reply.content[protocol.METRICS][protocol.IS_TARGET] == 1
        out[name] = {k: v.numpy() for k, v in ctx.state["fedsense-local"].items()}
        out[name + "-metrics"] = dict(reply.content[protocol.METRICS])
    adapted = [k for k in out["true"] if k.startswith("method/adapted/") and "features.1.weight" in k]
    if not align:  # (with alignment on this untrained model the objective got worse: the step is reverted)
        assert adapted and not all(np.array_equal(out["true"][k], start[k.removeprefix("method/adapted/")])
                                   for k in adapted), "the target must actually adapt"
    moments = [v for k, v in out["true-metrics"].items() if ".moment." in k]
    assert (min(moments, default=0) > 0) == align, f"alignment ran: {align}, moment terms {moments}"
    numbers = {k: v for k, v in out["true-metrics"].items() if k.startswith("selftrain.")}
    assert numbers and numbers == {k: v for k, v in out["scrambled-metrics"].items() if k.startswith("selftrain.")}
    assert out["true"].keys() == out["scrambled"].keys()
    for k in out["true"]:
        assert np.array_equal(out["true"][k], out["scrambled"][k]), k
    for k, v in out["true-metrics"].items():
        if k.startswith("selftrain."):
            assert v == out["scrambled-metrics"][k], k


def test_projector_snapshot_sends_listed_fixed_size_centroids_only(tmp_path):
    """output.projector_rounds: class centroids, whose size never follows the window count."""
    from fedsense.config import ModelConfig
    from fedsense.methods import METHODS as REG
    from fedsense.models import DataSpec, build_model
    from fedsense.params import shared_arrays

    allowed = allowed_fields()
    model = build_model(DataSpec({"acc": (3, 64), "gyro": (3, 64)}, 4), ModelConfig(channels=[16, 32], embed_dim=32), 0)
    start = shared_arrays(model, REG["none"])
    found = []
    for windows in (20, 40):
        msg = server_message(MessageType.EVALUATE, start)
        msg.content[protocol.CONFIG] = ConfigRecord({**dict(msg.content[protocol.CONFIG]), protocol.CFG_PROJECTOR: 3})
        ctx = device_context(5, tmp_path / str(windows), f"data.synthetic.windows_per_class={windows}")
        found.append(inventory("evaluate", evaluate(msg, ctx)))
    assert found[0] == found[1]
    assert found[0]["evaluate.embeddings:embed.fused"] == (4, 64)  # K classes x fused width
    assert found[0]["evaluate.metrics:embed-count"] == ("list", 4)
    for field in found[0]:
        record, key = field.split(":", 1)
        assert any(fnmatch.fnmatch(key, p) for p in allowed[record]), field
