"""Mutual-information estimators, in bits, batched in torch on any device.

>>> from ibtui.estimators import Binning, MISet
>>> planes = Binning(bin_size=0.07).estimate(layers, MISet.from_arrays(x, y))

``ESTIMATORS`` maps the registry name used in presets (``[estimators.NAME]``) to its class.
"""

from ibtui.estimators.adaptive import AdaptiveBinning
from ibtui.estimators.base import Estimator, MISet, Plane, PooledPlane, conditional_cap_bits, plug_in_entropy_bits
from ibtui.estimators.binning import Binning, FixedBinning
from ibtui.estimators.discrete import Discrete
from ibtui.estimators.edge import EDGE
from ibtui.estimators.gae import GeometricAdaptive
from ibtui.estimators.gaussian import Gaussian
from ibtui.estimators.infonce import InfoNCE
from ibtui.estimators.kde import KDE
from ibtui.estimators.ksg import KSG
from ibtui.estimators.lga import LocalGaussian
from ibtui.estimators.noisy import NoisyMixture
from ibtui.estimators.renyi import MatrixRenyi

def sources_digest() -> str:
    """SHA-256 of the estimator modules' sources (their file names and bytes, in name order): it
    identifies the version of the estimators that produced a document such as docs/estimators.md."""
    import hashlib
    from pathlib import Path

    digest = hashlib.sha256()
    for path in sorted(Path(__file__).resolve().parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


ESTIMATORS: dict[str, type[Estimator]] = {
    cls.kind: cls
    for cls in (FixedBinning, Binning, KDE, AdaptiveBinning, Discrete, Gaussian, KSG, LocalGaussian, GeometricAdaptive,
                NoisyMixture, InfoNCE, MatrixRenyi, EDGE)
}



def _register_plugins() -> None:
    """Estimators of other packages, declared in the entry-point group ``ibtui.estimators``
    (``[project.entry-points."ibtui.estimators"] name = "package.module:Class"``): each an
    ``Estimator`` subclass with its own ``kind``; a broken one is skipped with a warning."""
    import warnings
    from importlib.metadata import entry_points

    for point in entry_points(group="ibtui.estimators"):
        try:
            cls = point.load()
        except Exception as exc:  # a third party's import error must not break ibtui
            warnings.warn(f"estimator plugin {point.name!r} could not be loaded: {exc}", stacklevel=2)
            continue
        if not (isinstance(cls, type) and issubclass(cls, Estimator) and cls.kind):
            warnings.warn(f"estimator plugin {point.name!r} is not an Estimator subclass with a kind", stacklevel=2)
        elif cls.kind not in ESTIMATORS:
            ESTIMATORS[cls.kind] = cls


_register_plugins()

__all__ = ["ESTIMATORS", "AdaptiveBinning", "Binning", "Discrete", "EDGE", "Estimator", "FixedBinning", "Gaussian",
           "GeometricAdaptive", "InfoNCE", "KDE", "KSG", "LocalGaussian", "MatrixRenyi", "MISet", "NoisyMixture", "Plane", "PooledPlane",
           "conditional_cap_bits", "sources_digest",
           "plug_in_entropy_bits"]
