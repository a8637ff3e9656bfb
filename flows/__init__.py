"""Prefect flows over the ganops pipeline: thin sequences of DVC stages and ganops commands.

Prefect's usage analytics are off before Prefect is imported (they also print sqlite "database
is locked" errors with the temporary server).
"""

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
