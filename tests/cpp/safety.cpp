// Safe inside a host process: each case is a regression test for a way a
// careless or hostile caller once took the host down (issue 11). Every case
// runs in its own process (ctest runs `safety CASE`), under an alarm, so that
// a hang fails the case instead of the suite, and the cases that change the
// process (an address-space limit, fork) cannot affect the others.
#include <pthread.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <climits>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "perfopt.h"

namespace {

struct Failure {
  std::string message;
};

#define CHECK(cond)                                                                                        \
  do {                                                                                                     \
    if (!(cond))                                                                                           \
      throw Failure{std::string(__FILE__ ":") + std::to_string(__LINE__) + ": " #cond + " (" +            \
                    (perfopt_last_error() ? perfopt_last_error() : "no message") + ")"};                  \
  } while (0)

#define CHECK_STATUS(call, expected)                                                                       \
  do {                                                                                                     \
    perfopt_status got_ = (call);                                                                          \
    if (got_ != (expected))                                                                                \
      throw Failure{std::string(__FILE__ ":") + std::to_string(__LINE__) + ": " #call + " returned " +     \
                    perfopt_status_name(got_) + ", expected " + perfopt_status_name(expected) + " (" +     \
                    (perfopt_last_error() ? perfopt_last_error() : "no message") + ")"};                  \
  } while (0)

// The lite library (no libtorch) runs the cases on the same models exported
// as ONNX, from the folder PERFOPT_ONNX_MODELS names; cases on models with
// no ONNX form are not registered there (tests/cpp/CMakeLists.txt).
std::string fixture(const std::string &name) {
  const char *onnx = std::getenv("PERFOPT_ONNX_MODELS");
  const std::string suffix = ".pt";
  if (onnx && *onnx && name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0)
    return std::string(onnx) + "/" + name.substr(0, name.size() - suffix.size()) + ".onnx";
  const char *dir = std::getenv("PERFOPT_FIXTURES");
  return std::string(dir ? dir : "build/fixtures") + "/" + name;
}

std::string last_error() {
  const char *m = perfopt_last_error();
  return m ? m : "";
}

perfopt_optimizer *cpu_optimizer() {
  perfopt_config config;
  (void)perfopt_config_init(&config, sizeof config);
  config.device = "cpu";
  config.read_environment = 0;
  perfopt_optimizer *optimizer = nullptr;
  CHECK_STATUS(perfopt_optimizer_new(&config, &optimizer), PERFOPT_OK);
  return optimizer;
}

perfopt_model *load(perfopt_optimizer *optimizer, const std::string &name) {
  perfopt_model *model = nullptr;
  CHECK_STATUS(perfopt_model_load(optimizer, fixture(name).c_str(), nullptr, &model), PERFOPT_OK);
  return model;
}

// A float32 host tensor over `data` with `shape` (both kept alive by the caller).
DLTensor host(float *data, std::vector<int64_t> &shape) {
  DLTensor t{};
  t.data = data;
  t.device = DLDevice{kDLCPU, 0};
  t.ndim = static_cast<int32_t>(shape.size());
  t.dtype = DLDataType{kDLFloat, 32, 1};
  t.shape = shape.data();
  return t;
}

// The two_inputs fixture's inputs: [2, 16] and [2, 4].
struct TwoInputs {
  std::vector<float> x = std::vector<float>(32, 0.5f), y = std::vector<float>(8, -0.25f);
  std::vector<int64_t> xs{2, 16}, ys{2, 4};
  DLTensor t[2];
  TwoInputs() {
    t[0] = host(x.data(), xs);
    t[1] = host(y.data(), ys);
  }
};

void release(DLManagedTensor **outputs, size_t n) {
  for (size_t i = 0; i < n; ++i) outputs[i]->deleter(outputs[i]);
}

perfopt_status run_two(perfopt_model *model, TwoInputs &in) {
  DLManagedTensor *outputs[4];
  size_t n = 0;
  perfopt_status status = perfopt_model_run(model, in.t, 2, outputs, 4, &n);
  if (status == PERFOPT_OK) release(outputs, n);
  return status;
}

// ---- handles ---------------------------------------------------------------

// A free racing runs on other threads: the runs finish on their own
// reference; later ones get PERFOPT_ERR_INVALID_HANDLE; nothing crashes.
void free_races_runs() {
  perfopt_optimizer *optimizer = cpu_optimizer();
  for (int round = 0; round < 5; ++round) {
    perfopt_model *model = load(optimizer, "two_inputs.pt");
    std::atomic<int> ok{0}, invalid{0}, other{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&] {
        TwoInputs in;
        for (int i = 0; i < 200; ++i) {
          perfopt_status status = run_two(model, in);
          if (status == PERFOPT_OK) ++ok;
          else if (status == PERFOPT_ERR_INVALID_HANDLE) ++invalid;
          else ++other;
        }
      });
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5 + round * 3));
    perfopt_model_free(model);
    for (auto &t : threads) t.join();
    CHECK(other == 0);
    CHECK(ok + invalid == 800);
    TwoInputs in;
    CHECK_STATUS(run_two(model, in), PERFOPT_ERR_INVALID_HANDLE);
  }
  // The optimizer too: a model keeps what it needs alive.
  perfopt_model *model = load(optimizer, "two_inputs.pt");
  perfopt_optimizer_free(optimizer);
  TwoInputs in;
  CHECK_STATUS(run_two(model, in), PERFOPT_OK);
  perfopt_model_free(model);
}

