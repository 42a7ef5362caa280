"""Reading the plane: cursor lines on the curves and schedule, layers on and off, zoom and axis
ranges, log epochs, choosing the plane (list, palette, both directions), the log naming the plane
shown, and the whole at 80x24 and 120x40. Pilot tests over views and run directories made here."""

from __future__ import annotations

import asyncio
import re

import pytest

from conftest import tiny_config
from test_tui import FakeWorker, OneScreenApp, fake_stream, settle
from test_tui_plane import view_of
from ibtui.engine.runner import execute
from ibtui.tui.app import IbtuiApp, binding_rows
from ibtui.tui.plots import LAYER_MARKERS, curves_figure, plane_figure, schedule_figure
from ibtui.tui.run_screen import RunScreen
from ibtui.tui.state import (PlaneOptions, RunView, pan, parse_axis_range, plane_words, toggle_layer, zoom)
from ibtui.tui.widgets import AskScreen, ChoiceScreen

ANSI = re.compile(r"\x1b\[[0-9;]*m")
SIX = ["h1:10", "h2:7", "h3:5", "h4:4", "h5:3", "softmax:2"]


def plain(figure: str) -> list[str]:
    return ANSI.sub("", figure).splitlines()


def line_columns(figure: str) -> list[int]:
    """Columns inside a plot's frame where a vertical line (│) runs down most of the plot."""
    rows = plain(figure)
    frame = [i for i, row in enumerate(rows) if "┌" in row or "└" in row]
    inside = rows[frame[0] + 1:frame[-1]]
    left = rows[frame[0]].index("┌")
    right = rows[frame[0]].rindex("┐")
    width = max(len(r) for r in inside)
    return [c for c in range(left + 1, right) if sum(len(r) > c and r[c] in "│┼┬┴" for r in inside) >= len(inside) * 0.7
            and c < width]


def six_layer_view(epochs=(0, 1, 3, 10, 30, 100, 300, 1000)) -> RunView:
    view = RunView()
    view.apply({"type": "start", "run_dir": None,
                "meta": {"id": "six", "layers": SIX, "planes": ["binning", "kde_upper"], "h_x": 12.0, "h_y": 1.0,
                         "epochs_total": 1000, "batch_size": 256}})
    for i, epoch in enumerate(epochs):
        f = i / (len(epochs) - 1)
        ixt = [12.0, 12.0 - f, 11.0 - 2 * f, 8.5 + f, 6.0 + 2 * f - 3 * f * f, 1.0 + 0.5 * f]
        ity = [1.0, 1.0, 0.9 + 0.1 * f, 0.2 + 0.7 * f, 0.1 + 0.85 * f, 0.05 + 0.9 * f]
        for e in range(max(1, epoch - 5), epoch + 1):
            view.apply({"type": "epoch", "epoch": e, "epochs": 1000, "train_loss": 0.7 - 0.6 * f,
                        "train_acc": 0.5 + 0.45 * f, "test_acc": 0.5 + 0.4 * f})
        view.apply({"type": "measure", "epoch": epoch, "train_loss": 0.7 - 0.6 * f, "train_acc": 0.5 + 0.45 * f,
                    "test_acc": 0.5 + 0.4 * f,
                    "planes": {"binning": {"ixt": ixt, "ity": ity},
                               "kde_upper": {"ixt": [v * 0.9 for v in ixt], "ity": [v * 0.9 for v in ity]}}})
    view.apply({"type": "end", "status": "done", "summary": {"epochs_done": 1000}})
    return view


# ----------------------------------------------------------------------------- cursor lines (point 3)


def test_the_schedule_draws_a_vertical_line_at_the_cursor_epoch_and_none_without_one():
    view = six_layer_view()
    assert line_columns(schedule_figure(view, 60, 16)) == []
    early, late = (line_columns(schedule_figure(view, 60, 16, cursor=c)) for c in (100, 900))
    assert len(early) == 1 and len(late) == 1 and early[0] < late[0]


