"""The accuracy-table script (benchmarks/estimator_accuracy.py) on a tiny setting.

Checks that its report has a row for every registered estimator (every plane) in every table
and in the headline, and that its Monte-Carlo truth for family (a) matches an independent
numerical integration.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import integrate
from scipy.special import expit
from scipy.stats import norm

from ibtui.estimators import ESTIMATORS

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "estimator_accuracy.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("estimator_accuracy", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_mixture_truth_matches_quadrature(script):
    """I(T;Y) = 1 − ∫ p(t) h2(p(Y=1|t)) dt for the d = 1 mixture, by quad; the truth is d-independent."""
    mu = script.MU

    def integrand(t: float) -> float:
        q = float(expit(2.0 * mu * t))  # exact posterior, stable in the tails
        h = -sum(v * math.log2(v) for v in (q, 1.0 - q) if v > 0)
        return 0.5 * (norm.pdf(t - mu) + norm.pdf(t + mu)) * h

    expected = 1.0 - integrate.quad(integrand, -np.inf, np.inf, epsabs=1e-12, limit=200)[0]
    # Monte-Carlo standard error at 1e6 draws is about 3e-4 bits: 1e-3 is > 3 standard errors.
    assert script.mixture_truth_bits(dist="gauss", n_mc=1_000_000, seed=0) == pytest.approx(expected, abs=1e-3)


def test_report_has_a_row_per_estimator(script):
    report = script.run_benchmark(n=256, sizes=(128, 256), seed=0, timing_repeats=0, n_mc=20_000)
    text = script.render_markdown(report, "python benchmarks/estimator_accuracy.py (test)")
    planes = [plane for kind, cls in ESTIMATORS.items() for plane in cls().planes]
    assert {kind for _, kind in script.estimator_rows()} == set(ESTIMATORS)
    sections = text.split("\n### ")
    assert len(sections) - 1 == len(report.tables) >= 6
    for section in [sections[0], *sections[1:]]:  # headline, then one section per family table
        rows = {line.split("|")[1].strip() for line in section.splitlines() if line.startswith("| ")}
        missing = [plane for plane in planes if plane not in rows]
        assert not missing, f"rows missing in section {section[:60]!r}: {missing}"
    for table in report.tables:
        assert set(table.cells) == set(planes)
        assert all(len(values) == len(table.columns) == len(table.truth) for values in table.cells.values())
    # Family (d) is exact for the plug-in estimators: the discrete estimator has zero error there.
    table_d = next(t for t in report.tables if t.key == "d")
    assert max(table_d.errors("discrete")) < 1e-9
    assert len(table_d.errors("discrete")) == len(table_d.columns)


def test_the_accuracy_document_was_produced_by_the_installed_estimators():
    """docs/estimators.md records the digest of the estimator sources it measured; a change to any
    estimator makes this fail until the document is regenerated (python benchmarks/estimator_accuracy.py)."""
    import re

    from ibtui.estimators import sources_digest

    document = (Path(__file__).resolve().parents[1] / "docs" / "estimators.md").read_text(encoding="utf-8")
    recorded = re.search(r"Estimator sources: `sha256:([0-9a-f]{64})`", document)
    assert recorded, "docs/estimators.md records no estimator digest: regenerate it"
    assert recorded.group(1) == sources_digest(), (
        "docs/estimators.md was produced by other estimator sources: run python benchmarks/estimator_accuracy.py")


def test_the_accuracy_document_keeps_label_information_within_h_y():
    """Every I(T;Y) of the plug-in and mixture estimators in docs/estimators.md is at most H(Y):
    1 bit in families (a)–(c) (two equiprobable classes), log2 C for Y = T mod C in (d)."""
    import re

    bounded = {"binning", "binning_fixed", "binning_adaptive", "discrete", "noisy_mc"}
    document = (Path(__file__).resolve().parents[1] / "docs" / "estimators.md").read_text(encoding="utf-8")
    checked = 0
    for section in document.split("\n### ")[1:]:
        family = section[:3]
        if family not in ("(a)", "(b)", "(c)", "(d)"):
            continue
        lines = [line for line in section.splitlines() if line.startswith("| ")]
        header = [c.strip() for c in lines[0].split("|")[1:-1]]
        for line in lines[1:]:
            cells = [c.strip() for c in line.split("|")[1:-1]]
            if cells[0] not in bounded:
                continue
            for column, cell in zip(header[1:], cells[1:]):
                if family == "(d)":
                    if not column.endswith("I(T;Y)"):
                        continue
                    h_y = math.log2(int(re.search(r"Y = T mod (\d+)", column).group(1)))
                else:
                    h_y = 1.0
                value = cell.split(" ")[0]
                if value not in ("n/a", "nan"):
                    checked += 1
                    assert float(value) <= h_y + 5e-4, f"{cells[0]}: I(T;Y) = {value} > H(Y) = {h_y} ({column})"
    assert checked > 50