// A scope whose thread has ended can still be exited, from any thread;
// perfopt_scope_free releases one that will never be exited properly.
void scope_of_an_ended_thread() {
  perfopt_optimizer *optimizer = cpu_optimizer();
  perfopt_scope *orphan = nullptr;
  std::thread([&] { CHECK_STATUS(perfopt_inference_enter(optimizer, &orphan), PERFOPT_OK); }).join();
  CHECK_STATUS(perfopt_inference_exit(orphan), PERFOPT_OK);
  CHECK_STATUS(perfopt_inference_exit(orphan), PERFOPT_ERR_INVALID_HANDLE);

  perfopt_scope *held = nullptr;
  std::atomic<bool> entered{false}, done{false};
  std::thread owner([&] {
    CHECK_STATUS(perfopt_inference_enter(optimizer, &held), PERFOPT_OK);
    entered = true;
    while (!done) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  });
  while (!entered) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  CHECK_STATUS(perfopt_inference_exit(held), PERFOPT_ERR_WRONG_THREAD);
  perfopt_scope_free(held);
  CHECK_STATUS(perfopt_inference_exit(held), PERFOPT_ERR_INVALID_HANDLE);
  perfopt_scope_free(nullptr);
  done = true;
  owner.join();
  perfopt_optimizer_free(optimizer);
}

// ---- arguments and reports ----------------------------------------------

void bounded_arguments() {
  perfopt_optimizer *optimizer = cpu_optimizer();
  perfopt_model *model = load(optimizer, "two_inputs.pt");
  TwoInputs in;
  size_t needed = 0;
  CHECK_STATUS(perfopt_model_warmup(model, in.t, 2, UINT32_MAX, nullptr, 0, &needed), PERFOPT_ERR_INVALID_ARGUMENT);
  CHECK(last_error().find("100000") != std::string::npos);
  for (int32_t threads : {INT_MAX, 5000}) {
    perfopt_config config;
    (void)perfopt_config_init(&config, sizeof config);
    config.device = "cpu";
    config.read_environment = 0;
    config.intra_op_threads = threads;
    perfopt_optimizer *other = nullptr;
    CHECK_STATUS(perfopt_optimizer_new(&config, &other), PERFOPT_ERR_INVALID_ARGUMENT);
    CHECK(last_error().find("per core") != std::string::npos);
    config.intra_op_threads = 0;
    config.inter_op_threads = threads;
    CHECK_STATUS(perfopt_optimizer_new(&config, &other), PERFOPT_ERR_INVALID_ARGUMENT);
  }
  perfopt_model_free(model);
  perfopt_optimizer_free(optimizer);
}

