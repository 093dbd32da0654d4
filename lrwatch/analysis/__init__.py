"""One run's samples -> decisions, pure: the monitor, the policies, the controller.
Shared by the daemon and replay."""
