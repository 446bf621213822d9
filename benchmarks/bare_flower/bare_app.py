"""Bare Flower: FedAvg over the same model, the same data slices and the same
local epoch as fedsense, and nothing else.

What it shares with fedsense is the work, not the federation code: a
client's windows come from ``fedsense.data.clients.load_client_data`` (the
same slices, cached per process as fedsense's are) and the network from
``fedsense.models.build_model`` (the same architecture). Messages, the
strategy (Flower's own ``FedAvg``), the training loop (Adam, batch 32, one
epoch, cross-entropy) and evaluation are plain Flower and torch: no
validation of replies, no roles, no confusion matrices, no device state,
no run directory. The ServerApp writes each round's end time to ``out``.
"""

from __future__ import annotations

import json
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

client = ClientApp()
server = ServerApp()


@lru_cache(maxsize=1)
def _config(config_file: str, overrides: str):
    from fedsense.configfile import load

    return load(config_file, [line for line in overrides.splitlines() if line.strip()])


def _model(cfg, shapes, classes):
    from fedsense.models import DataSpec, build_model

    return build_model(DataSpec(shapes=shapes, num_classes=classes), cfg.model)


@lru_cache(maxsize=4)
def _data(config_file: str, overrides: str, partition: int, partitions: int):
    from fedsense.data.clients import load_client_data

    data = load_client_data(_config(config_file, overrides), {"partition-id": partition, "num-partitions": partitions})
    tensors = {split: ({m: torch.from_numpy(v) for m, v in ds.x.items()}, torch.from_numpy(ds.y))
               for split, ds in (("train", data.train), ("test", data.test))}
    return tensors, data.train.shapes()


def _setup(msg: Message, context: Context):
    run = context.run_config
    cfg = _config(str(run["config-file"]), str(run["overrides"]))
    tensors, shapes = _data(str(run["config-file"]), str(run["overrides"]),
                            int(context.node_config["partition-id"]), int(context.node_config["num-partitions"]))
    model = _model(cfg, shapes, int(msg.content["config"]["num-classes"]))
    model.load_state_dict({k: torch.from_numpy(a.numpy()) for k, a in msg.content["arrays"].items()})
    return cfg, model, tensors


@client.train()
def train(msg: Message, context: Context) -> Message:
    cfg, model, tensors = _setup(msg, context)
    x, y = tensors["train"]
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
    order = torch.randperm(len(y))
    for start in range(0, len(y), cfg.train.batch_size):
        rows = order[start:start + cfg.train.batch_size]
        optimizer.zero_grad()
        loss = F.cross_entropy(model({m: v[rows] for m, v in x.items()}).logits, y[rows])
        loss.backward()
        optimizer.step()
    arrays = ArrayRecord({k: Array(v.detach().numpy()) for k, v in model.state_dict().items()})
    return Message(RecordDict({"arrays": arrays, "metrics": MetricRecord({"num-examples": len(y)})}), reply_to=msg)


@client.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    _cfg, model, tensors = _setup(msg, context)
    x, y = tensors["test"]
    model.eval()
    with torch.no_grad():
        logits = model(x).logits
    metrics = {"num-examples": len(y), "loss": float(F.cross_entropy(logits, y)),
               "accuracy": float((logits.argmax(1) == y).float().mean())}
    return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)


class TimedFedAvg(FedAvg):
    """Flower's FedAvg, noting when each round's evaluation is in."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.ends: list[float] = []

    def aggregate_evaluate(self, server_round, replies):
        out = super().aggregate_evaluate(server_round, replies)
        self.ends.append(time.time())
        return out


@server.main()
def main(grid: Grid, context: Context) -> None:
    run = context.run_config
    cfg = _config(str(run["config-file"]), str(run["overrides"]))
    nodes = []
    while len(nodes) < 2:
        nodes = list(grid.get_node_ids())
        time.sleep(0.1)
    tensors, shapes = _data(str(run["config-file"]), str(run["overrides"]), 0, len(nodes))
    classes = int(cfg.data.synthetic.classes)
    model = _model(cfg, shapes, classes)
    arrays = ArrayRecord({k: Array(v.numpy()) for k, v in model.state_dict().items()})
    strategy = TimedFedAvg(fraction_train=1.0, fraction_evaluate=1.0, min_available_nodes=len(nodes),
                           min_train_nodes=len(nodes), min_evaluate_nodes=len(nodes))
    started = time.time()
    strategy.start(grid=grid, initial_arrays=arrays, num_rounds=int(run["rounds"]),
                   train_config=ConfigRecord({"num-classes": classes}),
                   evaluate_config=ConfigRecord({"num-classes": classes}))
    ends = [started, *strategy.ends]
    Path(str(run["out"])).write_text(json.dumps({"round_seconds": [round(b - a, 3) for a, b in zip(ends, ends[1:])],
                                                 "clients": len(nodes)}))
