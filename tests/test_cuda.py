"""The CUDA backend: symode/cudagen.py (the printer), kernels/symode_*.cuh (the engine),
symode/cuda.py (``compile(backend="cuda")``).

The gate, on any machine with the CUDA toolkit, GPU or not:

(a) every generated module (the system's kernels, the engine headers, the entry points)
    compiles with nvcc to PTX for sm_80, as NVRTC does (``-m full`` adds ptxas), in
    float and double; skipped, saying so, only where nvcc is absent;
(b) the very same ``__host__ __device__`` engine, compiled as host code by g++ and called
    through ctypes (``CudaModel(target="host")``), agrees with the numba engine
    (``system.compile()``) on solves, gradients and failure statuses.

With a GPU (``-m gpu``; skipped without CuPy or a device) the same comparisons run on
the device against the host build.

Tolerances: the two engines perform the same operations in the same order (the headers
are a line-for-line port of kernels/integrate.py and kernels/adjoint.py); they differ in
rounding only where numba's LLVM fuses a multiply and an add (FMA) and g++ (no -mfma)
does not: ~1e-16 per operation, which Lorenz amplifies by at most e^{0.9·2} ≈ 6 up to
t = 2. Hence 1e-12 for fixed steps. Adaptive steps add the controller, which sees the
error estimate, a sum with heavy cancellation (its rounding is ~1e-10 relative at rtol
1e-8): the step sizes differ in the 11th digit, so solutions agree to ~1e-14 while the
issue's bound is 1e-9, and the step counts are asserted equal (a flipped accept/reject
would show there first).
"""

from __future__ import annotations

import ctypes
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sympy as sp
from conftest import lorenz, lotka_volterra, rel

import symode
from symode import cudagen
from symode.cuda import CudaModel, CudaUnavailableError, gpu_available, work_size
from symode.errors import ShapeError, Status, UnsupportedFunctionError
from symode.tableaus import TABLEAUS, packed_tableau

REPO = Path(__file__).resolve().parent.parent
NVCC = shutil.which("nvcc") or (
    "/usr/local/bin/nvcc" if Path("/usr/local/bin/nvcc").exists() else None
)
GXX = shutil.which("g++")

needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc (the CUDA toolkit) is not installed")
GPU = gpu_available()
needs_gpu = pytest.mark.skipif(not GPU, reason="no CuPy with a CUDA device here")

t = sp.Symbol("t")
LORENZ_P = np.array([10.0, 28.0, 8.0 / 3.0])


def blowup():
    """y' = k y²: from y0 = 1 with k = 1 it blows up at t = 1."""
    y, k = sp.symbols("y k")
    return symode.ODESystem([k * y**2], states=[y], params=[k], t=t)


def zoo():
    """Many of the functions the printer maps (CUDA's float and double overloads)."""
    x, y, z = sp.symbols("x y z")
    a, b = sp.symbols("a b")
    return symode.ODESystem(
        [
            sp.sin(a * x) + sp.cos(t) * sp.exp(-(y**2)) + (1 + z**2) ** sp.Rational(3, 2)
            - sp.pi * x,
            sp.log(1 + x**2) - sp.sqrt(1 + z**2) - sp.tanh(b * y) + sp.atan2(y, 1 + x**2),
            sp.Piecewise((x * y, x > 0), (-y, True)) + sp.erf(z) / 5 + (1 + x**2) ** (-2)
            + sp.Float("0.1") * b + 12345678901 * x / 10**11 + sp.E * z,
        ],
        states=[x, y, z],
        params=[a, b],
        t=t,
    )  # fmt: skip


# -- models, compiled once per session ----------------------------------------------------------
@pytest.fixture(scope="module")
def cuda_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("symode-cuda")


@pytest.fixture(autouse=True)
def _host_build_needs_gxx(request):
    """The CPU checks compile the engine with g++: skipped, saying so, without it (the
    GPU tests compare with the numba engine and need no g++)."""
    if GXX is None and "models" in request.fixturenames and "gpu" not in request.keywords:
        pytest.skip("g++ is not installed: the CPU build of the CUDA engine needs it")


