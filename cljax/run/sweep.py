"""Hyperparameter grids as a batch axis beside the seeds: every point x every seed of a grid
trains in one compiled program.

A grid names float settings of a method's `Config` (`--grid lr=0.01,0.03 alpha=0.1,0.3`);
its points are their combinations (the first name varies slowest). The run's models are
the points x the seeds, point-major, on the driver's seed axis: each model draws its data
order, initialisation and every random choice from its seed, exactly as the point run
alone, and its point's values enter the compiled program as numbers (traced per model).

`swept(module, config, names, ...)` is the `Method` of those models: its state is
`SweptState(hp, inner)`, `hp` the model's values of the swept settings and `inner` the
method's own state; each of its functions builds the method from `config` with `hp` put
in (traced) and calls that method's function. A method reads its settings when its
functions are traced, so a swept setting must only enter as a number: one used in Python
control flow (or to size an array) is refused by its field (`hparam(..., sweepable=False)`)
or fails when traced.

`lr` is different: methods build their optimizer once, at `init`, so the grid builds those
that `lr` sets (found by tracing each optimizer's update at two values) at `lr` 1 and scales
their updates by the model's `lr` (an optax transformation chained after them, its factor
written from `hp` before every step): with SGD, momentum or Adam that is the same update
bit for bit. Any other setting that builds an optimizer with the state, or that no function
reads after `init`, is refused by `check_effect`: one program would train every point alike.

`GridRun` is the driver's `SeedsRun` with the models' values set after `init`; `run_grid`
runs a grid and splits its results per point.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import typing

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from flax.training import train_state

from cljax.core.config import _kind
from cljax.methods import Method
from cljax.run import lr_schedule, sharding
from cljax.run.execute import SeedsRun


def sweepable(config_cls) -> tuple[str, ...]:
    """The settings of `config_cls` a grid can sweep: its float fields not marked
    `sweepable=False`."""
    hints = typing.get_type_hints(config_cls)
    out = []
    for f in dataclasses.fields(config_cls):
        kind, nullable = _kind(hints[f.name])
        if kind is float and not nullable and f.metadata.get("sweepable", True):
            out.append(f.name)
    return tuple(out)


def parse(items) -> dict[str, tuple[float, ...]]:
    """`["lr=0.01,0.03", "alpha=0.1"]` -> `{"lr": (0.01, 0.03), "alpha": (0.1,)}`; a clear
    ValueError for anything else."""
    grid = {}
    for item in items:
        name, eq, values = item.partition("=")
        if not eq or not name or not values:
            raise ValueError(f"--grid {item}: expected NAME=V1,V2,... (e.g. lr=0.01,0.03)")
        if name in grid:
            raise ValueError(f"--grid {name} is given twice; list its values once")
        try:
            grid[name] = tuple(float(v) for v in values.split(","))
        except ValueError:
            raise ValueError(f"--grid {item}: the values must be numbers") from None
        if len(set(grid[name])) != len(grid[name]):
            raise ValueError(f"--grid {item}: a value is repeated")
    return grid


def points(grid: dict) -> list[dict]:
    """Every combination of the grid's values, the first name varying slowest."""
    names = list(grid)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*grid.values())]


def check(module, config, grid: dict) -> list:
    """The `Config` of every point (each validated as `--set` would be); a ValueError naming
    a setting that cannot be swept."""
    allowed = sweepable(module.Config)
    for name in grid:
        if name not in module.Config.names():
            raise ValueError(
                f"--grid {name}: {module.Config.owner()} has no such setting; sweepable: "
                f"{', '.join(allowed) or 'none'}"
            )
        if name not in allowed:
            raise ValueError(
                f"--grid {name}: only float settings that enter the step as numbers can be "
                f"swept in one program ({', '.join(allowed) or 'none'} here); run the values "
                f"of {name} as separate commands"
            )
    return [module.Config.build({**config.to_dict(), **p}) for p in points(grid)]


