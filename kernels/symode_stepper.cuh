// symode's CUDA engine, part 2: the Runge-Kutta stepper, one trajectory per thread.
//
// A port of kernels/integrate.py (the numba engine), piece for piece and in the same
// order of operations, so that the two agree to rounding (tests/test_cuda.py compiles
// this header as host code and compares): ``begin`` (the first evaluation, the outputs
// at t0, Hairer's initial step), ``advance`` (the step loop: the stages, the error
// estimate, the PI controller ``control``, the outputs by dense output, the record),
// ``finish`` (stats). The method is the generated struct ``Tab`` (symode_method: the
// tableau's sizes as constants, its coefficients as literals the compiler folds into
// the unrolled stage loops); the system the generated ``Sys`` (symode_system). What a
// stage evaluates is a ``Kind`` (Forward here, the adjoint in symode_adjoint.cuh);
// where outputs go an ``Out`` policy; what is kept of the accepted steps a ``Rec``.
//
// References: Hairer, Norsett & Wanner, Solving ODEs I, II.4 (step size control, initial
// step) and II.6 (dense output).
#ifndef SYMODE_STEPPER_CUH
#define SYMODE_STEPPER_CUH

namespace symode {

// the options, read once per call of ``advance`` (integrate.py: Options, read_options)
struct Options {
  I64 max_steps, nerr;
  double rtol, safety, facmin, facmax, beta, expo, dt_min;
};

template <class Tab>
SYMODE_HD SYMODE_INLINE Options read_options(const I64* iopt, const double* fopt) {
  Options o;
  o.max_steps = iopt[I_MAX_STEPS];
  o.nerr = iopt[I_NERR];
  o.rtol = fopt[F_RTOL];
  o.safety = fopt[F_SAFETY];
  o.facmin = fopt[F_FACMIN];
  o.facmax = fopt[F_FACMAX];
  o.beta = fopt[F_BETA];
  o.expo = 1.0 / (Tab::ERR_ORDER + 1) - 0.75 * o.beta;
  o.dt_min = fopt[F_DT_MIN];
  return o;
}

// the PI controller's memory (integrate.py: Controller)
struct Controller {
  double h, errold, log_errold;
  bool rejected, nonfinite;
};

// The PI controller (HNW's DOPRI5, Gustafsson's beta) on a step of size |hs| with error
// err: whether it is accepted, the next step's size (hnext) and the controller's new
// memory (integrate.py: control, line for line).
SYMODE_HD SYMODE_INLINE bool control(const Options& o, Controller& c, double err, bool fin,
                                     double hs, double& hnext) {
  using namespace symode_math;
  const double log_err_min = log(ERR_MIN);
  double h = fabs(hs);
  if (!(err <= 1e300) || !fin) {
    h *= o.facmin;
    c = Controller{h, c.errold, c.log_errold, true, true};
    hnext = h;
    return false;
  }
  const double log_err = err > 0.0 ? log(err) : log_err_min;
  if (err > 1.0) {
    h *= pymax(o.facmin, o.safety * exp(-o.expo * log_err));
    c = Controller{h, c.errold, c.log_errold, true, false};
    hnext = h;
    return false;
  }
  double fac;
  if (err == 0.0) {
    fac = o.facmax;
  } else {
    fac = o.safety * exp(o.beta * c.log_errold - o.expo * log_err);
  }
  fac = pymin(c.rejected ? 1.0 : o.facmax, pymax(o.facmin, fac));
  if (h < c.h) {
    hnext = pymin(c.h, h * fac);
    c = Controller{hnext, c.errold, c.log_errold, false, false};
    return true;
  }
  hnext = h * fac;
  c = Controller{hnext, pymax(err, ERR_MIN), pymax(log_err, log_err_min), false, false};
  return true;
}

// Why an adaptive loop cannot take another step (integrate.py: step_failure).
SYMODE_HD SYMODE_INLINE I64 step_failure(const Options& o, const Controller& c, I64 step,
                                         double t, double direction) {
  using namespace symode_math;
  if (step >= o.max_steps) return MAX_STEPS;
  const double hmin = pymax(o.dt_min, 10.0 * fabs(nextafter(t, t + direction) - t));
  if (c.h < hmin) return c.nonfinite ? NONFINITE : STEP_UNDERFLOW;
  return SUCCESS;
}

// The step loop's state between calls of ``advance`` (integrate.py: the workspace's z,
// k[0], fv and iv).
template <typename V, int NZ>
struct Loop {
  V z[NZ];
  V k0[NZ];
  double t, h, errold, fail_h;
  I64 step, nfev, naccept, nreject, status, step0, stop;
  bool rejected, nonfinite;
};

// bth[i] = b_i(theta) = sum_q P[i, q] theta^(q+1) (integrate.py: dense_weights)
template <class Tab>
SYMODE_HD SYMODE_INLINE void dense_weights(double theta, double* bth) {
  SYMODE_UNROLL
  for (int i = 0; i < Tab::NS; ++i) {
    double v = Tab::P(i, Tab::K - 1);
    SYMODE_UNROLL
    for (int q = Tab::K - 2; q >= 0; --q) v = v * theta + Tab::P(i, q);
    bth[i] = v * theta;
  }
}

// The forward dynamics: a stage evaluates f.
template <typename real, class Sys>
struct Forward {
  typedef real V;
  static constexpr int NZ = Sys::N;
  static constexpr int NREAD = Sys::N;
  const real* p;
  SYMODE_HD SYMODE_INLINE void eval(double t, const real* z, real* out) const {
    Sys::rhs(t, z, p, out);
  }
  SYMODE_HD SYMODE_INLINE bool on_stop(double, real*) const { return false; }
};

// Outputs at times t_out (a solve's t_eval), written into z_out (T, NZ) as the steps
// pass them: the end state, or the method's continuous extension (HNW II.6).
template <typename V, int NZ>
struct DenseOutputs {
  static constexpr bool STOPS = false;
  const double* t_out;
  I64 T;
  V* z_out;
  I64 iout;

