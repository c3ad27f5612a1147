"""Pure lease helpers: membership, fair share and the rebalance plan."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from orchestrator.store import (
    Lease,
    fair_share,
    is_member_key,
    live_instances,
    member_key,
    plan_balance,
)

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(seconds=30)
EARLIER = NOW - timedelta(seconds=1)


def lease(room: str, owner: str, expires: datetime = LATER, fence: int = 1) -> Lease:
    return Lease(room_id=room, owner=owner, fence=fence, expires_at=expires)


def test_member_keys_and_live_instances() -> None:
    assert is_member_key(member_key("node-b"))
    assert not is_member_key("room-1")
    leases = [
        lease(member_key("b"), "b"),
        lease("r1", "a"),
        lease("r2", "c", expires=EARLIER),
    ]
    assert live_instances(leases, NOW) == ["a", "b"]


def test_fair_share() -> None:
    assert fair_share(10, 3) == 4
    assert fair_share(9, 3) == 3
    assert fair_share(0, 2) == 0
    assert fair_share(5, 0) == 5


def test_joining_instance_gets_a_share_from_the_holder() -> None:
    rooms = [lease(f"r{i:02}", "a") for i in range(10)]
    leases = [*rooms, lease(member_key("a"), "a"), lease(member_key("b"), "b")]
    instances = live_instances(leases, NOW)
    plan = plan_balance(leases, instances, NOW)
    assert plan == {"a": ["r05", "r06", "r07", "r08", "r09"]}
    # applying the plan leaves a balanced set: nobody releases any more
    kept = [x for x in leases if x.room_id not in plan["a"]]
    moved = [lease(r, "b") for r in plan["a"]]
    assert plan_balance(kept + moved, instances, NOW) == {}


def test_expired_leases_and_dead_owners_do_not_count_as_held() -> None:
    leases = [
        lease("r1", "a"),
        lease("r2", "a"),
        lease("r3", "gone", expires=EARLIER),
        lease("r4", "a", expires=EARLIER),
    ]
    # 4 rooms, 2 live instances -> share 2: "a" holds exactly 2 unexpired ones
    assert plan_balance(leases, ["a", "b"], NOW) == {}


@given(
    holdings=st.lists(st.integers(min_value=0, max_value=40), min_size=1, max_size=6),
)
def test_plan_never_leaves_anyone_over_the_fair_share(holdings: list[int]) -> None:
    owners = [f"n{i}" for i in range(len(holdings))]
    leases = [
        lease(f"{owner}-r{j:03}", owner)
        for owner, count in zip(owners, holdings, strict=True)
        for j in range(count)
    ]
    plan = plan_balance(leases, owners, NOW)
    share = fair_share(sum(holdings), len(owners))
    for owner, count in zip(owners, holdings, strict=True):
        released = plan.get(owner, [])
        assert count - len(released) == min(count, share)
        assert set(released) <= {x.room_id for x in leases if x.owner == owner}
