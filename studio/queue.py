"""One queue per device: model work from every visitor runs there one job at a time, in arrival order.

The bookkeeping lives on the server's event loop (no locks): jobs wait in a list, one task takes them in
turn and runs each on the device's own worker thread, so the loop keeps answering pages meanwhile. Each
job is told its place as it changes (jobs ahead of it, 0 once it runs). A visitor has at most one job in
the queue at a time (a playing stream asks for its next step when the last one is done), so the visitors
take turns.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Done:
    """A job's result and its times: ``wait_s`` in the queue, ``run_s`` on the device."""

    result: Any
    wait_s: float
    run_s: float


@dataclass
class _Job:
    fn: Callable[[], Any]
    notify: Callable[[int], None] | None
    future: asyncio.Future[Done]
    queued: float = field(default_factory=time.perf_counter)
    position: int = -1

    def tell(self, position: int) -> None:
        if position != self.position:
            self.position = position
            if self.notify is not None:
                self.notify(position)


class DeviceQueue:
    def __init__(self, device: str):
        self.device = device
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"studio-{device}")
        self._waiting: list[_Job] = []
        self._running: _Job | None = None
        self._task: asyncio.Task[None] | None = None
        self.jobs_done = 0

    def __len__(self) -> int:
        """Jobs waiting or running."""
        return len(self._waiting) + (self._running is not None)

    async def run(self, fn: Callable[[], Any], notify: Callable[[int], None] | None = None) -> Done:
        """Run ``fn`` on the device when its turn comes; ``notify(position)`` hears the place in the queue.
        Cancelled while waiting, the job leaves the queue; once running, it finishes (a thread cannot be
        stopped) and its result is dropped."""
        loop = asyncio.get_running_loop()
        job = _Job(fn, notify, loop.create_future())
        # a job whose caller left still finishes; retrieving its outcome keeps asyncio from warning
        job.future.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._waiting.append(job)
        self._announce()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._work())
        try:
            return await asyncio.shield(job.future)
        finally:
            if job in self._waiting:
                self._waiting.remove(job)
                self._announce()

    def run_sync(self, fn: Callable[[], Any]) -> Any:
        """``fn`` on the device's thread from outside the event loop (start-up work)."""
        return self._executor.submit(fn).result()

    def _announce(self) -> None:
        ahead = 1 if self._running is not None else 0
        for i, job in enumerate(self._waiting):
            job.tell(ahead + i)

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while self._waiting:
            job = self._running = self._waiting.pop(0)
            job.tell(0)
            self._announce()
            start = time.perf_counter()
            try:
                result = await loop.run_in_executor(self._executor, job.fn)
            except Exception as err:  # the job's failure is its caller's to report
                if not job.future.done():
                    job.future.set_exception(err)
            except BaseException:  # the queue itself is stopping: nobody waits for ever
                if not job.future.done():
                    job.future.set_exception(RuntimeError("the device queue stopped"))
                raise
            else:
                if not job.future.done():
                    job.future.set_result(Done(result, start - job.queued, time.perf_counter() - start))
            finally:
                self._running = None
                self.jobs_done += 1

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
