"""Exporting an information plane: CSV, hand-written SVG, optional PNG."""

from __future__ import annotations

import csv
import importlib.util
import xml.etree.ElementTree as ET

import pytest

from ibtui.errors import UserError
from ibtui.tui.export import RAMP, epoch_colour, export_plane
from ibtui.tui.state import RunView

SVG = "{http://www.w3.org/2000/svg}"
POINTS = {  # epoch → (ixt per layer, ity per layer); measured out of order on purpose
    1: ([3.25, 1.0], [0.5, 0.25]),
    9: ([11.123456789012345, 2.0], [0.98765432109876, 0.875]),
    4: ([7.5, 1.5], [0.75, 0.5]),
}


def make_view(tmp_path, points=POINTS) -> RunView:
    view = RunView()
    view.apply({"type": "start", "run_dir": str(tmp_path),
                "meta": {"id": "r1", "layers": ["h1:3", "softmax:2"], "planes": ["binning"],
                         "h_x": 12.0, "h_y": 1.0, "epochs_total": 10}})
    for epoch, (ixt, ity) in points.items():
        view.apply({"type": "measure", "epoch": epoch,
                    "planes": {"binning": {"ixt": ixt, "ity": ity}}, "schedule": {"decision": "fixed"}})
    return view


def test_csv_round_trips_exact_numbers_in_epoch_order(tmp_path):
    (path,) = export_plane(make_view(tmp_path), "binning", tmp_path / "out", formats=["csv"])
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["plane", "layer", "layer_index", "epoch", "ixt_bits", "ity_bits"]
    got = [(r["plane"], r["layer"], int(r["layer_index"]), int(r["epoch"]),
            float(r["ixt_bits"]), float(r["ity_bits"])) for r in rows]
    want = [("binning", ["h1:3", "softmax:2"][i], i, e, POINTS[e][0][i], POINTS[e][1][i])
            for e in sorted(POINTS) for i in range(2)]
    assert got == want


def test_svg_parses_with_one_polyline_per_layer_and_one_circle_per_point(tmp_path):
    (path,) = export_plane(make_view(tmp_path), "binning", tmp_path, formats=["svg"])
    root = ET.parse(path).getroot()
    assert root.tag == f"{SVG}svg"
    assert len(root.findall(f".//{SVG}polyline")) == 2
    assert len(root.findall(f".//{SVG}circle")) == 2 * len(POINTS)
    text = " ".join(t.text or "" for t in root.iter(f"{SVG}text"))
    assert "r1" in text and "binning" in text


def test_files_land_in_out_dir_and_nothing_else(tmp_path):
    out = tmp_path / "a" / "b"
    written = export_plane(make_view(tmp_path), "binning", out)
    assert all(p.parent == out for p in written)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in written)
    assert {"r1-binning.csv", "r1-binning.svg"} <= {p.name for p in written}


def test_unknown_plane_is_a_user_error_listing_the_planes(tmp_path):
    with pytest.raises(UserError, match="binning"):
        export_plane(make_view(tmp_path), "kde", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_plane_without_measured_epochs_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="nothing to export yet"):
        export_plane(make_view(tmp_path, points={}), "binning", tmp_path / "out")


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="matplotlib not installed")
def test_png_is_written_when_matplotlib_is_present(tmp_path):
    written = export_plane(make_view(tmp_path), "binning", tmp_path, formats=["png"])
    assert [p.name for p in written] == ["r1-binning.png"]
    assert written[0].read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_png_is_absent_from_the_result_without_matplotlib(tmp_path, monkeypatch):
    import ibtui.tui.export as export

    monkeypatch.setattr(export, "have_matplotlib", lambda: False)
    written = export_plane(make_view(tmp_path), "binning", tmp_path)
    assert [p.suffix for p in written] == [".csv", ".svg"]
    assert not (tmp_path / "r1-binning.png").exists()


def test_epoch_colour_runs_from_first_stop_to_last_stop_monotonically():
    assert epoch_colour(1, 1, 100) == RAMP[0]
    assert epoch_colour(100, 1, 100) == RAMP[-1]
    brightness = [sum(epoch_colour(e, 1, 100)) for e in (1, 2, 5, 20, 100)]
    assert brightness == sorted(brightness)
