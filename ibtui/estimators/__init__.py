"""Mutual-information estimators, in bits, batched in torch on any device.

>>> from ibtui.estimators import Binning, MISet
>>> planes = Binning(bin_size=0.07).estimate(layers, MISet.from_arrays(x, y))

``ESTIMATORS`` maps the registry name used in presets (``[estimators.NAME]``) to its class.
"""

from ibtui.estimators.adaptive import AdaptiveBinning
from ibtui.estimators.base import Estimator, MISet, Plane, plug_in_entropy_bits
from ibtui.estimators.binning import Binning, FixedBinning
from ibtui.estimators.discrete import Discrete
from ibtui.estimators.gae import GeometricAdaptive
from ibtui.estimators.gaussian import Gaussian
from ibtui.estimators.infonce import InfoNCE
from ibtui.estimators.kde import KDE
from ibtui.estimators.ksg import KSG
from ibtui.estimators.lga import LocalGaussian
from ibtui.estimators.noisy import NoisyMixture

ESTIMATORS: dict[str, type[Estimator]] = {
    cls.kind: cls
    for cls in (FixedBinning, Binning, KDE, AdaptiveBinning, Discrete, Gaussian, KSG, LocalGaussian, GeometricAdaptive,
                NoisyMixture, InfoNCE)
}

__all__ = ["ESTIMATORS", "AdaptiveBinning", "Binning", "Discrete", "Estimator", "FixedBinning", "Gaussian",
           "GeometricAdaptive", "InfoNCE", "KDE", "KSG", "LocalGaussian", "MISet", "NoisyMixture", "Plane",
           "plug_in_entropy_bits"]