// The documented size query works for reports that do work: the report is
// kept, so the second read never runs again and is exactly `needed` bytes.
void size_queries_of_work() {
  perfopt_optimizer *optimizer = cpu_optimizer();
  perfopt_model *model = load(optimizer, "two_inputs.pt");
  TwoInputs in;
  for (int i = 0; i < 200; ++i) {
    size_t needed = 0;
    CHECK_STATUS(perfopt_model_warmup(model, in.t, 2, 3, nullptr, 0, &needed), PERFOPT_OK);
    std::string buf(needed, '\0');
    size_t again = 0;
    CHECK_STATUS(perfopt_model_last_report(model, PERFOPT_REPORT_WARMUP, buf.data(), needed, &again), PERFOPT_OK);
    CHECK(again == needed);
  }
  // A buffer too small: the warm-up ran once, and its report waits.
  char small[8];
  size_t needed = 0;
  CHECK_STATUS(perfopt_model_warmup(model, in.t, 2, 3, small, sizeof small, &needed), PERFOPT_ERR_BUFFER_TOO_SMALL);
  CHECK(last_error().find("perfopt_model_last_report") != std::string::npos);
  std::string report(needed, '\0');
  CHECK_STATUS(perfopt_model_last_report(model, PERFOPT_REPORT_WARMUP, report.data(), needed, &needed), PERFOPT_OK);
  // recommend_batch the same way.
  std::vector<float> x(16, 0.5f), y(4, -0.25f);
  std::vector<int64_t> xs{1, 16}, ys{1, 4};
  DLTensor sample[2] = {host(x.data(), xs), host(y.data(), ys)};
  int32_t batch = 0;
  CHECK_STATUS(perfopt_model_recommend_batch(model, sample, 2, &batch, nullptr, 0, &needed), PERFOPT_OK);
  std::string rec(needed, '\0');
  size_t rec_needed = 0;
  CHECK_STATUS(perfopt_model_last_report(model, PERFOPT_REPORT_RECOMMEND_BATCH, rec.data(), needed, &rec_needed),
               PERFOPT_OK);
  CHECK(rec_needed == needed);
  CHECK(rec.find("\"recommended_batch\":" + std::to_string(batch)) != std::string::npos);
  CHECK(rec.find("trials_stopped") != std::string::npos);
  perfopt_model_free(model);
  perfopt_optimizer_free(optimizer);
}

void named_pipe_is_refused() {
  perfopt_optimizer *optimizer = cpu_optimizer();
  std::string path = "/tmp/perfopt-safety-fifo-" + std::to_string(getpid());
  CHECK(mkfifo(path.c_str(), 0600) == 0);
  perfopt_model *model = nullptr;
  CHECK_STATUS(perfopt_model_load(optimizer, path.c_str(), nullptr, &model), PERFOPT_ERR_NOT_A_FILE);
  CHECK(last_error().find("named pipe") != std::string::npos);
  unlink(path.c_str());
  perfopt_optimizer_free(optimizer);
}

// Pinned host memory (kDLCUDAHost) is host memory.
void pinned_input_is_host_memory() {
  perfopt_optimizer *optimizer = cpu_optimizer();
  perfopt_model *model = load(optimizer, "two_inputs.pt");
  TwoInputs plain, pinned;
  pinned.t[0].device.device_type = kDLCUDAHost;
  pinned.t[1].device.device_type = kDLCUDAHost;
  DLManagedTensor *a[2], *b[2];
  size_t n = 0;
  CHECK_STATUS(perfopt_model_run(model, plain.t, 2, a, 2, &n), PERFOPT_OK);
  CHECK_STATUS(perfopt_model_run(model, pinned.t, 2, b, 2, &n), PERFOPT_OK);
  for (int i = 0; i < 2; ++i) {
    CHECK(std::memcmp(a[i]->dl_tensor.data, b[i]->dl_tensor.data, 2 * 8 * sizeof(float)) == 0);
  }
  release(a, 2);
  release(b, 2);
  perfopt_model_free(model);
  perfopt_optimizer_free(optimizer);
}