def _program(method: Method, scenario, run_config) -> list:
    """What `method`'s functions compute on the first two tasks of `scenario`, traced on
    abstract values: their jaxprs' text and constants."""
    from cljax.run.plan import task_info

    key = jax.random.key(0)
    state = jax.eval_shape(method.init, key, scenario.train(0)[0][:1])
    out = []
    for t in range(min(2, scenario.num_tasks)):
        x, y = scenario.train(t)
        info = task_info(scenario, run_config, t)
        data = (jax.ShapeDtypeStruct(x.shape, x.dtype), jax.ShapeDtypeStruct(y.shape, y.dtype))
        n = run_config.batch_size
        batch = {
            "x": jax.ShapeDtypeStruct((n, *x.shape[1:]), x.dtype),
            "y": jax.ShapeDtypeStruct((n,), y.dtype),
        }
        begun = jax.eval_shape(lambda s, i=info: method.begin_task(s, i, key), state)
        calls = [  # (function, arguments, the TaskInfo's place or None)
            (method.begin_task, (state, info, key), 1),
            (method.begin_task_data, (begun, info, data, key), 1),
            (method.train_step, (begun, batch, key), None),
            (method.end_task, (begun, info, data, key), 1),
            (method.predict, (begun, data[0]), None),
        ]
        for fn, args, static in calls:
            closed = jax.make_jaxpr(fn, static_argnums=() if static is None else (static,))(*args)
            out.append((str(closed.jaxpr), [np.asarray(c).tobytes() for c in closed.consts]))
        state = jax.eval_shape(lambda s, d, i=info: method.end_task(s, i, d, key), begun, data)
    return out


def _optimizers(method: Method, example_x) -> list:
    """The update of each optimizer in `method`'s initial state, traced: jaxpr text and
    constants, one entry a `TrainState`."""
    state = jax.eval_shape(method.init, jax.random.key(0), example_x)
    out = []
    for net in _nets(state):
        closed = jax.make_jaxpr(net.tx.update)(net.params, net.opt_state, net.params)
        out.append((str(closed.jaxpr), [np.asarray(c).tobytes() for c in closed.consts]))
    return out


def _built_with(module, config, name: str, values, *, model, input_fn, example_x) -> list:
    """Per optimizer of the initial state: whether setting `name` (at two of `values`) changes
    its update (the optimizers a method builds once, with its state)."""
    a, b = (module.Config.build({**config.to_dict(), name: v}) for v in values[:2])
    runs = [_optimizers(module.make(c, model=model, input_fn=input_fn), example_x) for c in (a, b)]
    return [u != v for u, v in zip(*runs, strict=True)]


def check_effect(module, config, grid: dict, scenario, run_config, *, model, input_fn) -> None:
    """A ValueError for a swept setting (other than `lr`) that sets an optimizer built with the
    state (at `init`, before any value of the grid is in), or that the method's functions never
    read: sweeping it in one program would silently train every point alike."""
    example_x = scenario.train(0)[0][:1]
    for name in grid:
        if name == "lr":
            continue
        values = sorted({float(v) for v in grid[name]} | {float(getattr(config, name))})
        kw = {"model": model, "input_fn": input_fn}
        if any(_built_with(module, config, name, values, example_x=example_x, **kw)):
            raise ValueError(
                f"--grid {name}: {module.Config.owner()} builds an optimizer with it when its "
                f"state is made, before a point's value is in; run the values of {name} as "
                "separate commands"
            )
        a, b = (module.Config.build({**config.to_dict(), name: v}) for v in values[:2])
        programs = [_program(module.make(c, **kw), scenario, run_config) for c in (a, b)]
        if programs[0] == programs[1]:
            raise ValueError(
                f"--grid {name}: {module.Config.owner()} never reads it after its state is "
                f"made; run the values of {name} as separate commands"
            )


@struct.dataclass
class SweptState:
    hp: dict  # swept setting -> float32 (): this model's values
    inner: typing.Any  # the method's own state


class LrScaleState(typing.NamedTuple):
    lr: jax.Array  # float32 (): the learning rate the updates are scaled by


def lr_scale() -> optax.GradientTransformation:
    """Scales the updates by the state's `lr` (written by the grid before each step)."""

    def init(params):
        del params
        return LrScaleState(jnp.ones((), jnp.float32))

    def update(updates, state, params=None):
        del params
        return jax.tree.map(lambda u: (u * state.lr).astype(u.dtype), updates), state

    return optax.GradientTransformation(init, update)


