"""The exceptions symode raises.

Every error is a :class:`SymodeError` and also subclasses the builtin it refines, so
``except ValueError`` keeps working for users who do not know symode's tree.
"""

from __future__ import annotations

import enum

import numpy as np

from .kernels import status as _codes

__all__ = [
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
]


class SymodeError(Exception):
    """Base class of every error symode raises."""


class SystemDefinitionError(SymodeError, ValueError):
    """An ODE system was defined inconsistently."""


class UndeclaredSymbolError(SystemDefinitionError):
    """A free symbol of the right-hand side is neither a state, a parameter nor time."""


class InvalidStateError(SymodeError, TypeError):
    """A state, parameter or right-hand side is not the SymPy object it must be."""


class DuplicateSymbolError(SystemDefinitionError):
    """A symbol is declared twice, or both as a state and as a parameter."""


class ShapeError(SymodeError, ValueError):
    """An array argument has the wrong shape."""


class NonFiniteInputError(SymodeError, ValueError):
    """An input array holds NaN or infinity."""


class UnsupportedFunctionError(SymodeError, TypeError):
    """A code printer met a function it cannot translate."""


class IntegrationError(SymodeError, RuntimeError):
    """An integration failed (raised when ``throw=True``)."""

    def __init__(self, message: str, failed=()):
        super().__init__(message)
        self.failed = tuple(failed)


class Status(enum.IntEnum):
    """Result codes written by the compiled kernels, one per trajectory (defined once,
    in kernels/status.py), with their messages."""

    SUCCESS = _codes.SUCCESS
    MAX_STEPS = _codes.MAX_STEPS
    STEP_UNDERFLOW = _codes.STEP_UNDERFLOW
    NONFINITE = _codes.NONFINITE
    BAD_T_EVAL = _codes.BAD_T_EVAL  # the engine found t_eval out of order: an input error

    def describe(self, t: float, h: float) -> str:
        """The message for this code, naming where it happened and what to try."""
        if self is Status.SUCCESS:
            return "The solver successfully reached the end of the integration interval."
        if self is Status.MAX_STEPS:
            return (
                f"max_steps reached at t={t:.17g} (step size {h:.3g}). "
                "Try increasing `max_steps`, loosening rtol/atol, or, for a stiff problem, "
                "method='Radau', 'BDF' or 'LSODA'."
            )
        if self is Status.STEP_UNDERFLOW:
            return (
                f"Step size underflow at t={t:.17g}: the step size {h:.3g} fell below dt_min "
                "or below the spacing of floating-point numbers near t. The solution may be "
                "singular there (finite-time blow-up) or the problem stiff (then try "
                "method='Radau', 'BDF' or 'LSODA')."
            )
        if self is Status.BAD_T_EVAL:
            return "t_eval is not strictly monotone in the direction of integration"
        return (
            f"Non-finite state (NaN or inf) appeared in the step from t={t:.17g} with step "
            f"size {h:.3g} (an adaptive method shrinks a failing step first; a fixed-step "
            "method cannot): a blow-up or a domain error in the right-hand side, e.g. log "
            "of a negative number."
        )


# Status.BAD_T_EVAL as a plain int, for comparisons with the engine's int64 codes:
# comparing numpy integers with an IntEnum member costs 6-15 µs per call
BAD_T_EVAL_CODE = int(Status.BAD_T_EVAL)


def t_eval_error(t_eval) -> SymodeError:
    """The input error for a t_eval the engine found out of order (Status.BAD_T_EVAL):
    the engine checks the order, in scalar code, so the Python side need not run wide
    vector instructions before every solve."""
    if not np.isfinite(t_eval).all():
        return NonFiniteInputError("t_eval contains NaN or infinity")
    return ShapeError("t_eval must be strictly monotone in the direction of integration")