void batched_edges() {
  perfopt_optimizer *optimizer = cpu_optimizer();
  perfopt_model *model = load(optimizer, "two_inputs.pt");
  std::vector<float> none;
  std::vector<int64_t> xs{0, 16}, ys{0, 4};
  float dummy = 0;
  DLTensor empty[2] = {host(&dummy, xs), host(&dummy, ys)};
  DLManagedTensor *outputs[4];
  size_t batched = 0, plain = 0;
  CHECK_STATUS(perfopt_model_run_batched(model, empty, 2, 0, outputs, 4, &batched), PERFOPT_OK);
  release(outputs, batched);
  CHECK_STATUS(perfopt_model_run(model, empty, 2, outputs, 4, &plain), PERFOPT_OK);
  release(outputs, plain);
  CHECK(batched == plain && plain == 2);
  perfopt_model_free(model);

  // Outputs whose batch is not where the dims say are refused, not mis-joined.
  model = load(optimizer, "lstm_state.pt");
  std::vector<float> x(5 * 10 * 8, 0.1f), h(2 * 5 * 16, 0.2f), c(2 * 5 * 16, 0.3f), mask(10, 1.0f);
  std::vector<int64_t> s0{5, 10, 8}, s1{2, 5, 16}, s2{2, 5, 16}, s3{10};
  DLTensor in[4] = {host(x.data(), s0), host(h.data(), s1), host(c.data(), s2), host(mask.data(), s3)};
  CHECK_STATUS(perfopt_model_run_batched(model, in, 4, 2, outputs, 4, &batched), PERFOPT_ERR_INVALID_ARGUMENT);
  int32_t input_dims[] = {0, 1, 1, PERFOPT_NOT_BATCHED};
  CHECK_STATUS(perfopt_model_set_batch_dims(model, input_dims, 4, nullptr, 0), PERFOPT_OK);
  CHECK_STATUS(perfopt_model_run_batched(model, in, 4, 2, outputs, 4, &batched), PERFOPT_ERR_INVALID_ARGUMENT);
  CHECK(last_error().find("output 1") != std::string::npos);
  int32_t output_dims[] = {0, 1, 1};
  CHECK_STATUS(perfopt_model_set_batch_dims(model, input_dims, 4, output_dims, 3), PERFOPT_OK);
  CHECK_STATUS(perfopt_model_run_batched(model, in, 4, 2, outputs, 4, &batched), PERFOPT_OK);
  CHECK(batched == 3 && outputs[1]->dl_tensor.shape[1] == 5);
  release(outputs, batched);
  perfopt_model_free(model);
  perfopt_optimizer_free(optimizer);
}

// A result that is not tensors is named, not blamed on the inputs.
void odd_results_are_named() {
  perfopt_optimizer *optimizer = cpu_optimizer();
  perfopt_model *model = load(optimizer, "returns_dict.pt");
  std::vector<float> x(6, 1.0f);
  std::vector<int64_t> xs{2, 3};
  DLTensor in = host(x.data(), xs);
  DLManagedTensor *outputs[2];
  size_t n = 0;
  CHECK_STATUS(perfopt_model_run(model, &in, 1, outputs, 2, &n), PERFOPT_ERR_UNSUPPORTED_MODEL);
  CHECK(last_error().find("Dict[str, Tensor]") != std::string::npos);
  CHECK(last_error().find("rejected its inputs") == std::string::npos);
  perfopt_model_free(model);
  perfopt_optimizer_free(optimizer);
}

