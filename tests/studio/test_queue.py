"""The device queue runs one job at a time in arrival order, tells each its place, and drops a job whose
caller left while it waited."""

import asyncio
import threading
import time

import pytest

from studio.queue import DeviceQueue


def test_jobs_run_one_at_a_time_in_order_and_hear_their_place():
    async def main():
        q = DeviceQueue("cpu")
        running, order, places = [], [], {i: [] for i in range(3)}

        def job(i):
            def run():
                running.append(threading.get_ident())
                assert len(running) - len(order) == 1  # nothing else running
                time.sleep(0.05)
                order.append(i)
                return i * 10

            return run

        results = await asyncio.gather(*(q.run(job(i), places[i].append) for i in range(3)))
        q.close()
        return results, order, places, set(running)

    results, order, places, threads = asyncio.run(main())
    assert [r.result for r in results] == [0, 10, 20] and order == [0, 1, 2]
    assert places == {0: [0], 1: [1, 0], 2: [2, 1, 0]}
    assert results[2].wait_s >= 0.09 and all(r.run_s >= 0.04 for r in results)
    assert len(threads) == 1  # the device's one thread


def test_a_cancelled_waiting_job_leaves_the_queue_and_errors_reach_the_caller():
    async def main():
        q = DeviceQueue("cpu")
        ran = []
        first = asyncio.create_task(q.run(lambda: time.sleep(0.1) or ran.append("first")))
        await asyncio.sleep(0.01)
        second = asyncio.create_task(q.run(lambda: ran.append("second")))
        await asyncio.sleep(0.01)
        assert len(q) == 2
        second.cancel()
        await first
        with pytest.raises(ValueError, match="bad step"):
            await q.run(lambda: (_ for _ in ()).throw(ValueError("bad step")))
        q.close()
        return ran, len(q)

    ran, left = asyncio.run(main())
    assert ran == ["first"] and left == 0