def test_the_curves_draw_a_vertical_line_at_the_cursor_epoch():
    view = six_layer_view()
    assert line_columns(curves_figure(view, 60, 16)) == []
    early, late = (line_columns(curves_figure(view, 60, 16, cursor=c)) for c in (100, 900))
    assert len(early) == 1 and len(late) == 1 and early[0] < late[0]


def test_the_cursor_lines_on_curves_and_schedule_follow_the_arrow_keys():
    screen = RunScreen(six_layer_view(), follow=False)

    async def scenario():
        async with OneScreenApp(screen).run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.2)
            assert line_columns(str(screen.query_one("#curves").render())) == []
            await pilot.press("end", "left", "left")
            await pilot.pause(0.2)
            assert screen.cursor == 100
            curves = line_columns(str(screen.query_one("#curves").render()))
            schedule = line_columns(str(screen.query_one("#schedule").render()))
            assert len(curves) == 1 and len(schedule) == 1
            await pilot.press("right")
            await pilot.pause(0.2)
            assert line_columns(str(screen.query_one("#curves").render()))[0] > curves[0]

    asyncio.run(scenario())


# ----------------------------------------------------------------------------- layers, zoom, log epochs (point 4)


def test_number_keys_hide_a_layer_from_the_plane_and_mark_it_in_the_key_then_show_it_again():
    screen = RunScreen(view_of(), follow=False)

    async def scenario():
        async with OneScreenApp(screen).run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.2)
            assert LAYER_MARKERS[2] in str(screen.query_one("#plane").render())
            await pilot.press("3")
            await pilot.pause(0.2)
            assert LAYER_MARKERS[2] not in str(screen.query_one("#plane").render())
            assert LAYER_MARKERS[1] in str(screen.query_one("#plane").render())
            row = next(r for r in str(screen.query_one("#key").render()).splitlines() if "softmax:2" in r)
            assert row.rstrip().endswith("hidden")
            await pilot.press("3")
            await pilot.pause(0.2)
            assert LAYER_MARKERS[2] in str(screen.query_one("#plane").render())

    asyncio.run(scenario())


def test_the_last_visible_layer_cannot_be_hidden_and_a_missing_layer_changes_nothing():
    options = PlaneOptions()
    for layer in (0, 1):
        options = toggle_layer(options, layer, 3)
    assert options.visible(3) == [2]
    assert toggle_layer(options, 2, 3) == options
    assert toggle_layer(PlaneOptions(), 7, 3) == PlaneOptions()


def test_zooming_in_halves_the_ranges_about_their_centre_and_zooming_out_again_shows_the_whole_plane():
    closer = zoom(PlaneOptions(), 12.0, 1.0, 0.5)
    assert closer.x == (3.0, 9.0) and closer.y == (0.25, 0.75)
    assert zoom(closer, 12.0, 1.0, 2.0) == PlaneOptions()


def test_panning_moves_a_zoomed_view_by_a_quarter_of_its_width_and_leaves_the_whole_plane_alone():
    closer = zoom(PlaneOptions(), 12.0, 1.0, 0.5)
    moved = pan(closer, 12.0, 1.0, -0.25, 0.25)
    assert moved.x == (1.5, 7.5) and moved.y == pytest.approx((0.375, 0.875))
    assert pan(PlaneOptions(), 12.0, 1.0, 0.25, 0) == PlaneOptions()


def test_plus_zooms_the_plane_and_0_resets_it():
    screen = RunScreen(view_of(), follow=False)

    async def scenario():
        async with OneScreenApp(screen).run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.2)
            before = str(screen.query_one("#plane").render())
            await pilot.press("plus")
            await pilot.pause(0.2)
            assert screen.options.zoomed
            after = str(screen.query_one("#plane").render())
            assert after != before and "zoomed (0 resets)" in after and "zoomed" in str(screen.query_one("#key").render())
            await pilot.press("0")
            await pilot.pause(0.2)
            assert not screen.options.zoomed and str(screen.query_one("#plane").render()) == before

    asyncio.run(scenario())


