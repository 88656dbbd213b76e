// symode's CUDA engine, part 1: what every header needs on both targets.
//
// The engine is written once, as __host__ __device__ C++ templates, and compiled two
// ways: by NVRTC (CuPy) or nvcc for the GPU, one thread per trajectory; by g++ as host
// code for the CPU checks that compare it with the numba engine (tests/test_cuda.py).
// NVRTC has no standard headers: nothing here includes one under __CUDACC__. The math
// functions come from symode_math (the generated module's head: <cmath>'s std::
// overloads on the host, CUDA's global overloads on the device).
#ifndef SYMODE_PRELUDE_CUH
#define SYMODE_PRELUDE_CUH

#if defined(__CUDACC__)
#define SYMODE_HD __host__ __device__
#define SYMODE_INLINE __forceinline__
#define SYMODE_RESTRICT __restrict__
#define SYMODE_UNROLL _Pragma("unroll")
#else
#define SYMODE_HD
#define SYMODE_INLINE inline __attribute__((always_inline))
#define SYMODE_RESTRICT __restrict__
#define SYMODE_UNROLL _Pragma("GCC unroll 16")
#endif

namespace symode {

typedef long long I64;

// status codes (symode/kernels/status.py, printed into the module's head)
using symode_status::SUCCESS;
using symode_status::MAX_STEPS;
using symode_status::STEP_UNDERFLOW;
using symode_status::NONFINITE;
using symode_status::BAD_T_EVAL;
// the step loop's own states (kernels/integrate.py: RUNNING, STOPPED)
constexpr I64 RUNNING = -1;
constexpr I64 STOPPED = -2;

// kernels/integrate.py's iopt / fopt / stats / fstats layouts
constexpr int I_MAX_STEPS = 0, I_NERR = 1;
constexpr int F_RTOL = 0, F_H0 = 1, F_DT_MIN = 2, F_SAFETY = 3, F_FACMIN = 4, F_FACMAX = 5,
              F_BETA = 6;
constexpr int S_STATUS = 0, S_NFEV = 1, S_NACCEPT = 2, S_NREJECT = 3, S_NOUT = 4;
constexpr int FS_T = 0, FS_H = 1, FS_HNEXT = 2;
// a gradient's float outputs (kernels/adjoint.py O_*)
constexpr int O_VALUE = 0, O_FORWARD = 1, O_BACKWARD = 4, N_FOUT = 7;

// the controller's constants (kernels/integrate.py: ERR_MIN, STOP_STRETCH)
constexpr double ERR_MIN = 1e-4;
constexpr double STOP_STRETCH = 1.25;

template <typename T>
SYMODE_HD SYMODE_INLINE bool finite(T x) {
  using namespace symode_math;
  return isfinite(x);
}

// Python's max(a, b) and min(a, b) (the first argument on ties and NaN), as the numba
// engine computes them
SYMODE_HD SYMODE_INLINE double pymax(double a, double b) { return b > a ? b : a; }
SYMODE_HD SYMODE_INLINE double pymin(double a, double b) { return b < a ? b : a; }

// A per-trajectory view of an interleaved buffer: element j of thread i at p[j * s]
// (p already offset by i, s = the number of trajectories), so that the threads of a
// warp touching the same element touch neighbouring addresses. The CPU checks use the
// same layout.
template <typename T>
struct Strided {
  T* p;
  I64 s;
  SYMODE_HD SYMODE_INLINE T& operator[](I64 j) const { return p[j * s]; }
  SYMODE_HD SYMODE_INLINE Strided at(I64 j) const { return Strided{p + j * s, s}; }
};

}  // namespace symode

#endif  // SYMODE_PRELUDE_CUH
