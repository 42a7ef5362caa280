"""The information plane in the terminal: every layer a path, absolute epoch colours, a key outside
the plot with the numbers at the shown epoch and every overlay named."""

from __future__ import annotations

import asyncio

import pytest

from ibtui.tui.plots import (EPOCH_DECADES, LAYER_MARKERS, decade, decade_colour, plane_figure, plane_key,
                             round_ticks)
from ibtui.tui.run_screen import RunScreen
from ibtui.tui.state import RunView

LAYERS = ["h1:10", "h2:7", "softmax:2"]
POINTS = {0: ([10.0, 8.0, 1.0], [0.2, 0.1, 0.05]), 10: ([11.0, 9.5, 2.0], [0.6, 0.5, 0.4]),
          300: ([11.5, 7.25, 1.5], [0.9, 0.85, 0.8])}


def view_of(points=POINTS, planes=("binning",), members=None) -> RunView:
    view = RunView()
    view.apply({"type": "start", "run_dir": None, "meta": {"id": "r", "layers": LAYERS, "planes": list(planes),
                                                           "h_x": 12.0, "h_y": 1.0, "epochs_total": 300,
                                                           "batch_size": 256}})
    for epoch, (ixt, ity) in points.items():
        plane = {"ixt": ixt, "ity": ity}
        if members:
            plane["ixt_seeds"] = [[v + d for v in ixt] for d in members]
            plane["ity_seeds"] = [ity for _ in members]
            plane["ixt"] = [v + sum(members) / len(members) for v in ixt]
        view.apply({"type": "measure", "epoch": epoch, "planes": {name: plane for name in planes}})
    return view


def test_every_layer_is_drawn_with_its_own_marker_and_no_legend_inside():
    figure = plane_figure(view_of(), "binning", 100, 30)
    for layer in range(len(LAYERS)):
        assert LAYER_MARKERS[layer] in figure
    assert not any(name in figure for name in LAYERS)  # names live in the key, outside the plot


def test_epoch_colours_are_absolute_decades_the_same_for_every_run():
    assert [decade(e) for e in (0, 1, 9, 10, 99, 100, 5000, 10**6)] == [0, 1, 1, 2, 2, 3, 4, 6]
    assert decade_colour(100) == decade_colour(999) != decade_colour(1000)
    assert len(EPOCH_DECADES) == 7


def test_the_key_gives_each_layers_numbers_at_the_shown_epoch():
    key = plane_key(view_of(), "binning", cursor=10).plain
    assert "epoch 10 · bits" in key
    for name, ixt, ity in zip(LAYERS, POINTS[10][0], POINTS[10][1]):
        line = next(line for line in key.splitlines() if name in line)
        assert f"{ixt:.2f}" in line and f"{ity:.2f}" in line
    assert "the layers at the shown epoch" in key and "H(X) = 12.00" in key and "H(Y) = 1.00" in key


def test_the_key_follows_the_cursor_to_the_last_measured_epoch_before_it():
    assert "epoch 10 · bits" in plane_key(view_of(), "binning", cursor=250).plain
    assert "epoch 300 · bits" in plane_key(view_of(), "binning").plain


def test_the_key_names_the_other_kde_bound_and_says_it_is_not_a_bracket_for_label_information():
    key = plane_key(view_of(planes=("kde_upper", "kde_lower")), "kde_upper").plain
    assert "kde_lower" in key and "not a bracket" in key


def test_the_key_shows_the_ensemble_mean_and_spread():
    key = plane_key(view_of(members=[-0.5, 0.5]), "binning").plain
    assert "±0.71" in key and "mean of 2 networks" in key


def test_values_at_their_cap_are_marked():
    key = plane_key(view_of({5: ([12.0, 3.0, 1.0], [1.0, 0.5, 0.2])}), "binning").plain
    line = next(line for line in key.splitlines() if "h1:10" in line)
    assert line.count("▲") == 2 and "at its cap" in key


