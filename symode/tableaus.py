"""Explicit Runge--Kutta methods as exact data.

Every method is a :class:`ButcherTableau` whose coefficients are
:class:`fractions.Fraction` values. A tableau checks its own consistency when
it is constructed (shapes, strict lower triangularity, row sums, weight sums,
FSAL structure, continuity of the dense output at ``theta = 1``) and exports
``numpy`` arrays for a generic explicit Runge--Kutta stepper through
:meth:`ButcherTableau.arrays`.

Conventions
-----------
For an ``s``-stage method with step ``h`` from ``(t0, y0)``::

    k_i = f(t0 + c_i h, y0 + h * sum_j a_ij k_j)       i = 0 .. s-1
    y1  = y0 + h * sum_i b_i k_i                       (order ``order``)
    err = h * sum_i b_err_i k_i                        (= y1 - y1_hat)

where ``y1_hat = y0 + h * sum_i b_hat_i k_i`` is the embedded solution of
order ``error_order`` and ``b_err = b - b_hat``.

Dense output uses the stage vector ``K`` of length ``s + 1 + m``::

    K = [k_0, ..., k_{s-1}, f1, x_0, ..., x_{m-1}]
    f1  = f(t0 + h, y1)
    x_j = f(t0 + extra_c_j h, y0 + h * sum_r extra_a_jr K_r)   j = 0 .. m-1
    y(t0 + theta h) = y0 + h * sum_r b_r(theta) K_r,
    b_r(theta) = sum_q P[r, q] theta**(q + 1)

where the ``m`` extra stages (only DOP853 has any, ``m = 3``) are evaluated
after a step has been accepted, in order, each using ``K_r`` for ``r < s + 1 + j``
only. ``P`` is :meth:`ButcherTableau.dense_matrix` (``arrays()[4]``), the extra
stages' data is :meth:`ButcherTableau.extra_arrays`.

Exactness
---------
The classical methods, Bogacki--Shampine and Dormand--Prince 5(4) have
rational coefficients and are stored exactly. Tsitouras 5(4) and
Dormand--Prince 8(5,3) have irrational coefficients that the literature gives
only as decimal expansions; those tableaus hold ``Fraction(decimal_string)``
of the longest published expansion, and their consistency identities hold only
up to the published digits. Such a tableau carries a nonzero ``tol``, the
absolute tolerance used by its self-checks; for the rational ones ``tol == 0``
and every check is exact.

References
----------
.. [HNW] E. Hairer, S. P. Norsett, G. Wanner, "Solving Ordinary Differential
   Equations I: Nonstiff Problems", 2nd ed., Springer, 1993, Sections
   II.4 (embedded methods, DOPRI5), II.5 (DOP853) and II.6 (dense output).
.. [DP80] J. R. Dormand, P. J. Prince, "A family of embedded Runge-Kutta
   formulae", J. Comput. Appl. Math. 6(1), 19-26, 1980.
.. [PD81] P. J. Prince, J. R. Dormand, "High order embedded Runge-Kutta
   formulae", J. Comput. Appl. Math. 7(1), 67-75, 1981.
.. [BS89] P. Bogacki, L. F. Shampine, "A 3(2) pair of Runge-Kutta formulas",
   Appl. Math. Lett. 2(4), 321-325, 1989.
.. [Sh86] L. F. Shampine, "Some practical Runge-Kutta formulas", Math. Comp.
   46(173), 135-150, 1986 (the DOPRI5 continuous extension).
.. [Ts11] Ch. Tsitouras, "Runge-Kutta pairs of order 5(4) satisfying only the
   first column simplifying assumption", Comput. Math. Appl. 62(2), 770-775,
   2011.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

__all__ = [
    "METHOD_IDS",
    "ButcherTableau",
    "TABLEAUS",
    "get_tableau",
    "kernel_tables",
    "packed_tableau",
]

_ZERO = Fraction(0)
_ONE = Fraction(1)

# Cubic Hermite basis on [0, 1] as coefficients of theta**1, theta**2, theta**3
# (none of them has a constant term):
#   h01 = 3 t^2 - 2 t^3   (weight of y1 - y0)
#   h10 = t - 2 t^2 + t^3  (weight of h f0)
#   h11 = -t^2 + t^3       (weight of h f1)
_H01 = (_ZERO, Fraction(3), Fraction(-2))
_H10 = (_ONE, Fraction(-2), _ONE)
_H11 = (_ZERO, Fraction(-1), _ONE)


def _fraction(x: Fraction | int | str) -> Fraction:
    """Convert an exact scalar (Fraction, int or decimal/rational string) to Fraction."""
    if isinstance(x, bool) or not isinstance(x, Fraction | int | str):
        raise TypeError(
            f"tableau entries must be Fraction, int or str (exact), got {type(x).__name__}: {x!r}"
        )
    return Fraction(x)


def _vector(xs: Iterable[Fraction | int | str]) -> tuple[Fraction, ...]:
    return tuple(_fraction(x) for x in xs)


def _matrix(rows: Iterable[Iterable[Fraction | int | str]]) -> tuple[tuple[Fraction, ...], ...]:
    return tuple(_vector(row) for row in rows)


def _lower(rows: Sequence[Sequence[Fraction | int | str]]) -> tuple[tuple[Fraction, ...], ...]:
    """Pad the ragged strictly-lower rows ``rows[i]`` (length ``i``) to an ``s x s`` matrix."""
    s = len(rows)
    out = []
    for i, row in enumerate(rows):
        if len(row) > i:
            raise ValueError(f"row {i} of a strictly lower triangular matrix has {len(row)} > {i}")
        out.append(_vector(row) + (_ZERO,) * (s - len(row)))
    return tuple(out)


def _round_to(x: Fraction, dtype: np.dtype) -> np.floating:
    """Round the exact value ``x`` to the binary floating type ``dtype`` (nearest, ties to even).

    ``float(Fraction)`` is correctly rounded to float64. A narrower type would
    suffer double rounding through float64, so the float64 value is only used
    as a first guess and the nearest of it and its two neighbours is taken.
    """
    approx = float(x)
    if dtype == np.float64:
        return np.float64(approx)
    guess = dtype.type(approx)
    candidates = (
        np.nextafter(guess, dtype.type(-np.inf)),
        guess,
        np.nextafter(guess, dtype.type(np.inf)),
    )
    uint = np.dtype(f"u{dtype.itemsize}")

    def key(v: np.floating) -> tuple[Fraction, int]:
        odd = int(np.array(v, dtype=dtype).view(uint)) & 1
        return abs(Fraction(float(v)) - x), odd

    return min((v for v in candidates if np.isfinite(v)), key=key)


def _float_dtype(dtype: np.dtype | type) -> np.dtype:
    dt = np.dtype(dtype)
    if dt.kind != "f" or dt.itemsize > 8:
        raise ValueError(f"dtype must be float16, float32 or float64, got {dt}")
    return dt


def _convert(
    rows: Sequence[Sequence[Fraction]], shape: tuple[int, ...], *, dtype: np.dtype
) -> np.ndarray:
    """Correctly rounded ``dtype`` array of the exact values ``rows`` (flattened), reshaped."""
    flat = [_round_to(x, dtype) for row in rows for x in row]
    return np.array(flat, dtype=dtype).reshape(shape)


@dataclass(frozen=True, repr=False)
class ButcherTableau:
    """An explicit Runge--Kutta method stored as exact rational data.

    Entries may be given as :class:`~fractions.Fraction`, ``int`` or ``str``
    (``"1/3"``, ``"0.161"``); they are normalised to ``Fraction``. Floats are
    refused, because their binary value is rarely the intended coefficient.

    Parameters
    ----------
    name : str
        Short name, the key in :data:`TABLEAUS`.
    c : tuple of Fraction, length s
        Nodes.
    a : tuple of tuple of Fraction, shape (s, s)
        Runge--Kutta matrix, strictly lower triangular (zero padded).
    b : tuple of Fraction, length s
        Propagating weights (the solution of order ``order``).
    b_err : tuple of Fraction, length s, or None
        ``b - b_hat``, the weights of the local error estimate, where ``b_hat``
        is the embedded solution of order ``error_order``. ``None`` for a
        fixed-step method.
    order : int
        Order of ``b``.
    error_order : int or None
        Order of the embedded solution ``b_hat``; ``None`` iff ``b_err`` is.
    fsal : bool
        First Same As Last: the last stage is ``f(t0 + h, y1)`` (``a[s-1] == b``
        and ``c[s-1] == 1``), so it is the first stage of the next step.
    dense : tuple of tuple of Fraction, shape (s + 1 + m, K) or (s, K), or None
        The method's own continuous extension,
        ``b_r(theta) = sum_k dense[r][k] * theta**(k + 1)``, one row per entry
        of the stage vector ``K = [k_0 .. k_{s-1}, f1, x_0 .. x_{m-1}]`` (see
        the module docstring), with ``b_r(1) == b_r`` for ``r < s`` and
        ``b_r(1) == 0`` for ``f1`` and the extra stages. Without extra stages
        (``m == 0``) the ``s``-row form is accepted too, meaning that ``f1`` has
        weight zero. ``None``: the cubic Hermite interpolant is used (see
        :meth:`dense_matrix`; extra stages, if any, then get weight zero).
    dense_order : int
        Order of the continuous extension (``min(3, order)`` for Hermite).
    tol : Fraction, optional
        Absolute tolerance of the self-checks. ``0`` (the default) means every
        identity must hold exactly; a tableau transcribed from decimal
        expansions sets it to the size of its rounding.
    extra_c : tuple of Fraction, length m, optional
        Nodes of the ``m`` extra stages that only the dense output needs
        (default none). Extra stage ``j`` is ``x_j = f(t0 + extra_c[j] h,
        y0 + h sum_r extra_a[j][r] K_r)``, evaluated after an accepted step.
    extra_a : tuple of tuple of Fraction, shape (m, s + 1 + m), optional
        Coefficients of the extra stages on ``K = [k_0 .. k_{s-1}, f1, x_0 ..
        x_{m-1}]``. Row ``j`` may only use ``K_r`` with ``r < s + 1 + j`` (the
        method's stages, ``f1`` and the earlier extra stages); it is stored
        zero padded to length ``s + 1 + m``, and shorter rows are padded on
        construction. ``sum(extra_a[j]) == extra_c[j]``.

    Raises
    ------
    ValueError
        If a self-check fails; the message names the tableau and the check.
    TypeError
        If an entry is not an exact scalar.
    """

    name: str
    c: tuple[Fraction, ...]
    a: tuple[tuple[Fraction, ...], ...]
    b: tuple[Fraction, ...]
    b_err: tuple[Fraction, ...] | None
    order: int
    error_order: int | None
    fsal: bool
    dense: tuple[tuple[Fraction, ...], ...] | None
    dense_order: int
    tol: Fraction = _ZERO
    extra_c: tuple[Fraction, ...] = ()
    extra_a: tuple[tuple[Fraction, ...], ...] = ()

    def __post_init__(self) -> None:
        setattr_ = object.__setattr__  # the dataclass is frozen; normalise once here
        setattr_(self, "c", _vector(self.c))
        setattr_(self, "a", _matrix(self.a))
        setattr_(self, "b", _vector(self.b))
        if self.b_err is not None:
            setattr_(self, "b_err", _vector(self.b_err))
        if self.dense is not None:
            setattr_(self, "dense", _matrix(self.dense))
        setattr_(self, "tol", _fraction(self.tol))
        setattr_(self, "extra_c", _vector(self.extra_c))
        width = len(self.c) + 1 + len(self.extra_c)
        extra_a = _matrix(self.extra_a)
        setattr_(
            self, "extra_a", tuple(row + (_ZERO,) * max(0, width - len(row)) for row in extra_a)
        )
        self._validate()

    # -- self-checks -------------------------------------------------------------------------

    def _fail(self, check: str, detail: str) -> None:
        raise ValueError(f"Butcher tableau {self.name!r}: {check} check failed: {detail}")

    def _close(self, x: Fraction, y: Fraction) -> bool:
        return abs(x - y) <= self.tol

    def _validate(self) -> None:
        s = len(self.c)
        if s < 1:
            self._fail("shape", "a tableau needs at least one stage")
        if self.tol < 0:
            self._fail("tolerance", f"tol = {self.tol} is negative")
        if len(self.a) != s or any(len(row) != s for row in self.a):
            shape = [len(row) for row in self.a]
            self._fail("shape", f"a must be {s} x {s} (len(c) = {s}), got row lengths {shape}")
        if len(self.b) != s:
            self._fail("shape", f"len(b) = {len(self.b)} != {s} stages")
        if self.b_err is not None and len(self.b_err) != s:
            self._fail("shape", f"len(b_err) = {len(self.b_err)} != {s} stages")
        m = len(self.extra_c)
        n = s + 1 + m  # entries of the dense-output stage vector K
        if len(self.extra_a) != m:
            self._fail("shape", f"extra_a has {len(self.extra_a)} rows, len(extra_c) = {m}")
        for j, row in enumerate(self.extra_a):
            if len(row) != n:
                self._fail("shape", f"extra_a[{j}] has length {len(row)} > s + 1 + m = {n}")
        if self.dense is not None:
            rows = (n,) if m else (s, n)
            if len(self.dense) not in rows:
                expected = " or ".join(str(r) for r in rows)
                self._fail("shape", f"dense has {len(self.dense)} rows, expected {expected}")
            widths = {len(row) for row in self.dense}
            if len(widths) != 1 or 0 in widths:
                self._fail("shape", f"dense rows must share one nonzero length, got {widths}")

        for i, row in enumerate(self.a):
            for j in range(i, s):
                if row[j] != 0:
                    self._fail(
                        "strictly lower triangular",
                        f"a[{i}][{j}] = {row[j]}, an explicit method needs a[i][j] = 0 for j >= i",
                    )
        for j, row in enumerate(self.extra_a):
            for r in range(s + 1 + j, n):
                if row[r] != 0:
                    self._fail(
                        "extra stages",
                        f"extra_a[{j}][{r}] = {row[r]}, extra stage {j} may only use "
                        f"K_r with r < s + 1 + {j} = {s + 1 + j}",
                    )
            if not self._close(sum(row, _ZERO), self.extra_c[j]):
                self._fail(
                    "extra stages",
                    f"sum(extra_a[{j}]) = {sum(row, _ZERO)} != extra_c[{j}] = {self.extra_c[j]}",
                )
        for i, row in enumerate(self.a):
            if not self._close(sum(row, _ZERO), self.c[i]):
                self._fail("row sum", f"sum(a[{i}]) = {sum(row, _ZERO)} != c[{i}] = {self.c[i]}")
        if not self._close(sum(self.b, _ZERO), _ONE):
            self._fail("weight sum", f"sum(b) = {sum(self.b, _ZERO)} != 1")

        if (self.b_err is None) != (self.error_order is None):
            self._fail("embedded method", "b_err and error_order must both be given or both None")
        if self.b_err is not None and not self._close(sum(self.b_err, _ZERO), _ZERO):
            self._fail("error weight sum", f"sum(b_err) = {sum(self.b_err, _ZERO)} != 0")

        if not isinstance(self.order, int) or self.order < 1:
            self._fail("order", f"order = {self.order!r} must be a positive int")
        if self.error_order is not None and not 1 <= self.error_order < self.order:
            self._fail("order", f"error_order = {self.error_order} not in [1, {self.order})")

        if self.fsal:
            if not self._close(self.c[-1], _ONE):
                self._fail("FSAL", f"c[{s - 1}] = {self.c[-1]} != 1")
            if not all(self._close(x, y) for x, y in zip(self.a[-1], self.b, strict=True)):
                self._fail("FSAL", f"a[{s - 1}] != b")

        if self.dense is not None:
            for r, row in enumerate(self.dense):
                target = self.b[r] if r < s else _ZERO
                if not self._close(sum(row, _ZERO), target):
                    self._fail("dense output", f"b_{r}(1) = {sum(row, _ZERO)} != {target}")
            if not 1 <= self.dense_order <= self.order:
                self._fail("dense order", f"dense_order = {self.dense_order} not in [1, order]")
        elif not 1 <= self.dense_order <= min(3, self.order):
            self._fail(
                "dense order",
                f"Hermite dense_order = {self.dense_order} not in [1, min(3, order)]",
            )

    # -- derived data ------------------------------------------------------------------------

    def __repr__(self) -> str:
        return (
            f"ButcherTableau(name={self.name!r}, stages={self.stages}, order={self.order}, "
            f"error_order={self.error_order}, fsal={self.fsal}, "
            f"dense={'own' if self.dense is not None else 'hermite'}, "
            f"dense_order={self.dense_order}, extra_stages={self.extra_stages})"
        )

    @property
    def stages(self) -> int:
        """Number of stages ``s`` (the FSAL stage included)."""
        return len(self.c)

    @property
    def extra_stages(self) -> int:
        """Number ``m`` of extra stages the dense output needs (``len(extra_c)``)."""
        return len(self.extra_c)

    @property
    def adaptive(self) -> bool:
        """Whether the method has an embedded error estimator."""
        return self.b_err is not None

    @property
    def b_hat(self) -> tuple[Fraction, ...] | None:
        """Weights of the embedded solution, ``b - b_err`` (``None`` if fixed-step)."""
        if self.b_err is None:
            return None
        return tuple(x - e for x, e in zip(self.b, self.b_err, strict=True))

    def dense_matrix(self) -> tuple[tuple[Fraction, ...], ...]:
        """Exact dense-output matrix ``P`` of shape ``(s + 1 + m, K)``.

        For ``theta`` in ``[0, 1]``::

            y(t0 + theta h) = y0 + h * sum_r (sum_k P[r][k] theta**(k+1)) K_r,
            K = [k_0, ..., k_{s-1}, f1, x_0, ..., x_{m-1}],

        with ``f1 = f(t0 + h, y1)`` and ``x_j`` the extra stages (see the module
        docstring; ``m = 0`` except for DOP853).

        * Own continuous extension (``dense`` given): ``dense`` itself, or, for
          an ``s``-row ``dense`` (``m == 0``), ``dense`` and a zero row ``s``.
        * Otherwise the cubic Hermite interpolant on ``(y0, f0 = k_0, y1, f1)``
          (``K = 3``)::

              y(theta) = y0 + h01(theta) * (y1 - y0) + h h10(theta) f0 + h h11(theta) f1

          i.e. ``P[i] = b_i h01 (+ h10 for i == 0)`` and ``P[s] = h11``. For an
          FSAL method ``f1`` is the last stage ``k_{s-1}``, so ``h11`` is added to
          row ``s - 1`` instead and row ``s`` is zero: a stepper never needs
          ``f1`` separately for an FSAL method. Rows ``s + 1 ..`` (extra stages,
          if a tableau with them is given ``dense=None``) are zero.

        In every case ``sum_k P[i][k] == b_i`` for ``i < s`` (``theta = 1``
        gives ``y1``) and rows ``s ..`` sum to zero (to ``tol``).
        """
        s = self.stages
        if self.dense is not None:
            if len(self.dense) == s:
                return self.dense + ((_ZERO,) * len(self.dense[0]),)
            return self.dense
        rows = [[bi * h for h in _H01] for bi in self.b]
        rows[0] = [p + h for p, h in zip(rows[0], _H10, strict=True)]
        last = [_ZERO] * 3
        if self.fsal:
            rows[s - 1] = [p + h for p, h in zip(rows[s - 1], _H11, strict=True)]
        else:
            last = list(_H11)
        unused = ((_ZERO,) * 3,) * self.extra_stages
        return tuple(tuple(row) for row in rows) + (tuple(last),) + unused

    def arrays(
        self, dtype: np.dtype | type = np.float64
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Export the tableau as ``numpy`` arrays for a generic stepper.

        Parameters
        ----------
        dtype : numpy floating dtype, optional
            ``float64`` (default), ``float32`` or ``float16``. Each value is the
            exact coefficient correctly rounded to ``dtype`` (round to nearest,
            ties to even; for ``float64`` this is ``float(Fraction)``), so every
            precision is derived from the same exact numbers.

        Returns
        -------
        A : ndarray, shape (s, s)
        b : ndarray, shape (s,)
        c : ndarray, shape (s,)
        e : ndarray, shape (s,)
            ``b_err`` (zeros for a fixed-step method).
        P : ndarray, shape (s + 1 + m, K)
            Dense-output matrix, see :meth:`dense_matrix`; its rows follow
            ``K = [k_0 .. k_{s-1}, f1, x_0 .. x_{m-1}]``. The extra stages ``x_j``
            (``m > 0`` for DOP853 only) come from :meth:`extra_arrays`.
        """
        dt = _float_dtype(dtype)
        conv = functools.partial(_convert, dtype=dt)
        s = self.stages
        e = self.b_err if self.b_err is not None else (_ZERO,) * s
        P = self.dense_matrix()
        return (
            conv(self.a, (s, s)),
            conv([self.b], (s,)),
            conv([self.c], (s,)),
            conv([e], (s,)),
            conv(P, (len(P), len(P[0]))),
        )

    def extra_arrays(self, dtype: np.dtype | type = np.float64) -> tuple[np.ndarray, np.ndarray]:
        """Export the extra dense-output stages as ``numpy`` arrays.

        After an accepted step, with ``K`` holding ``k_0 .. k_{s-1}`` and
        ``f1 = f(t0 + h, y1)`` in rows ``0 .. s``, a stepper evaluates for
        ``j = 0 .. m-1``::

            K[s + 1 + j] = f(t0 + cx[j] * h, y0 + h * (Ax[j, :s + 1 + j] @ K[:s + 1 + j]))

        (``Ax[j, s + 1 + j:]`` is zero) and then interpolates with ``P`` of
        :meth:`arrays`.

        Parameters
        ----------
        dtype : numpy floating dtype, optional
            As for :meth:`arrays`: each value is the exact coefficient correctly
            rounded to ``dtype``.

        Returns
        -------
        Ax : ndarray, shape (m, s + 1 + m)
            ``extra_a``; shape ``(0, s + 1)`` for a method without extra stages.
        cx : ndarray, shape (m,)
            ``extra_c``; shape ``(0,)`` without extra stages.
        """
        dt = _float_dtype(dtype)
        m = self.extra_stages
        n = self.stages + 1 + m
        return _convert(self.extra_a, (m, n), dtype=dt), _convert([self.extra_c], (m,), dtype=dt)


def _dopri5_dense(b: Sequence[Fraction], d: Sequence[Fraction]) -> tuple[tuple[Fraction, ...], ...]:
    """Expand Hairer's ``contd5`` form of the DOPRI5 interpolant into ``theta`` powers.

    ``dopri5.f`` stores, with ``t1 = 1 - theta`` and ``ydiff = y1 - y0``::

        y(theta) = y0 + theta*(ydiff + t1*(bspl + theta*(r4 + t1*r5))),
        bspl = h f0 - ydiff,  r4 = ydiff - h f1 - bspl,  r5 = h sum_i d_i k_i,

    where ``f0 = k_0`` and ``f1 = k_6`` (FSAL). In units of ``h k_i`` the weight of
    stage ``i`` is therefore::

        b_i theta + (e0_i - b_i)(theta - theta^2) + (2 b_i - e0_i - e6_i)(theta^2 - theta^3)
                  + d_i (theta^2 - 2 theta^3 + theta^4).
    """
    s = len(b)
    rows = []
    for i in range(s):
        e0 = _ONE if i == 0 else _ZERO
        e_last = _ONE if i == s - 1 else _ZERO
        u, v, w = e0 - b[i], 2 * b[i] - e0 - e_last, d[i]
        rows.append((b[i] + u, -u + v + w, -v - 2 * w, w))
    return tuple(rows)


def _poly_mul(p: Sequence[Fraction], q: Sequence[Fraction]) -> list[Fraction]:
    """Product of two polynomials given by their coefficients of ``theta**0, theta**1, ...``."""
    out = [_ZERO] * (len(p) + len(q) - 1)
    for i, x in enumerate(p):
        for j, y in enumerate(q):
            out[i + j] += x * y
    return out


def _dop853_dense(
    b: Sequence[Fraction], d: Sequence[Sequence[Fraction]]
) -> tuple[tuple[Fraction, ...], ...]:
    """Expand Hairer's ``contd8`` form of the DOP853 interpolant into ``theta`` powers.

    ``b`` are the ``s = 12`` weights, ``d`` the four rows ``D`` of ``dop853.f``
    (SciPy's ``dop853_coefficients.D``) over the 16 entries of ``K = [k_0 ..
    k_11, f1, x_0, x_1, x_2]``. With ``t1 = 1 - theta``, ``ydiff = y1 - y0``,
    ``f0 = k_0``::

        y(theta) = y0 + theta*(F0 + t1*(F1 + theta*(F2 + t1*(F3 + theta*(F4
                                + t1*(F5 + theta*F6)))))),
        F0 = ydiff,  F1 = h f0 - ydiff,  F2 = 2 ydiff - h (f0 + f1),
        F(3 + j) = h sum_r d[j][r] K_r                           (j = 0..3),

    and ``ydiff = h sum_i b_i k_i``. So ``F_q`` multiplies the basis polynomial
    ``g_q`` (``g0 = theta``, ``g1 = theta t1``, ``g2 = theta^2 t1``, ``g3 =
    theta^2 t1^2``, ..., ``g6 = theta^4 t1^3``), and the weight of ``K_r`` (in
    units of ``h``) is::

        b_r g0 + (e0_r - b_r) g1 + (2 b_r - e0_r - e12_r) g2 + sum_j d[j][r] g(3 + j)

    with ``b_r = 0`` for ``r >= 12``, ``e0_r = [r == 0]``, ``e12_r = [r == 12]``
    (``f1``). Every ``g_q`` with ``q >= 1`` vanishes at ``theta = 1``, so
    ``b_r(1) == b_r`` holds exactly whatever the digits of ``d``.
    """
    theta, t1 = (_ZERO, _ONE), (_ONE, -_ONE)
    basis = []
    g: list[Fraction] = [_ONE]
    for q in range(7):  # g0 = theta, g1 = theta t1, g2 = theta^2 t1, g3 = theta^2 t1^2, ...
        g = _poly_mul(g, theta if q % 2 == 0 else t1)
        basis.append(g)
    s, n = len(b), len(d[0])
    rows = []
    for r in range(n):
        br = b[r] if r < s else _ZERO
        e0 = _ONE if r == 0 else _ZERO
        e_f1 = _ONE if r == s else _ZERO
        weights = [br, e0 - br, 2 * br - e0 - e_f1, *(dj[r] for dj in d)]
        poly = [_ZERO] * 8
        for w, gq in zip(weights, basis, strict=True):
            for k, x in enumerate(gq):
                poly[k] += w * x
        assert poly[0] == 0  # no constant term: y(0) = y0
        rows.append(tuple(poly[1:]))
    return tuple(rows)


def _make_tableaus() -> dict[str, ButcherTableau]:
    F = Fraction
    tabs: list[ButcherTableau] = []

    tabs.append(
        ButcherTableau(
            name="euler",
            c=(0,),
            a=((0,),),
            b=(1,),
            b_err=None,
            order=1,
            error_order=None,
            fsal=False,
            dense=None,
            dense_order=1,
        )
    )
    tabs.append(
        ButcherTableau(
            name="midpoint",
            c=(0, F(1, 2)),
            a=_lower([[], [F(1, 2)]]),
            b=(0, 1),
            b_err=None,
            order=2,
            error_order=None,
            fsal=False,
            dense=None,
            dense_order=2,
        )
    )
    tabs.append(
        ButcherTableau(
            name="heun",
            c=(0, 1),
            a=_lower([[], [1]]),
            b=(F(1, 2), F(1, 2)),
            b_err=None,
            order=2,
            error_order=None,
            fsal=False,
            dense=None,
            dense_order=2,
        )
    )
    tabs.append(
        ButcherTableau(
            name="rk4",
            c=(0, F(1, 2), F(1, 2), 1),
            a=_lower([[], [F(1, 2)], [0, F(1, 2)], [0, 0, 1]]),
            b=(F(1, 6), F(1, 3), F(1, 3), F(1, 6)),
            b_err=None,
            order=4,
            error_order=None,
            fsal=False,
            dense=None,
            dense_order=3,
        )
    )

    # Bogacki & Shampine 1989: b_hat = (7/24, 1/4, 1/3, 1/8).
    bs_b = (F(2, 9), F(1, 3), F(4, 9), F(0))
    bs_bhat = (F(7, 24), F(1, 4), F(1, 3), F(1, 8))
    tabs.append(
        ButcherTableau(
            name="bosh3",
            c=(0, F(1, 2), F(3, 4), 1),
            a=_lower([[], [F(1, 2)], [0, F(3, 4)], bs_b[:3]]),
            b=bs_b,
            b_err=tuple(x - y for x, y in zip(bs_b, bs_bhat, strict=True)),
            order=3,
            error_order=2,
            fsal=True,
            dense=None,
            dense_order=3,
        )
    )

    # Dormand & Prince 1980 (DOPRI5 of [HNW] II.4; dense output of [Sh86] / dopri5.f).
    dp_b = (F(35, 384), F(0), F(500, 1113), F(125, 192), F(-2187, 6784), F(11, 84), F(0))
    dp_bhat = (
        F(5179, 57600),
        F(0),
        F(7571, 16695),
        F(393, 640),
        F(-92097, 339200),
        F(187, 2100),
        F(1, 40),
    )
    dp_d = (
        F(-12715105075, 11282082432),
        F(0),
        F(87487479700, 32700410799),
        F(-10690763975, 1880347072),
        F(701980252875, 199316789632),
        F(-1453857185, 822651844),
        F(69997945, 29380423),
    )
    tabs.append(
        ButcherTableau(
            name="dopri5",
            c=(0, F(1, 5), F(3, 10), F(4, 5), F(8, 9), 1, 1),
            a=_lower(
                [
                    [],
                    [F(1, 5)],
                    [F(3, 40), F(9, 40)],
                    [F(44, 45), F(-56, 15), F(32, 9)],
                    [F(19372, 6561), F(-25360, 2187), F(64448, 6561), F(-212, 729)],
                    [F(9017, 3168), F(-355, 33), F(46732, 5247), F(49, 176), F(-5103, 18656)],
                    dp_b[:6],
                ]
            ),
            b=dp_b,
            b_err=tuple(x - y for x, y in zip(dp_b, dp_bhat, strict=True)),
            order=5,
            error_order=4,
            fsal=True,
            dense=_dopri5_dense(dp_b, dp_d),
            dense_order=4,
        )
    )

    tabs.append(_tsit5())
    tabs.append(_dopri8())
    return {t.name: t for t in tabs}


def _tsit5() -> ButcherTableau:
    """Tsitouras 5(4) [Ts11] with its free 4th-order interpolant.

    The coefficients are irrational; the paper lists them as decimals. They are
    stored as ``Fraction`` of the longest available decimal strings (about 85
    digits for ``a``, ``b``, ``c`` and ``b_hat``; the interpolant polynomials,
    expanded from the paper's factored form, have 17-50 digits). Hence
    ``tol = 1e-15``: the consistency identities (and the order conditions) hold
    to the published digits, not exactly.

    ``b_err = b - b_hat`` where ``b_hat`` is the 4th-order embedded solution
    (``b_hat_7 = 1/66``). Sources differ in the sign of the published
    "b-tilde" (some list ``b_hat - b``); the convention here is the module's.
    """
    F = Fraction
    c4 = "0.98002554090450968572981028628702459549421379795630247688547642932211959507610803026040"
    a = [
        [],
        ["0.161"],
        [
            "-0.008480655492356988544426874250230774675121177393430391537369234245294192976164141156943",
            "0.3354806554923569885444268742502307746751211773934303915373692342452941929761641411569",
        ],
        [
            "2.897153057105493432130432594192938764924887287701866490314866693455023795137503079289",
            "-6.359448489975074843148159912383825625952700647415626703305928850207288721235210244366",
            "4.362295432869581411017727318190886861027813359713760212991062156752264926097707165077",
        ],
        [
            "5.325864828439256604428877920840511317836476253097040101202360397727981648835607691791",
            "-11.74888356406282787774717033978577296188744178259862899288666928009020615663593781589",
            "7.495539342889836208304604784564358155658679161518186721010132816213648793440552049753",
            "-0.09249506636175524925650207933207191611349983406029535244034750452930469056411389539635",
        ],
        [
            "5.861455442946420028659251486982647890394337666164814434818157239052507339770711679748",
            "-12.92096931784710929170611868178335939541780751955743459166312250439928519268343184452",
            "8.159367898576158643180400794539253485181918321135053305748355423955009222648673734986",
            "-0.07158497328140099722453054252582973869127213147363544882721139659546372402303777878835",
            "-0.02826905039406838290900305721271224146717633626879770007617876201276764571291579142206",
        ],
    ]
    b = (
        "0.09646076681806522951816731316512876333711995238157997181903319145764851595234062815396",
        "0.01",
        "0.4798896504144995747752495322905965199130404621990332488332634944254542060153074523509",
        "1.379008574103741893192274821856872770756462643091360525934940067397245698027561293331",
        "-3.290069515436080679901047585711363850115683290894936158531296799594813811049925401677",
        "2.324710524099773982415355918398765796109060233222962411944060046314465391054716027841",
        "0",
    )
    b = tuple(F(x) for x in b)
    b_hat = (
        "0.09468075576583945807478876255758922856117527357724631226139574065785592789071067303271",
        "0.009183565540343253096776363936645313759813746240984095238905939532922955247253608687270",
        "0.4877705284247615707855642599631228241516691959761363774365216240304071651579571959813",
        "1.234297566930478985655109673884237654035539930748192848315425833500484878378061439761",
        "-2.707712349983525454881109975059321670689605166938197378763992255714444407154902012702",
        "1.866628418170587035753719399566211498666255505244122593996591602841258328965767580089",
        F(1, 66),
    )
    b_hat = tuple(F(x) for x in b_hat)
    # b_i(theta) = sum_k dense[i][k] theta^(k+1), expanded from the paper's factored polynomials.
    dense = (
        (
            "0.999999999999999974283372471559910888475488471328",
            "-2.763706197274825911336735930481400260916070804192",
            "2.91325546182191274375068099306808",
            "-1.0530884977290216",
        ),
        (0, "0.13169999999999999727", "-0.22339999999999999818", "0.1017"),
        (
            0,
            "3.93029623689475152850687446709813398",
            "-5.94103387213150473470249202589458001",
            "2.490627285651252793",
        ),
        (
            0,
            "-12.411077166933676983734381540685453484102414134010752",
            "30.3381886302823215981729903691836576",
            "-16.54810288924490272",
        ),
        (
            0,
            "37.50931341651103919496903965334519631242339792120440212",
            "-88.1789048947664011014276693541209817",
            "47.37952196281928122",
        ),
        (
            0,
            "-27.896526289197287805948263144598643896",
            "65.09189467479367152629021928716553658",
            "-34.87065786149660974",
        ),
        (0, F(3, 2), -4, F(5, 2)),
    )
    return ButcherTableau(
        name="tsit5",
        c=(0, F("0.161"), F("0.327"), F("0.9"), F(c4), 1, 1),
        a=_lower([*a, b[:6]]),
        b=b,
        b_err=tuple(x - y for x, y in zip(b, b_hat, strict=True)),
        order=5,
        error_order=4,
        fsal=True,
        dense=dense,
        dense_order=4,
        tol=F(1, 10**15),
    )


def _dopri8() -> ButcherTableau:
    """Dormand--Prince 8(5,3), the 12-stage method of DOP853 ([PD81], [HNW] II.5).

    The coefficients involve ``sqrt(6)``; they are stored as ``Fraction`` of
    the 30-digit decimals of Hairer's ``dop853.f`` (also SciPy's
    ``dop853_coefficients.py``), hence ``tol = 1e-25``.

    Simplifications with respect to DOP853:

    * ``b_err`` is the 5th-order estimator ``E5`` only (``b_hat = b - E5`` has
      order 5, ``error_order = 5``). DOP853 combines it with the 3rd-order
      estimator ``E3`` into one error norm, ``err5**2 / sqrt(err5**2 +
      0.01 * err3**2)``, which behaves like ``O(h^8)``; a stepper using this
      tableau controls the plain ``E5`` estimate.
    * In this 12-stage formulation the method is not FSAL (``f(t0 + h, y1)`` is
      the 13th stage of the extended tableau).

    Dense output: DOP853's 7th-order continuous extension (``contd8``), which
    needs ``f1 = f(t0 + h, y1)`` and three extra stages ``x_0, x_1, x_2`` at
    ``extra_c = (0.1, 0.2, 0.777...8)`` (stages 14-16 of the extended tableau:
    SciPy's ``A[13:16]``, ``C[13:16]``). Their coefficients and the four rows
    ``D`` are the 30-digit decimals of ``dop853.f``; ``dense`` is Hairer's
    ``rcont`` form expanded exactly into powers of ``theta`` (see
    :func:`_dop853_dense`), 16 rows over ``[k_0 .. k_11, f1, x_0, x_1, x_2]``.
    ``dense_order = 7``.
    """
    F = Fraction
    c = (
        "0",
        "0.0526001519587677318785587544488",
        "0.0789002279381515978178381316732",
        "0.118350341907227396726757197510",
        "0.281649658092772603273242802490",
        "0.333333333333333333333333333333",
        "0.25",
        "0.307692307692307692307692307692",
        "0.651282051282051282051282051282",
        "0.6",
        "0.857142857142857142857142857142",
        "1",
    )
    # Nonzero entries a[i][j] of the strictly lower part, row by row.
    entries = {
        1: {0: "5.26001519587677318785587544488e-2"},
        2: {0: "1.97250569845378994544595329183e-2", 1: "5.91751709536136983633785987549e-2"},
        3: {0: "2.95875854768068491816892993775e-2", 2: "8.87627564304205475450678981324e-2"},
        4: {
            0: "2.41365134159266685502369798665e-1",
            2: "-8.84549479328286085344864962717e-1",
            3: "9.24834003261792003115737966543e-1",
        },
        5: {
            0: "3.7037037037037037037037037037e-2",
            3: "1.70828608729473871279604482173e-1",
            4: "1.25467687566822425016691814123e-1",
        },
        6: {
            0: "3.7109375e-2",
            3: "1.70252211019544039314978060272e-1",
            4: "6.02165389804559606850219397283e-2",
            5: "-1.7578125e-2",
        },
        7: {
            0: "3.70920001185047927108779319836e-2",
            3: "1.70383925712239993810214054705e-1",
            4: "1.07262030446373284651809199168e-1",
            5: "-1.53194377486244017527936158236e-2",
            6: "8.27378916381402288758473766002e-3",
        },
        8: {
            0: "6.24110958716075717114429577812e-1",
            3: "-3.36089262944694129406857109825",
            4: "-8.68219346841726006818189891453e-1",
            5: "2.75920996994467083049415600797e1",
            6: "2.01540675504778934086186788979e1",
            7: "-4.34898841810699588477366255144e1",
        },
        9: {
            0: "4.77662536438264365890433908527e-1",
            3: "-2.48811461997166764192642586468",
            4: "-5.90290826836842996371446475743e-1",
            5: "2.12300514481811942347288949897e1",
            6: "1.52792336328824235832596922938e1",
            7: "-3.32882109689848629194453265587e1",
            8: "-2.03312017085086261358222928593e-2",
        },
        10: {
            0: "-9.3714243008598732571704021658e-1",
            3: "5.18637242884406370830023853209",
            4: "1.09143734899672957818500254654",
            5: "-8.14978701074692612513997267357",
            6: "-1.85200656599969598641566180701e1",
            7: "2.27394870993505042818970056734e1",
            8: "2.49360555267965238987089396762",
            9: "-3.0467644718982195003823669022",
        },
        11: {
            0: "2.27331014751653820792359768449",
            3: "-1.05344954667372501984066689879e1",
            4: "-2.00087205822486249909675718444",
            5: "-1.79589318631187989172765950534e1",
            6: "2.79488845294199600508499808837e1",
            7: "-2.85899827713502369474065508674",
            8: "-8.87285693353062954433549289258",
            9: "1.23605671757943030647266201528e1",
            10: "6.43392746015763530355970484046e-1",
        },
    }
    b_entries = {
        0: "5.42937341165687622380535766363e-2",
        5: "4.45031289275240888144113950566",
        6: "1.89151789931450038304281599044",
        7: "-5.8012039600105847814672114227",
        8: "3.1116436695781989440891606237e-1",
        9: "-1.52160949662516078556178806805e-1",
        10: "2.01365400804030348374776537501e-1",
        11: "4.47106157277725905176885569043e-2",
    }
    e5_entries = {
        0: "0.1312004499419488073250102996e-1",
        5: "-0.1225156446376204440720569753e1",
        6: "-0.4957589496572501915214079952",
        7: "0.1664377182454986536961530415e1",
        8: "-0.3503288487499736816886487290",
        9: "0.3341791187130174790297318841",
        10: "0.8192320648511571246570742613e-1",
        11: "-0.2235530786388629525884427845e-1",
    }
    # The extra stages x_0, x_1, x_2 (stages 14-16 of DOP853's extended tableau), with
    # nonzero coefficients on K = [k_0 .. k_11, f1 (12), x_0 (13), x_1 (14)].
    extra_c = ("0.1", "0.2", "0.777777777777777777777777777778")
    extra_entries = [
        {
            0: "5.61675022830479523392909219681e-2",
            6: "2.53500210216624811088794765333e-1",
            7: "-2.46239037470802489917441475441e-1",
            8: "-1.24191423263816360469010140626e-1",
            9: "1.5329179827876569731206322685e-1",
            10: "8.20105229563468988491666602057e-3",
            11: "7.56789766054569976138603589584e-3",
            12: "-8.298e-3",
        },
        {
            0: "3.18346481635021405060768473261e-2",
            5: "2.83009096723667755288322961402e-2",
            6: "5.35419883074385676223797384372e-2",
            7: "-5.49237485713909884646569340306e-2",
            10: "-1.08347328697249322858509316994e-4",
            11: "3.82571090835658412954920192323e-4",
            12: "-3.40465008687404560802977114492e-4",
            13: "1.41312443674632500278074618366e-1",
        },
        {
            0: "-4.28896301583791923408573538692e-1",
            5: "-4.69762141536116384314449447206",
            6: "7.68342119606259904184240953878",
            7: "4.06898981839711007970213554331",
            8: "3.56727187455281109270669543021e-1",
            12: "-1.39902416515901462129418009734e-3",
            13: "2.9475147891527723389556272149",
            14: "-9.15095847217987001081870187138",
        },
    ]
    # The rows D of dop853.f's contd8 coefficients rcont5..rcont8, over the same K.
    d_entries = [
        {
            0: "-0.84289382761090128651353491142e+1",
            5: "0.56671495351937776962531783590",
            6: "-0.30689499459498916912797304727e+1",
            7: "0.23846676565120698287728149680e+1",
            8: "0.21170345824450282767155149946e+1",
            9: "-0.87139158377797299206789907490",
            10: "0.22404374302607882758541771650e+1",
            11: "0.63157877876946881815570249290",
            12: "-0.88990336451333310820698117400e-1",
            13: "0.18148505520854727256656404962e+2",
            14: "-0.91946323924783554000451984436e+1",
            15: "-0.44360363875948939664310572000e+1",
        },
        {
            0: "0.10427508642579134603413151009e+2",
            5: "0.24228349177525818288430175319e+3",
            6: "0.16520045171727028198505394887e+3",
            7: "-0.37454675472269020279518312152e+3",
            8: "-0.22113666853125306036270938578e+2",
            9: "0.77334326684722638389603898808e+1",
            10: "-0.30674084731089398182061213626e+2",
            11: "-0.93321305264302278729567221706e+1",
            12: "0.15697238121770843886131091075e+2",
            13: "-0.31139403219565177677282850411e+2",
            14: "-0.93529243588444783865713862664e+1",
            15: "0.35816841486394083752465898540e+2",
        },
        {
            0: "0.19985053242002433820987653617e+2",
            5: "-0.38703730874935176555105901742e+3",
            6: "-0.18917813819516756882830838328e+3",
            7: "0.52780815920542364900561016686e+3",
            8: "-0.11573902539959630126141871134e+2",
            9: "0.68812326946963000169666922661e+1",
            10: "-0.10006050966910838403183860980e+1",
            11: "0.77771377980534432092869265740",
            12: "-0.27782057523535084065932004339e+1",
            13: "-0.60196695231264120758267380846e+2",
            14: "0.84320405506677161018159903784e+2",
            15: "0.11992291136182789328035130030e+2",
        },
        {
            0: "-0.25693933462703749003312586129e+2",
            5: "-0.15418974869023643374053993627e+3",
            6: "-0.23152937917604549567536039109e+3",
            7: "0.35763911791061412378285349910e+3",
            8: "0.93405324183624310003907691704e+2",
            9: "-0.37458323136451633156875139351e+2",
            10: "0.10409964950896230045147246184e+3",
            11: "0.29840293426660503123344363579e+2",
            12: "-0.43533456590011143754432175058e+2",
            13: "0.96324553959188282948394950600e+2",
            14: "-0.39177261675615439165231486172e+2",
            15: "-0.14972683625798562581422125276e+3",
        },
    ]
    s = len(c)
    n = s + 1 + len(extra_c)

    def dense_row(nonzero: dict[int, str], width: int = s) -> tuple[Fraction, ...]:
        return tuple(F(nonzero.get(j, 0)) for j in range(width))

    b = dense_row(b_entries)
    return ButcherTableau(
        name="dopri8",
        c=c,
        a=tuple(dense_row(entries.get(i, {})) for i in range(s)),
        b=b,
        b_err=dense_row(e5_entries),
        order=8,
        error_order=5,
        fsal=False,
        dense=_dop853_dense(b, [dense_row(row, n) for row in d_entries]),
        dense_order=7,
        tol=F(1, 10**25),
        extra_c=extra_c,
        extra_a=tuple(dense_row(row, n) for row in extra_entries),
    )


TABLEAUS: dict[str, ButcherTableau] = _make_tableaus()
"""All built-in tableaus by name."""


def get_tableau(name: str) -> ButcherTableau:
    """Return the built-in tableau called ``name``.

    Parameters
    ----------
    name : str
        One of the keys of :data:`TABLEAUS`.

    Raises
    ------
    ValueError
        If ``name`` is unknown; the message lists the valid names.
    """
    try:
        return TABLEAUS[name]
    except (KeyError, TypeError):
        valid = ", ".join(repr(k) for k in TABLEAUS)
        raise ValueError(f"unknown Runge-Kutta method {name!r}; valid names: {valid}") from None


METHOD_IDS: dict[str, int] = {name: i for i, name in enumerate(TABLEAUS)}
"""The number of each method in the compiled engine (see :func:`kernel_tables`)."""


def kernel_tables():
    """Every tableau in the layout of the compiled engine, indexed by :data:`METHOD_IDS`.

    Returns ``(tables, fsal, adaptive, err_order)``: ``tables[k] = (A, b, c, e, P, Ax,
    cx)`` as float64 arrays (see :meth:`ButcherTableau.arrays` and
    :meth:`ButcherTableau.extra_arrays`) and one flag or order per method. The engine
    keeps them as module globals, which numba compiles in as constants.
    """
    tabs = list(TABLEAUS.values())
    tables = tuple(t.arrays(np.float64) + t.extra_arrays(np.float64) for t in tabs)
    fsal = tuple(bool(t.fsal) for t in tabs)
    adaptive = tuple(bool(t.adaptive) for t in tabs)
    err_order = tuple(int(t.error_order or t.order) for t in tabs)
    return tables, fsal, adaptive, err_order


def packed_tableau(name: str) -> np.ndarray:
    """Method ``name`` as the generic engine takes it: one float64 array (an array, so
    that numba's parallel loops can take it), read back by ``kernels/integrate.py``'s
    ``tableau``. Row 0: s, K (columns of P), n_extra, FSAL, adaptive, error order; then
    A (s rows), b, c, e (one row each), P (s + 1 + n_extra rows), Ax (n_extra rows),
    cx (one row); each left-aligned, zero-padded."""
    tables, fsal, adaptive, err_order = kernel_tables()
    k = METHOD_IDS[name]
    A, b, c, e, P, Ax, cx = tables[k]
    s, K, nx = A.shape[0], P.shape[1], Ax.shape[0]
    S = s + 1 + nx
    out = np.zeros((5 + s + S + nx, max(S, K, 6)))
    out[0, :6] = s, K, nx, fsal[k], adaptive[k], err_order[k]
    out[1 : 1 + s, :s] = A
    out[1 + s, :s], out[2 + s, :s], out[3 + s, :s] = b, c, e
    r = 4 + s
    out[r : r + S, :K] = P
    out[r + S : r + S + nx, :S] = Ax
    out[r + S + nx, :nx] = cx
    return out
