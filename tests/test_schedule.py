"""Epoch schedules: which epochs get measured, and the adaptive skip decisions."""

import numpy as np
import pytest

from ibtui.config import ScheduleConfig
from ibtui.engine.schedule import Schedule, plane_distance, static_epochs


def run_static(kind: str, epochs: int, **kw) -> list[int]:
    sched = Schedule(ScheduleConfig(kind=kind, **kw), epochs)
    out, e = [], sched.first()
    while e is not None:
        out.append(e)
        e, _ = sched.decide(e, None)
    return out


def test_log_schedule_matches_idnns_274_epochs_of_8000():
    epochs = static_epochs("log", 8000, points=400)
    assert len(epochs) == 274
    assert epochs[0] == 0 and epochs[-1] == 8000


def test_stepped_schedule_follows_ibsgd_rule():
    epochs = set(static_epochs("stepped", 10000).tolist())
    assert set(range(20)) <= epochs
    assert {25, 95, 120, 1980, 2100, 9900, 10000} <= epochs
    assert not {21, 96, 101, 1990, 2020, 9950} & epochs
    assert len(epochs) == 20 + 16 + 95 + 81


def test_every_n_measures_multiples_and_the_last_epoch():
    assert static_epochs("every_n", 23, every=5).tolist() == [0, 5, 10, 15, 20, 23]


@pytest.mark.parametrize("kind", ["every", "every_n", "log", "stepped"])
def test_static_schedules_are_increasing_and_include_first_and_last(kind):
    for epochs in (0, 1, 7, 100, 2345):
        seq = run_static(kind, epochs, every=3, points=50)
        assert seq[0] == 0 and seq[-1] == epochs
        assert all(b > a for a, b in zip(seq, seq[1:]))
        assert seq == static_epochs(kind, epochs, every=3, points=50).tolist()


def test_delta_approx_doubles_when_still_and_halves_when_moving():
    sched = Schedule(ScheduleConfig(kind="delta_approx", delta=0.1, initial_skip=4, max_skip=16), 1000)
    nxt, d = sched.decide(0, None)
    assert (nxt, d["decision"]) == (4, "start")
    nxt, d = sched.decide(4, 0.01)
    assert (nxt, d["skip"], d["decision"]) == (12, 8, "double")
    nxt, d = sched.decide(12, 0.5)
    assert (nxt, d["skip"], d["decision"]) == (16, 4, "halve")


def test_delta_approx_skip_is_capped_and_never_below_one():
    sched = Schedule(ScheduleConfig(kind="delta_approx", delta=0.1, initial_skip=1, max_skip=8), 10_000)
    e, _ = sched.decide(0, None)
    for _ in range(10):
        e, d = sched.decide(e, 0.0)
    assert d["skip"] == 8
    for _ in range(10):
        e, d = sched.decide(e, 9.9)
    assert d["skip"] == 1


def test_delta_schedules_end_exactly_at_the_last_epoch():
    sched = Schedule(ScheduleConfig(kind="delta_approx", delta=1.0, initial_skip=64, max_skip=64), 100)
    e, seen = 0, []
    while e is not None:
        seen.append(e)
        e, _ = sched.decide(e, 0.0 if seen[1:] else None)
    assert seen == [0, 64, 100]


def test_delta_exact_bisects_only_when_the_plane_moved_more_than_delta():
    sched = Schedule(ScheduleConfig(kind="delta_exact", delta=0.1), 100)
    assert sched.should_bisect(0, 8, 0.5) == 4
    assert sched.should_bisect(0, 8, 0.05) is None
    assert sched.should_bisect(3, 4, 0.5) is None  # one epoch wide: nothing to bisect


def test_delta_exact_next_skip_is_the_last_kept_gap():
    sched = Schedule(ScheduleConfig(kind="delta_exact", delta=0.1, initial_skip=8, max_skip=64), 1000)
    sched.decide(0, None)
    nxt, d = sched.decide(8, 0.05, last_gap=2)
    assert (nxt, d["skip"], d["decision"]) == (10, 2, "shrink")
    nxt, d = sched.decide(10, 0.05, last_gap=2)
    assert (nxt, d["skip"], d["decision"]) == (14, 4, "double")


def test_approx_is_never_asked_to_bisect():
    sched = Schedule(ScheduleConfig(kind="delta_approx", delta=0.1), 100)
    assert sched.should_bisect(0, 8, 5.0) is None


def test_plane_distance_is_the_largest_layer_move_in_bits():
    a = np.array([[1.0, 0.5], [2.0, 0.5]])
    b = np.array([[1.0, 0.5], [5.0, 4.5]])
    assert plane_distance(a, b) == pytest.approx(5.0)