def _is_net(x) -> bool:
    return isinstance(x, train_state.TrainState)


def _nets(state) -> list:
    return [n for n in jax.tree.leaves(state, is_leaf=_is_net) if _is_net(n)]


def _set_lr(state, lr):
    return jax.tree.map(
        lambda s: s._replace(lr=jnp.asarray(lr, s.lr.dtype)) if isinstance(s, LrScaleState) else s,
        state,
        is_leaf=lambda x: isinstance(x, LrScaleState),
    )


def _with(config, values: dict):
    """`config` with `values` put in, unchecked (they may be traced)."""
    out = copy.copy(config)
    for name, value in values.items():
        object.__setattr__(out, name, value)
    return out


def swept(module, config, names, *, model, input_fn) -> Method:
    """The `Method` whose state carries each model's values of the settings `names` (see the
    module's docstring); `config` gives every other setting."""
    names = tuple(names)
    base = module.make(config, model=model, input_fn=input_fn)
    sweeps_lr = "lr" in names

    def build(hp) -> Method:
        return module.make(_with(config, hp), model=model, input_fn=input_fn)

    def init(key, example_x):
        hp = {n: jnp.asarray(getattr(config, n), jnp.float32) for n in names}
        if not sweeps_lr:
            return SweptState(hp=hp, inner=base.init(key, example_x))
        at_one = module.Config.build({**config.to_dict(), "lr": 1.0})
        kw = {"model": model, "input_fn": input_fn, "example_x": example_x}
        uses_lr = _built_with(module, config, "lr", (1.0, 2.0), **kw)
        scaled = iter(uses_lr)
        if not any(uses_lr):
            raise ValueError(
                f"--grid lr: {base.name} builds no optimizer with lr; run its lr values as "
                "separate commands"
            )
        inner = module.make(at_one, model=model, input_fn=input_fn).init(key, example_x)

        def attach(net):
            if not _is_net(net) or not next(scaled):
                return net
            return lr_schedule.chain_after(net, lr_scale())

        return SweptState(hp=hp, inner=jax.tree.map(attach, inner, is_leaf=_is_net))

    def inner_of(state: SweptState):
        return _set_lr(state.inner, state.hp["lr"]) if sweeps_lr else state.inner

    def begin_task(state, task, key):
        return state.replace(inner=build(state.hp).begin_task(state.inner, task, key))

    def begin_task_data(state, task, data, key):
        return state.replace(inner=build(state.hp).begin_task_data(state.inner, task, data, key))

    def train_step(state, batch, key):
        inner, metrics = build(state.hp).train_step(inner_of(state), batch, key)
        return state.replace(inner=inner), metrics

    def end_task(state, task, data, key):
        return state.replace(inner=build(state.hp).end_task(inner_of(state), task, data, key))

    def predict(state, x):
        return build(state.hp).predict(state.inner, x)

    def train_pool(state, example_x):
        return build(state.hp).train_pool(state.inner, example_x)

    return base._replace(
        init=init,
        begin_task=begin_task if base.does("begin_task") else base.begin_task,
        begin_task_data=begin_task_data if base.does("begin_task_data") else base.begin_task_data,
        train_step=train_step,
        end_task=end_task if base.does("end_task") else base.end_task,
        predict=predict,
        train_pool=train_pool if base.does("train_pool") else base.train_pool,
    )


class GridRun(SeedsRun):
    """`SeedsRun` over the models of a grid (`config.seeds`: each point's seeds in turn), each
    model's swept values set after `init`."""

    def __init__(self, method, scenario, config, workdir, hooks, values: dict):
        super().__init__(method, scenario, config, workdir, hooks)
        self.values = values  # swept setting -> (models,) values

    def models(self) -> str:
        seeds = sorted(set(self.seeds[: self.n]))
        return f"{self.n // len(seeds)} points x seeds {seeds}"

    def _init_state(self):
        state = super()._init_state()
        rows = np.resize(np.arange(self.n), len(self.seeds))  # the padding models: copies
        hp = {n: np.asarray(v, np.float32)[rows] for n, v in self.values.items()}
        return state.replace(hp=sharding.place_seeds(hp, self.mesh))


