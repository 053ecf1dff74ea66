"""The ClientApp of a federated continual run: the federated client's loop on the experience
the schedule gives this client this round, with its continual method's hooks and state.

A worker caches what the federated worker caches (config, data, model, task) plus the
:class:`~.schedule.Schedule` (the stream's experiences are subsets of the cached data), built
once per worker and run. The client's own state arrives with the message (``cstate``) and goes
back with the reply, updated; see :mod:`.server` for why the server keeps it.
"""

from __future__ import annotations

from typing import Any

_SCHEDULES: dict[str, Any] = {}


def schedule_for(run_key: str, state: Any) -> Any:
    """The run's schedule, built once per worker (the worker's data and task)."""
    from paralab.strategies.federated_continual.schedule import build_schedule

    if run_key not in _SCHEDULES:
        _SCHEDULES.clear()  # one run per worker at a time
        _SCHEDULES[run_key] = build_schedule(state.config, state.data, state.task)
    return _SCHEDULES[run_key]


def train_continual_client(state: Any, schedule: Any, cid: int, arrays, round_cfg: dict, cstate):
    """One round of client ``cid``: its experience's share, its method, its updated state."""
    import torch

    from paralab.strategies.federated.client import client_seed, train_client
    from paralab.strategies.federated_continual.methods import ClientMemory, build_method

    rnd = int(round_cfg["server-round"])
    e = schedule.experience_of(cid, rnd)
    memory = ClientMemory.from_arrays(cstate)
    method = build_method(
        state.config.paradigm, state.task, state.model, memory,
        [exp.train for exp in schedule.experiences], e,
        client_seed(state.config.seed, rnd, cid, salt=29),
    )  # fmt: skip
    index = schedule.parts[e][cid]
    dataset = schedule.experiences[e].train
    out = train_client(
        state, cid, rnd, arrays, round_cfg, dataset=dataset, index=index, hooks=method
    )
    out["metrics"] |= method.figures() | {"experience": float(e)}
    out["memory"] = memory.to_arrays()
    out["index"] = torch.as_tensor(index)
    return out


def make_continual_client_app(plain: dict, run_key: str):
    """A ClientApp like the federated one, whose messages carry the client's state."""
    from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    from paralab.strategies.federated.client import worker_state

    app = ClientApp()

    @app.train()
    def train(msg: Message, context) -> Message:
        state = worker_state(run_key, plain)
        schedule = schedule_for(run_key, state)
        cid = int(context.node_config["partition-id"])
        cstate = dict(msg.content["cstate"].to_torch_state_dict())
        out = train_continual_client(
            state, schedule, cid, msg.content["arrays"], dict(msg.content["config"]), cstate
        )
        records = {
            "arrays": ArrayRecord(out["state"]),
            "metrics": MetricRecord(out["metrics"]),
            "client": ConfigRecord({"cid": cid, "node": state.node}),
            "cstate": ArrayRecord(out["memory"]),
        }
        if state.config.paradigm.server_method == "prototypes":
            from paralab.strategies.federated_continual.prototypes import client_prototypes

            e = schedule.experience_of(cid, int(msg.content["config"]["server-round"]))
            records["protos"] = ArrayRecord(
                client_prototypes(state, schedule.experiences[e].train, out["index"])
            )
        return Message(content=RecordDict(records), reply_to=msg)

    return app