size_t peak_of(perfopt_model *model) {
  size_t needed = 0;
  (void)perfopt_model_report(model, nullptr, 0, &needed);
  std::string report(needed + 4096, '\0');
  CHECK_STATUS(perfopt_model_report(model, report.data(), report.size(), &needed), PERFOPT_OK);
  auto at = report.find("\"peak_memory_bytes\":");
  CHECK(at != std::string::npos);
  return std::strtoull(report.c_str() + at + 20, nullptr, 10);
}

// recommend_batch's measurements leave the process's peak figure alone.
void recommend_batch_keeps_the_peak() {
  perfopt_optimizer *optimizer = cpu_optimizer();
  perfopt_model *model = load(optimizer, "two_inputs.pt");
  TwoInputs in;
  CHECK_STATUS(run_two(model, in), PERFOPT_OK);
  size_t before = peak_of(model);
  std::vector<float> x(16, 0.5f), y(4, -0.25f);
  std::vector<int64_t> xs{1, 16}, ys{1, 4};
  DLTensor sample[2] = {host(x.data(), xs), host(y.data(), ys)};
  int32_t batch = 0;
  CHECK_STATUS(perfopt_model_recommend_batch(model, sample, 2, &batch, nullptr, 0, nullptr), PERFOPT_OK);
  CHECK(peak_of(model) >= before);
  perfopt_model_free(model);
  perfopt_optimizer_free(optimizer);
}

// ---- host out of memory ------------------------------------------------------

size_t address_space() {
  FILE *f = std::fopen("/proc/self/statm", "r");
  unsigned long pages = 0;
  if (f) {
    CHECK(std::fscanf(f, "%lu", &pages) == 1);
    std::fclose(f);
  }
  return pages * static_cast<size_t>(sysconf(_SC_PAGESIZE));
}

// Running out of host memory is PERFOPT_ERR_OUT_OF_MEMORY, and run_batched
// halves its chunk on the host as on CUDA. Tested under a lowered
// address-space limit, never by exhausting the machine.
void host_out_of_memory() {
  perfopt_optimizer *optimizer = cpu_optimizer();
  perfopt_model *model = load(optimizer, "vocoder.pt");
  const int64_t n = 4000;
  std::vector<float> mel(static_cast<size_t>(n) * 80 * 32, 0.01f);
  std::vector<int64_t> shape{n, 80, 32};
  DLTensor in = host(mel.data(), shape);
  std::vector<int64_t> one_shape{1, 80, 32};
  DLTensor one = host(mel.data(), one_shape);
  DLManagedTensor *outputs[2];
  size_t count = 0;
  CHECK_STATUS(perfopt_model_run(model, &one, 1, outputs, 2, &count), PERFOPT_OK);  // threads and pools exist
  release(outputs, count);
  rlimit limit{};
  limit.rlim_cur = limit.rlim_max = address_space() + (384ull << 20);
  CHECK(setrlimit(RLIMIT_AS, &limit) == 0);
  CHECK_STATUS(perfopt_model_run(model, &in, 1, outputs, 2, &count), PERFOPT_ERR_OUT_OF_MEMORY);
  CHECK_STATUS(perfopt_model_run_batched(model, &in, 1, static_cast<int32_t>(n), outputs, 2, &count), PERFOPT_OK);
  CHECK(count == 1 && outputs[0]->dl_tensor.shape[0] == n);
  release(outputs, count);
  size_t needed = 0;
  (void)perfopt_model_report(model, nullptr, 0, &needed);
  std::string report(needed + 4096, '\0');
  CHECK_STATUS(perfopt_model_report(model, report.data(), report.size(), &needed), PERFOPT_OK);
  CHECK(report.find("\"oom_retries\":0") == std::string::npos);
  CHECK(report.find("\"remembered_after_oom\":null") == std::string::npos);
  perfopt_model_free(model);
  perfopt_optimizer_free(optimizer);
}

// ---- fork ----------------------------------------------------------------------

