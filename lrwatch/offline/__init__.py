"""Tools over finished (or live) logs without a daemon: replay, report."""
