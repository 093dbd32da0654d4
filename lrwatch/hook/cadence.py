"""How often ``hook.step()`` looks at the channel.

Checking costs a failed ``open()`` (a few microseconds); a step of a small model can cost less.
So the hook counts calls and checks every ``every`` calls, choosing ``every`` so that checks fall
about ``interval`` seconds apart. It counts calls rather than reading a clock on each one, because
under torch.distributed every rank must reach a check at the same call (rank 0 will read the
channel and broadcast what it found, including the next ``every``), and a clock per call would
also cost more than the check it saves.
"""

from __future__ import annotations

# Past this many calls per check, a check costs under ~10 ns per call anyway, while a larger
# value would leave the hook deaf for long if steps suddenly became slower (checks are the only
# moments the hook measures step time).
MAX_CHECK_EVERY = 1000


def next_check_every(current: int, calls: int, elapsed: float, interval: float) -> int:
    """The number of calls until the next check, from the last stretch's ``calls`` in ``elapsed``.

    Grows at most twofold per check, so that one fast stretch (steps skipped, a warm cache) does
    not stretch the gap at once; shrinks at once, so that slower steps are followed promptly.
    """
    ceiling = min(2 * max(current, 1), MAX_CHECK_EVERY)
    if calls <= 0 or elapsed <= 0:
        return ceiling  # a clock too coarse to see the stretch: the steps are fast
    return max(1, min(round(interval * calls / elapsed), ceiling))