void forked_child_is_told() {
  perfopt_optimizer *optimizer = cpu_optimizer();
  perfopt_model *model = load(optimizer, "two_inputs.pt");
  TwoInputs in;
  CHECK_STATUS(run_two(model, in), PERFOPT_OK);
  pid_t child = fork();
  CHECK(child >= 0);
  if (child == 0) {
    alarm(20);
    int code = 0;
    if (run_two(model, in) != PERFOPT_ERR_FORKED_CHILD) code |= 1;
    if (last_error().find("spawn") == std::string::npos) code |= 2;
    perfopt_optimizer *other = nullptr;
    if (perfopt_optimizer_new(nullptr, &other) != PERFOPT_ERR_FORKED_CHILD) code |= 4;
    perfopt_model_free(model);  // frees work in the child
    std::_Exit(code);
  }
  int status = 0;
  CHECK(waitpid(child, &status, 0) == child);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  CHECK_STATUS(run_two(model, in), PERFOPT_OK);  // the parent goes on
  perfopt_model_free(model);
  perfopt_optimizer_free(optimizer);
}

// ---- logging -----------------------------------------------------------------

struct Reentry {
  perfopt_model *model = nullptr;
  perfopt_optimizer *optimizer = nullptr;
  std::atomic<int> calls{0};
  std::atomic<int> nested_ok{0};
};

void reentrant_callback(int32_t, const char *, void *user_data) {
  auto *r = static_cast<Reentry *>(user_data);
  ++r->calls;
  size_t needed = 0;
  // The documented size query, a report, and a failing call, from inside.
  if (perfopt_model_report(r->model, nullptr, 0, &needed) == PERFOPT_ERR_BUFFER_TOO_SMALL) ++r->nested_ok;
  (void)perfopt_optimizer_report(r->optimizer, nullptr, 0, &needed);
  (void)perfopt_model_run(r->model, nullptr, 0, nullptr, 0, nullptr);  // fails, and would log
}

// A callback that calls perfopt: no recursion, no deadlock (also in the first
// run of a max-autotune without warm-up inputs), and the outer call's last
// error is what the outer call did.
void log_callback_calls_perfopt() {
  Reentry r;
  r.optimizer = cpu_optimizer();
  r.model = load(r.optimizer, "two_inputs.pt");
  CHECK_STATUS(perfopt_set_log_callback(reentrant_callback, &r, PERFOPT_LOG_TRACE), PERFOPT_OK);
  CHECK_STATUS(perfopt_model_compile(r.model, "max-autotune", nullptr, 0), PERFOPT_OK);
  TwoInputs in;
  CHECK_STATUS(run_two(r.model, in), PERFOPT_OK);  // tunes now, logging as it goes
  CHECK(perfopt_last_error() == nullptr);
  CHECK(r.calls > 0 && r.nested_ok > 0);
  // A failing outer call keeps its own message.
  CHECK_STATUS(perfopt_model_run(r.model, in.t, 1, nullptr, 0, nullptr), PERFOPT_ERR_NULL_ARGUMENT);
  CHECK(last_error().find("n_outputs") != std::string::npos);
  CHECK_STATUS(perfopt_set_log_callback(nullptr, nullptr, 0), PERFOPT_OK);
  perfopt_model_free(r.model);
  perfopt_optimizer_free(r.optimizer);
}

struct Counter {
  std::atomic<bool> retired{false};
  std::atomic<long> after_retired{0};
  std::atomic<long> calls{0};
};

void counting_callback(int32_t, const char *, void *user_data) {
  auto *c = static_cast<Counter *>(user_data);
  if (c->retired) ++c->after_retired;
  ++c->calls;
}

void refusing_callback(int32_t, const char *, void *user_data) {
  // Replacing the callback from inside it would wait for itself: refused.
  *static_cast<perfopt_status *>(user_data) = perfopt_set_log_callback(nullptr, nullptr, 0);
}

