"""`FLET_RESILIENT_DISABLE=1` turns every mitigation off (for side-by-side runs).

With it set when flet_resilient is imported, the seam leaves Flet exactly
as shipped, the decorators leave `main` as plain Flet would run it and
`@offload` calls its function inline on the event loop, so the same app can be
measured with and without flet-resilient (the loop-lag watchdog still measures
if started with `watch_loop()`); it is read once per process.
`FLET_RESILIENT_SPEEDUPS=0` keeps only Flet's own page build and diff as shipped
(see `flet_resilient.speedups`).
"""

from __future__ import annotations

import functools
import os

__all__ = ["disabled", "speedups_off"]


@functools.cache
def disabled() -> bool:
    """Whether flet-resilient was switched off through the environment.

    Read once per process (its first call): the seam, the decorators and the
    mitigations all see the same answer, even if the environment changes
    later (a test that changes it clears the cache: `disabled.cache_clear()`).
    """
    return os.environ.get("FLET_RESILIENT_DISABLE", "").lower() not in (
        "",
        "0",
        "false",
    )


def speedups_off() -> bool:
    """Whether the page build speed-ups are off (FLET_RESILIENT_SPEEDUPS=0)."""
    return os.environ.get("FLET_RESILIENT_SPEEDUPS", "1").lower() in ("0", "false")
