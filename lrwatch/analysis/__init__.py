"""One run's samples -> decisions, pure: the monitor (monitor.py) and the stages it runs.
Shared by the daemon and replay."""
