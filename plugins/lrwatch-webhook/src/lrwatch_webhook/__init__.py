"""lrwatch-webhook: POST lrwatch's findings and actions as JSON (generic, or a Slack message).

Registered as the ``webhook`` notifier (entry point group ``lrwatch.notifiers``); see
``notifier.py`` for the retry and redaction rules and README.md for the configuration.
"""

from lrwatch_webhook.notifier import (
    WebhookConfig,
    WebhookError,
    WebhookNotifier,
    slack_message,
    summary,
)

__all__ = ["WebhookConfig", "WebhookError", "WebhookNotifier", "slack_message", "summary"]
__version__ = "0.2.0"