@pytest.mark.parametrize("high", [12.6, 1.08, 0.37, 123.0, 3e-4])
def test_ticks_are_round_values_from_zero(high):
    import math

    values, labels = round_ticks(high)
    step = values[1] - values[0]
    mantissa = step / 10 ** math.floor(math.log10(step))
    assert values[0] == 0 and values[-1] <= high and 3 <= len(values) <= 8
    assert any(math.isclose(mantissa, m) for m in (1, 2, 5))
    assert all(math.isclose(b - a, step) for a, b in zip(values, values[1:])) and len(labels) == len(values)


def test_the_run_screen_shows_the_key_beside_the_plane_and_moves_it_with_the_cursor():
    from test_tui import OneScreenApp

    screen = RunScreen(view_of(), follow=False)

    async def scenario():
        async with OneScreenApp(screen).run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.3)
            key = str(screen.query_one("#key").render())
            assert "epoch 300 · bits" in key and "h2:7" in key and "7.25" in key
            await pilot.press("home")
            await pilot.pause(0.3)
            assert "epoch 0 · bits" in str(screen.query_one("#key").render())

    asyncio.run(scenario())


def colour_code(rgb) -> str:
    return "38;2;{};{};{}".format(*rgb)


def test_at_a_cursor_the_paths_stop_at_the_shown_epoch():
    view = view_of({**POINTS, 2000: ([10.0, 6.0, 1.2], [0.95, 0.9, 0.9])})
    late = colour_code(decade_colour(300))  # epoch 300's decade colour (the shown epoch's points are white)
    assert late in plane_figure(view, "binning", 100, 30)
    assert late not in plane_figure(view, "binning", 100, 30, cursor=10)


def kde_view() -> RunView:
    """Both KDE bounds, apart, at epochs 0 and 300."""
    view = view_of({0: ([10.0, 8.0, 1.0], [0.2, 0.1, 0.05])}, planes=("kde_upper", "kde_lower"))
    view.apply({"type": "measure", "epoch": 300, "planes": {"kde_upper": {"ixt": [9.0, 7.0, 1.5], "ity": [0.9, 0.85, 0.8]},
                                                          "kde_lower": {"ixt": [4.0, 3.0, 0.5], "ity": [0.5, 0.4, 0.3]}}})
    return view


def test_at_a_cursor_the_other_kde_bound_stops_at_the_shown_epoch_too():
    from test_tui_navigate import plain

    whole = "\n".join(plain(plane_figure(kde_view(), "kde_upper", 100, 30)))
    early = "\n".join(plain(plane_figure(kde_view(), "kde_upper", 100, 30, cursor=0)))
    assert whole.count("•") >= early.count("•") + 2  # kde_lower's points at epoch 300 are gone at epoch 0


def key_lines_at_80x24(screen, key_id: str) -> tuple[list[str], dict]:
    """The lines of the key ``#key_id`` that fit on ``screen`` in an 80x24 terminal, and the height
    of each of the screen's widgets by id (rows)."""
    from test_tui import OneScreenApp

    seen: dict = {}

    async def scenario():
        async with OneScreenApp(screen).run_test(size=(80, 24)) as pilot:
            await pilot.pause(0.5)
            key = screen.query_one(f"#{key_id}")
            seen["lines"] = key.render().plain.splitlines()[:key.content_region.height]
            seen["heights"] = {w.id: w.size.height for w in screen.query("*") if w.id}

    asyncio.run(scenario())
    return seen["lines"], seen["heights"]


def test_at_80x24_the_key_still_shows_every_layer_and_the_entropies():
    from test_tui_navigate import SIX, six_layer_view

    shown, heights = key_lines_at_80x24(RunScreen(six_layer_view(), follow=False), "key")
    assert all(any(name[:9] in line for line in shown) for name in SIX)
    assert any("H(X) = 12.00" in line for line in shown)
    assert heights["curves"] >= 7  # title, frame, 3 data rows, ticks
