"""flet-resilient: keep Flet web apps responsive with many users and flaky networks.

Importing the package changes nothing in Flet: the first decorator, `serve()`
or the test server installs the seam's fixes (see `install`; `uninstall`
puts Flet back as shipped); each mitigation is then one decorator away.
"""

import flet_resilient.paced_shutdown  # noqa: F401  (SIGTERM: drain in waves first)
from flet_resilient._flet import UnsupportedFletVersion, install, speedups, uninstall
from flet_resilient.coalesce import coalesce_page, coalesce_updates
from flet_resilient.drain import DrainReport, drain
from flet_resilient.errors import (
    JobCancelled,
    JobDropped,
    OffloadError,
    OffloadTimeout,
    ResilientError,
    WorkerCrashed,
)
from flet_resilient.evict import app_state, evict_idle, save_state
from flet_resilient.handlers import debounce, throttle
from flet_resilient.limits import configure_limits
from flet_resilient.metrics import stats
from flet_resilient.offload import Offloaded, configure_offload, offload
from flet_resilient.prometheus import mount_metrics
from flet_resilient.reconnect import buffer_reconnects, connected, is_connected
from flet_resilient.serving import serve
from flet_resilient.status import mount_status
from flet_resilient.stores import DiskStore, MemoryStore, RedisStore, StateStore
from flet_resilient.watchdog import watch_loop

__all__ = [
    "DiskStore",
    "DrainReport",
    "JobCancelled",
    "JobDropped",
    "MemoryStore",
    "OffloadError",
    "OffloadTimeout",
    "Offloaded",
    "RedisStore",
    "ResilientError",
    "StateStore",
    "UnsupportedFletVersion",
    "WorkerCrashed",
    "app_state",
    "buffer_reconnects",
    "coalesce_page",
    "coalesce_updates",
    "configure_limits",
    "configure_offload",
    "connected",
    "debounce",
    "drain",
    "evict_idle",
    "install",
    "is_connected",
    "mount_metrics",
    "mount_status",
    "offload",
    "save_state",
    "serve",
    "speedups",
    "stats",
    "throttle",
    "uninstall",
    "watch_loop",
]
