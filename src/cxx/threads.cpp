// A thread count per model: OpenMP's count is an internal control variable
// of the calling thread, so setting it around one call gives that call (its
// ATen parallel regions, and oneDNN's) its own count without touching other
// threads' calls. MKL keeps its own count (its vector math, tanh and exp,
// started 2-thread regions in a call at 1): its thread-local setting is set
// with it. Rust twin: src/torch/threads.rs.
#include <ATen/Functions.h>
#include <ATen/Parallel.h>
#include <dlfcn.h>
#ifdef __linux__
#include <link.h>
#endif

#include <cstring>
#include <string>

#include "common.h"

using perfopt_shim::guarded;

// MKL's per-thread count, exported by libtorch_cpu where it is built with
// MKL; weak, so that a libtorch without MKL links too. Returns the previous
// thread-local count (0: MKL's global one). The C entry point: mkl.h maps
// mkl_set_num_threads_local to it, and the lower-case symbol is the Fortran
// one, which takes a pointer.
extern "C" int MKL_Set_Num_Threads_Local(int threads) __attribute__((weak));

namespace {

using SetThreads = void (*)(int);
using GetThreads = int (*)();

struct OpenMp {
  SetThreads set = nullptr;
  GetThreads get = nullptr;
};

#ifdef __linux__
// The OpenMP runtime libtorch loaded (the wheel's libgomp under a hashed
// name, or the system's), found among the loaded libraries: a host that
// loads perfopt with RTLD_LOCAL keeps it out of the global scope.
int find_openmp(struct dl_phdr_info *info, size_t, void *found) {
  const char *name = info->dlpi_name;
  if (name == nullptr || std::strstr(name, "omp") == nullptr) return 0;
  void *handle = dlopen(name, RTLD_NOW | RTLD_NOLOAD);
  if (handle == nullptr) return 0;
  auto *omp = static_cast<OpenMp *>(found);
  omp->set = reinterpret_cast<SetThreads>(dlsym(handle, "omp_set_num_threads"));
  omp->get = reinterpret_cast<GetThreads>(dlsym(handle, "omp_get_max_threads"));
  dlclose(handle);  // loaded by libtorch: it stays
  return omp->set && omp->get ? 1 : 0;
}
#endif

#ifdef __APPLE__
constexpr const char *kTorchCpu = "libtorch_cpu.dylib";
#else
constexpr const char *kTorchCpu = "libtorch_cpu.so";
#endif

const OpenMp &openmp() {
  static const OpenMp found = [] {
    OpenMp omp;
    // The OpenMP runtime libtorch itself was linked with: a lookup through
    // libtorch_cpu's handle searches its own dependencies first, so another
    // runtime in the process (numpy's or MKL's libiomp5) is not the one set.
    if (void *torch = dlopen(kTorchCpu, RTLD_NOW | RTLD_NOLOAD)) {
      omp.set = reinterpret_cast<SetThreads>(dlsym(torch, "omp_set_num_threads"));
      omp.get = reinterpret_cast<GetThreads>(dlsym(torch, "omp_get_max_threads"));
      dlclose(torch);  // loaded by the process: it stays
    }
    if (!omp.set || !omp.get) {
      omp.set = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "omp_set_num_threads"));
      omp.get = reinterpret_cast<GetThreads>(dlsym(RTLD_DEFAULT, "omp_get_max_threads"));
    }
#ifdef __linux__
    if (!omp.set || !omp.get) {
      omp = OpenMp{};
      dl_iterate_phdr(find_openmp, &omp);
    }
#endif
    return omp;
  }();
  return found;
}

// ATen sets a thread's OpenMP count from its global count at the thread's
// first parallel region (a lazy per-thread init): a count set before that
// would be overwritten by the first call. A softmax runs ATen's parallel_for
// from inside libtorch, where that init's flag lives.
thread_local bool aten_thread_ready = false;

void ready_aten_thread() {
  if (aten_thread_ready) return;
  at::_softmax(at::ones({2, 2}), 1, false);
  aten_thread_ready = true;
}

}  // namespace

extern "C" {

int pshim_call_threads_enter(int32_t threads, int32_t *previous, int32_t *previous_mkl) {
  return guarded([&] {
    const OpenMp &omp = openmp();
    TORCH_CHECK(omp.set && omp.get,
                "libtorch's OpenMP runtime was not found among the loaded libraries: a thread count per "
                "model needs it");
    TORCH_CHECK(threads > 0, "a thread count must be at least 1");
    ready_aten_thread();
    *previous = omp.get();
    if (*previous != threads) omp.set(threads);
    *previous_mkl = MKL_Set_Num_Threads_Local ? MKL_Set_Num_Threads_Local(threads) : 0;
  });
}

int pshim_call_threads_exit(int32_t previous, int32_t previous_mkl) {
  return guarded([&] {
    const OpenMp &omp = openmp();
    if (omp.set && omp.get && previous > 0 && omp.get() != previous) omp.set(previous);
    if (MKL_Set_Num_Threads_Local) MKL_Set_Num_Threads_Local(previous_mkl);
  });
}

}  // extern "C"
