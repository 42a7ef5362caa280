"""Progress of a live run from its events: the ETA by schedule, and plain progress lines.

No torch, no Textual: the headless CLI and the app both feed engine events to :class:`Eta`.

The ETA is not a linear extrapolation of epochs. A run's time is its training (every epoch) plus
its measurements (only the measured epochs, dense early in the log and stepped schedules), and
the two are estimated apart: each ``epoch`` event carries the seconds its training took
(``seconds``) and, after a measured epoch, what that measurement cost in all (estimators,
checkpoint, files: ``measure_seconds``). Remaining time = remaining epochs × training seconds
per epoch + measurements still to come (counted from the schedule's rule) × seconds per
measurement.
"""

from __future__ import annotations

import bisect
import math
import time
from collections import deque
from functools import lru_cache
from typing import Any, Callable

TRAIN_WINDOW = 200  # the latest epochs' training times (the machine's load changes)
MEASURE_WINDOW = 20  # the latest measurements' costs


@lru_cache(maxsize=16)
def _static_epochs(kind: str, every: int, points: int, total: int) -> tuple[int, ...]:
    from ibtui.config import ScheduleConfig
    from ibtui.engine.schedule import static_epochs

    return tuple(static_epochs(ScheduleConfig(kind=kind, every=every, points=points), total))


