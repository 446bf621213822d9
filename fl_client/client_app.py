"""ClientApp: unpack a Message, call the fedsense core, pack the reply.

Shared weights arrive in the message; device-only parts (normalisation
statistics under FedBN-style methods) live in ``context.state`` between
rounds. A target client's labels were removed when its data were loaded.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedsense import protocol
from fedsense.adaptation import METHODS
from fedsense.data.clients import ClientData, load_client_data
from fedsense.engine import evaluate as evaluate_model
from fedsense.engine import train_supervised
from fedsense.models import DataSpec, build_model
from fedsense.params import load_arrays, local_arrays, shared_arrays, shared_keys
from fedsense.runconfig import config_from_run

LOCAL_STATE = "fedsense-local"  # context.state key of the device-only arrays

app = ClientApp()


def _setup(msg: Message, context: Context) -> tuple:
    cfg = config_from_run(context.run_config)
    data = load_client_data(cfg, context.node_config)
    method = METHODS[cfg.adapt.method]
    num_classes = int(msg.content[protocol.CONFIG][protocol.CFG_NUM_CLASSES])
    spec = DataSpec(shapes=data.train.shapes(), num_classes=num_classes)
    model = build_model(spec, cfg.model, seed=cfg.seed)
    incoming = {k: v.numpy() for k, v in msg.content[protocol.ARRAYS].items()}
    load_arrays(model, incoming, strict_keys=shared_keys(model, method))
    if LOCAL_STATE in context.state:  # device-only parameters from earlier rounds
        local = {k: v.numpy() for k, v in context.state[LOCAL_STATE].items()}
        load_arrays(model, local, strict_keys=set())
    return cfg, data, method, model, num_classes


def _base_metrics(data: ClientData) -> dict[str, int]:
    return {
        protocol.IS_TARGET: int(data.role == "target"),
        protocol.PARTITION: data.partition_id,
    }


@app.train()
def train(msg: Message, context: Context) -> Message:
    cfg, data, method, model, _k = _setup(msg, context)
    config = msg.content[protocol.CONFIG]
    server_round = int(config[protocol.CFG_ROUND])
    result = train_supervised(
        model,
        data.train,
        cfg.train,
        epochs=int(config.get(protocol.CFG_LOCAL_EPOCHS, cfg.train.local_epochs)),
        lr=float(config.get(protocol.CFG_LR, cfg.train.lr)),
        # distinct, reproducible shuffling per seed, round and client
        seed=cfg.seed * 1_000_003 + server_round * 1_009 + max(data.partition_id, 0),
    )
    context.state[LOCAL_STATE] = ArrayRecord(
        {k: Array(v) for k, v in local_arrays(model, method).items()}
    )
    metrics = MetricRecord(
        {
            protocol.NUM_EXAMPLES: int(result["num_examples"]),
            protocol.LOSS_TASK: float(result["loss_task"]),
            protocol.TRAIN_STEPS: int(result["steps"]),
            **_base_metrics(data),
        }
    )
    arrays = ArrayRecord({k: Array(v) for k, v in shared_arrays(model, method).items()})
    return Message(RecordDict({protocol.ARRAYS: arrays, protocol.METRICS: metrics}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    _cfg, data, _method, model, num_classes = _setup(msg, context)
    result = evaluate_model(model, data.test, num_classes)
    cm = np.asarray(result["confusion"], dtype=np.int64)
    metrics = MetricRecord(
        {
            protocol.NUM_EXAMPLES: int(result["windows"]),
            protocol.EVAL_LOSS: float(result["loss"]),
            protocol.EVAL_WINDOWS: int(result["windows"]),
            protocol.CONFUSION: [int(v) for v in cm.ravel()],
            **_base_metrics(data),
        }
    )
    return Message(RecordDict({protocol.METRICS: metrics}), reply_to=msg)


@app.query()
def query(msg: Message, context: Context) -> Message:
    """The data specification of this client: shapes and counts, no samples."""
    cfg = config_from_run(context.run_config)
    data = load_client_data(cfg, context.node_config)
    classes = len(data.test.classes) or int(max(data.test.y.max(), data.train.y.max())) + 1
    spec = DataSpec(shapes=data.train.shapes(), num_classes=classes)
    metrics = MetricRecord(
        {
            **spec.to_metrics(),
            protocol.SPEC_TRAIN_WINDOWS: len(data.train),
            protocol.SPEC_TEST_WINDOWS: len(data.test),
            **_base_metrics(data),
        }
    )
    return Message(RecordDict({protocol.METRICS: metrics}), reply_to=msg)


__all__ = ["app"]
