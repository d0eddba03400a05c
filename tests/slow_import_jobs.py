"""A job whose module takes minutes to import in a worker process (a cold,
starved worker), to test what happens to a call cancelled while it starts."""

import multiprocessing
import time

from flet_resilient import offload

IMPORT_SECONDS = 600

if multiprocessing.parent_process() is not None:  # in a worker, not the server
    time.sleep(IMPORT_SECONDS)


@offload
def noop() -> None:
    """Never reached in these tests: the import above outlasts them."""