@pytest.fixture(scope="module")
def models(cache_dir, cuda_cache):
    """name → (numba Model, CudaModel on the host); the host libraries compile on first
    use of each (method, dtype, entry), once per session, into a temporary directory."""
    out = {}
    for name, make in (("lorenz", lorenz), ("lv", lotka_volterra), ("blowup", blowup)):
        system = make()
        out[name] = (
            system.compile(cache_dir=cache_dir),
            CudaModel(system, cache_dir=cuda_cache, target="host"),
        )
    return out


def p2_batch(B=12):
    """P2's ensemble, small: ρ over [0, 28], σ = 10, β = 8/3, y0 = (1, 1, 1), and a few
    other starts."""
    rho = np.linspace(0.0, 28.0, B)
    P = np.column_stack([np.full(B, 10.0), rho, np.full(B, 8.0 / 3.0)])
    Y0 = np.ones((B, 3))
    Y0[::3] = [[-3.0, 2.0, 20.0]]
    return Y0, P


# -- the printer --------------------------------------------------------------------------------
def test_printer_uses_synthetic_names_and_escapes_user_text():
    """A user symbol named like code never reaches the code: the kernels read y[i] and
    p[j]; names appear only in the header's line comments, through ascii(), so no
    newline can end a comment early."""
    evil = sp.Symbol('__import__("os"); system("rm -rf /");\nx')
    k = sp.Symbol("y[0]")  # a param named like a state slot is still p[0]
    system = symode.ODESystem([-k * evil], states=[evil], params=[k], t=t)
    text = cudagen.generate_cuda_source(system).text
    lines = text.splitlines()
    code = [ln for ln in lines if not ln.lstrip().startswith("//")]
    assert not any("__import__" in ln or "system(" in ln or "rm -rf" in ln for ln in code)
    (names,) = [ln for ln in lines if ln.startswith("// states:")]
    assert "\\n" in names and "rm -rf" in names  # escaped, on its one comment line
    assert "out[0] = v_0;" in text
    assert "p[0]*y[0]" in text.replace(" ", "")  # -k·evil: param slot 0, state slot 0


def test_printer_cse_pow_and_literals():
    """Same derivation objects as the numba printer, CSE'd; small integer powers as
    products; literals typed for one template over float and double; no M_PI macros."""
    text = cudagen.generate_cuda_source(zoo()).text
    assert "const real c_0" in text  # CSE temporaries
    assert "M_PI" not in text and "M_E" not in text and "real(3.141592653589793)" in text
    assert "pow(y[1], 2)" not in text and "(y[1]*y[1])" in text
    assert "real(0.1)" in text and "(real(1)/real(5))" in text
    for kernel in ("rhs", "vjp", "adjoint", "jvp", "trace", "trace_grad"):
        assert f" {kernel}(double t" in text


def test_missing_and_unsupported_kernels_in_user_names():
    """A derived kernel with no C translation is left out and named (the rhs prints);
    an rhs that cannot print raises UnsupportedFunctionError naming the user's symbol."""
    x, a = sp.symbols("x a")
    ok = cudagen.generate_cuda_source(
        symode.ODESystem([sp.gamma(a * x)], states=[x], params=[a], t=t)
    )
    assert ok.missing  # the derivatives need polygamma: no C translation
    assert "HAS_VJP = false" in ok.text and "rhs(double t" in ok.text
    bad = symode.ODESystem([sp.besselj(1, a * x)], states=[x], params=[a], t=t)
    with pytest.raises(UnsupportedFunctionError, match=r"besselj.*a\*x"):
        cudagen.generate_cuda_source(bad)


def test_tableau_literals_are_the_packed_tableau():
    """Every method's printed constants read back as exactly the numba engine's data
    (symode.tableaus.packed_tableau): 17 significant digits."""
    for name in TABLEAUS:
        text = cudagen.method_source(name)
        packed = packed_tableau(name)
        s, K, nx = (int(v) for v in packed[0, :3])
        arrays = {}
        for m in re.finditer(r"double (\w+)\(.*?\{\n\s+const double v\[\d+\] = \{(.*?)\};", text):
            arrays[m.group(1)] = np.array([float(v) for v in m.group(2).split(",")])
        S = s + 1 + nx
        np.testing.assert_array_equal(arrays["A"], packed[1 : 1 + s, :s].ravel())
        for row, key in enumerate("bce"):
            np.testing.assert_array_equal(arrays[key], packed[1 + s + row, :s])
        np.testing.assert_array_equal(arrays["P"], packed[4 + s : 4 + s + S, :K].ravel())
        if nx:
            np.testing.assert_array_equal(
                arrays["Ax"], packed[4 + s + S : 4 + s + S + nx, :S].ravel()
            )
        assert f"S = {s};" in text and f"NX = {nx};" in text


