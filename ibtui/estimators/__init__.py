"""Mutual-information estimators, in bits, batched in torch on any device.

>>> from ibtui.estimators import Binning, MISet
>>> planes = Binning(bin_size=0.07).estimate(layers, MISet.from_arrays(x, y))

``ESTIMATORS`` maps the registry name used in presets (``[estimators.NAME]``) to its class.
"""

from ibtui.estimators.base import Estimator, MISet, Plane, plug_in_entropy_bits
from ibtui.estimators.binning import Binning, FixedBinning
from ibtui.estimators.kde import KDE

ESTIMATORS: dict[str, type[Estimator]] = {cls.kind: cls for cls in (FixedBinning, Binning, KDE)}

__all__ = ["ESTIMATORS", "Binning", "Estimator", "FixedBinning", "KDE", "MISet", "Plane", "plug_in_entropy_bits"]