// Replacing the callback is a barrier: once the call returns, the old
// callback is never entered again (its user_data may be freed).
void log_callback_swap_is_a_barrier() {
  perfopt_optimizer *optimizer = cpu_optimizer();
  std::atomic<bool> stop{false};
  std::vector<std::thread> loggers;
  for (int t = 0; t < 4; ++t) {
    loggers.emplace_back([&] {
      while (!stop) (void)perfopt_model_load(optimizer, "/nonexistent/model.pt", nullptr, nullptr);  // logs at debug
    });
  }
  std::vector<Counter *> retired;
  long violations = 0, calls = 0;
  for (int i = 0; i < 300; ++i) {
    auto *counter = new Counter;
    CHECK_STATUS(perfopt_set_log_callback(counting_callback, counter, PERFOPT_LOG_TRACE), PERFOPT_OK);
    std::this_thread::sleep_for(std::chrono::microseconds(200));
    CHECK_STATUS(perfopt_set_log_callback(counting_callback, new Counter, PERFOPT_LOG_TRACE), PERFOPT_OK);
    counter->retired = true;
    retired.push_back(counter);
  }
  stop = true;
  for (auto &t : loggers) t.join();
  CHECK_STATUS(perfopt_set_log_callback(nullptr, nullptr, 0), PERFOPT_OK);
  for (Counter *c : retired) {
    violations += c->after_retired;
    calls += c->calls;
    delete c;
  }
  std::printf("  swaps 600, records to retired callbacks %ld, after their swap returned %ld\n", calls, violations);
  CHECK(violations == 0);
  CHECK(calls > 0);
  perfopt_status inner = PERFOPT_OK;
  CHECK_STATUS(perfopt_set_log_callback(refusing_callback, &inner, PERFOPT_LOG_TRACE), PERFOPT_OK);
  (void)perfopt_model_load(optimizer, "/nonexistent/model.pt", nullptr, nullptr);
  CHECK_STATUS(perfopt_set_log_callback(nullptr, nullptr, 0), PERFOPT_OK);
  CHECK(inner == PERFOPT_ERR_INVALID_ARGUMENT);
  perfopt_optimizer_free(optimizer);
}

// Frees and calls from a thread's pthread-key destructor, which runs after the
// thread's C++ and Rust thread-locals are gone: Swift's Foundation.Thread
// releases what its closure captured there, so an Optimizer's deinit called
// perfopt_optimizer_free on a thread whose last-error slot was destroyed, and
// the library aborted the host ("cannot access a Thread Local Storage value
// during or after destruction"). Every call must still work or fail cleanly.
struct LateCalls {
  perfopt_optimizer *optimizer;
  perfopt_model *model;
  std::atomic<int> *done;
  perfopt_status scope_status = PERFOPT_OK;
};

void late_calls(void *arg) {
  auto *late = static_cast<LateCalls *>(arg);
  perfopt_scope *scope = nullptr;
  late->scope_status = perfopt_inference_enter(late->optimizer, &scope);
  perfopt_scope_free(scope);
  (void)perfopt_last_error();
  size_t needed = 0;
  (void)perfopt_model_report(late->model, nullptr, 0, &needed);
  perfopt_model_free(late->model);
  perfopt_optimizer_free(late->optimizer);
  late->done->fetch_add(1);
}

void calls_from_thread_exit_destructors() {
  pthread_key_t key;
  CHECK(pthread_key_create(&key, late_calls) == 0);
  std::atomic<int> done{0};
  LateCalls late{cpu_optimizer(), nullptr, &done};
  late.model = load(late.optimizer, "two_inputs.pt");
  std::thread worker([&] {
    // perfopt's thread-locals exist on this thread before the key is set, so
    // they are destroyed before its destructor runs.
    (void)perfopt_model_load(late.optimizer, "/nonexistent/model.pt", nullptr, nullptr);
    CHECK(perfopt_last_error() != nullptr);
    pthread_setspecific(key, &late);
  });
  worker.join();
  CHECK(done.load() == 1);
  std::printf("  scope entered during thread exit: %s\n", perfopt_status_name(late.scope_status));
  pthread_key_delete(key);
}