def test_headers_are_package_data():
    """The engine headers are found through importlib.resources (an installed wheel as a
    checkout) and pyproject ships *.cuh from kernels/ as package data."""
    for name in cudagen.HEADERS:
        assert cudagen.header_text(name) == (REPO / "kernels" / name).read_text()
    pyproject = (REPO / "pyproject.toml").read_text()
    assert re.search(r'"symode\.kernels" = \[[^\]]*"\*\.cuh"', pyproject)


# -- (a) nvcc -----------------------------------------------------------------------------------
NVCC_MODULES = [
    ("lorenz", "dopri5", "float64", tuple(cudagen.ENTRIES)),
    ("lorenz", "rk4", "float32", tuple(cudagen.ENTRIES)),
    ("lv", "dopri8", "float64", tuple(cudagen.ENTRIES)),  # extra dense-output stages
    ("zoo", "tsit5", "float32", ("solve", "kernels")),  # CUDA's float overloads of the math
    ("zoo", "bosh3", "float64", ("solve", "kernels")),
    ("lorenz", "euler", "float32", ("kernels",)),
]


@needs_nvcc
# (the parameter is not called ``method``: conftest.py moves non-core methods to the
# full run because each costs a numba compile; these cost one nvcc run, a few seconds)
@pytest.mark.parametrize("system,tableau,dtype,entries", NVCC_MODULES)
def test_modules_compile_with_nvcc(system, tableau, dtype, entries, tmp_path):
    """What NVRTC compiles on a GPU machine compiles with nvcc here, to PTX for sm_80 (as
    NVRTC does: the driver assembles it on the GPU); the compiler's messages are shown on
    failure. ptxas on top: test_modules_assemble_with_ptxas (-m full, ~35 s more)."""
    _nvcc(system, tableau, dtype, entries, tmp_path, "-ptx")


@needs_nvcc
@pytest.mark.full
@pytest.mark.parametrize("system,tableau,dtype,entries", NVCC_MODULES)
def test_modules_assemble_with_ptxas(system, tableau, dtype, entries, tmp_path):
    """The same modules to sm_80 machine code (ptxas included)."""
    _nvcc(system, tableau, dtype, entries, tmp_path, "-cubin")


