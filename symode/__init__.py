"""symode: ODE dynamics written in SymPy, compiled to fast solvers with exact gradients."""

__version__ = "0.1.0"

import logging as _logging

# symode's own logger says when a first call compiles (a long silence looks like a
# hang): INFO lines on stderr unless the application configures the "symode" logger
_log = _logging.getLogger("symode")
if not _log.handlers:
    _handler = _logging.StreamHandler()
    _handler.setFormatter(_logging.Formatter("%(message)s"))
    _log.addHandler(_handler)
    _log.setLevel(_logging.INFO)
    _log.propagate = False

from .cnf import CNF  # noqa: E402
from .densities import DiagonalGaussian, ksd  # noqa: E402
from .errors import (  # noqa: E402
    DuplicateSymbolError,
    IntegrationError,
    InvalidStateError,
    NonFiniteInputError,
    ShapeError,
    Status,
    SymodeError,
    SystemDefinitionError,
    UndeclaredSymbolError,
    UnsupportedFunctionError,
)
from .gradients import Gradient  # noqa: E402
from .ivp import solve_ivp  # noqa: E402
from .model import Model, Solution  # noqa: E402
from .system import AdjointEquations, Loss, ODESystem, SensitivityEquations  # noqa: E402
from .tableaus import TABLEAUS, ButcherTableau  # noqa: E402

__all__ = [
    "ODESystem",
    "Model",
    "Solution",
    "Gradient",
    "solve_ivp",
    "ButcherTableau",
    "TABLEAUS",
    "Loss",
    "AdjointEquations",
    "SensitivityEquations",
    "SymodeError",
    "SystemDefinitionError",
    "UndeclaredSymbolError",
    "InvalidStateError",
    "DuplicateSymbolError",
    "ShapeError",
    "NonFiniteInputError",
    "UnsupportedFunctionError",
    "IntegrationError",
    "Status",
    "DiagonalGaussian",
    "ksd",
    "CNF",
]


def __getattr__(name):
    """``symode.testing`` after ``import symode``, as ``numpy.testing`` (imported on
    first use)."""
    if name == "testing":
        import importlib

        return importlib.import_module(".testing", __name__)
    raise AttributeError(f"module 'symode' has no attribute {name!r}")
