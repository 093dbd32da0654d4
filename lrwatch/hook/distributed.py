"""Keeping the hooks of all ranks in step under torch.distributed.

Data-parallel ranks must train with the same LR: DDP averages the gradients but never checks that
the optimizers agree, so replicas given different LRs drift apart silently. Under a process group
of more than one rank, therefore, only rank 0 reads the channel, and at each check every rank
joins one broadcast from rank 0 carrying the next check interval and the commands it read; every
rank then handles exactly those commands at the same ``hook.step()`` call. Checks fall at the
same call on every rank because the hook counts calls between checks (cadence.py) and the count
is rank 0's, sent with the commands.

The broadcast is a fixed-size int64 header ``[payload bytes, next check interval]``, followed by
the pickled commands only when there are some. An idle check is thus one tiny collective, cheap
on NCCL too, rather than the two that ``broadcast_object_list`` makes (sizes, then data). Rank 0
pickles before anyone waits, so a failure to serialise cannot leave the others waiting for a
payload that never comes.

Not protected against: a rank that calls ``hook.step()`` fewer times than the others, or closes
its hook early, leaves the others waiting in the broadcast, as any unevenly called collective
does, until the process group's timeout.
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

import torch

T = TypeVar("T")
ErrorSink = Callable[[str, BaseException], None]


class Coordinator(Protocol):
    """What the hook needs from the ranks: who reads the channel, and agreement at each check."""

    @property
    def rank(self) -> int: ...

    @property
    def world_size(self) -> int: ...

    @property
    def refusal(self) -> str:
        """Non-empty when commands must be refused: the reason, for the ack."""
        ...

    def agree(self, every: int, items: list[T]) -> tuple[int, list[T]] | None:
        """Rank 0's ``(every, items)`` on every rank; None (reported) if that failed."""
        ...


@dataclass(frozen=True, slots=True)
class Alone:
    """No collective: a single process, or ranks that cannot be coordinated.

    In the second case ``refusal`` is set and the hook refuses every command, in an ack that
    says why: a refused command leaves all ranks at the same LR, which applying it would not.
    """

    world_size: int = 1
    refusal: str = ""
    rank: int = 0

    def agree(self, every: int, items: list[T]) -> tuple[int, list[T]] | None:
        return every, items


class Ranks:
    """The ranks of the default process group; rank 0 speaks for all of them."""

    def __init__(self, report: ErrorSink) -> None:
        dist = torch.distributed
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.refusal = ""
        self._device = torch.device(_device_type())
        self._report = report

    def agree(self, every: int, items: list[T]) -> tuple[int, list[T]] | None:
        """Never raises: a rank whose broadcast failed applies nothing this time.

        Rank 0 then still holds the commands it read (its ``last_seq`` has not moved), so they
        are read and offered again at the next check.
        """
        dist = torch.distributed
        payload = b""
        if self.rank == 0 and items:
            try:
                payload = pickle.dumps(items, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as exc:
                self._report("sending commands to the other ranks", exc)
        try:
            header = torch.tensor([len(payload), every], dtype=torch.int64).to(self._device)
            dist.broadcast(header, src=0)
            size, every = (int(x) for x in header.tolist())
            if size == 0:
                return every, []
            if self.rank == 0:
                data = torch.frombuffer(bytearray(payload), dtype=torch.uint8).to(self._device)
            else:
                data = torch.empty(size, dtype=torch.uint8, device=self._device)
            dist.broadcast(data, src=0)
            if self.rank == 0:
                return every, items
            received: list[T] = pickle.loads(bytes(data.cpu().tolist()))
            return every, received
        except Exception as exc:
            self._report("agreeing with the other ranks on commands", exc)
            return None


def coordinator(report: ErrorSink) -> Coordinator:
    """The coordinator for this process, decided once at ``attach()``.

    Attach after ``init_process_group``: a hook attached before it runs alone on every rank,
    and each rank would then read the channel by itself.
    """
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        return Alone()
    size = dist.get_world_size()
    if size <= 1:
        return Alone()
    try:
        return Ranks(report)
    except Exception as exc:
        reason = f"lrwatch cannot coordinate the {size} ranks ({exc!r}); commands are refused"
        warnings.warn(
            f"lrwatch: attached under torch.distributed (world size {size}) but cannot "
            f"coordinate the ranks ({exc!r}); every command will be refused, so that the ranks "
            "keep the same LR",
            RuntimeWarning,
            stacklevel=4,  # coordinator <- Hook.__init__ <- attach <- the caller
        )
        return Alone(world_size=size, refusal=reason)


def _device_type() -> str:
    """Where collectives of the default group want their tensors: "cpu" for gloo, "cuda" for NCCL.

    torch's own rule for object collectives (a private helper, hence the fallback) also covers
    mixed backends such as ``cpu:gloo,cuda:nccl`` (prefers the CPU) and other accelerators.
    """
    try:
        return str(torch.distributed.distributed_c10d._get_object_coll_device())
    except Exception:
        return "cuda" if torch.distributed.get_backend() == "nccl" else "cpu"
