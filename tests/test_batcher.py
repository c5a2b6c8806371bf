"""The in-process batcher: no wait when idle, batches that grow with load, deadline shedding."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from service.batcher import Batcher
from service.errors import Overloaded, retry_after_s


class SlowModel:
    """Takes `per_image` seconds per image; records the size of every call."""

    def __init__(self, per_image: float = 0.01, fail_on: int | None = None):
        self.per_image, self.fail_on, self.calls = per_image, fail_on, []

    def __call__(self, images: np.ndarray) -> list[dict]:
        self.calls.append(len(images))
        time.sleep(self.per_image * len(images))
        if self.fail_on is not None and len(self.calls) == self.fail_on:
            raise RuntimeError("model exploded")
        return [{"value": int(img[0, 0, 0])} for img in images]


def imgs(*values: int) -> np.ndarray:
    out = np.zeros((len(values), 4, 4, 3), np.uint8)
    out[:, 0, 0, 0] = values
    return out


def test_an_idle_model_serves_a_lone_request_at_once():
    model = SlowModel(0.02)

    async def main():
        batcher = Batcher(model, max_batch_size=8)
        t = time.perf_counter()
        result = await batcher.submit(imgs(7))
        return result, time.perf_counter() - t

    result, seconds = asyncio.run(main())
    assert result == [{"value": 7}] and model.calls == [1]
    assert seconds < 0.25  # the model's 20 ms, not a wait for the batch to fill (2 s budget)


def test_requests_arriving_while_the_model_runs_leave_together_in_order():
    model = SlowModel(0.01)

    async def main():
        batcher = Batcher(model, max_batch_size=8)
        return await asyncio.gather(*[batcher.submit(imgs(i)) for i in range(20)])

    results = asyncio.run(main())
    assert [r[0]["value"] for r in results] == list(range(20))  # each caller gets its own
    assert max(model.calls) == 8 and sum(model.calls) == 20 and len(model.calls) >= 3
    assert all(size <= 8 for size in model.calls)


def test_multi_image_requests_stay_whole():
    model = SlowModel(0.001)

    async def main():
        batcher = Batcher(model, max_batch_size=4)
        return await asyncio.gather(batcher.submit(imgs(1, 2, 3)), batcher.submit(imgs(4, 5)))

    a, b = asyncio.run(main())
    assert [r["value"] for r in a] == [1, 2, 3] and [r["value"] for r in b] == [4, 5]
    assert model.calls == [3, 2]


def test_expected_wait_over_the_budget_is_refused_at_once():
    model = SlowModel(0.02)

    async def main():
        batcher = Batcher(model, max_batch_size=4, max_latency_ms=100)
        await batcher.submit(imgs(0))  # learns ~20 ms per image
        tasks = [asyncio.ensure_future(batcher.submit(imgs(i))) for i in range(30)]
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(main())
    shed = [r for r in results if isinstance(r, Overloaded)]
    served = [r for r in results if isinstance(r, list)]
    assert shed and served and len(shed) + len(served) == 30
    assert "budget" in str(shed[0])
    assert {e.retry_after_s for e in shed} == {1}  # one 100 ms budget, in whole seconds


def test_admitted_requests_hold_their_place_until_their_images_are_queued():
    """Admission counts requests let in but not yet queued (their bodies still being read or
    decoded): enough of them fill the budget, and the next is refused before it costs work.
    A request admitted ahead is not asked again when it submits."""
    model = SlowModel(0.02)

    async def main():
        batcher = Batcher(model, max_batch_size=4, max_latency_ms=100)
        await batcher.submit(imgs(0))  # learns ~20 ms per image: about 5 images fit 100 ms
        fit = int(batcher.plan / batcher.per_image)  # the share of the budget it plans for
        held = [batcher.admit(1) for _ in range(fit)]
        with pytest.raises(Overloaded, match="budget"):
            batcher.admit(1)
        assert batcher.reserved_images == fit
        with held[0]:
            result = await batcher.submit(imgs(9))  # its own place: no second refusal
        assert batcher.reserved_images == fit - 1
        for reservation in held[1:]:
            with reservation:
                pass  # a request that ends without reaching the model gives its place back
        assert batcher.reserved_images == 0
        batcher.admit(1).__exit__(None, None, None)
        return result

    assert asyncio.run(main()) == [{"value": 9}]


def test_an_idle_model_admits_a_request_even_when_one_image_takes_longer_than_the_budget():
    """Nothing ahead: refusing would serve no one sooner (a loaded machine whose time per
    image is over a tight budget must still answer, one request at a time)."""
    model = SlowModel(0.06)

    async def main():
        batcher = Batcher(model, max_batch_size=4, max_latency_ms=50)
        await batcher.submit(imgs(1))  # learns ~60 ms per image, over the 40 ms plan
        with batcher.admit(1):
            result = await batcher.submit(imgs(2))
        with batcher.admit(1), pytest.raises(Overloaded):
            batcher.admit(1)  # one ahead now: the second waits past the budget
        return result

    assert asyncio.run(main()) == [{"value": 2}]


def test_a_queued_job_past_its_deadline_is_refused_not_run_late():
    model = SlowModel(0.15)

    async def main():
        batcher = Batcher(model, max_batch_size=1, max_latency_ms=100)
        first = asyncio.ensure_future(batcher.submit(imgs(1)))  # per_image unknown: admitted
        await asyncio.sleep(0.01)
        second = asyncio.ensure_future(batcher.submit(imgs(2)))  # waits 150 ms > 100 ms
        return await asyncio.gather(first, second, return_exceptions=True)

    first, second = asyncio.run(main())
    assert first == [{"value": 1}]
    assert isinstance(second, Overloaded) and "ran out in the queue" in str(second)
    assert model.calls == [1]


def test_retry_after_is_one_latency_budget_in_whole_seconds():
    assert [retry_after_s(t) for t in (0.05, 1.0, 2.0, 2.5)] == [1, 1, 2, 3]


def test_a_model_failure_reaches_its_callers_and_the_batcher_goes_on():
    model = SlowModel(0.001, fail_on=1)

    async def main():
        batcher = Batcher(model, max_batch_size=4)
        with pytest.raises(RuntimeError, match="exploded"):
            await batcher.submit(imgs(1))
        return await batcher.submit(imgs(2))

    assert asyncio.run(main()) == [{"value": 2}]


def test_more_images_than_a_batch_is_a_programming_error():
    async def main():
        await Batcher(SlowModel(), max_batch_size=2).submit(imgs(1, 2, 3))

    with pytest.raises(ValueError, match="max_batch_size"):
        asyncio.run(main())


# -- model instances ------------------------------------------------------------------------
class MeetingModel:
    """Each call waits (up to `timeout` s) for another call to be running at the same time:
    calls that overlap return, a call left alone raises."""

    def __init__(self, timeout: float = 2.0):
        self.barrier = threading.Barrier(2, timeout=timeout)
        self.calls: list[int] = []

    def __call__(self, images: np.ndarray) -> list[dict]:
        self.calls.append(len(images))
        self.barrier.wait()  # BrokenBarrierError when no other call comes
        return [{"value": int(img[0, 0, 0])} for img in images]


def test_two_instances_run_two_model_calls_at_once():
    model = MeetingModel()

    async def main(instances):
        batcher = Batcher(model, max_batch_size=1, instances=instances)
        return await asyncio.gather(batcher.submit(imgs(1)), batcher.submit(imgs(2)))

    a, b = asyncio.run(main(2))
    assert (a, b) == ([{"value": 1}], [{"value": 2}]) and model.calls == [1, 1]

    model = MeetingModel(timeout=0.3)
    with pytest.raises(threading.BrokenBarrierError):  # one instance: a call is alone
        asyncio.run(main(1))


def test_instances_split_the_queue_into_calls_of_like_size():
    model = SlowModel(0.005)

    async def main():
        batcher = Batcher(model, max_batch_size=32, instances=2)
        await batcher.submit(imgs(0))  # calibrates; both instances idle again
        model.calls.clear()
        first = asyncio.ensure_future(batcher.submit(imgs(1)))  # runs alone at once
        await asyncio.sleep(0)
        rest = [asyncio.ensure_future(batcher.submit(imgs(i))) for i in range(2, 22)]
        return await asyncio.gather(first, *rest)

    results = asyncio.run(main())
    assert [r[0]["value"] for r in results] == list(range(1, 22))
    # 20 queued behind a call of 1: the free instance takes its share (ceil(21 / 2) = 11),
    # not all 20, and the other instance takes the rest when it is free
    assert model.calls[0] == 1 and max(model.calls[1:]) <= 11 and sum(model.calls) == 21


def test_with_instances_the_wait_counts_the_last_call_at_one_instance_pace():
    async def main():
        batcher = Batcher(SlowModel(), max_batch_size=8, instances=2)
        batcher.per_image = 0.01  # the instances' drain rate: 100 images/s together
        batcher.queued_images, batcher.running_images = 12, 4
        # 16 images ahead and one more: 17 x 10 ms at the drain rate, plus the last call's
        # share (ceil(13 / 2) = 7 images) at one instance's pace, 7 x 10 ms more
        assert batcher.expected_wait(1) == pytest.approx((17 + 7) * 0.01)
        one = Batcher(SlowModel(), max_batch_size=8)
        one.per_image, one.queued_images, one.running_images = 0.01, 12, 4
        assert one.expected_wait(1) == pytest.approx(17 * 0.01)

    asyncio.run(main())


def test_instances_must_be_at_least_one():
    with pytest.raises(ValueError, match="instances"):
        Batcher(SlowModel(), instances=0)


def test_a_queued_job_is_refused_as_late_only_past_85_percent_of_the_budget():
    """Admission plans for 80% of the budget; a job already queued (read and decoded) is
    still run when its call ends inside 85%, and refused when it would end past that."""
    from service.batcher import LATE_SHARE, _Job

    assert LATE_SHARE == 0.85

    async def main(admitted_ago: float) -> list[bool]:
        batcher = Batcher(SlowModel(), max_batch_size=4, max_latency_ms=1000)
        batcher.per_image = 0.2  # the call of 4 taken next ends 0.8 s from now
        loop = asyncio.get_running_loop()
        admitted = time.perf_counter() - admitted_ago
        jobs = [_Job(imgs(i), loop.create_future(), admitted + batcher.late) for i in range(4)]
        batcher.queue.extend(jobs)
        batcher.queued_images = 4
        taken = batcher._take()
        return [any(job is t for t in taken) for job in jobs]

    # admitted 20 ms ago: the call ends at 0.82 s of the budget, inside 85%: all run
    assert asyncio.run(main(0.02)) == [True] * 4
    # admitted 100 ms ago: it would end at 0.90 s, past 85%: refused, not run late
    assert asyncio.run(main(0.10)) == [False] * 4