  SYMODE_HD SYMODE_INLINE void begin(double t0, const V* z) {
    while (iout < T && t_out[iout] == t0) {
      for (int m = 0; m < NZ; ++m) z_out[iout * NZ + m] = z[m];
      ++iout;
    }
  }
  // whether t_out is strictly monotone in the direction of integration (integrate.py:
  // ordered; NaN is not)
  SYMODE_HD SYMODE_INLINE bool ordered(double direction, double) const {
    for (I64 i = 1; i < T; ++i)
      if (!(direction * (t_out[i] - t_out[i - 1]) > 0)) return false;
    return true;
  }
  SYMODE_HD SYMODE_INLINE bool pending() const { return false; }
  SYMODE_HD SYMODE_INLINE double next() const { return 0.0; }
  // whether the step to tnew passes an output strictly inside it (the extra stages of a
  // continuous extension are needed)
  SYMODE_HD SYMODE_INLINE bool needs_dense(double tnew, double direction) const {
    return iout < T && direction * (t_out[iout] - tnew) <= 0 && t_out[iout] != tnew;
  }
  // the outputs inside (t, tnew] (integrate.py: write_outputs); never a stop
  template <class Tab>
  SYMODE_HD SYMODE_INLINE bool write(double t, double tnew, double hs, const V* z,
                                     const V* znew, const V (*k)[NZ], double direction) {
    double bth[Tab::NS];
    while (iout < T && direction * (t_out[iout] - tnew) <= 0) {
      if (t_out[iout] == tnew) {
        for (int m = 0; m < NZ; ++m) z_out[iout * NZ + m] = znew[m];
      } else {
        dense_weights<Tab>((t_out[iout] - t) / hs, bth);
        SYMODE_UNROLL
        for (int m = 0; m < NZ; ++m) {
          double acc = 0.0;
          SYMODE_UNROLL
          for (int i = 0; i < Tab::NS; ++i) acc += bth[i] * k[i][m];
          z_out[iout * NZ + m] = V(z[m] + hs * acc);
        }
      }
      ++iout;
    }
    return false;
  }
};

// No outputs (a replayed segment).
template <typename V, int NZ>
struct NoOutputs : DenseOutputs<V, NZ> {};

// What is kept of the accepted steps: nothing.
struct NoRecord {
  static constexpr bool STAGES = false;
  static constexpr bool CHECKPOINTS = false;
  SYMODE_HD SYMODE_INLINE bool recording(I64) const { return false; }
  template <class Tab, typename V, int NZ>
  SYMODE_HD SYMODE_INLINE void record_step(I64, double, double, const V*, const V (*)[NZ]) {}
  template <typename V, int NZ>
  SYMODE_HD SYMODE_INLINE void snapshot(I64, double, double, double, const V*, const V*) {}
};

// The stages of a continuous extension beyond the step (DOP853's three), in
// k[S+1 ..] from the step's stages and f1 = k[S] (integrate.py: extra_stages).
template <class Tab, class Kind>
SYMODE_HD SYMODE_INLINE I64 extra_stages(const Kind& kind, double t, const typename Kind::V* z,
                                         double h, typename Kind::V (*k)[Kind::NZ],
                                         typename Kind::V* ztmp) {
  typedef typename Kind::V V;
  SYMODE_UNROLL
  for (int j = 0; j < Tab::NX; ++j) {
    SYMODE_UNROLL
    for (int m = 0; m < Kind::NZ; ++m) {
      V acc = V(0);
      SYMODE_UNROLL
      for (int q = 0; q < Tab::S + 1 + j; ++q) acc += V(Tab::Ax(j, q)) * k[q][m];
      ztmp[m] = z[m] + V(h) * acc;
    }
    kind.eval(t + Tab::cx(j) * h, ztmp, k[Tab::S + 1 + j]);
  }
  return Tab::NX;
}

// Hairer's starting step size (HNW I, II.4, p. 169) from f0; one evaluation
// (integrate.py: initial_step).
template <class Tab, class Kind>
SYMODE_HD double initial_step(const Kind& kind, double t0, const typename Kind::V* z0,
                              const typename Kind::V* f0, double direction, double rtol,
                              const double* atol, I64 nerr) {
  using namespace symode_math;
  typedef typename Kind::V V;
  constexpr int NZ = Kind::NZ;
  V ztmp[NZ];
  V f1[NZ];
  double d0 = 0.0, d1 = 0.0;
  for (int m = 0; m < NZ; ++m) {
    if (m >= nerr) break;
    const double sc = atol[m] + rtol * fabs(double(z0[m]));
    const double a = z0[m] / sc, b = f0[m] / sc;
    d0 += a * a;
    d1 += b * b;
  }
  d0 = sqrt(d0 / NZ);
  d1 = sqrt(d1 / NZ);
  const double h0 = (d0 < 1e-5 || d1 < 1e-5) ? 1e-6 : 0.01 * d0 / d1;
  SYMODE_UNROLL
  for (int m = 0; m < NZ; ++m) ztmp[m] = V(z0[m] + direction * h0 * f0[m]);
  kind.eval(t0 + direction * h0, ztmp, f1);
  double d2 = 0.0;
  for (int m = 0; m < NZ; ++m) {
    if (m >= nerr) break;
    const double sc = atol[m] + rtol * fabs(double(z0[m]));
    const double a = (f1[m] - f0[m]) / sc;
    d2 += a * a;
  }
  d2 = sqrt(d2 / NZ) / h0;
  if (!finite(d2)) return h0 * 1e-3;
  double h1;
  if (pymax(d1, d2) <= 1e-15) {
    h1 = pymax(1e-6, h0 * 1e-3);
  } else {
    h1 = pow(0.01 / pymax(d1, d2), 1.0 / (Tab::ERR_ORDER + 1));
  }
  return pymin(100.0 * h0, h1);
}

template <typename V, int NZ>
SYMODE_HD SYMODE_INLINE bool all_finite(const V* x) {
  bool ok = true;
  for (int m = 0; m < NZ; ++m) ok = ok && finite(x[m]);
  return ok;
}

// Set up the step loop (integrate.py: begin): z = z0, k0 = F(t0, z0), the outputs at
// t0, the first step size; leaves status RUNNING, or the reason not to start.
template <class Tab, class Kind, class Out>
SYMODE_HD void begin(const Kind& kind, Loop<typename Kind::V, Kind::NZ>& L, double t0,
                     double t1, const typename Kind::V* z0, const I64* iopt, const double* fopt,
                     const double* atol, I64 G, Out& out) {
  using namespace symode_math;
  constexpr int NZ = Kind::NZ;
  const double direction = t1 >= t0 ? 1.0 : -1.0;
  for (int m = 0; m < NZ; ++m) L.z[m] = z0[m];
  L.t = t0;
  L.h = 0.0;
  L.errold = ERR_MIN;
  L.fail_h = 0.0;
  L.step = L.naccept = L.nreject = L.step0 = 0;
  L.stop = I64(1) << 62;
  L.rejected = L.nonfinite = false;
  L.status = RUNNING;
  kind.eval(t0, L.z, L.k0);
  L.nfev = 1;
  out.begin(t0, L.z);
  if (!out.ordered(direction, t0)) {
    L.status = BAD_T_EVAL;
  } else if (!all_finite<typename Kind::V, NZ>(L.k0) || !all_finite<typename Kind::V, NZ>(L.z)) {
    L.status = NONFINITE;
  } else if (Tab::ADAPTIVE && G == 0) {
    double h = fopt[F_H0];
    if (h <= 0.0) {
      h = initial_step<Tab>(kind, t0, L.z, L.k0, direction, fopt[F_RTOL], atol, iopt[I_NERR]);
      L.nfev += 1;
    }
    L.h = pymin(h, fabs(t1 - t0));
  }
}

// The step loop (integrate.py: advance): steps from the state in L until t1, step
// number L.stop, a failure, or (with stops) a stop whose change the caller makes
// (status STOPPED). See integrate.py for the why of each piece; the order of the
// operations is the numba engine's.
template <class Tab, class Kind, class Out, class Rec>
SYMODE_HD void advance(const Kind& kind, Loop<typename Kind::V, Kind::NZ>& L, double t1,
                       const Options& opt, const double* atol, const double* grid, I64 G,
                       Out& out, Rec& rec) {
  using namespace symode_math;
  typedef typename Kind::V V;
  constexpr int NZ = Kind::NZ;
  constexpr int NREAD = Kind::NREAD;
  constexpr int S = Tab::S;
  V z[NZ], ztmp[NZ], znew[NZ];
  V k[Tab::NS][NZ];
  SYMODE_UNROLL
  for (int m = 0; m < NZ; ++m) {
    z[m] = L.z[m];
    k[0][m] = L.k0[m];
    ztmp[m] = V(0);
  }
  const bool adaptive = Tab::ADAPTIVE && G == 0;
  double t = L.t;
  const double direction = t1 >= t ? 1.0 : -1.0;
  Controller ctl{L.h, L.errold, log(L.errold), L.rejected, L.nonfinite};
  double fail_h = L.fail_h;
  I64 step = L.step, nfev = L.nfev, naccept = L.naccept, nreject = L.nreject;
  I64 status = SUCCESS;
  if (Rec::CHECKPOINTS && step == 0) rec.template snapshot<V, NZ>(0, t, ctl.h, ctl.errold, z, k[0]);
  while (direction * (t1 - t) > 0 && step < L.stop) {
    if (adaptive) {
      status = step_failure(opt, ctl, step, t, direction);
      if (status != SUCCESS) {
        fail_h = ctl.h;
        break;
      }
    } else if (step >= G - 1) {
      break;
    }
    // the end of the step (integrate.py: next_time)
    double tnew, hs;
    if (!adaptive) {
      tnew = grid[step + 1];
      hs = tnew - t;
    } else {
      hs = direction * ctl.h;
      tnew = t + hs;
      if (direction * (tnew - t1) >= 0) {
        tnew = t1;
        hs = t1 - t;
      }
      if (Out::STOPS && out.pending()) {
        const double reach = ctl.h * (ctl.rejected ? 1.0 : STOP_STRETCH);
        const double ts = out.next();
        if (direction * (ts - t) <= reach) {
          tnew = ts;
          hs = tnew - t;
        }
      }
    }
    // stages 1..S-1 (k[0] = F(t, z) is set)
    SYMODE_UNROLL
    for (int i = 1; i < S; ++i) {
      SYMODE_UNROLL
      for (int m = 0; m < NREAD; ++m) {
        V acc = V(0);
        SYMODE_UNROLL
        for (int j = 0; j < i; ++j) acc += V(Tab::A(i, j)) * k[j][m];
        ztmp[m] = z[m] + V(hs) * acc;
      }
      kind.eval(t + Tab::c(i) * hs, ztmp, k[i]);
    }
    // znew and, adaptive, the RMS of the scaled error estimate over the first nerr
    // components (HNW II.4 eq. 4.11; the seminorm of Kidger, Chen & Lyons 2021)
    bool fin = true;
    double err = 0.0;
    SYMODE_UNROLL
    for (int m = 0; m < NZ; ++m) {
      V acc = V(0), erm = V(0);
      SYMODE_UNROLL
      for (int i = 0; i < S; ++i) {
        acc += V(Tab::b(i)) * k[i][m];
        if (Tab::ADAPTIVE) erm += V(Tab::e(i)) * k[i][m];
      }
      const V zn = z[m] + V(hs) * acc;
      znew[m] = zn;
      fin = fin && finite(zn);
      if (adaptive && m < opt.nerr) {
        const double r = hs * double(erm) /
                         (atol[m] + opt.rtol * pymax(fabs(double(z[m])), fabs(double(zn))));
        err += r * r;
      }
    }
    nfev += S - 1;
    double hnext = ctl.h;
    if (adaptive) {
      if (!control(opt, ctl, sqrt(err / NZ), fin, hs, hnext)) {
        nreject += 1;
        continue;
      }
    } else if (!fin) {
      status = NONFINITE;
      fail_h = fabs(hs);
      break;
    }
    // accepted: the last stage k[S] = F(tnew, znew), and the extra stages of the
    // dense output where they are needed
    if (Tab::FSAL) {
      SYMODE_UNROLL
      for (int m = 0; m < NZ; ++m) k[S][m] = k[S - 1][m];
    } else {
      kind.eval(tnew, znew, k[S]);
      nfev += 1;
    }
    if (Tab::NX > 0 && ((Rec::STAGES && rec.recording(step)) || out.needs_dense(tnew, direction)))
      nfev += extra_stages<Tab>(kind, t, z, hs, k, ztmp);
    const bool hit = out.template write<Tab>(t, tnew, hs, z, znew, k, direction);
    if (Rec::STAGES) rec.template record_step<Tab, V, NZ>(step, t, hs, z, k);
    t = tnew;
    SYMODE_UNROLL
    for (int m = 0; m < NZ; ++m) {
      z[m] = znew[m];
      k[0][m] = k[S][m];
    }
    ctl.h = hnext;
    step += 1;
    naccept += 1;
    if (Rec::CHECKPOINTS) rec.template snapshot<V, NZ>(step, t, ctl.h, ctl.errold, z, k[0]);
    if (!adaptive && !all_finite<V, NZ>(k[0])) {
      status = NONFINITE;
      fail_h = fabs(hs);
      break;
    }
    if (hit) {
      if (!(adaptive && kind.on_stop(t, z))) {
        status = STOPPED;
        break;
      }
      // z changed at t: F(t, z) again, the controller goes on
      kind.eval(t, z, k[0]);
      nfev += 1;
      if (!all_finite<V, NZ>(k[0]) || !all_finite<V, NZ>(z)) {
        status = NONFINITE;
        fail_h = ctl.h;
        break;
      }
    }
  }
  for (int m = 0; m < NZ; ++m) {
    L.z[m] = z[m];
    L.k0[m] = k[0][m];
  }
  L.t = t;
  L.h = ctl.h;
  L.errold = ctl.errold;
  L.fail_h = fail_h;
  L.step = step;
  L.nfev = nfev;
  L.naccept = naccept;
  L.nreject = nreject;
  L.status = status;
  L.rejected = ctl.rejected;
  L.nonfinite = ctl.nonfinite;
}

// Add the loop's counts to stats, its status and last times to fstats (integrate.py:
// finish).
template <typename V, int NZ>
SYMODE_HD SYMODE_INLINE void finish(const Loop<V, NZ>& L, I64 nout, I64* stats, double* fstats) {
  stats[S_STATUS] = L.status;
  stats[S_NFEV] += L.nfev;
  stats[S_NACCEPT] += L.naccept;
  stats[S_NREJECT] += L.nreject;
  stats[S_NOUT] = nout;
  fstats[FS_T] = L.t;
  fstats[FS_H] = L.fail_h;
  fstats[FS_HNEXT] = L.h;
}

// One trajectory of an ensemble solve (ensemble.py: a member's solve_forward): from
// T0[i] to T1[i], outputs at the shared t_out into row i of Y, stats and fstats row i.
template <typename real, class Sys, class Tab>
SYMODE_HD void solve_trajectory(I64 i, I64 B, const double* T0, const double* T1,
                                const real* Y0, const real* P, const I64* iopt,
                                const double* fopt, const double* atol, const double* grid,
                                I64 G, const double* t_out, I64 T, real* Y, I64* stats,
                                double* fstats) {
  (void)B;
  constexpr int N = Sys::N;
  const Forward<real, Sys> kind{P + i * Sys::P};
  Loop<real, N> L;
  DenseOutputs<real, N> out{t_out, T, Y + i * T * N, 0};
  begin<Tab>(kind, L, T0[i], T1[i], Y0 + i * N, iopt, fopt, atol, G, out);
  if (L.status == RUNNING) {
    const Options opt = read_options<Tab>(iopt, fopt);
    NoRecord rec;
    advance<Tab>(kind, L, T1[i], opt, atol, grid, G, out, rec);
  }
  finish(L, out.iout, stats + 5 * i, fstats + 3 * i);
}

// The method's coefficients as compiled, in symode.tableaus.packed_tableau's layout
// (the CPU checks compare them with the Python side's).
template <class Tab>
void dump_tableau(double* out) {
  const int s = Tab::S, K = Tab::K, nx = Tab::NX, NS = Tab::NS;
  int w = NS > K ? NS : K;
  w = w > 6 ? w : 6;
  for (int i = 0; i < (5 + s + NS + nx) * w; ++i) out[i] = 0.0;
  out[0] = s;
  out[1] = K;
  out[2] = nx;
  out[3] = Tab::FSAL ? 1.0 : 0.0;
  out[4] = Tab::ADAPTIVE ? 1.0 : 0.0;
  out[5] = Tab::ERR_ORDER;
  for (int i = 0; i < s; ++i)
    for (int j = 0; j < s; ++j) out[(1 + i) * w + j] = Tab::A(i, j);
  for (int j = 0; j < s; ++j) {
    out[(1 + s) * w + j] = Tab::b(j);
    out[(2 + s) * w + j] = Tab::c(j);
    out[(3 + s) * w + j] = Tab::e(j);
  }
  const int r = 4 + s;
  for (int i = 0; i < NS; ++i)
    for (int q = 0; q < K; ++q) out[(r + i) * w + q] = Tab::P(i, q);
  for (int j = 0; j < nx; ++j)
    for (int q = 0; q < NS; ++q) out[(r + NS + j) * w + q] = Tab::Ax(j, q);
  for (int j = 0; j < nx; ++j) out[(r + NS + nx) * w + j] = Tab::cx(j);
}

}  // namespace symode

#endif  // SYMODE_STEPPER_CUH
