// Drives the built libperfopt through every exported function, bad inputs
// included. Each TEST_CASE runs in its own process under ctest
// (`harness NAME`); `harness` alone runs them all.
#include "perfopt.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

std::map<std::string, std::function<void()>> &cases() {
  static std::map<std::string, std::function<void()>> registry;
  return registry;
}

struct Register {
  Register(const char *name, std::function<void()> body) { cases()[name] = std::move(body); }
};

struct Failure {
  std::string message;
};

#define TEST_CASE(name)                              \
  void test_##name();                                \
  const Register register_##name(#name, test_##name); \
  void test_##name()

#define CHECK(cond)                                                                          \
  do {                                                                                       \
    if (!(cond)) throw Failure{std::string(__FILE__ ":") + std::to_string(__LINE__) + ": " #cond}; \
  } while (0)

std::string last_error() {
  const char *message = perfopt_last_error();
  return message ? message : "";
}

// Checks a status and that a failure left a message naming `needle`.
#define CHECK_STATUS(call, expected, needle)                                                     \
  do {                                                                                           \
    perfopt_status status_ = (call);                                                             \
    if (status_ != (expected))                                                                   \
      throw Failure{std::string(__FILE__ ":") + std::to_string(__LINE__) + ": " #call " returned " + \
                    perfopt_status_name(status_) + ", expected " #expected " (" + last_error() + ")"}; \
    if ((expected) != PERFOPT_OK) {                                                              \
      CHECK(perfopt_last_error() != nullptr);                                                    \
      CHECK(last_error().find(needle) != std::string::npos);                                     \
    } else {                                                                                     \
      CHECK(perfopt_last_error() == nullptr);                                                    \
    }                                                                                            \
  } while (0)

perfopt_config cpu_config() {
  perfopt_config config;
  CHECK(perfopt_config_default(&config) == PERFOPT_OK);
  config.device = "cpu";
  config.read_environment = 0;
  return config;
}

perfopt_optimizer *new_optimizer(const perfopt_config &config) {
  perfopt_optimizer *optimizer = nullptr;
  CHECK_STATUS(perfopt_optimizer_new(&config, &optimizer), PERFOPT_OK, "");
  CHECK(optimizer != nullptr);
  return optimizer;
}

std::string report(const perfopt_optimizer *optimizer) {
  size_t needed = 0;
  CHECK_STATUS(perfopt_optimizer_report(optimizer, nullptr, 0, &needed), PERFOPT_ERR_BUFFER_TOO_SMALL,
               "needed");
  std::string text(needed, '\0');
  CHECK_STATUS(perfopt_optimizer_report(optimizer, text.data(), text.size(), &needed), PERFOPT_OK, "");
  text.resize(needed - 1);
  return text;
}

}  // namespace

TEST_CASE(version_and_abi) {
  CHECK(perfopt_abi_version() == PERFOPT_ABI_VERSION);
  std::string version = perfopt_version();
  CHECK(version.rfind("perfopt 0.1.0 (libtorch 2.11.0, cuda ", 0) == 0);
  CHECK(std::string(perfopt_status_name(PERFOPT_ERR_WRONG_THREAD)) == "PERFOPT_ERR_WRONG_THREAD");
  CHECK(std::string(perfopt_status_name(-7)) == "PERFOPT_UNKNOWN_STATUS");
  CHECK(std::string(perfopt_status_name(1000)) == "PERFOPT_UNKNOWN_STATUS");
}

TEST_CASE(config_default_fills_every_field) {
  perfopt_config config;
  std::memset(&config, 0x5a, sizeof config);
  CHECK_STATUS(perfopt_config_default(&config), PERFOPT_OK, "");
  CHECK(config.struct_size == sizeof(perfopt_config));
  CHECK(config.read_environment == 1);
  CHECK(config.device == nullptr && config.compile_mode == nullptr);
  CHECK(config.cudnn_benchmark == PERFOPT_AUTO && config.tf32 == PERFOPT_AUTO);
  CHECK(config.cpu_optimization == PERFOPT_AUTO && config.torch_compile == PERFOPT_AUTO);
  CHECK(config.intra_op_threads == 0 && config.inter_op_threads == 0);
}

TEST_CASE(null_arguments) {
  perfopt_optimizer *optimizer = new_optimizer(cpu_config());
  int32_t batch = 0;
  size_t needed = 0;
  char buf[8];
  perfopt_scope *scope = nullptr;
  CHECK_STATUS(perfopt_config_default(nullptr), PERFOPT_ERR_NULL_ARGUMENT, "config");
  CHECK_STATUS(perfopt_optimizer_new(nullptr, nullptr), PERFOPT_ERR_NULL_ARGUMENT, "out");
  CHECK_STATUS(perfopt_optimizer_report(nullptr, buf, sizeof buf, &needed), PERFOPT_ERR_NULL_ARGUMENT,
               "optimizer");
  CHECK_STATUS(perfopt_optimizer_report(optimizer, nullptr, 64, &needed), PERFOPT_ERR_NULL_ARGUMENT, "buf");
  CHECK_STATUS(perfopt_optimal_batch_size(nullptr, &batch), PERFOPT_ERR_NULL_ARGUMENT, "optimizer");
  CHECK_STATUS(perfopt_optimal_batch_size(optimizer, nullptr), PERFOPT_ERR_NULL_ARGUMENT, "out");
  CHECK_STATUS(perfopt_inference_enter(nullptr, &scope), PERFOPT_ERR_NULL_ARGUMENT, "optimizer");
  CHECK_STATUS(perfopt_inference_enter(optimizer, nullptr), PERFOPT_ERR_NULL_ARGUMENT, "out");
  CHECK_STATUS(perfopt_inference_exit(nullptr), PERFOPT_ERR_NULL_ARGUMENT, "scope");
  perfopt_optimizer_free(nullptr);
  // The objects still work after the failures.
  CHECK_STATUS(perfopt_optimal_batch_size(optimizer, &batch), PERFOPT_OK, "");
  CHECK(batch == 1);
  perfopt_optimizer_free(optimizer);
}

TEST_CASE(bad_configs) {
  struct Case {
    std::function<void(perfopt_config &)> mutate;
    perfopt_status expected;
    const char *needle;
  };
  static const char bad_utf8[] = {'c', static_cast<char>(0xff), 'u', 0};
  std::vector<Case> bad = {
      {[](perfopt_config &c) { c.struct_size = 4; }, PERFOPT_ERR_STRUCT_SIZE, "struct_size"},
      {[](perfopt_config &c) { c.struct_size = 0; }, PERFOPT_ERR_STRUCT_SIZE, "struct_size"},
      {[](perfopt_config &c) { c.struct_size += 16; }, PERFOPT_ERR_STRUCT_SIZE, "struct_size"},
      {[](perfopt_config &c) { c.device = "gpu0"; }, PERFOPT_ERR_INVALID_ARGUMENT, "gpu0"},
      {[](perfopt_config &c) { c.device = ""; }, PERFOPT_ERR_INVALID_ARGUMENT, "accepted"},
      {[](perfopt_config &c) { c.device = "cuda:"; }, PERFOPT_ERR_INVALID_ARGUMENT, "cuda:"},
      {[](perfopt_config &c) { c.device = "cuda:-1"; }, PERFOPT_ERR_INVALID_ARGUMENT, "cuda:-1"},
      {[](perfopt_config &c) { c.device = bad_utf8; }, PERFOPT_ERR_INVALID_UTF8, "UTF-8"},
      {[](perfopt_config &c) { c.compile_mode = "turbo"; }, PERFOPT_ERR_INVALID_ARGUMENT, "turbo"},
      {[](perfopt_config &c) { c.compile_mode = ""; }, PERFOPT_ERR_INVALID_ARGUMENT, "compile mode"},
      {[](perfopt_config &c) { c.tf32 = 2; }, PERFOPT_ERR_INVALID_ARGUMENT, "tf32"},
      {[](perfopt_config &c) { c.torch_compile = -5; }, PERFOPT_ERR_INVALID_ARGUMENT, "torch_compile"},
      {[](perfopt_config &c) { c.cpu_optimization = 3; }, PERFOPT_ERR_INVALID_ARGUMENT, "cpu_optimization"},
      {[](perfopt_config &c) { c.read_environment = 2; }, PERFOPT_ERR_INVALID_ARGUMENT, "read_environment"},
      {[](perfopt_config &c) { c.inter_op_threads = -1; }, PERFOPT_ERR_INVALID_ARGUMENT, "inter_op_threads"},
  };
  for (const Case &c : bad) {
    perfopt_config config = cpu_config();
    c.mutate(config);
    perfopt_optimizer *sentinel = reinterpret_cast<perfopt_optimizer *>(0x10);
    perfopt_optimizer *out = sentinel;
    CHECK_STATUS(perfopt_optimizer_new(&config, &out), c.expected, c.needle);
    CHECK(out == sentinel);
  }
  perfopt_optimizer_free(new_optimizer(cpu_config()));
}

TEST_CASE(missing_cuda_device) {
  perfopt_optimizer *probe = new_optimizer(cpu_config());
  bool has_cuda = report(probe).find("\"cuda_device_count\":0") == std::string::npos;
  perfopt_optimizer_free(probe);
  perfopt_config config = cpu_config();
  config.device = "cuda:99";
  perfopt_optimizer *out = nullptr;
  if (has_cuda) {
    CHECK_STATUS(perfopt_optimizer_new(&config, &out), PERFOPT_ERR_DEVICE_NOT_FOUND, "cuda:99");
  } else {
    CHECK_STATUS(perfopt_optimizer_new(&config, &out), PERFOPT_ERR_UNSUPPORTED_DEVICE, "no CUDA device");
    config.device = "mps";
    CHECK_STATUS(perfopt_optimizer_new(&config, &out), PERFOPT_ERR_UNSUPPORTED_DEVICE, "MPS");
  }
  CHECK(out == nullptr);
}

TEST_CASE(malformed_environment_names_the_variable) {
  setenv("TRANSLATOR_CUDNN_BENCHMARK", "sometimes", 1);
  perfopt_optimizer *out = nullptr;
  CHECK_STATUS(perfopt_optimizer_new(nullptr, &out), PERFOPT_ERR_ENVIRONMENT, "TRANSLATOR_CUDNN_BENCHMARK");
  CHECK(last_error().find("accepted") != std::string::npos);
  setenv("TRANSLATOR_CUDNN_BENCHMARK", "true", 1);
  setenv("TRANSLATOR_COMPILE_MODE", "fast", 1);
  CHECK_STATUS(perfopt_optimizer_new(nullptr, &out), PERFOPT_ERR_ENVIRONMENT, "TRANSLATOR_COMPILE_MODE");
  unsetenv("TRANSLATOR_COMPILE_MODE");
  CHECK_STATUS(perfopt_optimizer_new(nullptr, &out), PERFOPT_OK, "");
  perfopt_optimizer_free(out);
}

TEST_CASE(config_wins_over_environment) {
  setenv("TRANSLATOR_COMPILE_MODE", "default", 1);
  setenv("TRANSLATOR_CPU_OPTIMIZATION", "false", 1);
  perfopt_config config;
  perfopt_config_default(&config);
  config.compile_mode = "max-autotune";
  perfopt_optimizer *optimizer = new_optimizer(config);
  std::string text = report(optimizer);
  CHECK(text.find("\"mode\":\"max-autotune\",\"mode_source\":\"config\"") != std::string::npos);
  CHECK(text.find("CPU optimization is off") != std::string::npos);
  perfopt_optimizer_free(optimizer);
}

TEST_CASE(report_describes_device_and_settings) {
  perfopt_config config = cpu_config();
  config.intra_op_threads = 1;
  perfopt_optimizer *optimizer = new_optimizer(config);
  std::string text = report(optimizer);
  for (const char *key : {"\"device\":{\"kind\":\"cpu\"", "\"total_memory_bytes\":", "\"free_memory_bytes\":",
                          "\"compute_capability\":", "\"intra_op_threads\":{\"value\":1,\"requested\":1",
                          "\"source\":\"config\"", "\"skipped\":[", "\"tf32_matmul\"", "\"cudnn_benchmark\"",
                          "\"service_rule\":1"}) {
    if (text.find(key) == std::string::npos) throw Failure{std::string("report lacks ") + key + ": " + text};
  }
  // Too small, exact, and larger buffers.
  size_t needed = 0;
  std::vector<char> small(10, 'x');
  CHECK_STATUS(perfopt_optimizer_report(optimizer, small.data(), small.size(), &needed),
               PERFOPT_ERR_BUFFER_TOO_SMALL, "needed");
  CHECK(needed == text.size() + 1);
  std::vector<char> exact(needed);
  CHECK_STATUS(perfopt_optimizer_report(optimizer, exact.data(), exact.size(), nullptr), PERFOPT_OK, "");
  CHECK(std::strlen(exact.data()) == needed - 1);
  perfopt_optimizer_free(optimizer);
}

TEST_CASE(scopes_nest_last_in_first_out) {
  perfopt_optimizer *optimizer = new_optimizer(cpu_config());
  perfopt_scope *outer = nullptr, *inner = nullptr;
  CHECK_STATUS(perfopt_inference_enter(optimizer, &outer), PERFOPT_OK, "");
  CHECK_STATUS(perfopt_inference_enter(optimizer, &inner), PERFOPT_OK, "");
  CHECK_STATUS(perfopt_inference_exit(outer), PERFOPT_ERR_SCOPE_ORDER, "innermost");
  CHECK_STATUS(perfopt_inference_exit(inner), PERFOPT_OK, "");
  CHECK_STATUS(perfopt_inference_exit(outer), PERFOPT_OK, "");
  CHECK_STATUS(perfopt_inference_exit(outer), PERFOPT_ERR_INVALID_HANDLE, "not a live perfopt_scope");
  perfopt_optimizer_free(optimizer);
}

TEST_CASE(scope_exit_on_another_thread_is_refused) {
  perfopt_optimizer *optimizer = new_optimizer(cpu_config());
  perfopt_scope *scope = nullptr;
  CHECK_STATUS(perfopt_inference_enter(optimizer, &scope), PERFOPT_OK, "");
  perfopt_status other = PERFOPT_OK;
  std::string message;
  std::thread([&] {
    other = perfopt_inference_exit(scope);
    message = last_error();
  }).join();
  CHECK(other == PERFOPT_ERR_WRONG_THREAD);
  CHECK(message.find("thread") != std::string::npos);
  // Still valid on its own thread, even after the optimizer is gone.
  perfopt_optimizer_free(optimizer);
  CHECK_STATUS(perfopt_inference_exit(scope), PERFOPT_OK, "");
}

TEST_CASE(scopes_on_many_threads) {
  perfopt_optimizer *optimizer = new_optimizer(cpu_config());
  std::vector<std::thread> threads;
  std::vector<int> failures(8, 0);
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) {
        perfopt_scope *a = nullptr, *b = nullptr;
        if (perfopt_inference_enter(optimizer, &a) != PERFOPT_OK) ++failures[t];
        if (perfopt_inference_enter(optimizer, &b) != PERFOPT_OK) ++failures[t];
        if (perfopt_inference_exit(b) != PERFOPT_OK) ++failures[t];
        if (perfopt_inference_exit(a) != PERFOPT_OK) ++failures[t];
      }
    });
  }
  for (auto &thread : threads) thread.join();
  for (int f : failures) CHECK(f == 0);
  perfopt_optimizer_free(optimizer);
}

