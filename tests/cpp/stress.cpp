// Concurrency and leaks, with figures:
//   stress threads [T N]  T threads (8) x N runs (1000) of one compiled model equal a serial run;
//                    threads loading, running and freeing their own models at once;
//                    each thread with its own inference scopes.
//   stress leaks N   N cycles of optimizer, load, compile, run and free; resident
//                    memory growth after the first 10% of cycles under 10 MB.
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "perfopt.h"

namespace {

std::string fixtures() {
  const char *dir = std::getenv("PERFOPT_FIXTURES");
  return dir ? dir : "build/fixtures";
}

double rss_mib() {
  long pages = 0, resident = 0;
  FILE *f = std::fopen("/proc/self/statm", "r");
  if (!f || std::fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
  if (f) std::fclose(f);
  return static_cast<double>(resident) * sysconf(_SC_PAGESIZE) / (1 << 20);
}

perfopt_optimizer *cpu_optimizer() {
  perfopt_config config;
  (void)perfopt_config_default(&config);
  config.device = "cpu";
  config.read_environment = 0;
  perfopt_optimizer *optimizer = nullptr;
  return perfopt_optimizer_new(&config, &optimizer) == PERFOPT_OK ? optimizer : nullptr;
}

struct Inputs {
  float x[2 * 16], y[2 * 4];
  int64_t xs[2] = {2, 16}, ys[2] = {2, 4};
  DLTensor dl[2];
  explicit Inputs(float seed) {
    for (int i = 0; i < 32; ++i) x[i] = std::sin(seed + i);
    for (int i = 0; i < 8; ++i) y[i] = std::cos(seed + i);
    for (int k = 0; k < 2; ++k) {
      std::memset(&dl[k], 0, sizeof dl[k]);
      dl[k].device.device_type = kDLCPU;
      dl[k].ndim = 2;
      dl[k].dtype.code = kDLFloat;
      dl[k].dtype.bits = 32;
      dl[k].dtype.lanes = 1;
    }
    dl[0].data = x;
    dl[0].shape = xs;
    dl[1].data = y;
    dl[1].shape = ys;
  }
};

// Runs once; copies output 0 into `out`. False on any failure.
bool run(perfopt_model *model, Inputs &in, std::vector<float> &out) {
  DLManagedTensor *outputs[2] = {};
  size_t n = 0;
  if (perfopt_model_run(model, in.dl, 2, outputs, 2, &n) != PERFOPT_OK) return false;
  const DLTensor &t = outputs[0]->dl_tensor;
  const float *data = static_cast<const float *>(t.data);
  out.assign(data, data + 16);
  for (size_t i = 0; i < n; ++i) outputs[i]->deleter(outputs[i]);
  return true;
}

bool close(const std::vector<float> &a, const std::vector<float> &b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::fabs(a[i] - b[i]) > 1e-5f * (1.0f + std::fabs(b[i]))) return false;
  return true;
}

int threads_case(int threads, int calls) {
  const std::string path = fixtures() + "/two_inputs.pt";
  perfopt_optimizer *optimizer = cpu_optimizer();
  perfopt_model *model = nullptr;
  if (!optimizer || perfopt_model_load(optimizer, path.c_str(), "shared", &model) != PERFOPT_OK) return 1;
  Inputs warm(0);
  (void)perfopt_model_compile(model, "default", warm.dl, 2);

  std::vector<std::vector<float>> serial(threads);
  for (int t = 0; t < threads; ++t) {
    Inputs in(static_cast<float>(t));
    if (!run(model, in, serial[t])) return 1;
  }
  std::atomic<int> mismatches{0}, failures{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      Inputs in(static_cast<float>(t));
      std::vector<float> out;
      for (int i = 0; i < calls; ++i) {
        perfopt_scope *scope = nullptr;
        if (i % 100 == 0) (void)perfopt_inference_enter(optimizer, &scope);
        if (!run(model, in, out)) ++failures;
        else if (out != serial[t]) ++mismatches;
        if (scope && perfopt_inference_exit(scope) != PERFOPT_OK) ++failures;
      }
    });
  }
  for (auto &th : pool) th.join();
  std::printf("shared model: %d threads x %d runs, %d failures, %d outputs differing from serial\n", threads, calls,
              failures.load(), mismatches.load());

  // Threads loading, compiling, running and freeing their own models at once.
  std::atomic<int> own_failures{0};
  pool.clear();
  for (int t = 0; t < 4; ++t) {
    pool.emplace_back([&, t] {
      for (int i = 0; i < 10; ++i) {
        perfopt_model *own = nullptr;
        if (perfopt_model_load(optimizer, path.c_str(), nullptr, &own) != PERFOPT_OK) {
          ++own_failures;
          continue;
        }
        Inputs in(static_cast<float>(t));
        std::vector<float> out, reference;
        if (!run(model, in, reference)) ++own_failures;
        if (perfopt_model_compile(own, i % 2 ? "default" : "none", nullptr, 0) != PERFOPT_OK) ++own_failures;
        // Frozen and optimised modules may round differently: a tolerance here.
        if (!run(own, in, out) || !close(out, reference)) ++own_failures;
        perfopt_model_free(own);
      }
    });
  }
  for (auto &th : pool) th.join();
  std::printf("own models: 4 threads x 10 load/compile/run/free cycles, %d failures\n", own_failures.load());
  perfopt_model_free(model);
  perfopt_optimizer_free(optimizer);
  bool ok = failures == 0 && mismatches == 0 && own_failures == 0;
  std::printf("%d passed, %d failed\n", ok ? 1 : 0, ok ? 0 : 1);
  return ok ? 0 : 1;
}

