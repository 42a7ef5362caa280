"""Comparing runs for real: two or more runs (or sweep cells) overlaid on one plane with shared axes,
one absolute epoch scale and a hue per run, their curves beside, the settings that differ in the
header, a key naming runs and layers outside the plot, and an export of what is on screen."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from conftest import tiny_config
from test_tui import OneScreenApp
from test_tui_navigate import SIX, plain, six_layer_view
from ibtui.engine.runner import execute
from ibtui.tui.plots import (LAYER_MARKERS, RUN_HUES, compare_curves_figure, compare_figure, compare_header,
                             compare_key)
from ibtui.tui.run_screen import CompareScreen
from ibtui.tui.state import PlaneOptions, RunView, config_diff


def hue_code(index: int) -> str:
    r, g, b = RUN_HUES[index]
    return f"38;2;{r};{g};{b}"


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory):
    """Three tiny runs: tanh, relu, and relu with another learning rate (12 epochs, binning)."""
    root = tmp_path_factory.mktemp("compare")
    return [execute(tiny_config(root / "a"))["run_dir"],
            execute(tiny_config(root / "b", model={"activation": "relu"}))["run_dir"],
            execute(tiny_config(root / "c", model={"activation": "relu"}, train={"lr": 0.01}))["run_dir"]]


def views_of(paths) -> list[RunView]:
    return [RunView.from_run_dir(p) for p in paths]


def test_the_overlay_draws_every_run_in_its_own_hue_with_each_layers_marker():
    views = [six_layer_view(), six_layer_view(epochs=(0, 2, 20, 200)), six_layer_view(epochs=(0, 5, 50))]
    figure = compare_figure(views, "binning", 100, 30)
    for index in range(3):
        assert hue_code(index) in figure
    text = "\n".join(plain(figure))
    assert all(marker in text for marker in LAYER_MARKERS[:6]) and "3 runs" in text
    assert "I(X;T), bits" in text and "I(T;Y), bits" in text


def test_the_overlay_shows_every_run_at_the_same_absolute_cursor_epoch():
    views = [six_layer_view(), six_layer_view(epochs=(0, 2, 20, 200))]
    key = compare_key(views, "binning", cursor=30).plain
    assert "epochs A 30 B 20 · bits" in key  # each run's last measured epoch at or before the cursor
    assert "epoch 1000 · bits" in compare_key(views[:1] * 2, "binning").plain


def test_the_compare_key_names_each_layer_with_every_runs_numbers():
    views = [six_layer_view(), six_layer_view(epochs=(0, 2))]
    key = compare_key(views, "binning").plain.splitlines()
    assert "A:X;T Y;T" in key[1] and "B:X;T Y;T" in key[1]
    for layer, name in enumerate(SIX):
        row = next(r for r in key if name[:7] in r)
        assert row.startswith(f"{layer + 1}{LAYER_MARKERS[layer]}") and len(re.findall(r"\d+\.\d+", row)) == 4


def test_a_hidden_layer_leaves_the_overlay_and_is_marked_in_the_compare_key():
    views = [six_layer_view(), six_layer_view()]
    options = PlaneOptions(hidden=frozenset({5}))
    assert LAYER_MARKERS[5] not in "\n".join(plain(compare_figure(views, "binning", 100, 30, options=options)))
    row = next(r for r in compare_key(views, "binning", options=options).plain.splitlines() if "softmax" in r)
    assert row.endswith("hidden")


def test_the_compare_screen_hides_layers_zooms_and_logs_epochs_with_the_run_screens_keys(three_runs):
    async def scenario():
        screen = CompareScreen(views_of(three_runs[:2]))
        async with OneScreenApp(screen).run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.3)
            assert LAYER_MARKERS[5] in str(screen.query_one("#compare-plane").render())
            await pilot.press("6")
            await pilot.pause(0.2)
            assert LAYER_MARKERS[5] not in str(screen.query_one("#compare-plane").render())
            await pilot.press("plus")
            await pilot.pause(0.2)
            assert "zoomed (0 resets)" in str(screen.query_one("#compare-plane").render())
            await pilot.press("0", "l")
            await pilot.pause(0.2)
            assert "zoomed" not in str(screen.query_one("#compare-plane").render())
            assert "epoch, log scale" in str(screen.query_one("#compare-curves").render())

    asyncio.run(scenario())


def test_an_ensemble_in_a_compare_is_named_as_a_mean_with_its_spread_drawn():
    from test_tui_plane import view_of

    single, ensemble = view_of(), view_of(members=[-0.5, 0.5])
    key = compare_key([single, ensemble], "binning").plain
    assert "B: mean of 2 networks" in key and "A: mean" not in key and "±1 sd" in key
    bare = compare_figure([single, view_of()], "binning", 100, 30)
    assert "\x1b[" in bare and compare_figure([single, ensemble], "binning", 100, 30).count("•") > bare.count("•")


def test_the_config_diff_keeps_only_the_keys_that_differ():
    a = {"preset": "quick", "description": "x", "model": {"activation": "tanh", "widths": [10, 7]},
         "train": {"lr": 0.001}, "store": {"runs_dir": "/a"}}
    b = {"preset": "quick", "description": "y", "model": {"activation": "relu", "widths": [10, 7]},
         "train": {"lr": 0.001, "seeds": 3}, "store": {"runs_dir": "/b"}}
    assert config_diff([a, b]) == {"model.activation": ["tanh", "relu"], "train.seeds": [None, 3]}


def test_the_compare_header_lists_each_run_with_only_its_differing_settings(three_runs):
    async def scenario():
        screen = CompareScreen(views_of(three_runs))
        async with OneScreenApp(screen).run_test(size=(160, 40)) as pilot:
            await pilot.pause(0.2)
            lines = str(screen.query_one("#compare-header").render()).splitlines()
            assert "model.activation=tanh" in lines[0] and "train.lr=0.001" in lines[0]
            assert "model.activation=relu" in lines[2] and "train.lr=0.01" in lines[2]
            assert not any("train.epochs" in line or "runs_dir" in line for line in lines)
            assert "only the 2 settings that differ" in lines[3]

    asyncio.run(scenario())


def test_three_runs_share_one_plane_with_a_column_each_in_the_key(three_runs):
    async def scenario():
        screen = CompareScreen(views_of(three_runs))
        async with OneScreenApp(screen).run_test(size=(160, 40)) as pilot:
            await pilot.pause(0.3)
            assert "3 runs" in str(screen.query_one("#compare-plane").render())
            key = str(screen.query_one("#compare-key").render())
            assert all(f"{letter}:X;T Y;T" in key for letter in "ABC")
            await pilot.press("home")
            await pilot.pause(0.2)
            assert "epoch 0 · bits" in str(screen.query_one("#compare-key").render())

    asyncio.run(scenario())


def test_the_compared_runs_curves_are_drawn_in_their_hues_with_the_cursor_line():
    views = [six_layer_view(), six_layer_view(epochs=(0, 2, 20, 200))]
    figure = compare_curves_figure(views, 60, 14, cursor=100)
    assert hue_code(0) in figure and hue_code(1) in figure
    text = "\n".join(plain(figure))
    assert "loss (nats)" in text and "test acc" in text and "│" in text


def test_markup_in_a_compared_runs_name_is_shown_verbatim(three_runs):
    views = views_of(three_runs[:2])
    views[1].title = "[red]evil[/red] [link=x]"

    async def scenario():
        screen = CompareScreen(views)
        async with OneScreenApp(screen).run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.2)
            assert "[red]evil[/red] [link=x]" in str(screen.query_one("#compare-header").render())
            assert "[red]evil[/red]" in str(screen.query_one("#status").render())

    asyncio.run(scenario())


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
def test_a_two_run_compare_is_readable_at_small_and_large_sizes(three_runs, size):
    async def scenario():
        screen = CompareScreen(views_of(three_runs[:2]))
        async with OneScreenApp(screen).run_test(size=size) as pilot:
            await pilot.pause(0.3)
            plane = str(screen.query_one("#compare-plane").render())
            assert all(marker in plane for marker in LAYER_MARKERS[:6]) and "I(X;T), bits" in plane
            key = screen.query_one("#compare-key")
            visible = str(key.render()).splitlines()[:key.content_size.height]
            for name in ("h1:10", "h5:3", "softmax"):
                row = next(r for r in visible if name in r)
                assert len(re.findall(r"\d+\.\d+", row)) == 4, row
            assert "A ━━" in str(screen.query_one("#compare-header").render())
            assert screen.query_one("#compare-curves").content_size.height >= 5

    asyncio.run(scenario())


def test_e_exports_the_overlay_of_every_compared_run(three_runs):
    pytest.importorskip("matplotlib")

    async def scenario():
        screen = CompareScreen(views_of(three_runs))
        async with OneScreenApp(screen).run_test(size=(120, 40)) as pilot:
            await pilot.press("1", "e")
            await pilot.pause(0.5)

    asyncio.run(scenario())
    written = sorted(p.name for p in (Path(three_runs[0]) / "export").iterdir())
    assert any(n.startswith("compare-") and n.endswith(".png") for n in written)
    assert any(n.startswith("compare-") and n.endswith(".pdf") for n in written)


def test_e_in_a_compare_exports_up_to_the_cursor_epoch_in_the_zoomed_ranges_with_the_shown_layers(
        three_runs, monkeypatch):
    import ibtui.export as export_module

    calls = []
    monkeypatch.setattr(export_module, "export", lambda runs, out, **k: calls.append((runs, k)) or
                        export_module.Exported())

    async def scenario():
        screen = CompareScreen(views_of(three_runs))
        async with OneScreenApp(screen).run_test(size=(120, 40)) as pilot:
            await pilot.press("home", "right", "2", "plus", "e")
            await pilot.pause(0.3)
            return screen.options

    options = asyncio.run(scenario())
    (runs, kwargs), = calls
    assert [str(r.path) for r in runs] == three_runs
    assert kwargs["until"] == 3 and kwargs["layers"] == [0, 2, 3, 4, 5] and kwargs["plane"] == "binning"
    assert kwargs["limits"] == (options.x, options.y) and options.x is not None


def test_the_exported_plane_stops_at_the_given_epoch_on_the_whole_runs_colour_scale(three_runs):
    pytest.importorskip("matplotlib")
    from ibtui import figures
    from ibtui.rundir.reader import load_run

    run = load_run(three_runs[0])
    ax = figures.information_plane(run, plane="binning", until=6, limits=((1.0, 11.0), None)).axes[0]
    points = [c for c in ax.collections if c.get_offsets().shape[0] > 1]
    assert points and all(c.get_offsets().shape[0] == 3 for c in points)  # epochs 0, 3, 6 of 0..12
    assert points[0].norm.vmax == 13  # the colour scale still ends at the run's last epoch (12) + 1
    assert ax.get_xlim() == (1.0, 11.0) and ax.get_ylim()[0] == 0 and "up to epoch 6" in ax.get_title()


def test_the_sweep_screen_compares_marked_cells(tmp_path):
    from ibtui.engine.sweep import Outcome, Sweep, SweepSpec, cell_result, parse_grid, run_cell
    from ibtui.tui.app import IbtuiApp

    tiny = ["train.epochs=6", "schedule.kind=every_n", "schedule.every=3", "estimators.kde=false",
            'train.device="cpu"']
    sweep = Sweep(SweepSpec("quick", [parse_grid("model.activation=tanh,relu,sigmoid")], tiny), tmp_path)
    sweep.open()
    for cell in sweep.cells:
        run_cell(sweep.spec.config(cell).to_dict(), sweep.cell_dir(cell))
        sweep.record(Outcome(cell, "done", 1, None, cell_result(sweep.cell_dir(cell))))

    async def scenario():
        app = IbtuiApp(replay=[str(sweep.root)])
        async with app.run_test(size=(160, 40)) as pilot:
            await pilot.pause(0.3)
            await pilot.press("m", "down", "down", "m", "c")
            await pilot.pause(0.3)
            assert isinstance(app.screen, CompareScreen)
            assert [v.title for v in app.screen.views] == [sweep.cells[0].name, sweep.cells[2].name]
            header = str(app.screen.query_one("#compare-header").render())
            assert "model.activation=tanh" in header and "model.activation=sigmoid" in header

    asyncio.run(scenario())


def test_compare_header_says_when_the_runs_share_their_configuration():
    views = [six_layer_view(), six_layer_view()]
    assert "the same configuration" in compare_header(views, [{"a": 1}, {"a": 1}]).plain
    assert "no configuration diff" in compare_header(views, [{"a": 1}, {}]).plain


def test_the_compare_plane_draws_and_names_the_other_kde_bound():
    from test_tui_plane import kde_view, view_of

    views = [kde_view(), view_of({0: ([10.0, 8.0, 1.0], [0.2, 0.1, 0.05]), 300: ([9.0, 7.0, 1.5], [0.9, 0.85, 0.8])},
                                 planes=("kde_upper",))]
    key = compare_key(views, "kde_upper").plain
    assert "kde_lower, the other bound (A)" in key and "not a bracket" in key
    with_bound = "\n".join(plain(compare_figure(views, "kde_upper", 100, 30)))
    without = "\n".join(plain(compare_figure(views[1:] * 2, "kde_upper", 100, 30)))
    assert with_bound.count("•") >= without.count("•") + 2  # kde_lower's grey points


def test_the_compare_plane_marks_each_runs_drift_to_diffusion_point_once_reached(tmp_path):
    summary = execute(tiny_config(tmp_path, train={"gradient_stats": True, "epochs": 30},
                                  schedule={"kind": "every_n", "every": 1}))
    first = min(e for e in summary["gradient_phases"]["transition_epoch"] if e is not None)
    graded = RunView.from_run_dir(summary["run_dir"])
    views = [graded, six_layer_view()]
    assert "◇" in compare_figure(views, "binning", 100, 30)
    assert "drift→diffusion" in compare_key(views, "binning").plain and "(A: noise floor" in compare_key(views, "binning").plain
    before = max(e for e in graded.planes["binning"] if e < first)
    assert "◇" not in compare_figure(views, "binning", 100, 30, cursor=before)
    assert "drift→diffusion" not in compare_key(views, "binning", cursor=before).plain


def test_at_80x24_the_compare_key_still_shows_every_layer_and_the_entropies():
    from test_tui_plane import key_lines_at_80x24

    screen = CompareScreen([six_layer_view(), six_layer_view(epochs=(0, 2, 20, 200))])
    shown, _ = key_lines_at_80x24(screen, "compare-key")
    assert all(any(name[:7] in line for line in shown) for name in SIX)
    assert any("H(X) = 12.00" in line for line in shown)
