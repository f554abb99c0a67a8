"""Memory budgets of the HTTP ingest: requests wait for room, never exceed the budget."""

from __future__ import annotations

import asyncio

import pytest

from sidekick.ship.sources._ingest_budget import MemoryBudget


async def test_memory_budget_makes_requests_wait_rather_than_exceed_it() -> None:
    budget = MemoryBudget(100)
    peak = 0
    order: list[str] = []

    async def request(name: str, n: int) -> None:
        nonlocal peak
        async with budget.reserve(n):
            peak = max(peak, budget.used)
            order.append(name)
            await asyncio.sleep(0.01)

    await asyncio.gather(request("a", 60), request("b", 60), request("c", 30))
    assert peak <= 100
    assert budget.used == 0
    assert sorted(order) == ["a", "b", "c"]


async def test_request_larger_than_the_whole_budget_runs_alone() -> None:
    budget = MemoryBudget(100)
    async with budget.reserve(10_000):
        assert budget.used == 100


async def test_shrinking_a_reservation_lets_a_waiting_request_in() -> None:
    budget = MemoryBudget(100)
    entered = asyncio.Event()

    async def waiter() -> None:
        async with budget.reserve(50):
            entered.set()

    async with budget.reserve(90) as held:
        task = asyncio.create_task(waiter())
        await asyncio.sleep(0.01)
        assert not entered.is_set()
        held.shrink(40)
        await asyncio.wait_for(entered.wait(), 1)
    await task
    assert budget.used == 0


async def test_cancelled_waiter_gives_back_nothing_it_did_not_get() -> None:
    budget = MemoryBudget(100)

    async def waiter() -> None:
        async with budget.reserve(80):
            pass

    async with budget.reserve(60):
        task = asyncio.create_task(waiter())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert budget.used == 0
    async with budget.reserve(100):
        assert budget.used == 100
