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


def idnns_reference_epochs(num_epochs: int, num_of_samples: int) -> set[int]:
    """IDNNs, idnns/networks/information_network.py: the indexes j whose activations are taken
    before training epoch j (so after j epochs), written as IDNNs writes them."""
    return set((np.unique(np.logspace(np.log2(1), np.log2(num_epochs), num_of_samples, dtype=int, base=2)) - 1).tolist())


def ibsgd_do_report(epoch: int) -> bool:
    """ibsgd, IBnet_SaveActivations.ipynb, copied as written (its comment says 'every 10th')."""
    if epoch < 20:
        return True
    elif epoch < 100:
        return epoch % 5 == 0
    elif epoch < 2000:
        return epoch % 20 == 0
    else:
        return epoch % 100 == 0


def ibsgd_mnist_do_report(epoch: int) -> bool:
    """ibsgd, MNIST_SaveActivations.ipynb."""
    if epoch < 20:
        return True
    elif epoch < 100:
        return epoch % 5 == 0
    elif epoch < 200:
        return epoch % 10 == 0
    else:
        return epoch % 100 == 0


def test_log_schedule_is_idnns_epochs_plus_the_last():
    epochs = run_static("log", 8000, points=400)
    assert set(epochs) == idnns_reference_epochs(8000, 400) | {8000}
    assert len(epochs) == 275 and epochs[-2] == 7999  # IDNNs' 274, then the final network


@pytest.mark.parametrize("num_epochs,points", [(1000, 30), (137, 50), (10, 400), (2, 5)])
def test_log_schedule_equals_the_idnns_formula_for_other_lengths(num_epochs, points):
    assert set(run_static("log", num_epochs, points=points)) == idnns_reference_epochs(num_epochs, points) | {num_epochs}


def test_stepped_schedule_is_ibsgd_report_epochs_counted_after_training():
    # do_report(k) runs at the end of epoch k (Keras on_epoch_end): the weights after k + 1 epochs
    expected = {k + 1 for k in range(10000) if ibsgd_do_report(k)} | {0, 10000}
    got = run_static("stepped", 10000)
    assert set(got) == expected and len(got) == len(expected)
    assert len(expected - {0, 10000}) == 211
    assert {1, 20, 21, 26, 96, 101, 1981, 2001, 9901} <= set(got) and not {25, 100, 2000} & set(got)


def test_stepped_mnist_schedule_is_ibsgd_mnist_report_epochs():
    expected = {k + 1 for k in range(3000) if ibsgd_mnist_do_report(k)} | {0, 3000}
    assert set(run_static("stepped_mnist", 3000)) == expected


def test_every_n_measures_multiples_and_the_last_epoch():
    assert run_static("every_n", 23, every=5) == [0, 5, 10, 15, 20, 23]


@pytest.mark.parametrize("kind", ["every", "every_n", "log", "stepped", "stepped_mnist"])
def test_static_schedules_are_increasing_and_include_first_and_last(kind):
    for epochs in (0, 1, 7, 100, 2345):
        seq = run_static(kind, epochs, every=3, points=50)
        assert seq[0] == 0 and seq[-1] == epochs
        assert all(b > a for a, b in zip(seq, seq[1:]))
        assert seq == list(static_epochs(ScheduleConfig(kind=kind, every=3, points=50), epochs))


@pytest.mark.parametrize("kind", ["every", "every_n", "stepped", "log"])
def test_a_huge_epoch_count_costs_no_memory(kind):
    sched = Schedule(ScheduleConfig(kind=kind, points=400), 10**12)  # no array of every epoch
    nxt, _ = sched.decide(10**11, None)
    assert 10**11 < nxt <= 10**12


def scripted(kind: str, moves: list[float], **kw) -> list[tuple[int, str]]:
    """(skip, decision) after each scripted plane move, starting from the first measurement."""
    sched = Schedule(ScheduleConfig(kind=kind, **kw), 10**6)
    e, _ = sched.decide(0, None)
    out = []
    for move in moves:
        e, d = sched.decide(e, move)
        out.append((d["skip"], d["decision"]))
    return out


def study_delta_approx(moves: list[float], delta: float, skip: int, max_skip: int) -> list[int]:
    """The study's Figure 3.6, written in the test: if delta < dist keep the skip, else double it
    (the study has no cap; ours caps at max_skip)."""
    out = []
    for dist in moves:
        skip = skip if delta < dist else min(skip * 2, max_skip)
        out.append(skip)
    return out


def test_delta_approx_follows_the_study_keep_when_moving_double_when_still():
    moves = [0.01, 0.5, 0.5, 0.02, 0.1, 0.3, 0.0, 0.0, 0.0, 0.9]
    got = scripted("delta_approx", moves, delta=0.1, initial_skip=2, max_skip=64)
    assert [skip for skip, _ in got] == study_delta_approx(moves, 0.1, 2, 64)
    assert [d for _, d in got][:3] == ["double", "keep", "keep"]


def test_delta_halving_halves_when_moving_and_doubles_when_still():
    got = scripted("delta_halving", [0.01, 0.5, 0.5, 0.01], delta=0.1, initial_skip=4, max_skip=16)
    assert got == [(8, "double"), (4, "halve"), (2, "halve"), (4, "double")]


@pytest.mark.parametrize("kind", ["delta_approx", "delta_halving"])
def test_delta_skip_is_capped_and_never_below_one(kind):
    got = scripted(kind, [0.0] * 10 + [9.9] * 10, delta=0.1, initial_skip=1, max_skip=8)
    assert got[9][0] == 8 and min(skip for skip, _ in got) >= 1


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