def run_grid(
    module,
    config,
    grid: dict,
    scenario,
    run_config,
    *,
    model,
    input_fn,
    workdir=None,
    resume: bool = False,
    stop_after=None,
    stop_requested=None,
    logger=None,
    checked: bool = False,
) -> list[dict]:
    """Trains every point of `grid` (`{setting: values}` over `config`, the method's
    `Config`) x every seed of `run_config` in one vmapped run, and returns one results
    dictionary per point (as `cljax.train.run`'s, its `"state"` the point's seeds' states,
    plus `"grid"`: the point's values and place; timing and `final_train_loss` are the whole
    grid's). `checked`: `check_effect` already said yes (the CLI asks before it writes)."""
    from cljax.outputs import report
    from cljax.run.api import Hooks

    configs = check(module, config, grid)
    if not checked:
        check_effect(module, config, grid, scenario, run_config, model=model, input_fn=input_fn)
    pts = points(grid)
    method = swept(module, config, list(grid), model=model, input_fn=input_fn)
    seeds = tuple(run_config.seeds)
    n = len(seeds)
    models = dataclasses.replace(run_config, seeds=tuple(s for _ in pts for s in seeds))
    values = {name: [p[name] for p in pts for _ in seeds] for name in grid}
    hooks = Hooks(None, None, None, stop_requested, logger)
    out = GridRun(method, scenario, models, workdir, hooks, values).run(resume, stop_after)
    results = []
    for i, (point, cfg) in enumerate(zip(pts, configs, strict=True)):
        rows = slice(i * n, (i + 1) * n)
        one = dataclasses.replace(out.config, seeds=seeds)
        res = report.results(
            module.make(cfg, model=model, input_fn=input_fn),
            scenario,
            one,
            acc={s: a[rows] for s, a in out.acc.items()},
            timing=out.timing,
            losses=out.losses,
            per_task=[p[rows] for p in out.per_task],
            settings=out.settings,
        )
        res["grid"] = {
            "point": i,
            "points": len(pts),
            "values": point,
            "swept": {name: list(v) for name, v in grid.items()},
            "models": len(pts) * n,
        }
        res["state"] = jax.tree.map(lambda a, r=rows: a[r], out.state.inner)
        results.append(res)
    return results


def summary(results: list[dict], measure: str) -> dict:
    """What `grid.json` holds: the swept values, each point's final average accuracy (mean and
    std over seeds) per setting and the best point by the first setting's mean (`measure`:
    "validation" when scored on held-out training data, else "test")."""
    first = results[0]
    setting = next(iter(first["final_average_accuracy"]))
    rows = [
        {
            "point": r["grid"]["point"],
            "values": r["grid"]["values"],
            "final_average_accuracy": r["final_average_accuracy"],
        }
        for r in results
    ]
    best = max(rows, key=lambda row: row["final_average_accuracy"][setting]["mean"])
    return {
        "method": first["method"],
        "benchmark": first["benchmark"],
        "seeds": first["seeds"],
        "swept": first["grid"]["swept"],
        "measure": measure,
        "ranked_by": setting,
        "points": rows,
        "best": best["point"],
        "timing": first["timing"],
    }


def table(grid: dict) -> str:
    """A markdown table of the points, best first."""
    setting = grid["ranked_by"]
    names = list(grid["swept"])
    ranked = sorted(grid["points"], key=lambda row: -row["final_average_accuracy"][setting]["mean"])
    lines = [
        "| " + " | ".join([*names, f"{setting} ({grid['measure']})", "point"]) + " |",
        "|" + "---|" * (len(names) + 2),
    ]
    for row in ranked:
        acc = row["final_average_accuracy"][setting]
        cells = [f"{row['values'][n]:g}" for n in names]
        lines.append(
            "| "
            + " | ".join([*cells, f"{acc['mean']:.2f} +- {acc['std']:.2f}", str(row["point"])])
            + " |"
        )
    return "\n".join(lines)
