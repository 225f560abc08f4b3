"""A reproduction table's rows: what the experiment scripts share around their runs.

A table is a JSON file of rows (a row's name -> its results, `report.results` without
state; for `tune`, a grid point's summary) and the markdown written from it. A script
loads the rows (`load`), runs for each row the seeds it lacks (`complete`: `missing_seeds`,
then `merge` with the seeds it has), writes the rows after each one (`save`), then the
markdown and its plots (`write_table`), whose header names the machine (`machine`).
Whether a row ran the settings planned now is the script's question; `with_defaults` and
`as_json` read an older row's settings as a new run records them.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Callable, Iterable
from pathlib import Path

import jax

from cljax import methods
from cljax.outputs import report
from cljax.run import workdir
from experiments import plot


def load(table_json) -> dict:
    """The rows a table's JSON file holds.

    Args:
      table_json: the table's JSON path.

    Returns:
      Its rows by name, or `{}` where there is no file yet.
    """
    table_json = Path(table_json)
    return json.loads(table_json.read_text()) if table_json.exists() else {}


def as_json(obj):
    """`obj` as the table's JSON file gives it back (tuples as lists): what a row read from
    the file compares equal to."""
    return json.loads(json.dumps(obj))


def with_defaults(method: str, hparams: dict, old: dict | None = None) -> dict:
    """A row's recorded settings with the `Config` fields it lacks at their defaults.

    Rows recorded before results held the whole `Config` left some defaults out; filled in,
    they still match, and merge with, a run of the same settings.

    Args:
      method: the method's registered name (`methods.get`).
      hparams: the row's recorded `hparams`.
      old: defaults of an earlier version of the method, over its `Config`'s (fields whose
        default changed since rows were recorded without them).

    Returns:
      `hparams` over the defaults.
    """
    return {**methods.get(method).Config().to_dict(), **(old or {}), **hparams}


def missing_seeds(row: dict | None, seeds: Iterable[int], same: bool = True) -> tuple[int, ...]:
    """The seeds a row still lacks.

    Args:
      row: the row in the table, or None where it has none.
      seeds: the seeds the row should have.
      same: whether the row ran the settings planned now; where not, it is run again whole.

    Returns:
      The seeds of `seeds` to run, in their order (all of them without a row of the same
      settings, none where the row has them all).
    """
    if row is None or not same:
        return tuple(seeds)
    return tuple(s for s in seeds if s not in row["seeds"])


def merge(
    row: dict | None, res: dict, key: str = "", rerun: Callable[[], dict] | None = None
) -> dict:
    """New seeds' results joined with those the row has (`report.merge_seeds`).

    Both are compared as the JSON file holds them (`as_json`): a setting recorded as a tuple
    (`dyn_expand`'s milestones) reads back from the table as a list.

    Args:
      row: the row in the table (None: `res` is the row).
      res: the results of the seeds the row lacked.
      key: the row's name, for the message when they cannot be joined.
      rerun: where given, what runs every seed again when they cannot be joined (other
        settings since: `report.merge_seeds`' ValueError is printed, not raised).

    Returns:
      The row with every seed of both.
    """
    if row is None:
        return res
    try:
        return report.merge_seeds(as_json(row), as_json(res))
    except ValueError as e:
        if rerun is None:
            raise
        print(f"{key}: {e}; rerunning every seed", flush=True)
        return rerun()


def complete(
    key: str,
    row: dict | None,
    seeds: Iterable[int],
    run: Callable[[tuple[int, ...]], dict],
    same: bool = True,
    rerun_whole: bool = False,
) -> dict | None:
    """Runs the seeds a row lacks and joins them to the ones it has.

    Args:
      key: the row's name.
      row: the row in the table, or None.
      seeds: the seeds the row should have.
      run: `run(seeds) -> results` of the row's settings on those seeds.
      same: whether `row` ran the settings `run` runs (where not, every seed runs and the
        row is replaced).
      rerun_whole: run every seed again where the new seeds' results cannot be joined to
        the row's (instead of raising `report.merge_seeds`' ValueError).

    Returns:
      The completed row, or None where it lacked no seed (nothing ran).
    """
    seeds = tuple(seeds)
    todo = missing_seeds(row, seeds, same)
    if not todo:
        return None
    res = run(todo)
    if not same:
        return res
    rerun = (lambda: run(seeds)) if rerun_whole else None
    return merge(row, res, key, rerun)


def save(table_json, new: dict, rows: dict | None = None) -> dict:
    """Writes a table's rows to its JSON file through a temporary file (never half a file).

    Args:
      table_json: the table's JSON path.
      new: rows to write over the others.
      rows: the other rows; None: those the file holds now, so that rows another
        invocation wrote since this one loaded them are kept.

    Returns:
      The rows written.
    """
    rows = {**(load(table_json) if rows is None else rows), **new}
    report.write_json(table_json, rows)
    return rows


def write_table(table_md, text: str, table_json=None) -> None:
    """Writes a table's markdown through a temporary file, and its plots beside it.

    Args:
      table_md: the markdown path.
      text: the markdown.
      table_json: where given, the table's JSON, whose plots (compare / forgetting /
        over_time, PNG and SVG) `plot.for_table` draws beside it.
    """
    with workdir.replaced(table_md) as tmp:
        tmp.write_text(text)
    if table_json is not None:
        plot.for_table(table_json)


def machine(os_name: bool = False) -> str:
    """The header's line on the machine that ran the table.

    Args:
      os_name: name the operating system too (`platform.platform()`).

    Returns:
      'Machine: x86_64 2 CPU cores, jax 0.10.2 on cpu' (the OS after the cores where
      asked), without a closing full stop.
    """
    system = f", {platform.platform()}" if os_name else ""
    return (
        f"Machine: {platform.machine()} {os.cpu_count()} CPU cores{system}, "
        f"jax {jax.__version__} on {jax.devices()[0].platform}"
    )
