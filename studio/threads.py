"""Studio's thread policy: one intra-op thread per process unless OMP_NUM_THREADS says otherwise.

torch starts one OpenMP thread per core, and those threads spin against any other busy process:
a museum step ran many times slower beside other work (docs/design.md, Threads; bench/speed.py
--parts threads). One thread degrades gracefully; a user with idle cores asks for more with
OMP_NUM_THREADS=N.
"""

from __future__ import annotations

import os

DEFAULT_THREADS = 1


def policy_threads() -> int:
    """OMP_NUM_THREADS when it holds a positive count (its first level, as OpenMP reads "4,2"),
    else DEFAULT_THREADS."""
    value = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    return int(value) if value.isdigit() and int(value) > 0 else DEFAULT_THREADS


def apply() -> int:
    """Set the policy's count for this process and its children; returns it.

    The environment first: child processes (accelerate launch, spawned workers) inherit it, and
    MKL reads it. Then torch's own counts, which also reach threads started later (torch sets
    each new thread's count from the process-wide one). The interop count can only be set before
    any parallel work, so an in-process caller that already ran some keeps its own."""
    threads = policy_threads()
    if os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip() != str(threads):
        os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ.setdefault("MKL_NUM_THREADS", str(threads))
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:
        pass  # already set, or parallel work already ran in this process
    return threads
