// symode's CUDA engine, part 3: gradients through a solve with bounded memory per thread.
//
// A port of kernels/adjoint.py's checkpoint and discrete modes for raw cotangents
// (dL/dy at the observation times), one trajectory per thread. A GPU thread cannot grow
// its buffers, so both modes always run on checkpoints: the forward pass keeps at most K
// snapshots of the step loop (thinned as it goes, integrate.py: snapshot), and the
// backward pass replays the accepted steps from them, bit for bit those of the forward
// pass, into a buffer of L steps. A segment between two checkpoints longer than L is
// replayed in pieces of L steps, last piece first, each from the segment's checkpoint
// (cost: O(m^2 / L) steps for a segment of m; with L at least the longest segment, as by
// default for a few thousand steps, every segment is replayed once, as the numba engine
// does with ``checkpoints=K``).
//
// - discrete: the exact reverse sweep through the RK stages of every accepted step and
//   of the dense output at the observations (adjoint.py: reverse_steps);
// - checkpoint: [lambda, mu] integrated backwards by the same step loop (adaptive steps)
//   with y(t) from the replayed piece's continuous extension, stopping at the
//   observations (lambda jumps) and at the pieces' starts (adjoint.py:
//   checkpoint_gradient, checkpoint_sweep).
//
// The adjoint variables are double whatever the state's precision (as in the numba
// engine: cotangents and parameter gradients are float64).
#ifndef SYMODE_ADJOINT_CUH
#define SYMODE_ADJOINT_CUH

namespace symode {

// The per-thread workspace in the interleaved buffer ``work`` (W, B): K checkpoints
// (step number, (t, h, errold), z, k0), then a piece of L steps (start times, sizes,
// states and stages; L + 1 rows: the end time). symode/cuda.py's work_size is this.
template <class Sys, class Tab>
SYMODE_HD SYMODE_INLINE I64 work_size(I64 K, I64 L) {
  return K * (4 + 2 * Sys::N) + (L + 1) * (2 + Sys::N + Tab::NS * Sys::N);
}

template <class Sys, class Tab>
struct Workspace {
  Strided<double> ck_i, ck_f, ck_z, ck_k0, seg_t, seg_h, seg_z, seg_k;
  SYMODE_HD Workspace(Strided<double> w, I64 K, I64 L) {
    constexpr int N = Sys::N;
    ck_i = w;
    ck_f = w.at(K);
    ck_z = w.at(4 * K);
    ck_k0 = w.at(4 * K + K * N);
    const I64 o = K * (4 + 2 * N);
    seg_t = w.at(o);
    seg_h = w.at(o + (L + 1));
    seg_z = w.at(o + 2 * (L + 1));
    seg_k = w.at(o + (2 + N) * (L + 1));
  }
};

// At most K snapshots of the forward step loop (integrate.py: snapshot, line for line):
// kept at steps that are multiples of ``every``; when K are held, every other one is
// dropped and ``every`` doubles.
template <class Sys, class Tab>
struct CheckpointRecord {
  static constexpr bool STAGES = false;
  static constexpr bool CHECKPOINTS = true;
  Workspace<Sys, Tab> ws;
  I64 max_ck, n_ck, every;

  SYMODE_HD SYMODE_INLINE bool recording(I64) const { return false; }
  template <class Tab_, typename V, int NZ>
  SYMODE_HD SYMODE_INLINE void record_step(I64, double, double, const V*, const V (*)[NZ]) {}

