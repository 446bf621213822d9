"""Injected faults as a Flower mod, for reliability experiments (``faults:``).

``inject_faults`` wraps every handler of the ClientApp. It does nothing
unless the run's ``faults:`` section gives this simulated client a fault
(:func:`fedsense.faults.fault_of`; a real device, without
``num-partitions`` in its node config, never has one). Then, on a train
message, ``crash`` raises before the handler runs, ``timeout`` sleeps past
the server's deadline, ``nan``/``sign_flip``/``scale`` tamper with the
trained arrays of the reply, and on train and evaluate messages the
``*_lie`` kinds and ``malformed`` change what the reply says
(:func:`fedsense.faults.lie`). ``label_flip`` is a property of the device's
data, applied where they are loaded (``fedsense.data.clients``).
"""

from __future__ import annotations

import time

import numpy as np
from flwr.app import Context, Message, MessageType, MetricRecord
from flwr.clientapp.typing import ClientAppCallable

from fedsense import protocol
from fedsense.compression import decode, encode
from fedsense.config import Config, ConfigError
from fedsense.faults import LIES, TAMPERING, fault_of, lie, tamper
from fedsense.runconfig import config_from_run
from fl_client.records import to_numpy, to_record


def client_fault(context: Context) -> tuple[Config, int, str] | None:
    """``(config, partition id, fault)`` of this simulated client, or None:
    no fault, a real device, or a run config the handler will refuse."""
    total = context.node_config.get(protocol.NODE_NUM_PARTITIONS)
    pid = context.node_config.get(protocol.NODE_PARTITION_ID)
    if total is None or pid is None or protocol.NODE_DATA_PATH in context.node_config:
        return None
    try:
        cfg = config_from_run(context.run_config)
        fault = fault_of(cfg.faults, int(pid), int(total))  # type: ignore[arg-type]
    except (ConfigError, TypeError, ValueError):
        return None  # the handler answers a bad config with an error reply
    return None if fault is None else (cfg, int(pid), fault)


def _tamper_reply(fault: str, cfg: Config, msg: Message, reply: Message) -> None:
    """Replace the reply's trained arrays (plain, or a compressed update,
    decoded and encoded again) by what a ``fault`` device sends."""
    received = to_numpy(msg.content[protocol.ARRAYS])
    if protocol.ARRAYS in reply.content.array_records:
        trained = to_numpy(reply.content[protocol.ARRAYS])
        reply.content[protocol.ARRAYS] = to_record(tamper(fault, trained, received, cfg.faults.scale_factor))
        return
    packed = to_numpy(reply.content[protocol.UPDATE])
    encoding = str(msg.content[protocol.CONFIG][protocol.CFG_UPDATE_ENCODING])
    trained = decode(packed[protocol.UPDATE_VALUES], packed[protocol.UPDATE_SCALES], received, encoding)
    again, _error = encode(tamper(fault, trained, received, cfg.faults.scale_factor), received, encoding, None)
    reply.content[protocol.UPDATE] = to_record({protocol.UPDATE_VALUES: again.values,
                                              protocol.UPDATE_SCALES: again.scales})


def _lie_in_reply(fault: str, kind: str, reply: Message, rng: np.random.Generator) -> None:
    metrics = dict(reply.content[protocol.METRICS])
    records = {name: to_numpy(r) for name, r in reply.content.array_records.items()
               if name not in (protocol.ARRAYS, protocol.UPDATE)}
    lie(fault, kind, metrics, records, rng)
    reply.content[protocol.METRICS] = MetricRecord(metrics)
    for name, arrays in records.items():
        reply.content[name] = to_record(arrays)


def inject_faults(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """The Flower mod (``ClientApp(mods=[inject_faults])``)."""
    kind = msg.metadata.message_type
    found = client_fault(context) if kind in (MessageType.TRAIN, MessageType.EVALUATE) else None
    if found is None:
        return call_next(msg, context)
    cfg, pid, fault = found
    if kind == MessageType.TRAIN and fault == "crash":
        raise RuntimeError(f"injected fault: client {pid} crashes (faults.crash)")
    if kind == MessageType.TRAIN and fault == "timeout":
        time.sleep(cfg.fed.timeout + 1.0)  # the server has stopped waiting by then
    reply = call_next(msg, context)
    if reply.has_error():
        return reply
    if kind == MessageType.TRAIN and fault in TAMPERING:
        _tamper_reply(fault, cfg, msg, reply)
    if fault in LIES:
        server_round = int(msg.content[protocol.CONFIG][protocol.CFG_ROUND])
        _lie_in_reply(fault, kind, reply, np.random.default_rng([cfg.faults.seed, cfg.seed, server_round, pid,
                                                                 kind == MessageType.EVALUATE]))
    return reply