def test_axis_ranges_are_parsed_from_x_and_y_in_bits():
    options = parse_axis_range("x=0:6, y=0.2..1", PlaneOptions())
    assert options.x == (0.0, 6.0) and options.y == (0.2, 1.0)
    assert parse_axis_range("y=0:0.5", options).x == (0.0, 6.0)
    assert parse_axis_range("reset", options) == PlaneOptions()


@pytest.mark.parametrize("text", ["x=6:0", "x=a:b", "q=0:1", "x 0 6", "x=0:inf"])
def test_a_bad_axis_range_is_refused_with_a_message(text):
    with pytest.raises(ValueError, match="x=|LOW|finite"):
        parse_axis_range(text, PlaneOptions())


def test_z_asks_for_axis_ranges_and_draws_the_plane_in_them():
    screen = RunScreen(view_of(), follow=False)

    async def scenario():
        app = OneScreenApp(screen)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.2)
            await pilot.press("z")
            await pilot.pause(0.2)
            assert isinstance(app.screen, AskScreen)
            app.screen.query_one("#answer").value = ""
            await pilot.press(*"x=5:10 y=0:0.5", "enter")
            await pilot.pause(0.3)
            assert app.screen is screen and screen.options.x == (5.0, 10.0) and screen.options.y == (0.0, 0.5)
            ticks = plain(str(screen.query_one("#plane").render()))[-2]
            assert "5" in ticks and "10" in ticks and " 0 " not in ticks

    asyncio.run(scenario())


def test_l_puts_the_curves_epochs_on_a_log_scale_and_back():
    screen = RunScreen(six_layer_view(), follow=False)

    async def scenario():
        async with OneScreenApp(screen).run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.2)
            assert "log scale" not in str(screen.query_one("#curves").render())
            await pilot.press("l")
            await pilot.pause(0.2)
            curves = str(screen.query_one("#curves").render())
            assert "epoch, log scale" in curves and " 10 " in curves and " 100 " in curves
            await pilot.press("l")
            await pilot.pause(0.2)
            assert "log scale" not in str(screen.query_one("#curves").render())

    asyncio.run(scenario())


def test_shift_p_goes_back_to_the_previous_estimator_and_p_forward_wrapping_around():
    screen = RunScreen(view_of(planes=("binning", "kde_upper", "kde_lower")), follow=False)

    async def scenario():
        async with OneScreenApp(screen).run_test(size=(120, 40)) as pilot:
            await pilot.press("P")
            assert screen.plane == "kde_lower"
            await pilot.press("P")
            assert screen.plane == "kde_upper"
            await pilot.press("p", "p")
            assert screen.plane == "binning"

    asyncio.run(scenario())


def test_c_lists_every_estimator_and_enter_shows_the_chosen_one():
    screen = RunScreen(view_of(planes=("binning", "kde_upper", "kde_lower")), follow=False)

    async def scenario():
        app = OneScreenApp(screen)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("c")
            await pilot.pause(0.2)
            assert isinstance(app.screen, ChoiceScreen)
            options = app.screen.query_one("#choices")
            assert [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)] == [
                "binning  (binning by bin size)", "kde_upper  (KDE upper bound)", "kde_lower  (KDE lower bound)"]
            await pilot.press("down", "down", "enter")
            await pilot.pause(0.2)
            assert app.screen is screen and screen.plane == "kde_lower"
            assert "kde_lower · epoch 300" in str(screen.query_one("#plane").render())

    asyncio.run(scenario())


def test_the_command_palette_shows_a_chosen_estimator():
    screen = RunScreen(view_of(planes=("binning", "kde_upper", "kde_lower")), follow=False)

    async def scenario():
        app = OneScreenApp(screen)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("ctrl+p")
            await pilot.pause(0.2)
            await pilot.press(*"Estimator: kde_lower")
            await pilot.pause(0.5)
            await pilot.press("enter")
            await pilot.pause(0.3)
            assert screen.plane == "kde_lower"

    asyncio.run(scenario())