  template <typename V, int NZ>
  SYMODE_HD void snapshot(I64 step, double t, double h, double errold, const V* z, const V* k0) {
    if (step % every != 0) return;
    if (n_ck == max_ck) {
      I64 kept = 0;
      for (I64 q = 0; q < n_ck; ++q) {
        if (I64(ws.ck_i[q]) % (2 * every) == 0) {
          ws.ck_i[kept] = ws.ck_i[q];
          for (int m = 0; m < NZ; ++m) {
            ws.ck_z[kept * NZ + m] = ws.ck_z[q * NZ + m];
            ws.ck_k0[kept * NZ + m] = ws.ck_k0[q * NZ + m];
          }
          for (int j = 0; j < 3; ++j) ws.ck_f[kept * 3 + j] = ws.ck_f[q * 3 + j];
          kept += 1;
        }
      }
      n_ck = kept;
      every *= 2;
      if (step % every != 0) return;
    }
    ws.ck_i[n_ck] = double(step);
    for (int m = 0; m < NZ; ++m) {
      ws.ck_z[n_ck * NZ + m] = z[m];
      ws.ck_k0[n_ck * NZ + m] = k0[m];
    }
    ws.ck_f[n_ck * 3 + 0] = t;
    ws.ck_f[n_ck * 3 + 1] = h;
    ws.ck_f[n_ck * 3 + 2] = errold;
    n_ck += 1;
  }
};

// The accepted steps from step ``from`` on, recorded into the piece buffers (start
// time, size, state, every stage: integrate.py's record_step with RECORD_STAGES).
template <class Sys, class Tab>
struct StageRecord {
  static constexpr bool STAGES = true;
  static constexpr bool CHECKPOINTS = false;
  Workspace<Sys, Tab> ws;
  I64 from;

  SYMODE_HD SYMODE_INLINE bool recording(I64 step) const { return step >= from; }
  template <class Tab_, typename V, int NZ>
  SYMODE_HD SYMODE_INLINE void record_step(I64 step, double t, double hs, const V* z,
                                           const V (*k)[NZ]) {
    if (step < from) return;
    const I64 r = step - from;
    ws.seg_t[r] = t;
    ws.seg_h[r] = hs;
    for (int m = 0; m < NZ; ++m) ws.seg_z[r * NZ + m] = z[m];
    for (int i = 0; i < Tab::NS; ++i)
      for (int m = 0; m < NZ; ++m) ws.seg_k[(r * Tab::NS + i) * NZ + m] = k[i][m];
  }
  template <typename V, int NZ>
  SYMODE_HD SYMODE_INLINE void snapshot(I64, double, double, double, const V*, const V*) {}
};

// The forward pass's record and what the backward pass needs of it.
struct ForwardRun {
  double t1;
  const I64* iopt;
  const double* fopt;
  const double* atol;
  const double* grid;
  I64 G;
  I64 nsteps, n_ck, n_seg;
};

// A piece of the backward pass: steps [a, e) of segment q (from checkpoint q).
struct Piece {
  I64 q, a, e;
};

template <class Sys, class Tab>
SYMODE_HD SYMODE_INLINE I64 segment_start(const Workspace<Sys, Tab>& ws, I64 q) {
  return I64(ws.ck_i[q]);
}

template <class Sys, class Tab>
SYMODE_HD SYMODE_INLINE I64 segment_end(const Workspace<Sys, Tab>& ws, const ForwardRun& f, I64 q) {
  return q + 1 < f.n_ck ? I64(ws.ck_i[q + 1]) : f.nsteps;
}

// the last piece of segment q
template <class Sys, class Tab>
SYMODE_HD SYMODE_INLINE Piece last_piece(const Workspace<Sys, Tab>& ws, const ForwardRun& f, I64 q,
                                         I64 L) {
  const I64 lo = segment_start(ws, q), e = segment_end(ws, f, q);
  return Piece{q, e - L > lo ? e - L : lo, e};
}

// the piece before p (q = -1: none)
template <class Sys, class Tab>
SYMODE_HD SYMODE_INLINE Piece previous_piece(const Workspace<Sys, Tab>& ws, const ForwardRun& f,
                                             Piece p, I64 L) {
  const I64 lo = segment_start(ws, p.q);
  if (p.a > lo) return Piece{p.q, p.a - L > lo ? p.a - L : lo, p.a};
  if (p.q == 0) return Piece{-1, 0, 0};
  return last_piece(ws, f, p.q - 1, L);
}

// Take the accepted steps of segment q up to p.e again from checkpoint q, recording those
// from p.a on into the piece buffers; the step loop restarts in exactly the state it had
// (integrate.py: replay). Returns the evaluations.
template <typename real, class Sys, class Tab>
SYMODE_HD I64 replay(const Forward<real, Sys>& kind, const Workspace<Sys, Tab>& ws,
                     const ForwardRun& f, Piece p) {
  constexpr int N = Sys::N;
  Loop<real, N> L;
  for (int m = 0; m < N; ++m) {
    L.z[m] = real(ws.ck_z[p.q * N + m]);
    L.k0[m] = real(ws.ck_k0[p.q * N + m]);
  }
  L.t = ws.ck_f[p.q * 3 + 0];
  L.h = ws.ck_f[p.q * 3 + 1];
  L.errold = ws.ck_f[p.q * 3 + 2];
  L.fail_h = 0.0;
  L.step = L.step0 = I64(ws.ck_i[p.q]);
  L.stop = p.e;
  L.nfev = L.naccept = L.nreject = 0;
  L.status = SUCCESS;
  L.rejected = L.nonfinite = false;
  DenseOutputs<real, N> none{nullptr, 0, nullptr, 0};
  StageRecord<Sys, Tab> rec{ws, p.a};
  const Options opt = read_options<Tab>(f.iopt, f.fopt);
  advance<Tab>(kind, L, f.t1, opt, f.atol, f.grid, f.G, none, rec);
  ws.seg_t[p.e - p.a] = L.t;
  return L.nfev;
}

// The observations' jumps of a backward pass (adjoint.py: Jumps, make_jump with raw
// cotangents): lambda += cot[io] at observation io, the last one first.
template <int N>
struct Jumps {
  const double* t_obs;
  const double* cot;  // (T, N) of this trajectory
  I64 next;

