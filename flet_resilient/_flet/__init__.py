"""The Flet seam: the only package that touches Flet internals (flet /
flet-web 1.0.x, web mode).

Everything else in flet-resilient goes through the names exported here, so a
Flet upgrade is checked against one package. Importing it first checks the
installed Flet release (`UnsupportedFletVersion` for one it was not written
for, before any of its internals are imported), then loads the seam for that
release: 1.0.x is the only one so far. Nothing in Flet changes until
`install()` (called by the decorators, `serve()` and the test server, never by
an import); `uninstall()` puts Flet back as shipped. See docs/compatibility.md.

* `wrappers`: each wrapped Flet method and its wrapper (`WRAPPERS`), put in
  place and taken out by `seam` (`install`, `uninstall`, `PATCHED`);
* `hooks`: what the mitigations plug into (session, socket, shutdown and
  stale-socket hooks, a session's patch sink and outboxes);
* `register`, `inbound`, `outbound`: vetting of REGISTER_CLIENT, screening of
  what clients send, Flet's send queue made thread-safe and measured;
* `accessors`: small functions the mitigations use instead of Flet's privates;
* `pagebuild`: speed-ups of Flet's own page build and diff, same frames;
* `services`: service ids a moved user's client cannot confuse with old ones.
"""

from flet_resilient._flet.version import (
    FLET_VERSION,
    SUPPORTED_FLET,
    UnsupportedFletVersion,
    check_version,
)

check_version()  # before Flet's internals: an untested Flet is refused by name

from flet_resilient._flet.accessors import (
    close_session,
    close_sockets,
    control_count,
    control_page,
    current_page,
    dismantle,
    end_session,
    fail_invoke,
    invoke_call,
    invoke_pending,
    is_component,
    is_connected,
    is_flet_event,
    is_one_shot,
    message_size,
    resend,
    send_queue,
    session_tag,
    sessions,
)
from flet_resilient._flet.hooks import (
    HandlerRun,
    Outbox,
    PatchSink,
    add_outbox,
    came_from_elsewhere,
    current_handler,
    hold,
    key_without_ip,
    on_session,
    on_shutdown,
    on_socket,
    on_stale_socket,
    on_startup,
    release,
    session_main,
    set_patch_sink,
)
from flet_resilient._flet.inbound import Admission, InboundGuard, set_inbound_guard
from flet_resilient._flet.outbound import SendQueue
from flet_resilient._flet.pagebuild import speedups, speedups_on
from flet_resilient._flet.register import take_over
from flet_resilient._flet.seam import (
    PATCHED,
    as_shipped,
    cannot_route,
    install,
    installed,
    uninstall,
)
from flet_resilient._flet.services import RANDOM_IDS
from flet_resilient._flet.wrappers import patch_now

__all__ = [
    "FLET_VERSION",
    "PATCHED",
    "RANDOM_IDS",
    "SUPPORTED_FLET",
    "Admission",
    "HandlerRun",
    "InboundGuard",
    "Outbox",
    "PatchSink",
    "SendQueue",
    "UnsupportedFletVersion",
    "add_outbox",
    "as_shipped",
    "came_from_elsewhere",
    "cannot_route",
    "close_session",
    "close_sockets",
    "control_count",
    "control_page",
    "current_handler",
    "current_page",
    "dismantle",
    "end_session",
    "fail_invoke",
    "hold",
    "install",
    "installed",
    "invoke_call",
    "invoke_pending",
    "is_component",
    "is_connected",
    "is_flet_event",
    "is_one_shot",
    "key_without_ip",
    "message_size",
    "on_session",
    "on_shutdown",
    "on_socket",
    "on_stale_socket",
    "on_startup",
    "patch_now",
    "release",
    "resend",
    "send_queue",
    "session_main",
    "session_tag",
    "sessions",
    "set_inbound_guard",
    "set_patch_sink",
    "speedups",
    "speedups_on",
    "take_over",
    "uninstall",
]
