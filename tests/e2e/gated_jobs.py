"""A gated version of `examples/cpu_heavy.py`'s job (process workers import it).

`count_primes_when_released` waits in the worker process until the test
creates a gate file, then runs the example's real `count_primes`. The test can
thus act while the job is provably still running, however fast this machine
counts primes (2,000,000 takes 0.2 s on some machines, not the ~1 s the
example's docstring assumes).
"""

from __future__ import annotations

import os
import time

from cpu_heavy import count_primes

from flet_resilient import offload


def count_primes_when_released(limit: int, gate: str) -> int:
    deadline = time.monotonic() + 30
    while not os.path.exists(gate):
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {gate} was never opened")
        time.sleep(0.01)
    return count_primes(limit)


# Same options as the example's `crunch`.
gated_crunch = offload(
    count_primes_when_released, timeout=30, per_session=1, policy="latest"
)