  // lambda = z[off .. off + N) += cot[next]; returns the observation's index
  SYMODE_HD SYMODE_INLINE I64 make(double* z, int off) {
    const I64 io = next;
    for (int j = 0; j < N; ++j) z[off + j] += cot[io * N + j];
    next = io - 1;
    return io;
  }
  // every observation not before t in the backward pass's direction (``direction`` is
  // the forward pass's): adjoint.py: jumps_at
  SYMODE_HD SYMODE_INLINE void at(double t, double direction, double* z, int off) {
    while (next >= 0 && direction * (t_obs[next] - t) >= 0) make(z, off);
  }
};

// The forward pass of both modes: checkpoints, outputs at t_obs (into y_out), stats.
template <typename real, class Sys, class Tab>
SYMODE_HD bool forward_pass(const Forward<real, Sys>& kind, Workspace<Sys, Tab>& ws, ForwardRun& f,
                            double t0, const real* y0, const double* t_obs, I64 T, real* y_out,
                            I64 K, I64* st_f, double* fout) {
  constexpr int N = Sys::N;
  Loop<real, N> L;
  DenseOutputs<real, N> out{t_obs, T, y_out, 0};
  CheckpointRecord<Sys, Tab> rec{ws, K, 0, 1};
  begin<Tab>(kind, L, t0, f.t1, y0, f.iopt, f.fopt, f.atol, f.G, out);
  if (L.status == RUNNING) {
    const Options opt = read_options<Tab>(f.iopt, f.fopt);
    advance<Tab>(kind, L, f.t1, opt, f.atol, f.grid, f.G, out, rec);
  }
  finish(L, out.iout, st_f, fout + O_FORWARD);
  if (L.status != SUCCESS) return false;
  f.nsteps = L.step;
  f.n_ck = rec.n_ck;
  // a checkpoint taken after the last step starts no segment (adjoint.py: segments)
  f.n_seg = (f.n_ck > 1 && I64(ws.ck_i[f.n_ck - 1]) >= f.nsteps) ? f.n_ck - 1 : f.n_ck;
  return true;
}

// the input of stage i (i < S), or of extra dense-output stage i - S - 1 (i > S), of step r
// of the piece: z_r + h sum_j A[i, j] k_rj in the state's precision, as the forward pass
// formed it (adjoint.py: stage_input)
template <typename real, class Sys, class Tab>
SYMODE_HD SYMODE_INLINE void stage_input(const Workspace<Sys, Tab>& ws, I64 r, int i, double h,
                                         double* out) {
  constexpr int N = Sys::N;
  SYMODE_UNROLL
  for (int m = 0; m < N; ++m) {
    real acc = real(0);
    SYMODE_UNROLL
    for (int j = 0; j < Tab::NS; ++j) {
      if (j >= i) break;
      const double a = i < Tab::S ? Tab::A(i, j) : Tab::Ax(i - Tab::S - 1, j);
      acc += real(a) * real(ws.seg_k[(r * Tab::NS + j) * N + m]);
    }
    out[m] = double(real(ws.seg_z[r * N + m]) + real(h) * acc);
  }
}

// The discrete adjoint's reverse sweep over the steps of one piece, last to first
// (adjoint.py: reverse_steps, line for line, without a running cost).
template <typename real, class Sys, class Tab>
SYMODE_HD void reverse_steps(const Workspace<Sys, Tab>& ws, I64 nseg, const double* p,
                             Jumps<Sys::N>& jumps, double direction, double* zbar, double* gp,
                             I64* st_b) {
  constexpr int N = Sys::N, NP = Sys::P, S = Tab::S, NS = Tab::NS, NX = Tab::NX;
  double kbar[NS][N], zbar_new[N], oz[N], op[NP > 0 ? NP : 1], Y[N], bth[NS];
  for (int m = 0; m < N; ++m) zbar_new[m] = 0.0;
  for (I64 r = nseg - 1; r >= 0; --r) {
    const double ta = ws.seg_t[r], tb = ws.seg_t[r + 1], h = ws.seg_h[r];
    for (int st = 0; st < NS; ++st)
      for (int m = 0; m < N; ++m) kbar[st][m] = 0.0;
    // the observations inside (ta, tb]: the step's end state, or its dense output
    while (jumps.next >= 0 && direction * (jumps.t_obs[jumps.next] - ta) > 0) {
      if (jumps.t_obs[jumps.next] == tb) {
        jumps.make(zbar, 0);
      } else {
        const double to = jumps.t_obs[jumps.next];
        const I64 io = jumps.make(zbar_new, 0);  // held until the step's start
        dense_weights<Tab>((to - ta) / h, bth);
        for (int j = 0; j < N; ++j)
          for (int st = 0; st < NS; ++st) kbar[st][j] += h * bth[st] * jumps.cot[io * N + j];
      }
    }
    // the extra dense-output stages, in reverse
    for (int jx = NX - 1; jx >= 0; --jx) {
      stage_input<real>(ws, r, S + 1 + jx, h, Y);
      Sys::vjp(ta + Tab::cx(jx) * h, Y, p, kbar[S + 1 + jx], oz, op);
      st_b[S_NFEV] += 1;
      for (int q = 0; q < NP; ++q) gp[q] += op[q];
      for (int m = 0; m < N; ++m) {
        zbar_new[m] += oz[m];
        for (int l = 0; l < S + 1 + jx; ++l) kbar[l][m] += h * Tab::Ax(jx, l) * oz[m];
      }
    }
    // f1 = F(tb, z_{r+1}): the last stage itself for FSAL methods
    if (Tab::FSAL) {
      for (int m = 0; m < N; ++m) kbar[S - 1][m] += kbar[S][m];
    } else {
      double z_next[N];
      if (r + 1 < nseg) {
        for (int m = 0; m < N; ++m) z_next[m] = ws.seg_z[(r + 1) * N + m];
      } else {  // the end state as the stepper made it (adjoint.py: seg_end)
        for (int m = 0; m < N; ++m) {
          real acc = real(0);
          for (int i = 0; i < S; ++i) acc += real(Tab::b(i)) * real(ws.seg_k[(r * NS + i) * N + m]);
          z_next[m] = double(real(ws.seg_z[r * N + m]) + real(h) * acc);
        }
      }
      Sys::vjp(tb, z_next, p, kbar[S], oz, op);
      st_b[S_NFEV] += 1;
      for (int m = 0; m < N; ++m) zbar[m] += oz[m];
      for (int q = 0; q < NP; ++q) gp[q] += op[q];
    }
    for (int m = 0; m < N; ++m)
      for (int st = 0; st < S; ++st) kbar[st][m] += h * Tab::b(st) * zbar[m];
    for (int st = S - 1; st >= 0; --st) {
      stage_input<real>(ws, r, st, h, Y);
      Sys::vjp(ta + Tab::c(st) * h, Y, p, kbar[st], oz, op);
      st_b[S_NFEV] += 1;
      for (int q = 0; q < NP; ++q) gp[q] += op[q];
      for (int m = 0; m < N; ++m)
        for (int l = 0; l < st; ++l) kbar[l][m] += h * Tab::A(st, l) * oz[m];
      for (int m = 0; m < N; ++m) zbar_new[m] += oz[m];
    }
    for (int m = 0; m < N; ++m) {
      zbar[m] += zbar_new[m];
      zbar_new[m] = 0.0;
    }
  }
}

// The arguments every gradient entry takes, unpacked for trajectory i.
#define SYMODE_GRADIENT_ARGS                                                                    \
  I64 i, I64 B, const double *T0, const double *T1, const real *Y0, const real *P,               \
      const double *t_obs, I64 T, const double *cot, const I64 *iopt, const double *fopt,        \
      const double *atol, const double *grid, I64 G, const I64 *biopt, const double *bfopt,      \
      const double *batol, I64 K, I64 L, double *work, double *GY0, double *GP, I64 *ST_F,       \
      I64 *ST_B, double *FOUT, real *Y_OUT

// The start both gradients share (inside a SYMODE_GRADIENT_ARGS function with N and NP
// defined): trajectory i's params (and as double, pd), its zeroed gradients, its
// workspace, the forward pass with its checkpoints (returning if it failed), the
// direction of time and the observation jumps of the backward sweep.
#define SYMODE_GRADIENT_START                                                                   \
  const real* p = P + i * NP;                                                                 \
  double pd[NP > 0 ? NP : 1];                                                                 \
  for (int q = 0; q < NP; ++q) pd[q] = double(p[q]);                                          \
  double* gy0 = GY0 + i * N;                                                                  \
  double* gp = GP + i * NP;                                                                   \
  I64* st_b = ST_B + 5 * i;                                                                   \
  double* fout = FOUT + N_FOUT * i;                                                           \
  for (int j = 0; j < N; ++j) gy0[j] = 0.0;                                                   \
  for (int q = 0; q < NP; ++q) gp[q] = 0.0;                                                   \
  const double t0 = T0[i];                                                                    \
  Workspace<Sys, Tab> ws(Strided<double>{work + i, B}, K, L);                                 \
  ForwardRun f{T1[i], iopt, fopt, atol, grid, G, 0, 0, 0};                                    \
  const Forward<real, Sys> kind{p};                                                           \
  if (!forward_pass<real>(kind, ws, f, t0, Y0 + i * N, t_obs, T, Y_OUT + i * T * N, K,        \
                          ST_F + 5 * i, fout))                                                \
    return;                                                                                   \
  const double direction = f.t1 >= t0 ? 1.0 : -1.0;                                           \
  Jumps<N> jumps{t_obs, cot + i * T * N, T - 1};

// One trajectory's discrete gradient (adjoint.py: discrete_gradient with checkpoints).
template <typename real, class Sys, class Tab>
SYMODE_HD void discrete_gradient(SYMODE_GRADIENT_ARGS) {
  (void)biopt, (void)bfopt, (void)batol;
  constexpr int N = Sys::N, NP = Sys::P;
  SYMODE_GRADIENT_START
  double zbar[N];
  for (int m = 0; m < N; ++m) zbar[m] = 0.0;
  for (Piece pc = last_piece(ws, f, f.n_seg - 1, L); pc.q >= 0; pc = previous_piece(ws, f, pc, L)) {
    st_b[S_NFEV] += replay<real>(kind, ws, f, pc);
    reverse_steps<real>(ws, pc.e - pc.a, pd, jumps, direction, zbar, gp, st_b);
  }
  jumps.at(t0, direction, zbar, 0);
  for (int j = 0; j < N; ++j) gy0[j] = zbar[j];
  fout[O_VALUE] = 0.0;
}

// The continuous adjoint's dynamics over the replayed piece: z = [lambda, mu], y(t) from
// the piece's continuous extension (integrate.py: _stage_eval_adjoint), the jumps at the
// observations made in the step loop (on_stop) except at the piece's start.
template <class Sys, class Tab>
struct Adjoint {
  typedef double V;
  static constexpr int N = Sys::N;
  static constexpr int NZ = Sys::N + Sys::P;
  static constexpr int NREAD = Sys::N;
  const double* p;
  Workspace<Sys, Tab> ws;
  Jumps<Sys::N>* jumps;
  I64 nsteps;            // steps of the loaded piece
  bool has_seg_start;    // whether a piece precedes it (the caller loads it at its start)
  double seg_start;      // its start time
  // the interpolant of step cj as a polynomial in s = t - t_j (load_interpolant): a
  // cache the const evaluation fills on demand
  mutable double cbuf[Tab::K + 1][Sys::N];
  mutable I64 cj;

