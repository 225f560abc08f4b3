"""Where a run's compile time goes, from JAX's own monitoring events: tracing to a jaxpr,
lowering it to MLIR, XLA's compile, and reading an executable from the persistent cache
instead. The events are summed over the process (every jitted call, not only the task's
program); `snapshot` and `since` give a run's share.
"""

from __future__ import annotations

import os

from jax import monitoring

EVENTS = {
    "/jax/core/compile/jaxpr_trace_duration": "trace_s",
    "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower_s",
    "/jax/core/compile/backend_compile_duration": "backend_s",  # XLA, or the cache read
    "/jax/compilation_cache/cache_retrieval_time_sec": "cache_load_s",
}
_totals = dict.fromkeys(EVENTS.values(), 0.0)
_installed = False


def _listen(event: str, duration: float, **kwargs) -> None:
    del kwargs
    name = EVENTS.get(event)
    if name is not None:
        _totals[name] += duration


def install() -> None:
    """Starts summing the events (once a process)."""
    global _installed
    if not _installed:
        monitoring.register_event_duration_secs_listener(_listen)
        _installed = True


def snapshot() -> dict:
    """The sums so far (installing the listener on first use)."""
    install()
    return dict(_totals)


def since(before: dict) -> dict:
    """Seconds since `before` (a `snapshot`): `trace_s`, `lower_s`, `xla_compile_s` (XLA's
    compiles) and `cache_load_s` (executables read from the persistent cache)."""
    d = {k: _totals[k] - before.get(k, 0.0) for k in _totals}
    return {
        "trace_s": d["trace_s"],
        "lower_s": d["lower_s"],
        "xla_compile_s": max(0.0, d["backend_s"] - d["cache_load_s"]),
        "cache_load_s": d["cache_load_s"],
    }


def process_age() -> float | None:
    """Seconds since this process started (Linux's /proc), or None where unknown."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