int leaks_case(int cycles) {
  const std::string path = fixtures() + "/two_inputs.pt";
  const int settle = cycles / 10;
  double after_settle = 0, start = rss_mib();
  int failures = 0;
  for (int i = 0; i < cycles; ++i) {
    perfopt_optimizer *optimizer = cpu_optimizer();
    perfopt_model *model = nullptr;
    if (!optimizer || perfopt_model_load(optimizer, path.c_str(), nullptr, &model) != PERFOPT_OK) {
      ++failures;
      perfopt_optimizer_free(optimizer);
      continue;
    }
    Inputs in(1);
    std::vector<float> out;
    if (perfopt_model_compile(model, "default", in.dl, 2) != PERFOPT_OK || !run(model, in, out)) ++failures;
    perfopt_scope *scope = nullptr;
    if (perfopt_inference_enter(optimizer, &scope) != PERFOPT_OK || perfopt_inference_exit(scope) != PERFOPT_OK)
      ++failures;
    perfopt_model_free(model);
    perfopt_optimizer_free(optimizer);
    if (i + 1 == settle) after_settle = rss_mib();
  }
  double end = rss_mib();
  double growth = end - after_settle;
  std::printf("leaks: %d cycles, RSS %.1f MiB at start, %.1f after %d cycles, %.1f at the end: "
              "growth %.2f MiB over the last %d cycles (limit 10), %d failures\n",
              cycles, start, after_settle, settle, end, growth, cycles - settle, failures);
  bool ok = failures == 0 && growth < 10.0;
  std::printf("%d passed, %d failed\n", ok ? 1 : 0, ok ? 0 : 1);
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char **argv) {
  std::string which = argc > 1 ? argv[1] : "threads";
  if (which == "threads")
    return threads_case(argc > 2 ? std::atoi(argv[2]) : 8, argc > 3 ? std::atoi(argv[3]) : 1000);
  if (which == "leaks") return leaks_case(argc > 2 ? std::atoi(argv[2]) : 1000);
  std::fprintf(stderr, "usage: stress threads [threads calls] | stress leaks [cycles]\n");
  return 2;
}