  SYMODE_HD Adjoint(const double* p_, Workspace<Sys, Tab> ws_, Jumps<Sys::N>* jumps_)
      : p(p_), ws(ws_), jumps(jumps_), nsteps(0), has_seg_start(false), seg_start(0.0), cj(-1) {}

  // the step j of the piece holding t (integrate.py: find_step)
  SYMODE_HD SYMODE_INLINE I64 find_step(double t) const {
    const double d = ws.seg_t[nsteps] >= ws.seg_t[0] ? 1.0 : -1.0;
    I64 lo = 0, hi = nsteps - 1;
    while (lo < hi) {
      const I64 mid = (lo + hi + 1) / 2;
      if (d * (t - ws.seg_t[mid]) >= 0)
        lo = mid;
      else
        hi = mid - 1;
    }
    return lo;
  }
  SYMODE_HD void load_interpolant(I64 j) const {
    const double rh = 1.0 / ws.seg_h[j];
    for (int m = 0; m < N; ++m) {
      cbuf[0][m] = ws.seg_z[j * N + m];
      double scale = 1.0;
      for (int q = 0; q < Tab::K; ++q) {
        double acc = 0.0;
        for (int i = 0; i < Tab::NS; ++i) acc += Tab::P(i, q) * ws.seg_k[(j * Tab::NS + i) * N + m];
        cbuf[q + 1][m] = acc * scale;
        scale *= rh;
      }
    }
  }
  SYMODE_HD void eval(double t, const double* z, double* out) const {
    const I64 j = find_step(t);
    if (j != cj) {
      load_interpolant(j);
      cj = j;
    }
    const double s = t - ws.seg_t[j];
    double y[N];
    SYMODE_UNROLL
    for (int m = 0; m < N; ++m) {
      double v = cbuf[Tab::K][m];
      SYMODE_UNROLL
      for (int q = Tab::K - 1; q >= 0; --q) v = v * s + cbuf[q][m];
      y[m] = v;
    }
    Sys::adjoint(t, y, p, z, out);
  }
  // the jump at observation time t unless it is the piece's start (adjoint.py: jump_at)
  SYMODE_HD SYMODE_INLINE bool jump_at(double t, double* z) const {
    const I64 io = jumps->next;
    if (io < 0 || t != jumps->t_obs[io] || (has_seg_start && t == seg_start)) return false;
    jumps->make(z, 0);
    return true;
  }
  SYMODE_HD SYMODE_INLINE bool on_stop(double t, double* z) const { return jump_at(t, z); }
};

// The backward sweep's stops, merged as they come (adjoint.py: sweep_stops, lazily): the
// observation times before the sweep's start, and the start of the loaded piece when
// another piece precedes it; none at or beyond t_end. ``last``: the stop reached.
struct SweepStops {
  static constexpr bool STOPS = true;
  const double* t_obs;
  I64 so;
  double bound;
  bool has_bound;
  double t_end, fdir, last;

