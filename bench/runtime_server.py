"""Serve one tenant's memory API from whatever `memory_runtime` is on PYTHONPATH.

Not a test. bench/ingest.py --baseline runs it in a subprocess with the runtime
of an older commit (unpacked by `git archive`) on the bench's own embedded
PostgreSQL, so one run measures the old code next to today's:

    PYTHONPATH=<old>/runtime python bench/runtime_server.py PORT '<settings JSON>'

Prints one line `ready <path of memory_runtime>` once it serves; SIGTERM stops it
(the embedded server keeps running while the bench process holds it).
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from types import FrameType

import uvicorn

from memory_runtime import embedded
from memory_runtime.api import create_app
from memory_runtime.settings import Settings


def main() -> int:
    port, values = int(sys.argv[1]), json.loads(sys.argv[2])
    local = embedded.start(Settings(**values))  # older runtimes ignore unknown fields
    config = uvicorn.Config(
        create_app(local.settings),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        timeout_keep_alive=3600,  # as the bench's in-process servers
    )
    server = uvicorn.Server(config)

    def stop(signum: int, frame: FrameType | None) -> None:
        server.should_exit = True

    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    signal.signal(signal.SIGTERM, stop)
    while not server.started:
        if not thread.is_alive():
            return 1
        time.sleep(0.05)
    print(f"ready {sys.modules['memory_runtime'].__file__}", flush=True)
    while thread.is_alive():
        thread.join(timeout=0.5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