// A caller that changes a result tree before freeing it: perfopt frees from
// its own record. Before, raising a list's `length` made perfopt_value_free
// read and release past the list (a crash), and a changed string pointer was
// freed as perfopt's; tensors swapped between two slots are still released.
void result_tree_changed_before_free() {
  perfopt_optimizer *optimizer = cpu_optimizer();
  perfopt_model *model = load(optimizer, "two_inputs.pt");
  std::vector<float> x(2 * 16, 0.5f), y(2 * 4, -0.25f);
  std::vector<int64_t> xs{2, 16}, ys{2, 4};
  DLTensor tx = host(x.data(), xs), ty = host(y.data(), ys);
  perfopt_value args[2] = {};
  for (perfopt_value &v : args) {
    v.struct_size = sizeof(perfopt_value);
    v.kind = PERFOPT_VALUE_TENSOR;
  }
  args[0].tensor = &tx;
  args[1].tensor = &ty;
  for (int round = 0; round < 4; ++round) {
    perfopt_value *result = nullptr;
    CHECK_STATUS(perfopt_model_call(model, "forward", args, 2, &result), PERFOPT_OK);
    CHECK(result->kind == PERFOPT_VALUE_TUPLE && result->length == 2);
    DLManagedTensor *taken = nullptr;
    if (round == 0) result->length = 1000000;  // a list that claims more items
    if (round == 1) {                          // a tensor taken, the other slot pointed elsewhere
      taken = result->items[0].managed;
      result->items[0].managed = nullptr;
      result->items[1].kind = PERFOPT_VALUE_STRING;
      result->items[1].string = "not perfopt's";
    }
    if (round == 2) result->items = nullptr;  // the items pointer lost
    if (round == 3) std::swap(result->items[0].managed, result->items[1].managed);  // both still in the tree
    perfopt_value_free(result);
    if (taken) taken->deleter(taken);
  }
  perfopt_model_free(model);
  perfopt_optimizer_free(optimizer);
}

const std::map<std::string, std::function<void()>> &cases() {
  static const std::map<std::string, std::function<void()>> all = {
      {"free_races_runs", free_races_runs},
      {"scope_of_an_ended_thread", scope_of_an_ended_thread},
      {"bounded_arguments", bounded_arguments},
      {"size_queries_of_work", size_queries_of_work},
      {"named_pipe_is_refused", named_pipe_is_refused},
      {"pinned_input_is_host_memory", pinned_input_is_host_memory},
      {"batched_edges", batched_edges},
      {"odd_results_are_named", odd_results_are_named},
      {"recommend_batch_keeps_the_peak", recommend_batch_keeps_the_peak},
      {"host_out_of_memory", host_out_of_memory},
      {"forked_child_is_told", forked_child_is_told},
      {"log_callback_calls_perfopt", log_callback_calls_perfopt},
      {"log_callback_swap_is_a_barrier", log_callback_swap_is_a_barrier},
      {"calls_from_thread_exit_destructors", calls_from_thread_exit_destructors},
      {"result_tree_changed_before_free", result_tree_changed_before_free},
  };
  return all;
}

}  // namespace

int main(int argc, char **argv) {
  if (argc != 2 || !cases().count(argv[1])) {
    std::printf("usage: safety CASE; cases:");
    for (auto &entry : cases()) std::printf(" %s", entry.first.c_str());
    std::printf("\n");
    return 2;
  }
  alarm(300);  // a hang is a failure, not a stuck suite
  try {
    cases().at(argv[1])();
  } catch (const Failure &f) {
    std::printf("FAIL %s: %s\n", argv[1], f.message.c_str());
    return 1;
  }
  std::printf("ok   %s\n", argv[1]);
  return 0;
}