def test_every_navigation_action_has_a_key_in_the_help_and_an_entry_in_the_palette():
    screen = RunScreen(view_of(), follow=False)
    app = IbtuiApp()
    rows = dict(binding_rows(screen, app))
    for key in ("p", "P", "c", "1–9", "+, =", "-", "shift+←", "0", "z", "l"):
        assert key in rows, key
    assert rows["1–9"] == "Layer N on/off"  # one row in the help for the nine layer keys
    descriptions = set(rows.values())
    wanted = {"Estimator", "◀ Estimator", "Choose estimator…", "Zoom in", "Zoom out", "Pan left",
              "Reset zoom", "Axis range…", "Log epochs (curves)"}
    assert wanted <= descriptions

    async def scenario():
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.1)
            app.push_screen(screen)
            await pilot.pause(0.1)
            titles = {c.title for c in app.get_system_commands(app.screen)}
            assert wanted | {"Layer 1 on/off", "Layer 9 on/off"} <= titles

    asyncio.run(scenario())


# ----------------------------------------------------------------------------- what is drawn (point 5)


def test_the_log_reports_measurements_of_the_plane_on_screen_in_words():
    screen = RunScreen(RunView(), worker=FakeWorker(fake_stream()[:3], stays_alive=True))

    async def scenario():
        async with OneScreenApp(screen).run_test(size=(120, 40)) as pilot:
            await settle(pilot, screen, lambda: screen.view.epochs == [0])
            await pilot.press("p")
            for event in fake_stream()[3:6]:
                screen.worker.events.put(event)
            await settle(pilot, screen, lambda: screen.view.epochs == [0, 2])
            await pilot.pause(0.6)
            log = [line.text for line in screen.query_one("#log").lines]
            assert any(line.startswith("showing kde_upper: KDE upper bound") for line in log)
            last = next(line for line in reversed(log) if line.startswith("epoch 2"))
            assert "kde_upper (KDE upper bound)" in last and "binning" not in last and "bits" in last

    asyncio.run(scenario())


def test_plane_names_are_said_in_words_without_the_estimators_jargon():
    assert plane_words("binning_fixed") == "binning into equal-width bins"
    assert plane_words("binning_adaptive~sgd") == "binning into equal-mass bins, weights as if random (sgd)"
    assert plane_words("binning_fixed[bins=8]") == "binning into equal-width bins, re-analysis bins=8"


def test_the_family_plane_has_axis_titles_with_units():
    from ibtui.tui.plots import family_figure

    view = six_layer_view()
    view.families = {"binning-bin_size": ["binning", "kde_upper"]}
    text = "\n".join(plain(family_figure(view, "binning-bin_size", 4, 80, 20)))
    assert "I(X;T), bits" in text and "I(T;Y), bits" in text


def test_every_plot_has_axis_titles_with_units():
    view = six_layer_view()
    plane = "\n".join(plain(plane_figure(view, "binning", 80, 20)))
    schedule = "\n".join(plain(schedule_figure(view, 60, 12)))
    curves = "\n".join(plain(curves_figure(view, 60, 12)))
    assert "I(X;T), bits" in plane and "I(T;Y), bits" in plane
    assert "epochs until next measurement" in schedule and "epoch" in schedule.splitlines()[-1]
    assert "loss (nats)" in curves and "accuracy" in curves and "epoch" in curves.splitlines()[-1]