  SYMODE_HD SYMODE_INLINE double candidate() const {
    const double t_o = so >= 0 ? t_obs[so] : t_end;
    const double t_b = has_bound ? bound : t_end;
    return fdir * (t_o - t_b) >= 0 ? t_o : t_b;
  }
  SYMODE_HD SYMODE_INLINE bool pending() const { return fdir * (candidate() - t_end) > 0; }
  SYMODE_HD SYMODE_INLINE double next() const { return candidate(); }
  SYMODE_HD SYMODE_INLINE void pop() {
    const double t = candidate();
    if (so >= 0 && t == t_obs[so]) so -= 1;
    if (has_bound && t == bound) has_bound = false;
    last = t;
  }
  SYMODE_HD SYMODE_INLINE void begin(double, const double*) {}
  SYMODE_HD SYMODE_INLINE bool ordered(double, double t0) const {
    return !(pending() && candidate() == t0);
  }
  SYMODE_HD SYMODE_INLINE bool needs_dense(double, double) const { return false; }
  template <class Tab, typename V, int NZ>
  SYMODE_HD SYMODE_INLINE bool write(double, double tnew, double, const V*, const V*,
                                     const V (*)[NZ], double direction) {
    bool hit = false;
    while (pending() && direction * (candidate() - tnew) <= 0) {
      hit = true;
      pop();
    }
    return hit;
  }
};

// Load piece pc for the continuous sweep: replay it, reset the interpolant, set the
// piece's start as the sweep's next bound (when a piece precedes it).
template <typename real, class Sys, class Tab>
SYMODE_HD void load_piece(const Forward<real, Sys>& kind, Adjoint<Sys, Tab>& adj,
                          SweepStops& stops, const ForwardRun& f, Piece pc, I64* st_b) {
  st_b[S_NFEV] += replay<real>(kind, adj.ws, f, pc);
  adj.nsteps = pc.e - pc.a;
  adj.cj = -1;
  adj.has_seg_start = !(pc.q == 0 && pc.a == 0);
  adj.seg_start = adj.ws.seg_t[0];
  stops.bound = adj.seg_start;
  stops.has_bound = adj.has_seg_start;
}

// One trajectory's checkpoint gradient (adjoint.py: checkpoint_gradient, adaptive steps).
template <typename real, class Sys, class Tab>
SYMODE_HD void checkpoint_gradient(SYMODE_GRADIENT_ARGS) {
  constexpr int N = Sys::N, NP = Sys::P, NZ = N + NP;
  SYMODE_GRADIENT_START
  Adjoint<Sys, Tab> adj(pd, ws, &jumps);
  SweepStops stops{t_obs, -1, 0.0, false, t0, direction, 0.0};
  Piece pc = last_piece(ws, f, f.n_seg - 1, L);
  load_piece<real>(kind, adj, stops, f, pc, st_b);
  const double t_start = ws.seg_t[pc.e - pc.a];
  double za[NZ];
  for (int m = 0; m < NZ; ++m) za[m] = 0.0;
  jumps.at(t_start, direction, za, 0);
  if (t_start != t0) {
    stops.so = jumps.next;
    Loop<double, NZ> Lb;
    begin<Tab>(adj, Lb, t_start, t0, za, biopt, bfopt, batol, I64(0), stops);
    const Options opt = read_options<Tab>(biopt, bfopt);
    NoRecord none;
    while (Lb.status == RUNNING) {
      advance<Tab>(adj, Lb, t0, opt, batol, grid, I64(0), stops, none);
      if (Lb.status != STOPPED) break;
      Lb.status = RUNNING;
      const double ts = stops.last;
      if (adj.has_seg_start && ts == adj.seg_start) {  // the piece's start: load the one before
        pc = previous_piece(ws, f, pc, L);
        load_piece<real>(kind, adj, stops, f, pc, st_b);
      }
      if (adj.jump_at(ts, Lb.z)) {  // z changed: F(t, z) again (integrate.py: restart)
        adj.eval(Lb.t, Lb.z, Lb.k0);
        Lb.nfev += 1;
        if (!all_finite<double, NZ>(Lb.k0) || !all_finite<double, NZ>(Lb.z)) Lb.status = NONFINITE;
      }
    }
    I64 st[5] = {0, 0, 0, 0, 0};
    finish(Lb, 0, st, fout + O_BACKWARD);
    st_b[S_NFEV] += st[S_NFEV];
    st_b[S_NACCEPT] += st[S_NACCEPT];
    st_b[S_NREJECT] += st[S_NREJECT];
    if (st[S_STATUS] != SUCCESS && st_b[S_STATUS] == SUCCESS) st_b[S_STATUS] = st[S_STATUS];
    for (int m = 0; m < NZ; ++m) za[m] = Lb.z[m];
  }
  jumps.at(t0, direction, za, 0);
  for (int j = 0; j < N; ++j) gy0[j] = za[j];
  for (int q = 0; q < NP; ++q) gp[q] += za[N + q];
  fout[O_VALUE] = 0.0;
}

}  // namespace symode

#endif  // SYMODE_ADJOINT_CUH