def _nvcc(system, tableau, dtype, entries, tmp_path, output):
    make = {"lorenz": lorenz, "lv": lotka_volterra, "zoo": zoo}[system]
    src = cudagen.module_source(cudagen.generate_cuda_source(make()), tableau, dtype, entries)
    path = tmp_path / f"{system}_{tableau}.cu"
    path.write_text(src)
    out = tmp_path / "m.out"
    run = subprocess.run(
        [NVCC, "-std=c++17", "-arch=sm_80", output, "-o", str(out), str(path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    assert out.stat().st_size > 0


# -- (b) the engine as host code against the numba engine ---------------------------------------
@pytest.mark.parametrize("which", ["lorenz", "zoo"])
def test_every_kernel_matches_numba(models, cache_dir, cuda_cache, which):
    """Each printed kernel (rhs, vjp, adjoint, jvp, trace, trace_grad), compiled as host
    code, against the numba printer's at random points: the same expressions, CSE'd the
    same way, so ≤ 1e-13 relative (libm and FMA rounding; the zoo's math functions)."""
    if which == "lorenz":
        numba_model, host = models["lorenz"]
    else:
        system = zoo()
        numba_model = system.compile(cache_dir=cache_dir)
        host = CudaModel(system, cache_dir=cuda_cache, target="host")
    n, n_p = host.system.n_states, host.system.n_params
    rng = np.random.default_rng(1)
    X = rng.uniform(-2.0, 2.0, (6, 3 * n + 2 * n_p))
    got = host.evaluate_kernels(0.7, X)
    k = numba_model.kernels
    for row, x in zip(got, X):
        y, p, a, v, w = np.split(x, np.cumsum([n, n_p, n, n]))
        ref = [np.empty(n), np.empty(n), np.empty(n_p), np.empty(n + n_p), np.empty(n)]
        k.rhs(0.7, y, p, ref[0])
        k.vjp(0.7, y, p, a, ref[1], ref[2])
        k.adjoint(0.7, y, p, a, ref[3])
        k.jvp(0.7, y, p, v, w, ref[4])
        gy, gp = np.empty(n), np.empty(n_p)
        k.trace_grad(0.7, y, p, gy, gp)
        want = np.concatenate([*ref, [k.trace(0.7, y, p)], gy, gp])
        np.testing.assert_allclose(row, want, rtol=1e-13, atol=1e-13 * np.abs(want).max())


def test_p2_rk4_lorenz_matches_numba(models):
    """P2-style: fixed-step classic RK4 ensemble, dt = 0.01 to t = 2, outputs on and off
    the grid (Hermite dense output): ≤ 1e-12 relative, identical counts."""
    numba_model, host = models["lorenz"]
    Y0, P = p2_batch()
    ts = np.array([0.0, 0.004, 0.5, 1.2345, 2.0])
    a = host.solve(Y0, ts, P, method="rk4", dt=0.01)
    b = numba_model.solve(Y0, ts, P, method="rk4", dt=0.01)
    assert rel(a.y, b.y) <= 1e-12
    for key in ("nfev", "naccept", "nreject"):
        np.testing.assert_array_equal(a.stats[key], b.stats[key])
    assert a.y.dtype == np.float64 and a.y.shape == (12, 5, 3) and not a.failed


def test_p1_dopri5_lorenz_matches_numba(models):
    """P1-style: adaptive Dormand–Prince 5(4), rtol = atol = 1e-8, t ≤ 2, dense output at
    21 times: ≤ 1e-9 relative and the same accepted and rejected steps."""
    numba_model, host = models["lorenz"]
    Y0, P = p2_batch()
    ts = np.linspace(0.0, 2.0, 21)
    a = host.solve(Y0, ts, P, method="dopri5", rtol=1e-8, atol=1e-8)
    b = numba_model.solve(Y0, ts, P, method="dopri5", rtol=1e-8, atol=1e-8)
    assert rel(a.y, b.y) <= 1e-9
    for key in ("nfev", "naccept", "nreject"):
        np.testing.assert_array_equal(a.stats[key], b.stats[key])
    assert b.stats["nreject"].sum() > 0  # the controller's rejection path is exercised
    one = host.solve(Y0[0], ts, P[0], method="dopri5", rtol=1e-8, atol=1e-8)
    assert one.y.shape == (21, 3) and one.status == Status.SUCCESS
    np.testing.assert_array_equal(one.y, a.y[0])


def test_float32_solve(models):
    """float32 states and params: the stage sums in single precision on this engine
    (numba's accumulate in double), so agreement is to float32's accuracy only."""
    numba_model, host = models["lorenz"]
    Y0, P = p2_batch(4)
    ts = np.linspace(0.0, 1.0, 5)
    a = host.solve(Y0, ts, P, method="rk4", dt=0.01, dtype=np.float32)
    b = numba_model.solve(Y0, ts, P, method="rk4", dt=0.01)
    assert a.y.dtype == np.float32
    assert rel(a.y, b.y) < 1e-4  # ~100 steps of float32 rounding, amplified by Lorenz


LV_TS = np.array([0.0, 0.7, 1.9, 3.3, 5.0])


def lv_batch():
    rng = np.random.default_rng(7)
    B = 4
    Y0 = rng.uniform(0.5, 1.5, (B, 2))
    P = np.array([1.5, 1.0, 3.0, 1.0]) * rng.uniform(0.9, 1.1, (B, 4))
    cot = rng.normal(size=(B, LV_TS.size, 2))
    return Y0, P, cot


def flat(g):
    return np.concatenate([np.atleast_2d(g.y0), np.atleast_2d(g.params)], axis=-1)


@pytest.mark.parametrize(
    "adjoint,method",
    [("discrete", "dopri5"), ("checkpoint", "dopri5"), ("discrete", "rk4")],
)
def test_gradients_match_numba(models, adjoint, method):
    """Lotka–Volterra, five observations, raw cotangents: each mode against the numba
    engine's with the same checkpoints (K = 8). With a replay buffer longer than every
    segment the two replay the same segments and take the same backward steps: ≤ 1e-9
    (measured ~1e-14), equal counts; the forward solutions too."""
    numba_model, host = models["lv"]
    Y0, P, cot = lv_batch()
    opts = {"method": method, "checkpoints": 8}
    opts.update({"dt": 0.02} if method == "rk4" else {"rtol": 1e-8, "atol": 1e-8})
    a = host.vjp(Y0, LV_TS, P, cot, adjoint=adjoint, segment_steps=400, **opts)
    b = numba_model.vjp(Y0, LV_TS, P, cotangent=cot, adjoint=adjoint, **opts)
    assert rel(flat(a), flat(b)) <= 1e-9
    assert rel(a.y, b.y) <= 1e-12
    for p in ("forward", "backward"):
        for key in ("nfev", "naccept", "nreject"):
            np.testing.assert_array_equal(a.stats[p][key], b.stats[p][key])
    assert a.value is None and a.t is None and not a.failed


def test_long_segments_replayed_in_pieces(models):
    """segment_steps shorter than the segments: the discrete gradient is unchanged (the
    same steps, replayed in pieces: more forward evaluations only); the checkpoint
    mode's backward steps also stop at the pieces' starts, so it moves within its
    tolerance (rtol = atol = 1e-8 on a gradient of size ~10: 1e-6 relative)."""
    numba_model, host = models["lv"]
    Y0, P, cot = lv_batch()
    opts = {"method": "dopri5", "rtol": 1e-8, "atol": 1e-8, "checkpoints": 4}
    ref = numba_model.vjp(Y0, LV_TS, P, cotangent=cot, adjoint="discrete", **opts)
    a = host.vjp(Y0, LV_TS, P, cot, adjoint="discrete", segment_steps=5, **opts)
    assert rel(flat(a), flat(ref)) <= 1e-12
    assert (a.stats["backward"]["nfev"] > ref.stats["backward"]["nfev"]).all()
    ref = numba_model.vjp(Y0, LV_TS, P, cotangent=cot, adjoint="checkpoint", **opts)
    c = host.vjp(Y0, LV_TS, P, cot, adjoint="checkpoint", segment_steps=5, **opts)
    assert 0 < rel(flat(c), flat(ref)) <= 1e-6


def test_single_trajectory_gradient(models):
    numba_model, host = models["lv"]
    Y0, P, cot = lv_batch()
    a = host.vjp(Y0[1], LV_TS, P[1], cot[1], adjoint="discrete", rtol=1e-8, atol=1e-8)
    b = numba_model.vjp(
        Y0[1], LV_TS, P[1], cotangent=cot[1], adjoint="discrete", rtol=1e-8, atol=1e-8
    )
    assert a.y0.shape == (2,) and a.params.shape == (4,) and a.status == Status.SUCCESS
    assert rel(flat(a), flat(b)) <= 1e-9


# rows: blow-up at t = 1 (y0 = 1, k = 1); slow growth (y0 = 0.1, no blow-up before 2 ...
# it does at t = 10); constant (k = 0); decay towards 0 from below (y0 = -1)
BLOWUP_Y0 = np.array([[1.0], [0.1], [1.0], [-1.0]])
BLOWUP_P = np.array([[1.0], [1.0], [0.0], [1.0]])


@pytest.mark.parametrize(
    "opts,expected",
    [
        ({"method": "dopri5"}, [Status.STEP_UNDERFLOW, 0, 0, 0]),
        ({"method": "rk4", "dt": 0.01}, [Status.NONFINITE, 0, 0, 0]),
        ({"method": "dopri5", "max_steps": 10}, [Status.MAX_STEPS, 0, 0, Status.MAX_STEPS]),
        ({"method": "bosh3", "dt_min": 1e-3}, [Status.STEP_UNDERFLOW, 0, Status.STEP_UNDERFLOW, 0]),
    ],
)
def test_failure_statuses_match_numba(models, opts, expected):
    """Per-trajectory statuses of a batch with failing members equal the numba engine's,
    with the same unreached (NaN) outputs; messages name the same t (to the rounding of
    the step sizes: 1e-9) and step size."""
    numba_model, host = models["blowup"]
    ts = np.linspace(0.0, 2.0, 5)
    a = host.solve(BLOWUP_Y0, ts, BLOWUP_P, throw=False, **opts)
    b = numba_model.solve(BLOWUP_Y0, ts, BLOWUP_P, throw=False, **opts)
    np.testing.assert_array_equal(a.status, b.status)
    np.testing.assert_array_equal(a.status, np.array(expected, dtype=np.int64))
    assert a.failed == b.failed
    np.testing.assert_array_equal(np.isnan(a.y), np.isnan(b.y))
    number = re.compile(r"t=([-0-9.e+]+)")
    for ma, mb in zip(a.message, b.message):
        if ma != mb:
            ta, tb = float(number.search(ma).group(1)), float(number.search(mb).group(1))
            assert abs(ta - tb) <= 1e-9 * abs(tb)
            assert number.sub("", ma) == number.sub("", mb)


def test_failure_raises_and_reports(models):
    numba_model, host = models["blowup"]
    ts = np.linspace(0.0, 2.0, 5)
    with pytest.raises(symode.IntegrationError, match="Step size underflow") as err:
        host.solve([1.0], ts, [1.0])
    assert err.value.solution.status == Status.STEP_UNDERFLOW
    g = host.vjp(BLOWUP_Y0, ts, BLOWUP_P, np.ones((5, 1)), adjoint="discrete", throw=False)
    assert g.failed == (0,) and g.message[0].startswith("forward pass: Step size underflow")
    assert np.isfinite(g.params[1:]).all()


def test_bad_t_eval_as_numba(models):
    numba_model, host = models["lorenz"]
    for model in (numba_model, host):
        with pytest.raises(ShapeError, match="strictly monotone"):
            model.solve([1.0, 1, 1], [0.0, 1.0, 0.5, 2.0], LORENZ_P)


def test_work_size_agrees_with_the_engine(models):
    """The Python side sizes the gradients' workspace with the formula the engine
    indexes by (kernels/symode_adjoint.cuh work_size), and the compiled method's
    coefficients are packed_tableau's."""
    host = models["lv"][1]
    for method in ("dopri5", "rk4"):
        lib = host.module(method, np.float64, "gradient_discrete").lib
        lib.symode_work_size.restype = ctypes.c_longlong
        lib.symode_work_size.argtypes = (ctypes.c_longlong, ctypes.c_longlong)
        for K, L in ((2, 1), (8, 64), (64, 400)):
            assert lib.symode_work_size(K, L) == work_size(2, method, K, L)
        packed = packed_tableau(method)
        out = np.zeros(packed.size)
        lib.symode_tableau(ctypes.c_void_p(out.ctypes.data))
        np.testing.assert_array_equal(out.reshape(packed.shape), packed)


# -- the API ------------------------------------------------------------------------------------
def test_missing_cupy_names_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy raises ImportError
    with pytest.raises(CudaUnavailableError, match=r"cupy-cuda12x.*cupy-cuda13x"):
        lotka_volterra().compile(backend="cuda")
    with pytest.raises(RuntimeError):  # also the builtin it refines
        lotka_volterra().compile(backend="cuda")
    assert not gpu_available()


def test_backend_and_option_errors(models):
    with pytest.raises(ValueError, match=r"backend must be 'numba' or 'cuda', got 'fortran'"):
        lotka_volterra().compile(backend="fortran")
    with pytest.raises(ValueError, match="specialize=True is a numba option"):
        lotka_volterra().compile(backend="cuda", specialize=True)
    system = lotka_volterra()
    with pytest.raises(ValueError, match="symbolic losses"):
        CudaModel(system, loss=symode.Loss(running=system.states[0] ** 2), target="host")
    host = models["lv"][1]
    Y0, P, cot = lv_batch()
    with pytest.raises(ValueError, match=r"adjoint='backsolve' is not available.*checkpoint"):
        host.vjp(Y0, LV_TS, P, cot, adjoint="backsolve")
    with pytest.raises(ValueError, match="use adjoint='discrete'"):
        host.vjp(Y0, LV_TS, P, cot, adjoint="checkpoint", method="rk4", dt=0.1)
    with pytest.raises(ValueError, match="checkpoints must be an int >= 2"):
        host.vjp(Y0, LV_TS, P, cot, checkpoints=1)
    with pytest.raises(ShapeError, match="cotangent must have shape"):
        host.vjp(Y0, LV_TS, P, cot[:, :2])
    with pytest.raises(ShapeError, match=r"y0 must have shape \(2,\)"):
        host.solve(np.ones(3), LV_TS, P[0])
    with pytest.raises(ValueError, match="dense=True"):
        host.solve(Y0, LV_TS, P, dense=True)
    with pytest.raises(ValueError, match="fixed-step method 'rk4' needs a positive step"):
        host.solve(Y0, LV_TS, P, method="rk4")


# -- on a GPU -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gpu_models(models, cuda_cache):
    return {
        name: CudaModel(host.system, cache_dir=cuda_cache, target="gpu")
        for name, (_, host) in models.items()
    }


@pytest.mark.parametrize(
    "opts,tol",
    [
        ({"method": "rk4", "dt": 0.01}, 1e-12),
        ({"method": "dopri5", "rtol": 1e-8, "atol": 1e-8}, 1e-9),
    ],
)
@pytest.mark.gpu
@needs_gpu
def test_gpu_solve_matches_numba(models, gpu_models, opts, tol):
    """The device runs the engine the host build runs: the same bounds against numba,
    CuPy in and out (NumPy on request), float32 too."""
    import cupy

    numba_model, host = models["lorenz"]
    dev = gpu_models["lorenz"]
    Y0, P = p2_batch(64)
    ts = np.linspace(0.0, 2.0, 11)
    a = dev.solve(cupy.asarray(Y0), ts, P, **opts)
    assert isinstance(a.y, cupy.ndarray)
    b = numba_model.solve(Y0, ts, P, **opts)
    assert rel(a.y.get(), b.y) <= tol
    np.testing.assert_array_equal(a.stats["nfev"].get(), b.stats["nfev"])
    c = dev.solve(Y0, ts, P, output="numpy", dtype=np.float32, **opts)
    assert isinstance(c.y, np.ndarray) and c.y.dtype == np.float32


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("adjoint", ["discrete", "checkpoint"])
def test_gpu_gradients_and_statuses(models, gpu_models, adjoint):
    numba_model, host = models["lv"]
    Y0, P, cot = lv_batch()
    opts = {"method": "dopri5", "rtol": 1e-8, "atol": 1e-8, "checkpoints": 8}
    a = gpu_models["lv"].vjp(
        Y0, LV_TS, P, cot, adjoint=adjoint, segment_steps=400, output="numpy", **opts
    )
    b = numba_model.vjp(Y0, LV_TS, P, cotangent=cot, adjoint=adjoint, **opts)
    assert rel(flat(a), flat(b)) <= 1e-9
    ts = np.linspace(0.0, 2.0, 5)
    s = gpu_models["blowup"].solve(BLOWUP_Y0, ts, BLOWUP_P, throw=False)
    r = models["blowup"][0].solve(BLOWUP_Y0, ts, BLOWUP_P, throw=False)
    np.testing.assert_array_equal(s.status, r.status)


# -- the example and the GPU check script -------------------------------------------------------
def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_gpu_parameter_sweep_quick(cache_dir, capsys):
    """examples/gpu_parameter_sweep.py --quick: on this machine the CPU fallback (the
    numba ensemble); the bifurcation picture's landmarks: the origin for ρ < 1, the
    fixed points C± (z → ρ − 1) in between, chaos at ρ = 28."""
    ex = _load(REPO / "examples" / "gpu_parameter_sweep.py", "_example_gpu_parameter_sweep")
    out = ex.main(quick=True, plot=None, cache_dir=cache_dir, progress=False)
    printed = capsys.readouterr().out
    assert ("GPU" in printed) and ("backend" in printed)
    if not gpu_available():
        assert out["backend"] == "numba" and "CPU" in printed
    rho, zmax, zmin = out["rho"], out["z_max"], out["z_min"]
    assert np.all(np.abs(zmax[rho < 0.5]) < 1e-3)  # the origin
    steady = (rho > 2) & (rho < 13)
    np.testing.assert_allclose(zmax[steady], rho[steady] - 1, rtol=1e-3)  # C±
    assert (zmax - zmin)[np.argmin(np.abs(rho - 28))] > 10  # the strange attractor


def test_gpu_check_dry_run(capsys):
    """benchmarks/gpu_check.py --dry-run: imports, arguments, the plan and its time
    budget, without a GPU."""
    run = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "dry run" in run.stdout and "P2" in run.stdout and "checkpoint" in run.stdout