# ----------------------------------------------------------------------------- sizes


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
def test_every_layer_and_its_numbers_are_readable_beside_the_plane(size):
    screen = RunScreen(six_layer_view(), follow=False)

    async def scenario():
        async with OneScreenApp(screen).run_test(size=size) as pilot:
            await pilot.pause(0.3)
            plane = str(screen.query_one("#plane").render())
            assert all(marker in plane for marker in LAYER_MARKERS[:6]) and "I(X;T), bits" in plane
            key = str(screen.query_one("#key").render()).splitlines()
            visible = key[:screen.query_one("#key").content_size.height]
            for name in SIX:
                row = next(r for r in visible if name in r)
                assert re.search(r"\d+\.\d\d.* \d\.\d\d", row), row
            assert any("epoch ■0" in r for r in visible)
            curves = screen.query_one("#curves")
            assert curves.content_size.height >= 5 and "loss (nats)" in str(curves.render())

    asyncio.run(scenario())


def test_a_short_terminal_drops_the_schedule_so_the_key_keeps_every_layer():
    screen = RunScreen(six_layer_view(), follow=False)

    async def scenario():
        async with OneScreenApp(screen).run_test(size=(80, 24)) as pilot:
            await pilot.pause(0.2)
            assert not screen.query_one("#schedule").display
            await pilot.resize_terminal(120, 40)
            await pilot.pause(0.3)
            assert screen.query_one("#schedule").display and screen.query_one("#schedule").content_size.height > 4

    asyncio.run(scenario())


def test_export_of_a_plane_with_hidden_layers_draws_only_the_shown_layers(tmp_path, monkeypatch):
    import ibtui.export as export_module

    run = execute(tiny_config(tmp_path))["run_dir"]
    calls = []
    real = export_module.export
    monkeypatch.setattr(export_module, "export", lambda *a, **k: calls.append(k) or real(*a, **k))
    screen = RunScreen(RunView.from_run_dir(run), follow=False)

    async def scenario():
        async with OneScreenApp(screen).run_test(size=(120, 40)) as pilot:
            await pilot.press("1", "6", "e")
            await pilot.pause(0.3)

    asyncio.run(scenario())
    assert calls and calls[0]["layers"] == [1, 2, 3, 4]


def test_export_of_a_plane_at_the_cursor_draws_it_up_to_that_epoch(tmp_path, monkeypatch):
    import ibtui.export as export_module

    run = execute(tiny_config(tmp_path))["run_dir"]
    calls = []
    real = export_module.export
    monkeypatch.setattr(export_module, "export", lambda *a, **k: calls.append(k) or real(*a, **k))
    screen = RunScreen(RunView.from_run_dir(run), follow=False)

    async def scenario():
        async with OneScreenApp(screen).run_test(size=(120, 40)) as pilot:
            await pilot.press("home", "right", "e")
            await pilot.pause(0.3)

    asyncio.run(scenario())
    assert calls[0]["until"] == 3 and calls[0]["stem"].endswith("binning-epoch3")
    written = {p.name for p in (tmp_path / run.split("/")[-1] / "export").iterdir()}
    assert any(name.endswith("-binning-epoch3.csv") for name in written)


def test_a_short_curves_plot_names_its_epoch_axis_in_the_title_and_keeps_the_row_for_data():
    short, tall = (plain(curves_figure(six_layer_view(), 40, h)) for h in (8, 16))
    assert "by epoch" in short[0] and not any(line.strip() == "epoch" for line in short)
    assert any(line.strip().endswith("epoch") and "by" not in line for line in tall[-2:])
    data_rows = [line for line in short if "│" in line and "┌" not in line and "└" not in line]
    assert len(data_rows) >= 4  # 8 rows: title, frame top, 4 data rows, frame bottom, ticks


def test_the_help_merges_runs_of_digit_keys_that_differ_only_in_the_digit():
    from ibtui.tui.app import merged_digit_rows

    rows = [("p", "Estimator"), *[(str(n), f"Layer {n} on/off") for n in range(1, 4)], ("0", "Reset zoom"),
            ("5", "Layer 5 on/off")]
    assert merged_digit_rows(rows) == [("p", "Estimator"), ("1–3", "Layer N on/off"), ("0", "Reset zoom"),
                                       ("5", "Layer 5 on/off")]