def remaining_measurements(schedule: Any, total: int, after: int, skip: int | None = None,
                           next_epoch: int | None = None) -> int:
    """Measured epochs of ``schedule`` (a ``ScheduleConfig``) still to come in a run of ``total``
    epochs once epoch ``after`` has been measured (−1: none yet). Static schedules: counted from
    their rule. Adaptive ones: the next one (``next_epoch``) and then one every ``skip`` epochs
    (the latest skip; the skip may still grow)."""
    if after >= total:
        return 0
    kind = getattr(schedule, "kind", None)
    if kind == "every":
        return total - after
    if kind == "every_n":
        n = max(1, int(schedule.every))
        before_total = max(0, (total - 1) // n - (after // n if after >= 0 else -1))
        return before_total + 1
    if kind in ("log", "stepped", "stepped_mnist"):
        epochs = _static_epochs(kind, int(schedule.every), int(schedule.points), total)
        return len(epochs) - bisect.bisect_right(epochs, after)
    # adaptive (delta_*): the next measurement, then one per skip
    step = max(1, int(skip or getattr(schedule, "initial_skip", 1) or 1))
    start = next_epoch if next_epoch is not None and next_epoch > after else min(after + step, total)
    return 1 + math.ceil(max(0, total - start) / step)


class Eta:
    """Seconds left in a live run, fed with its events (``apply``)."""

    def __init__(self, total: int = 0, schedule: Any = None) -> None:
        self.total = total
        self.schedule = schedule
        self.done = 0
        self.last_measured = -1
        self.skip: int | None = None
        self.next_epoch: int | None = None
        self.measured = 0
        self.train: deque[float] = deque(maxlen=TRAIN_WINDOW)
        self.measure: deque[float] = deque(maxlen=MEASURE_WINDOW)
        self.mi_seconds: deque[float] = deque(maxlen=MEASURE_WINDOW)

    def apply(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "start":
            total = (event.get("meta") or {}).get("epochs_total")
            if isinstance(total, int) and not isinstance(total, bool):
                self.total = total
        elif kind == "epoch":
            epoch, total = event.get("epoch"), event.get("epochs")
            if isinstance(epoch, int):
                self.done = max(self.done, epoch)
            if isinstance(total, int) and not isinstance(total, bool):
                self.total = total
            for key, samples in (("seconds", self.train), ("measure_seconds", self.measure)):
                value = event.get(key)
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
                        and value >= 0:
                    samples.append(float(value))
        elif kind == "measure":
            epoch = event.get("epoch")
            if isinstance(epoch, int) and not isinstance(epoch, bool):
                self.last_measured = max(self.last_measured, epoch)
                self.done = max(self.done, epoch)
            self.measured += 1
            decision = event.get("schedule") or {}
            skip, nxt = decision.get("skip"), decision.get("next")
            self.skip = skip if isinstance(skip, int) and skip > 0 else self.skip
            self.next_epoch = nxt if isinstance(nxt, int) else None
            mi = event.get("mi_seconds")
            if isinstance(mi, (int, float)) and not isinstance(mi, bool) and math.isfinite(mi) and mi >= 0:
                self.mi_seconds.append(float(mi))

    def measurements_left(self) -> int:
        if self.schedule is None:  # no rule at hand: as many per epoch as so far
            return round(self.measured / max(self.done, 1) * max(self.total - self.done, 0))
        return remaining_measurements(self.schedule, self.total, self.last_measured, self.skip, self.next_epoch)

    def seconds_per_epoch(self) -> float | None:
        return sum(self.train) / len(self.train) if self.train else None

    def seconds_per_measurement(self) -> float | None:
        samples = list(self.measure)
        if 3 <= len(samples) < MEASURE_WINDOW:  # the first measurement (epoch 0) warms up: left out once others exist
            samples = samples[1:]
        if not samples:
            samples = list(self.mi_seconds)  # the estimators' part only, before any full cost is known
        return sum(samples) / len(samples) if samples else None

    def seconds(self) -> float | None:
        """Seconds left (None until a training time is known, or when measurements are still to
        come and no measurement's cost is known yet)."""
        per_epoch = self.seconds_per_epoch()
        if per_epoch is None:
            return None
        left = self.measurements_left()
        per_measure = self.seconds_per_measurement()
        if left and per_measure is None:
            return None
        return max(0, self.total - self.done) * per_epoch + left * (per_measure or 0.0)


def fmt_eta(seconds: float | None) -> str:
    """``1:05``, ``2:03:04``; ``–`` when unknown."""
    if seconds is None:
        return "–"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class PlainProgress:
    """Progress as plain lines (no carriage returns) for a log that is not a terminal: one line every
    ``every_s`` seconds at most, each at most ``width`` columns."""

    def __init__(self, write: Callable[[str], None], title: str, total: int, eta: Eta, every_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic, width: int = 80) -> None:
        self.write, self.title, self.total, self.eta = write, title, total, eta
        self.every_s, self.clock, self.width = every_s, clock, width
        self.done = 0
        self.started: float | None = None
        self.last_line: float | None = None
        self.mi = ""

    def line(self) -> str:
        now = self.clock()
        elapsed = now - self.started if self.started is not None else 0.0
        rate = self.done / elapsed if elapsed > 0 and self.done else None
        pct = 100.0 * self.done / self.total if self.total else 0.0
        parts = [f"epoch {self.done}/{self.total} ({pct:.0f}%)", f"{rate:,.1f} ep/s" if rate else None,
                 f"ETA {fmt_eta(self.eta.seconds())}"]
        text = " · ".join(p for p in parts if p)
        room = self.width - len(text) - 2  # the title takes what is left, the MI values come last if they fit
        title = self.title if len(self.title) <= room else (self.title[:max(room - 1, 0)] + "…" if room > 1 else "")
        line = f"{title}: {text}" if title else text
        if self.mi and len(line) + 3 + len(self.mi) <= self.width:
            line += f" · {self.mi}"
        return line[:self.width]

    def on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        now = self.clock()
        if kind == "start":
            self.started = self.last_line = now
            return
        if kind == "epoch" and isinstance(event.get("epoch"), int):
            self.done = max(self.done, event["epoch"])
        elif kind == "measure":
            if isinstance(event.get("epoch"), int):
                self.done = max(self.done, event["epoch"])
            self.mi = measure_text(event, compact=True)
        elif kind == "end":  # the last line, whenever the previous one was
            done = (event.get("summary") or {}).get("epochs_done")
            self.done = done if isinstance(done, int) else self.done
            self.write(self.line())
            return
        else:
            return
        if self.last_line is None or now - self.last_line >= self.every_s:
            self.last_line = now
            self.write(self.line())


def measure_text(event: dict[str, Any], layers: list[str] | None = None, compact: bool = False) -> str:
    """``binning I(X;T)=2.31 I(T;Y)=0.95`` of the last hidden layer of the event's first plane."""
    planes = event.get("planes")
    if not isinstance(planes, dict) or not planes:
        return ""
    name, plane = next(iter(planes.items()))
    try:
        ixt, ity = plane["ixt"][-2 if len(plane["ixt"]) > 1 else -1], plane["ity"][-2 if len(plane["ity"]) > 1 else -1]
        values = f"I(X;T)={float(ixt):.2f} I(T;Y)={float(ity):.2f}"
    except (KeyError, TypeError, ValueError, IndexError):
        return ""
    if compact:
        return values
    layer = layers[-2] if layers and len(layers) >= 2 else "last"
    return f"{name} {layer} {values}"
