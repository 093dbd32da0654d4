"""The service: lifecycle, runs, actuator, control API, HTTP, the SQLite store."""

from lrwatch.daemon.service import Daemon

__all__ = ["Daemon"]
