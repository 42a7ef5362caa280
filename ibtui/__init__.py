"""ibtui: information-plane research in the terminal.

One headless engine (``ibtui.engine``), estimators of mutual information in bits
(``ibtui.estimators``) and several front doors (``ibtui.cli``).
"""

__version__ = "0.1.0"
