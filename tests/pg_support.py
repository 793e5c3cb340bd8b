"""The tests' throw-away PostgreSQL cluster: bench/pgcluster.py's, with durability off (a test
never survives a crash of its cluster, and commits that wait for the disk only slow the suite).
Tests skip with the reason when PostgreSQL's binaries are missing (missing_reason).

    cluster = PgCluster.start(base)  # or the session fixture `pg_cluster` (conftest.py)
    db = cluster.new_database()      # see bench/pgcluster.py for the rest
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "bench"))

import pgcluster  # noqa: E402
from pgcluster import PgDatabase, missing_reason  # noqa: E402, F401


class PgCluster(pgcluster.PgCluster):
    settings = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
                "max_connections": "200"}