TEST_CASE(freed_handles_are_refused) {
  perfopt_optimizer *optimizer = new_optimizer(cpu_config());
  perfopt_optimizer_free(optimizer);
  int32_t batch = 0;
  CHECK_STATUS(perfopt_optimal_batch_size(optimizer, &batch), PERFOPT_ERR_INVALID_HANDLE, "not a live");
  int not_a_handle = 0;
  CHECK_STATUS(perfopt_optimal_batch_size(reinterpret_cast<perfopt_optimizer *>(&not_a_handle), &batch),
               PERFOPT_ERR_INVALID_HANDLE, "perfopt_optimizer");
}

std::mutex log_mutex;
std::vector<std::pair<int32_t, std::string>> log_lines;

void capture(int32_t level, const char *message, void *user_data) {
  std::lock_guard<std::mutex> lock(log_mutex);
  log_lines.emplace_back(level, std::string(message) + (user_data ? "" : " (no user data)"));
}

TEST_CASE(log_callback_receives_records) {
  int token = 0;
  CHECK_STATUS(perfopt_set_log_callback(capture, &token, 6), PERFOPT_ERR_INVALID_ARGUMENT, "max_level");
  CHECK_STATUS(perfopt_set_log_callback(capture, &token, PERFOPT_LOG_DEBUG), PERFOPT_OK, "");
  perfopt_optimizer_free(new_optimizer(cpu_config()));
  int32_t batch = 0;
  perfopt_optimal_batch_size(nullptr, &batch);  // a failure is logged at debug level
  CHECK_STATUS(perfopt_set_log_callback(nullptr, nullptr, PERFOPT_LOG_OFF), PERFOPT_OK, "");
  std::lock_guard<std::mutex> lock(log_mutex);
  bool ready = false, failure = false;
  for (auto &[level, text] : log_lines) {
    if (level == PERFOPT_LOG_INFO && text.find("optimizer ready on cpu") != std::string::npos) ready = true;
    if (level == PERFOPT_LOG_DEBUG && text.find("`optimizer` is NULL") != std::string::npos) failure = true;
    CHECK(text.find("(no user data)") == std::string::npos);
  }
  CHECK(ready && failure);
}

int main(int argc, char **argv) {
  int passed = 0, failed = 0;
  for (auto &[name, body] : cases()) {
    if (argc > 1 && name != argv[1]) continue;
    try {
      body();
      ++passed;
      std::printf("ok   %s\n", name.c_str());
    } catch (const Failure &f) {
      ++failed;
      std::printf("FAIL %s: %s\n", name.c_str(), f.message.c_str());
    }
  }
  if (argc > 1 && passed + failed == 0) {
    std::printf("no case named %s\n", argv[1]);
    return 2;
  }
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
