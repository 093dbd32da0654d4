"""Outputs, never read back: Prometheus, TensorBoard annotations, notifiers."""
