"""Exceptions raised by flet-resilient, all subclasses of `ResilientError`."""

from __future__ import annotations


class ResilientError(Exception):
    """Base class for every error flet-resilient raises on purpose."""


class OffloadError(ResilientError):
    """An offloaded call did not produce a result."""


class OffloadTimeout(OffloadError, TimeoutError):
    """The call ran longer than its `timeout=`; its slot was freed."""


class WorkerCrashed(OffloadError):
    """The worker process died while running this call (crash, OOM, kill)."""


class JobDropped(OffloadError):
    """The call was not run: its session was busy (`drop`) or a newer call
    replaced it while it waited (`latest`)."""


class JobCancelled(OffloadError):
    """The call was cancelled because its session closed or was evicted."""
