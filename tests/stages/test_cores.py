"""CoreBudget: detection's grant, what the embedder gets, never more threads than cores, from any thread."""

from __future__ import annotations

import os
import threading

import pytest

from stages.cores import CoreBudget, available_cores, budget_of, detecting


@pytest.mark.parametrize("cores", [1, 2, 3, 4, 16])
@pytest.mark.parametrize("detect_cores", [0, 1, 2, 5])
def test_idle_detection_gives_the_embedder_every_core_and_never_more_than_the_cores(cores, detect_cores):
    budget = CoreBudget(cores, detect_cores)
    assert budget.embed_threads() == cores
    granted = budget.acquire_detect()
    assert granted == min(detect_cores, cores - 1)
    assert 1 <= budget.embed_threads() and granted + budget.embed_threads() <= cores
    budget.release_detect()
    assert budget.embed_threads() == cores


def test_two_cores_split_one_and_one_while_detecting():
    budget = CoreBudget(2)
    with budget.detecting() as granted:
        assert (granted, budget.embed_threads(), budget.detecting_now) == (1, 1, 1)
    assert (budget.embed_threads(), budget.detecting_now) == (2, 0)


def test_the_grant_is_held_while_any_thread_detects():
    budget = CoreBudget(4, 2)
    budget.acquire_detect()
    budget.acquire_detect()
    budget.release_detect()
    assert budget.embed_threads() == 2
    budget.release_detect()
    assert budget.embed_threads() == 4
    with pytest.raises(RuntimeError, match="without acquire"):
        budget.release_detect()


def test_detecting_returns_the_grant_when_the_block_raises():
    budget = CoreBudget(2)
    with pytest.raises(ValueError), budget.detecting():
        raise ValueError("detector failed")
    assert budget.detecting_now == 0 and budget.embed_threads() == 2


def test_threads_granting_and_returning_at_once_leave_it_idle():
    budget = CoreBudget(2)
    seen: list[int] = []
    start = threading.Barrier(8)

    def detect():
        start.wait()
        for _ in range(2000):
            with budget.detecting():
                seen.append(budget.embed_threads())

    threads = [threading.Thread(target=detect) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert budget.detecting_now == 0 and budget.embed_threads() == 2
    assert set(seen) == {1}


def test_zero_cores_means_the_process_affinity(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert CoreBudget(0).cores == CoreBudget().cores == available_cores() == len(os.sched_getaffinity(0))


@pytest.mark.parametrize("value, expected", [("1", 1), ("64", None), ("0", None), ("x", None), ("", None)])
def test_omp_num_threads_caps_the_cores(monkeypatch, value, expected):
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    affinity = len(os.sched_getaffinity(0))
    assert available_cores() == (expected if expected is not None else affinity)


@pytest.mark.parametrize("cores, detect_cores", [(-1, 1), (2, -1)])
def test_negative_counts_are_refused(cores, detect_cores):
    with pytest.raises(ValueError):
        CoreBudget(cores, detect_cores)


def test_budget_of_and_detecting_without_a_budget():
    class Follows:
        cores = CoreBudget(2)

    class Plain:
        pass

    assert budget_of(Follows()) is Follows.cores and budget_of(Plain()) is None
    with detecting(None):
        pass
    with detecting(Follows.cores):
        assert Follows.cores.embed_threads() == 1
