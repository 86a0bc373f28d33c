"""The state every part of `Tx` shares."""

from __future__ import annotations

from typing import Any

import psycopg


class TxBase:
    """What every part of a transaction works on."""

    conn: psycopg.Cursor[dict[str, Any]]  # dict rows, on the transaction's connection
    outbox_enabled: bool
