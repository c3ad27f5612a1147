"""GroupCommit, the one group-commit writer under RoomWriter and InboxWriter."""

from __future__ import annotations

import asyncio

import pytest

from orchestrator.store.groupcommit import GroupCommit


class Committer:
    """Records batches; each commit can be held open at a gate; outcomes chosen per item."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.entered = asyncio.Event()
        self.fail: BaseException | None = None
        self.short = False

    async def __call__(self, items: list[str]) -> list[str | BaseException]:
        self.entered.set()
        await self.gate.wait()
        self.batches.append(list(items))
        if self.fail is not None:
            raise self.fail
        outcomes: list[str | BaseException] = [
            ValueError(i) if i.startswith("bad") else i.upper() for i in items
        ]
        return outcomes[:-1] if self.short else outcomes


async def test_a_lone_item_is_committed_at_once_even_with_linger() -> None:
    commit = Committer()
    group: GroupCommit[str, str] = GroupCommit(commit, name="t", linger_s=3600.0)
    assert await asyncio.wait_for(group.submit("a"), timeout=5) == "A"
    assert commit.batches == [["a"]]


async def test_items_arriving_during_a_commit_share_the_next_one() -> None:
    commit = Committer()
    group: GroupCommit[str, str] = GroupCommit(commit, name="t")
    commit.gate.clear()
    first = asyncio.create_task(group.submit("a"))
    await asyncio.wait_for(commit.entered.wait(), timeout=5)
    rest = [asyncio.create_task(group.submit(k)) for k in "bcd"]
    await asyncio.sleep(0)  # let them queue behind the open commit
    commit.gate.set()
    assert await asyncio.wait_for(asyncio.gather(first, *rest), timeout=5) == list("ABCD")
    assert commit.batches == [["a"], ["b", "c", "d"]]


async def test_max_batch_splits_a_long_queue() -> None:
    commit = Committer()
    group: GroupCommit[str, str] = GroupCommit(commit, name="t", max_batch=2)
    commit.gate.clear()
    tasks = [asyncio.create_task(group.submit(k)) for k in "abcde"]
    await asyncio.wait_for(commit.entered.wait(), timeout=5)
    commit.gate.set()
    assert await asyncio.wait_for(asyncio.gather(*tasks), timeout=5) == list("ABCDE")
    assert commit.batches == [["a", "b"], ["c", "d"], ["e"]]


async def test_each_item_gets_its_own_outcome() -> None:
    commit = Committer()
    group: GroupCommit[str, str] = GroupCommit(commit, name="t")
    commit.gate.clear()
    tasks = [asyncio.create_task(group.submit(k)) for k in ("a", "bad-b", "c")]
    await asyncio.wait_for(commit.entered.wait(), timeout=5)
    commit.gate.set()
    a, b, c = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=5)
    assert (a, c) == ("A", "C")
    assert isinstance(b, ValueError) and str(b) == "bad-b"
    assert len(commit.batches) == 1


@pytest.mark.parametrize("how", ["raises", "wrong count"])
async def test_a_failed_commit_fails_every_waiter_and_the_next_one_runs(how: str) -> None:
    commit = Committer()
    group: GroupCommit[str, str] = GroupCommit(commit, name="t")
    if how == "raises":
        commit.fail = OSError("disk")
    else:
        commit.short = True
    commit.gate.clear()
    tasks = [asyncio.create_task(group.submit(k)) for k in "ab"]
    await asyncio.wait_for(commit.entered.wait(), timeout=5)
    commit.gate.set()
    outcomes = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=5)
    expected = OSError if how == "raises" else RuntimeError
    assert all(isinstance(o, expected) for o in outcomes)
    commit.fail, commit.short = None, False
    assert await asyncio.wait_for(group.submit("c"), timeout=5) == "C"


async def test_a_cancelled_waiter_does_not_disturb_its_batch() -> None:
    commit = Committer()
    group: GroupCommit[str, str] = GroupCommit(commit, name="t")
    commit.gate.clear()
    first = asyncio.create_task(group.submit("a"))
    await asyncio.wait_for(commit.entered.wait(), timeout=5)
    gone = asyncio.create_task(group.submit("b"))
    kept = asyncio.create_task(group.submit("c"))
    await asyncio.sleep(0)
    gone.cancel()
    commit.gate.set()
    assert await asyncio.wait_for(asyncio.gather(first, kept), timeout=5) == ["A", "C"]
    assert commit.batches == [["a"], ["b", "c"]]  # the cancelled item's write still stands
    assert gone.cancelled()


async def test_drain_waits_for_queued_commits() -> None:
    commit = Committer()
    group: GroupCommit[str, str] = GroupCommit(commit, name="t")
    commit.gate.clear()
    task = asyncio.create_task(group.submit("a"))
    await asyncio.wait_for(commit.entered.wait(), timeout=5)
    drained = asyncio.create_task(group.drain(timeout_s=5))
    await asyncio.sleep(0)
    assert not drained.done()
    commit.gate.set()
    await asyncio.wait_for(drained, timeout=5)
    assert task.done() and task.result() == "A"
    await group.drain()  # nothing queued: returns at once
