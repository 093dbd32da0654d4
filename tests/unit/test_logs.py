"""``--log-format json``: every line the daemon's process writes to stderr is one JSON object,
whoever logs it and whatever fails (an exception nothing caught, in any thread; a warning; a
record whose arguments do not fit; another library's record)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap


def test_every_line_is_json_tracebacks_included() -> None:
    script = textwrap.dedent(
        """
        import logging, threading, warnings
        from lrwatch.logs import setup_logging

        setup_logging(json_format=True)
        log = logging.getLogger("lrwatch.test")
        try:
            1 / 0
        except ZeroDivisionError:
            log.exception("caught")
        log.warning("bad %d arguments", "x")
        logging.getLogger("watchdog.observers").warning("another library")
        warnings.warn("a warning")
        thread = threading.Thread(target=lambda: 1 / 0, name="worker")
        thread.start()
        thread.join()
        log.info("name with \\udcff a lone surrogate")
        raise RuntimeError("uncaught")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    records = [json.loads(line) for line in done.stderr.splitlines()]  # each line parses
    messages = [r["message"] for r in records]
    assert "caught" in messages and "another library" in messages
    assert any("a warning" in m for m in messages)
    assert any("uncaught exception in thread worker" in m for m in messages)
    assert records[-1]["message"] == "uncaught exception"
    assert "RuntimeError: uncaught" in records[-1]["exception"]
    assert "ZeroDivisionError" in records[0]["exception"]
