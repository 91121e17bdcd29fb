// Drives the built libperfopt through every exported function, bad inputs
// included. Each TEST_CASE runs in its own process under ctest
// (`harness NAME`); `harness` alone runs them all.
#include "perfopt.h"

#include <cstdio>
#include <cstdlib>
#include <cmath>
#include <algorithm>
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
  // Reports are made fresh on each call (free memory changes): leave room.
  std::string text(needed + 256, '\0');
  CHECK_STATUS(perfopt_optimizer_report(optimizer, text.data(), text.size(), &needed), PERFOPT_OK, "");
  text.resize(needed - 1);
  return text;
}

// Whether this library has the libtorch engines (the lite build has not).
bool has_libtorch() { return std::string(perfopt_version()).find("(libtorch ") != std::string::npos; }

}  // namespace

TEST_CASE(version_and_abi) {
  CHECK(perfopt_abi_version() == PERFOPT_ABI_VERSION);
  std::string version = perfopt_version();
  CHECK(version.rfind("perfopt 0.1.0 (libtorch 2.11.0, cuda ", 0) == 0 ||
        version == "perfopt 0.1.0 (lite: ONNX Runtime and ExecuTorch, no libtorch)");
  CHECK(std::string(perfopt_status_name(PERFOPT_ERR_WRONG_THREAD)) == "PERFOPT_ERR_WRONG_THREAD");
  CHECK(std::string(perfopt_status_name(-7)) == "PERFOPT_UNKNOWN_STATUS");
  CHECK(std::string(perfopt_status_name(1000)) == "PERFOPT_UNKNOWN_STATUS");
  CHECK(std::string(perfopt_status_name(PERFOPT_COMPILE_SKIPPED)) == "PERFOPT_COMPILE_SKIPPED");
}

// The engines this library has, as the optimizer's report lists them; the
// lite build refuses a TorchScript file by status, naming the build.
TEST_CASE(engines_of_this_build) {
  perfopt_optimizer *optimizer = new_optimizer(cpu_config());
  std::string text = report(optimizer);
  const bool libtorch = has_libtorch();
  const std::string torchscript = libtorch ? "{\"available\":true,\"runtime\":\"libtorch (linked)\",\"format\":\"torchscript\"}"
                                           : "{\"available\":false,\"runtime\":\"none: the build without "
                                             "libtorch\",\"format\":\"torchscript\"}";
  if (text.find(torchscript) == std::string::npos) throw Failure{"report lacks " + torchscript + ": " + text};
  CHECK(text.find("\"format\":\"onnx\"}") != std::string::npos);
  CHECK(text.find("\"format\":\"executorch\"}") != std::string::npos);
  const char *fixtures = std::getenv("PERFOPT_FIXTURES");
  std::string path = std::string(fixtures ? fixtures : "build/fixtures") + "/two_inputs.pt";
  perfopt_model *model = nullptr;
  if (libtorch) {
    CHECK_STATUS(perfopt_model_load(optimizer, path.c_str(), nullptr, &model), PERFOPT_OK, "");
    perfopt_model_free(model);
  } else {
    CHECK_STATUS(perfopt_model_load(optimizer, path.c_str(), nullptr, &model), PERFOPT_ERR_UNSUPPORTED_MODEL,
                 "the build without libtorch");
    CHECK(model == nullptr);
  }
  perfopt_optimizer_free(optimizer);
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
  CHECK(config.malloc_tuning == PERFOPT_AUTO);
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
      {[](perfopt_config &c) { c.malloc_tuning = 9; }, PERFOPT_ERR_INVALID_ARGUMENT, "malloc_tuning"},
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
    // The lite build has no CUDA at all, and says so.
    CHECK_STATUS(perfopt_optimizer_new(&config, &out), PERFOPT_ERR_UNSUPPORTED_DEVICE,
                 has_libtorch() ? "no CUDA device" : "which has no CUDA");
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
  (void)perfopt_config_default(&config);
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
  // Equal but for the free-memory figure, which may have gained or lost digits.
  CHECK(needed + 4 >= text.size() + 1 && needed <= text.size() + 5);
  std::vector<char> exact(needed);
  // The free-memory figure may change length between calls; one retry covers it.
  if (perfopt_optimizer_report(optimizer, exact.data(), exact.size(), &needed) == PERFOPT_ERR_BUFFER_TOO_SMALL)
    exact.resize(needed);
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
  (void)perfopt_optimal_batch_size(nullptr, &batch);  // a failure is logged at debug level
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

// ---- Models --------------------------------------------------------------

namespace {

std::string fixtures() {
  const char *dir = std::getenv("PERFOPT_FIXTURES");
  if (!dir) throw Failure{"PERFOPT_FIXTURES is not set (make test-cpp sets it)"};
  return dir;
}

// A host tensor read from a .npy file (little-endian f4 or i8, C order).
struct HostTensor {
  std::vector<int64_t> shape;
  std::vector<char> data;
  DLDataType dtype{};

  DLTensor dl() {
    DLTensor t{};
    t.data = data.data();
    t.device = DLDevice{kDLCPU, 0};
    t.ndim = static_cast<int32_t>(shape.size());
    t.dtype = dtype;
    t.shape = shape.data();
    t.strides = nullptr;
    t.byte_offset = 0;
    return t;
  }
};

HostTensor read_npy(const std::string &path) {
  FILE *f = std::fopen(path.c_str(), "rb");
  if (!f) throw Failure{"cannot open " + path};
  char magic[10];
  if (std::fread(magic, 1, 10, f) != 10) throw Failure{"short npy " + path};
  uint16_t header_len = static_cast<uint8_t>(magic[8]) | (static_cast<uint8_t>(magic[9]) << 8);
  std::string header(header_len, '\0');
  if (std::fread(header.data(), 1, header_len, f) != header_len) throw Failure{"short npy header " + path};
  HostTensor t;
  if (header.find("'<f4'") != std::string::npos) {
    t.dtype = DLDataType{kDLFloat, 32, 1};
  } else if (header.find("'<i8'") != std::string::npos) {
    t.dtype = DLDataType{kDLInt, 64, 1};
  } else {
    throw Failure{"unsupported npy dtype in " + path};
  }
  size_t open = header.find("'shape': (") + 10, close = header.find(')', open);
  std::string dims = header.substr(open, close - open);
  size_t numel = 1;
  for (size_t pos = 0; pos < dims.size();) {
    size_t comma = dims.find(',', pos);
    std::string dim = dims.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    if (dim.find_first_not_of(' ') != std::string::npos) {
      t.shape.push_back(std::stoll(dim));
      numel *= static_cast<size_t>(t.shape.back());
    }
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  t.data.resize(numel * (t.dtype.bits / 8));
  if (std::fread(t.data.data(), 1, t.data.size(), f) != t.data.size()) throw Failure{"short npy data " + path};
  std::fclose(f);
  return t;
}

struct Fixture {
  std::string path;
  std::vector<HostTensor> inputs, outputs;
  std::vector<DLTensor> dl_inputs() {
    std::vector<DLTensor> dl;
    for (auto &t : inputs) dl.push_back(t.dl());
    return dl;
  }
};

bool exists(const std::string &path) {
  FILE *f = std::fopen(path.c_str(), "rb");
  if (f) std::fclose(f);
  return f != nullptr;
}

Fixture fixture(const std::string &name) {
  Fixture fx;
  fx.path = fixtures() + "/" + name + ".pt";
  for (int i = 0; exists(fixtures() + "/" + name + ".input" + std::to_string(i) + ".npy"); ++i)
    fx.inputs.push_back(read_npy(fixtures() + "/" + name + ".input" + std::to_string(i) + ".npy"));
  for (int i = 0; exists(fixtures() + "/" + name + ".output" + std::to_string(i) + ".npy"); ++i)
    fx.outputs.push_back(read_npy(fixtures() + "/" + name + ".output" + std::to_string(i) + ".npy"));
  return fx;
}

// max |a - b| / max |b| of a float32 output against its reference.
double relative_error(const DLManagedTensor *out, const HostTensor &ref) {
  const DLTensor &t = out->dl_tensor;
  CHECK(t.device.device_type == kDLCPU);
  CHECK(t.dtype.code == kDLFloat && t.dtype.bits == 32);
  CHECK(static_cast<size_t>(t.ndim) == ref.shape.size());
  size_t numel = 1;
  for (int d = 0; d < t.ndim; ++d) {
    CHECK(t.shape[d] == ref.shape[d]);
    numel *= static_cast<size_t>(t.shape[d]);
  }
  const float *a = reinterpret_cast<const float *>(static_cast<const char *>(t.data) + t.byte_offset);
  const float *b = reinterpret_cast<const float *>(ref.data.data());
  double diff = 0, scale = 0;
  for (size_t i = 0; i < numel; ++i) {
    diff = std::max(diff, static_cast<double>(std::abs(a[i] - b[i])));
    scale = std::max(scale, static_cast<double>(std::abs(b[i])));
  }
  return diff / std::max(scale, 1e-30);
}

void release(DLManagedTensor **outputs, size_t n) {
  for (size_t i = 0; i < n; ++i) outputs[i]->deleter(outputs[i]);
}

perfopt_model *load(perfopt_optimizer *optimizer, const std::string &path) {
  perfopt_model *model = nullptr;
  CHECK_STATUS(perfopt_model_load(optimizer, path.c_str(), nullptr, &model), PERFOPT_OK, "");
  return model;
}

}  // namespace

TEST_CASE(models_match_pytorch_in_every_mode) {
  perfopt_optimizer *optimizer = new_optimizer(cpu_config());
  for (const char *name : {"vocoder", "encoder", "speaker", "two_inputs", "tokens"}) {
    Fixture fx = fixture(name);
    auto inputs = fx.dl_inputs();
    for (const char *mode : {"none", "default", "reduce-overhead", "max-autotune"}) {
      perfopt_model *model = load(optimizer, fx.path);
      CHECK_STATUS(perfopt_model_compile(model, mode, inputs.data(), inputs.size()), PERFOPT_OK, "");
      DLManagedTensor *outputs[4] = {};
      size_t n = 0;
      CHECK_STATUS(perfopt_model_run(model, inputs.data(), inputs.size(), outputs, 4, &n), PERFOPT_OK, "");
      CHECK(n == fx.outputs.size());
      for (size_t i = 0; i < n; ++i) {
        double error = relative_error(outputs[i], fx.outputs[i]);
        if (error > 1e-3) throw Failure{std::string(name) + " " + mode + ": error " + std::to_string(error)};
      }
      release(outputs, n);
      perfopt_model_free(model);
    }
  }
  perfopt_optimizer_free(optimizer);
}

TEST_CASE(model_load_errors) {
  perfopt_optimizer *optimizer = new_optimizer(cpu_config());
  perfopt_model *model = nullptr;
  std::string dir = fixtures();
  CHECK_STATUS(perfopt_model_load(nullptr, "x.pt", nullptr, &model), PERFOPT_ERR_NULL_ARGUMENT, "optimizer");
  CHECK_STATUS(perfopt_model_load(optimizer, nullptr, nullptr, &model), PERFOPT_ERR_NULL_ARGUMENT, "path");
  CHECK_STATUS(perfopt_model_load(optimizer, "x.pt", nullptr, nullptr), PERFOPT_ERR_NULL_ARGUMENT, "out");
  CHECK_STATUS(perfopt_model_load(optimizer, "", nullptr, &model), PERFOPT_ERR_FILE_NOT_FOUND, "empty");
  CHECK_STATUS(perfopt_model_load(optimizer, (dir + "/nope.pt").c_str(), nullptr, &model),
               PERFOPT_ERR_FILE_NOT_FOUND, "nope.pt");
  CHECK_STATUS(perfopt_model_load(optimizer, (dir + "/manifest.json").c_str(), nullptr, &model),
               PERFOPT_ERR_LOAD_FAILED, "manifest.json");
  CHECK_STATUS(perfopt_model_load(optimizer, dir.c_str(), nullptr, &model), PERFOPT_ERR_NOT_A_FILE, "directory");
  const char bad_utf8[] = {'m', static_cast<char>(0xc3), 0};
  CHECK_STATUS(perfopt_model_load(optimizer, bad_utf8, nullptr, &model), PERFOPT_ERR_INVALID_UTF8, "path");
  // A truncated copy of a real model.
  std::vector<char> bytes;
  {
    FILE *f = std::fopen((dir + "/encoder.pt").c_str(), "rb");
    CHECK(f != nullptr);
    char chunk[4096];
    size_t n;
    while ((n = std::fread(chunk, 1, sizeof chunk, f)) > 0) bytes.insert(bytes.end(), chunk, chunk + n);
    std::fclose(f);
  }
  std::string cut = dir + "/harness_truncated.pt";
  FILE *out = std::fopen(cut.c_str(), "wb");
  std::fwrite(bytes.data(), 1, bytes.size() / 3, out);
  std::fclose(out);
  CHECK_STATUS(perfopt_model_load(optimizer, cut.c_str(), nullptr, &model), PERFOPT_ERR_MODEL_CORRUPT,
               "harness_truncated.pt");
  CHECK(model == nullptr);
  perfopt_model_free(nullptr);
  model = load(optimizer, dir + "/encoder.pt");
  perfopt_model_free(model);
  perfopt_optimizer_free(optimizer);
}

TEST_CASE(model_bad_inputs_leave_it_usable) {
  perfopt_optimizer *optimizer = new_optimizer(cpu_config());
  Fixture fx = fixture("two_inputs");
  perfopt_model *model = load(optimizer, fx.path);
  auto good = fx.dl_inputs();
  DLManagedTensor *outputs[4] = {};
  size_t n = 0;
  auto run = [&](std::vector<DLTensor> inputs) {
    return perfopt_model_run(model, inputs.data(), inputs.size(), outputs, 4, &n);
  };
  CHECK_STATUS(run({good[0]}), PERFOPT_ERR_INVALID_ARGUMENT, "takes 2 input(s), got 1");
  auto bad = good;
  bad[0].dtype = DLDataType{5, 64, 1};  // complex64
  CHECK_STATUS(run(bad), PERFOPT_ERR_INVALID_ARGUMENT, "inputs[0]: dtype");
  bad = good;
  bad[1].dtype.lanes = 4;
  CHECK_STATUS(run(bad), PERFOPT_ERR_INVALID_ARGUMENT, "lanes");
  bad = good;
  bad[0].ndim = -1;
  CHECK_STATUS(run(bad), PERFOPT_ERR_INVALID_ARGUMENT, "ndim");
  bad = good;
  bad[0].shape = nullptr;
  CHECK_STATUS(run(bad), PERFOPT_ERR_INVALID_ARGUMENT, "shape is NULL");
  bad = good;
  int64_t negative[2] = {2, -16};
  bad[0].shape = negative;
  CHECK_STATUS(run(bad), PERFOPT_ERR_INVALID_ARGUMENT, "sizes must be >= 0");
  bad = good;
  bad[0].data = nullptr;
  CHECK_STATUS(run(bad), PERFOPT_ERR_INVALID_ARGUMENT, "data is NULL");
  bad = good;
  bad[0].device.device_type = kDLVulkan;
  CHECK_STATUS(run(bad), PERFOPT_ERR_INVALID_ARGUMENT, "device type");
  bad = good;
  bad[0].device = DLDevice{kDLCUDA, 7};
  CHECK_STATUS(run(bad), PERFOPT_ERR_INVALID_ARGUMENT, "CUDA");
  int64_t huge[2] = {int64_t(1) << 40, int64_t(1) << 20};
  bad = good;
  bad[0].shape = huge;
  CHECK_STATUS(run(bad), PERFOPT_ERR_INVALID_ARGUMENT, "at most 2^48");
  bad = good;
  int64_t wrong_shape[2] = {2, 5};
  bad[0].shape = wrong_shape;
  CHECK_STATUS(run(bad), PERFOPT_ERR_TORCH, "mat1 and mat2");
  CHECK_STATUS(perfopt_model_run(model, nullptr, 2, outputs, 4, &n), PERFOPT_ERR_NULL_ARGUMENT, "inputs");
  CHECK_STATUS(perfopt_model_run(model, good.data(), 2, outputs, 4, nullptr), PERFOPT_ERR_NULL_ARGUMENT,
               "n_outputs");
  CHECK_STATUS(perfopt_model_run(model, good.data(), 2, nullptr, 4, &n), PERFOPT_ERR_NULL_ARGUMENT, "outputs");
  CHECK_STATUS(perfopt_model_run(model, good.data(), 2, outputs, 1, &n), PERFOPT_ERR_BUFFER_TOO_SMALL,
               "2 outputs");
  CHECK(n == 2);
  CHECK_STATUS(perfopt_model_compile(model, "fastest", nullptr, 0), PERFOPT_ERR_INVALID_ARGUMENT, "fastest");
  CHECK_STATUS(perfopt_model_compile(model, "", nullptr, 0), PERFOPT_ERR_INVALID_ARGUMENT, "compile mode");
  CHECK_STATUS(perfopt_model_compile(model, "default", nullptr, 1), PERFOPT_ERR_NULL_ARGUMENT, "warmup_inputs");
  CHECK_STATUS(perfopt_model_compile(nullptr, "default", nullptr, 0), PERFOPT_ERR_NULL_ARGUMENT, "model");
  // Non-contiguous strides are read correctly: the transpose of a transpose.
  HostTensor t = fx.inputs[0];  // 2 x 16, C order
  std::vector<float> transposed(32);
  const float *src = reinterpret_cast<const float *>(t.data.data());
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 16; ++j) transposed[j * 2 + i] = src[i * 16 + j];
  int64_t strides[2] = {1, 2};
  DLTensor strided = good[0];
  strided.data = transposed.data();
  strided.strides = strides;
  CHECK_STATUS(run({strided, good[1]}), PERFOPT_OK, "");
  CHECK(relative_error(outputs[0], fx.outputs[0]) <= 1e-5);
  release(outputs, n);
  // The model still works, and counted the failures.
  CHECK_STATUS(run(good), PERFOPT_OK, "");
  release(outputs, n);
  std::string report;
  size_t needed = 0;
  (void)perfopt_model_report(model, nullptr, 0, &needed);
  report.resize(needed + 256);
  CHECK_STATUS(perfopt_model_report(model, report.data(), report.size(), &needed), PERFOPT_OK, "");
  // The run into a too-small output array ran, so it counts.
  if (report.find("\"calls\":3,\"failed_calls\":2") == std::string::npos) throw Failure{"model report: " + report};
  perfopt_model_free(model);
  perfopt_optimizer_free(optimizer);
}

TEST_CASE(model_options_warmup_and_report) {
  perfopt_optimizer *optimizer = new_optimizer(cpu_config());
  Fixture fx = fixture("speaker");
  perfopt_model *model = load(optimizer, fx.path);
  perfopt_model_options options;
  CHECK_STATUS(perfopt_model_options_default(&options), PERFOPT_OK, "");
  CHECK(options.struct_size == sizeof options && options.error_tolerance == 1e-3);
  CHECK(options.graph_cache_size == 8 && options.outputs_on_device == 0 && options.memory_margin == 0.1);
  perfopt_model_options margin = options;
  margin.memory_margin = 1.0;
  CHECK_STATUS(perfopt_model_set_options(model, &margin), PERFOPT_ERR_INVALID_ARGUMENT, "memory_margin");
  perfopt_model_options bad = options;
  bad.struct_size = 3;
  CHECK_STATUS(perfopt_model_set_options(model, &bad), PERFOPT_ERR_STRUCT_SIZE, "struct_size");
  bad = options;
  bad.error_tolerance = -1;
  CHECK_STATUS(perfopt_model_set_options(model, &bad), PERFOPT_ERR_INVALID_ARGUMENT, "error_tolerance");
  bad = options;
  bad.graph_cache_size = 0;
  CHECK_STATUS(perfopt_model_set_options(model, &bad), PERFOPT_ERR_INVALID_ARGUMENT, "graph_cache_size");
  bad = options;
  bad.outputs_on_device = 2;
  CHECK_STATUS(perfopt_model_set_options(model, &bad), PERFOPT_ERR_INVALID_ARGUMENT, "outputs_on_device");
  CHECK_STATUS(perfopt_model_set_options(model, nullptr), PERFOPT_ERR_NULL_ARGUMENT, "options");
  options.outputs_on_device = 1;  // the CPU is the device: same result
  CHECK_STATUS(perfopt_model_set_options(model, &options), PERFOPT_OK, "");
  CHECK_STATUS(perfopt_model_compile(model, nullptr, nullptr, 0), PERFOPT_OK, "");

  auto inputs = fx.dl_inputs();
  size_t needed = 0;
  CHECK_STATUS(perfopt_model_warmup(model, inputs.data(), inputs.size(), 0, nullptr, 0, &needed),
               PERFOPT_ERR_INVALID_ARGUMENT, "iterations");
  CHECK_STATUS(perfopt_model_warmup(model, inputs.data(), inputs.size(), 4, nullptr, 0, &needed), PERFOPT_OK, "");
  std::vector<char> small(8);
  CHECK_STATUS(perfopt_model_warmup(model, inputs.data(), inputs.size(), 2, small.data(), small.size(), &needed),
               PERFOPT_ERR_BUFFER_TOO_SMALL, "needed");
  std::string report(needed + 32, '\0');
  CHECK_STATUS(perfopt_model_warmup(model, inputs.data(), inputs.size(), 3, report.data(), report.size(), &needed),
               PERFOPT_OK, "");
  for (const char *key : {"\"first_call_ms\":", "\"steady\":{\"samples\":2", "\"p99_ms\":", "\"success\":true"})
    if (report.find(key) == std::string::npos) throw Failure{std::string("warmup report lacks ") + key + report};
  DLManagedTensor *outputs[1] = {};
  size_t n = 0;
  CHECK_STATUS(perfopt_model_run(model, inputs.data(), inputs.size(), outputs, 1, &n), PERFOPT_OK, "");
  CHECK(relative_error(outputs[0], fx.outputs[0]) <= 1e-3);
  release(outputs, n);
  (void)perfopt_model_report(model, nullptr, 0, &needed);
  std::string text(needed + 256, '\0');
  CHECK_STATUS(perfopt_model_report(model, text.data(), text.size(), &needed), PERFOPT_OK, "");
  for (const char *key : {"\"calls\":1,", "\"latency\":{\"samples\":1", "\"peak_memory_bytes\":",
                          "\"requested_mode\":\"reduce-overhead\"", "\"requested_source\":\"optimizer configuration\"",
                          "need CUDA"})
    if (text.find(key) == std::string::npos) throw Failure{std::string("model report lacks ") + key + text};
  perfopt_model_free(model);
  perfopt_optimizer_free(optimizer);
}

TEST_CASE(one_model_many_threads) {
  perfopt_optimizer *optimizer = new_optimizer(cpu_config());
  Fixture fx = fixture("encoder");
  perfopt_model *model = load(optimizer, fx.path);
  auto inputs = fx.dl_inputs();
  CHECK_STATUS(perfopt_model_compile(model, "default", inputs.data(), inputs.size()), PERFOPT_OK, "");
  std::vector<double> worst(4, 0.0);
  std::vector<int> failures(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) {
        DLManagedTensor *out[1] = {};
        size_t n = 0;
        if (perfopt_model_run(model, inputs.data(), inputs.size(), out, 1, &n) != PERFOPT_OK) {
          ++failures[t];
          continue;
        }
        worst[t] = std::max(worst[t], relative_error(out[0], fx.outputs[0]));
        release(out, n);
      }
    });
  }
  for (auto &thread : threads) thread.join();
  for (int t = 0; t < 4; ++t) CHECK(failures[t] == 0 && worst[t] <= 1e-3);
  perfopt_model_free(model);
  perfopt_optimizer_free(optimizer);
}

TEST_CASE(recommend_batch_and_run_batched) {
  perfopt_optimizer *optimizer = new_optimizer(cpu_config());
  Fixture fx = fixture("vocoder");
  perfopt_model *model = load(optimizer, fx.path);
  DLTensor sample = fx.inputs[0].dl();
  int64_t one[3] = {1, sample.shape[1], sample.shape[2]};
  sample.shape = one;
  int32_t batch = 0;
  size_t needed = 0;
  std::vector<char> report(65536);
  CHECK_STATUS(perfopt_model_recommend_batch(model, &sample, 1, nullptr, nullptr, 0, &needed),
               PERFOPT_ERR_NULL_ARGUMENT, "batch");
  DLTensor whole = fx.inputs[0].dl();  // batch 2: not a sample
  CHECK_STATUS(perfopt_model_recommend_batch(model, &whole, 1, &batch, nullptr, 0, &needed),
               PERFOPT_ERR_INVALID_ARGUMENT, "dimension 0 of size 1");
  CHECK_STATUS(perfopt_model_recommend_batch(model, &sample, 1, &batch, report.data(), report.size(), &needed),
               PERFOPT_OK, "");
  CHECK(batch >= 1);
  std::string text(report.data());
  CHECK(text.find("\"recommended_batch\":" + std::to_string(batch)) != std::string::npos);
  CHECK(text.find("\"throughput_points\":[{") != std::string::npos);

  // Both samples one at a time equal one run of both.
  DLManagedTensor *outputs[2] = {};
  size_t n = 0;
  CHECK_STATUS(perfopt_model_run_batched(model, &whole, 1, 1, outputs, 2, &n), PERFOPT_OK, "");
  CHECK(n == 1 && outputs[0]->dl_tensor.shape[0] == 2);
  CHECK(relative_error(outputs[0], fx.outputs[0]) <= 1e-4);
  release(outputs, n);
  CHECK_STATUS(perfopt_model_run_batched(model, &whole, 1, 0, outputs, 2, &n), PERFOPT_OK, "");
  release(outputs, n);
  CHECK_STATUS(perfopt_model_run_batched(model, &whole, 1, -1, outputs, 2, &n), PERFOPT_ERR_INVALID_ARGUMENT,
               "max_batch");
  DLTensor scalar = whole;
  scalar.ndim = 0;
  CHECK_STATUS(perfopt_model_run_batched(model, &scalar, 1, 1, outputs, 2, &n), PERFOPT_ERR_INVALID_ARGUMENT,
               "batch dimension");
  perfopt_model_free(model);
  perfopt_optimizer_free(optimizer);
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

// The streaming model (forward(x, sr: int), a recurrent state, reset_states)
// gives PyTorch's sequence of outputs in every compile mode, compiled with
// warm-up arguments and without a reset in between, and again after
// reset_states: from C, through perfopt_value.
TEST_CASE(stateful_stream_every_mode) {
  perfopt_optimizer *optimizer = new_optimizer(cpu_config());
  std::vector<HostTensor> chunks, expected;
  for (int i = 0; i < 20; ++i) {
    chunks.push_back(read_npy(fixtures() + "/stateful.chunk" + std::to_string(i) + ".npy"));
    expected.push_back(read_npy(fixtures() + "/stateful.expected" + std::to_string(i) + ".npy"));
  }
  for (const char *mode : {"none", "default", "reduce-overhead", "max-autotune"}) {
    perfopt_model *model = load(optimizer, fixtures() + "/stateful.pt");
    auto call_args = [](DLTensor *chunk) {
      std::vector<perfopt_value> args(2);
      for (auto &a : args) {
        std::memset(&a, 0, sizeof a);
        a.struct_size = sizeof(perfopt_value);
      }
      args[0].kind = PERFOPT_VALUE_TENSOR;
      args[0].tensor = chunk;
      args[1].kind = PERFOPT_VALUE_INT;
      args[1].int_value = 16000;
      return args;
    };
    DLTensor warm = chunks[0].dl();
    auto warm_args = call_args(&warm);
    CHECK_STATUS(perfopt_model_compile_args(model, mode, warm_args.data(), 2), PERFOPT_OK, "");
    for (int round = 0; round < 2; ++round) {
      for (int i = 0; i < 20; ++i) {
        DLTensor chunk = chunks[i].dl();
        auto args = call_args(&chunk);
        perfopt_value *result = nullptr;
        CHECK_STATUS(perfopt_model_call(model, "forward", args.data(), 2, &result), PERFOPT_OK, "");
        CHECK(result->kind == PERFOPT_VALUE_TENSOR);
        double error = relative_error(result->managed, expected[i]);
        perfopt_value_free(result);
        if (error > 1e-5) {
          throw Failure{std::string(mode) + ", round " + std::to_string(round) + ", chunk " + std::to_string(i) +
                        ": error " + std::to_string(error)};
        }
      }
      perfopt_value *none = nullptr;
      CHECK_STATUS(perfopt_model_call(model, "reset_states", nullptr, 0, &none), PERFOPT_OK, "");
      CHECK(none->kind == PERFOPT_VALUE_NONE);
      perfopt_value_free(none);
    }
    perfopt_model_free(model);
  }
  perfopt_optimizer_free(optimizer);
}

std::string packages() {
  const char *dir = std::getenv("PERFOPT_PACKAGES");
  return dir ? dir : "";
}

// AOTInductor packages from C: every call on a good one within 1e-4 of
// eager, and each broken one with its own status and a message naming it.
TEST_CASE(packages_from_c) {
  if (packages().empty()) throw Failure{"PERFOPT_PACKAGES is not set (make test-cpp sets it)"};
  perfopt_optimizer *optimizer = new_optimizer(cpu_config());
  Fixture fx;
  fx.path = packages() + "/two_inputs.pt2";
  for (int i = 0; i < 2; ++i) {
    fx.inputs.push_back(read_npy(packages() + "/two_inputs.input" + std::to_string(i) + ".npy"));
    fx.outputs.push_back(read_npy(packages() + "/two_inputs.output" + std::to_string(i) + ".npy"));
  }
  auto inputs = fx.dl_inputs();
  for (const char *mode : {"none", "default", "reduce-overhead", "max-autotune"}) {
    perfopt_model *model = load(optimizer, fx.path);
    CHECK_STATUS(perfopt_model_compile(model, mode, inputs.data(), inputs.size()), PERFOPT_OK, "");
    DLManagedTensor *outputs[4] = {};
    size_t n = 0;
    CHECK_STATUS(perfopt_model_run(model, inputs.data(), inputs.size(), outputs, 4, &n), PERFOPT_OK, "");
    CHECK(n == 2);
    for (size_t i = 0; i < n; ++i) CHECK(relative_error(outputs[i], fx.outputs[i]) <= 1e-4);
    release(outputs, n);
    CHECK_STATUS(perfopt_model_run_batched(model, inputs.data(), inputs.size(), 1, outputs, 4, &n), PERFOPT_OK, "");
    for (size_t i = 0; i < n; ++i) CHECK(relative_error(outputs[i], fx.outputs[i]) <= 1e-4);
    release(outputs, n);
    size_t needed = 0;
    CHECK_STATUS(perfopt_model_warmup(model, inputs.data(), inputs.size(), 3, nullptr, 0, &needed), PERFOPT_OK, "");
    perfopt_model_free(model);
  }
  struct Broken {
    const char *file;
    perfopt_status status;
    const char *words;
  };
  for (const Broken &b : {Broken{"truncated.pt2", PERFOPT_ERR_MODEL_CORRUPT, "truncated"},
                          Broken{"wrong_device.pt2", PERFOPT_ERR_UNSUPPORTED_DEVICE, "compiled for cuda"},
                          Broken{"cpp_only.pt2", PERFOPT_ERR_UNSUPPORTED_MODEL, "no compiled library"},
                          Broken{"bad_library.pt2", PERFOPT_ERR_MODEL_CORRUPT, "damaged or cut short"},
                          Broken{"foreign_library.pt2", PERFOPT_ERR_LOAD_FAILED, "dlopen"},
                          Broken{"missing.pt2", PERFOPT_ERR_FILE_NOT_FOUND, "missing.pt2"}}) {
    perfopt_model *model = nullptr;
    std::string path = packages() + "/" + b.file;
    CHECK_STATUS(perfopt_model_load(optimizer, path.c_str(), nullptr, &model), b.status, b.words);
    CHECK(model == nullptr);
    CHECK(std::string(perfopt_last_error()).find(b.file) != std::string::npos);
  }
  perfopt_optimizer_free(optimizer);
}

std::string model_report(const perfopt_model *model) {
  size_t needed = 0;
  CHECK_STATUS(perfopt_model_report(model, nullptr, 0, &needed), PERFOPT_ERR_BUFFER_TOO_SMALL, "needed");
  std::string text(needed + 4096, '\0');
  CHECK_STATUS(perfopt_model_report(model, text.data(), text.size(), &needed), PERFOPT_OK, "");
  text.resize(needed - 1);
  return text;
}

Fixture package_case(const std::string &name, const std::string &file) {
  Fixture fx;
  fx.path = packages() + "/" + file;
  for (int i = 0; exists(packages() + "/" + name + ".input" + std::to_string(i) + ".npy"); ++i)
    fx.inputs.push_back(read_npy(packages() + "/" + name + ".input" + std::to_string(i) + ".npy"));
  for (int i = 0; exists(packages() + "/" + name + ".output" + std::to_string(i) + ".npy"); ++i)
    fx.outputs.push_back(read_npy(packages() + "/" + name + ".output" + std::to_string(i) + ".npy"));
  return fx;
}

// One perfopt_model_run on the fixture's inputs: as many outputs as eager
// gave, each within 1e-4 of it.
void check_run_matches_eager(perfopt_model *model, const Fixture &fx, std::vector<DLTensor> &inputs) {
  DLManagedTensor *outputs[4] = {};
  size_t n = 0;
  CHECK_STATUS(perfopt_model_run(model, inputs.data(), inputs.size(), outputs, 4, &n), PERFOPT_OK, "");
  CHECK(n == fx.outputs.size());
  for (size_t i = 0; i < n; ++i) CHECK(relative_error(outputs[i], fx.outputs[i]) <= 1e-4);
  release(outputs, n);
}

// ONNX models from C: every call in every compile mode within 1e-4 of eager
// (ONNX Runtime against PyTorch; the Python suite holds it to 1e-5 of
// onnxruntime's own API), a recurrent state carried through inputs and
// outputs, wrong inputs and broken files by status.
TEST_CASE(onnx_from_c) {
  if (packages().empty()) throw Failure{"PERFOPT_PACKAGES is not set (make test-cpp sets it)"};
  perfopt_optimizer *optimizer = new_optimizer(cpu_config());
  for (const char *name : {"two_inputs", "recurrent"}) {
    Fixture fx = package_case(name, std::string(name) + ".onnx");
    auto inputs = fx.dl_inputs();
    for (const char *mode : {"none", "default", "reduce-overhead", "max-autotune"}) {
      perfopt_model *model = load(optimizer, fx.path);
      CHECK(perfopt_model_compile(model, mode, inputs.data(), inputs.size()) == PERFOPT_OK);
      check_run_matches_eager(model, fx, inputs);
      DLManagedTensor *outputs[4] = {};
      size_t n = 0;
      CHECK_STATUS(perfopt_model_run_batched(model, inputs.data(), inputs.size(), 1, outputs, 4, &n), PERFOPT_OK,
                   "");
      for (size_t i = 0; i < n; ++i) CHECK(relative_error(outputs[i], fx.outputs[i]) <= 1e-4);
      release(outputs, n);
      size_t needed = 0;
      CHECK_STATUS(perfopt_model_warmup(model, inputs.data(), inputs.size(), 3, nullptr, 0, &needed), PERFOPT_OK,
                   "");
      CHECK(model_report(model).find("\"format\":\"onnx\"") != std::string::npos);
      perfopt_model_free(model);
    }
  }
  // The recurrent model's state: each step's new state is the next step's input.
  Fixture step = package_case("recurrent", "recurrent.onnx");
  perfopt_model *model = load(optimizer, step.path);
  std::vector<DLTensor> inputs = step.dl_inputs();
  DLManagedTensor *outputs[2] = {};
  DLManagedTensor *previous = nullptr;
  for (int i = 0; i < 5; ++i) {
    size_t n = 0;
    CHECK_STATUS(perfopt_model_run(model, inputs.data(), inputs.size(), outputs, 2, &n), PERFOPT_OK, "");
    CHECK(n == 2 && outputs[1]->dl_tensor.shape[1] == 64);
    if (previous) previous->deleter(previous);
    outputs[0]->deleter(outputs[0]);
    previous = outputs[1];
    inputs[1] = previous->dl_tensor;
  }
  previous->deleter(previous);
  // Wrong inputs: the model's words for what it takes.
  Fixture fx = package_case("two_inputs", "two_inputs.onnx");
  perfopt_model *two = load(optimizer, fx.path);
  std::vector<DLTensor> bad = fx.dl_inputs();
  bad[0].dtype = DLDataType{kDLInt, 32, 1};
  size_t n = 0;
  CHECK_STATUS(perfopt_model_run(two, bad.data(), bad.size(), outputs, 2, &n), PERFOPT_ERR_INVALID_ARGUMENT,
               "takes float32 of shape [batch, 16]");
  bad = fx.dl_inputs();
  bad[0].ndim = 1;
  CHECK_STATUS(perfopt_model_run(two, bad.data(), bad.size(), outputs, 2, &n), PERFOPT_ERR_INVALID_ARGUMENT,
               "[batch, 16]");
  bad = fx.dl_inputs();
  int64_t one_row[2] = {1, 4};
  bad[1].shape = one_row;
  CHECK_STATUS(perfopt_model_run(two, bad.data(), bad.size(), outputs, 2, &n), PERFOPT_ERR_INVALID_ARGUMENT,
               "`batch`");
  perfopt_model_free(two);
  perfopt_model_free(model);
  struct Broken {
    const char *file;
    perfopt_status status;
    const char *words;
  };
  for (const Broken &b : {Broken{"truncated.onnx", PERFOPT_ERR_MODEL_CORRUPT, "cut short"},
                          Broken{"not_a_model.onnx", PERFOPT_ERR_MODEL_CORRUPT, "cut short"},
                          Broken{"missing.onnx", PERFOPT_ERR_FILE_NOT_FOUND, "missing.onnx"}}) {
    perfopt_model *broken = nullptr;
    std::string path = packages() + "/" + b.file;
    CHECK_STATUS(perfopt_model_load(optimizer, path.c_str(), nullptr, &broken), b.status, b.words);
    CHECK(broken == nullptr);
  }
  perfopt_optimizer_free(optimizer);
}

// A bundle (a folder of one model's forms, perfopt.export's NAME.perfopt)
// from C: loaded like a file, every compile mode within 1e-4 of eager, and
// max-autotune measuring the forms against each other.
TEST_CASE(bundle_from_c) {
  if (packages().empty()) throw Failure{"PERFOPT_PACKAGES is not set (make test-cpp sets it)"};
  perfopt_optimizer *optimizer = new_optimizer(cpu_config());
  Fixture fx = package_case("two_inputs", "two_inputs.perfopt");
  auto inputs = fx.dl_inputs();
  for (const char *mode : {"none", "default", "reduce-overhead", "max-autotune"}) {
    perfopt_model *model = load(optimizer, fx.path);
    CHECK(perfopt_model_compile(model, mode, inputs.data(), inputs.size()) == PERFOPT_OK);
    check_run_matches_eager(model, fx, inputs);
    std::string report = model_report(model);
    CHECK(report.find("\"bundle\":{\"forms\":[\"onnx\",\"torchscript\"]") != std::string::npos);
    if (std::string(mode) == "max-autotune") {
      CHECK(report.find("\"name\":\"onnx: ") != std::string::npos);
      // The lite build has no libtorch to measure the TorchScript form on.
      CHECK(report.find(has_libtorch() ? "\"name\":\"torchscript: " : "the torchscript form was not measured") !=
            std::string::npos);
    }
    perfopt_model_free(model);
  }
  perfopt_optimizer_free(optimizer);
}

// A bundle whose first form cannot load here (no ONNX Runtime): the next
// form is loaded, and the report says why (a process of its own, as below).
TEST_CASE(bundle_without_onnx_runtime) {
  if (packages().empty()) throw Failure{"PERFOPT_PACKAGES is not set (make test-cpp sets it)"};
  perfopt_config config = cpu_config();
  config.onnxruntime_library = "/nonexistent/libonnxruntime.so";
  perfopt_optimizer *optimizer = new_optimizer(config);
  Fixture fx = package_case("two_inputs", "two_inputs.perfopt");
  if (!has_libtorch()) {  // the lite build: neither form can load
    perfopt_model *none = nullptr;
    CHECK_STATUS(perfopt_model_load(optimizer, fx.path.c_str(), nullptr, &none), PERFOPT_ERR_LOAD_FAILED,
                 "the torchscript form did not load");
    perfopt_optimizer_free(optimizer);
    return;
  }
  perfopt_model *model = load(optimizer, fx.path);
  std::string report = model_report(model);
  CHECK(report.find("\"format\":\"torchscript\"") != std::string::npos);
  CHECK(report.find("the onnx form did not load") != std::string::npos);
  auto inputs = fx.dl_inputs();
  check_run_matches_eager(model, fx, inputs);
  perfopt_model_free(model);
  perfopt_optimizer_free(optimizer);
}

// ExecuTorch programs from C: every compile mode within 1e-4 of eager,
// run_batched in chunks within the program's bound, shapes past the bound
// and broken files by status, and a bundle whose first form is the program.
TEST_CASE(executorch_from_c) {
  if (packages().empty()) throw Failure{"PERFOPT_PACKAGES is not set (make test-cpp sets it)"};
  perfopt_optimizer *optimizer = new_optimizer(cpu_config());
  Fixture fx = package_case("two_inputs", "two_inputs.pte");
  auto inputs = fx.dl_inputs();
  for (const char *mode : {"none", "default", "reduce-overhead", "max-autotune"}) {
    perfopt_model *model = load(optimizer, fx.path);
    CHECK_STATUS(perfopt_model_compile(model, mode, inputs.data(), inputs.size()), PERFOPT_OK, "");
    check_run_matches_eager(model, fx, inputs);
    DLManagedTensor *outputs[4] = {};
    size_t n = 0;
    CHECK_STATUS(perfopt_model_run_batched(model, inputs.data(), inputs.size(), 1, outputs, 4, &n), PERFOPT_OK, "");
    for (size_t i = 0; i < n; ++i) CHECK(relative_error(outputs[i], fx.outputs[i]) <= 1e-4);
    release(outputs, n);
    CHECK(model_report(model).find("\"format\":\"executorch\"") != std::string::npos);
    perfopt_model_free(model);
  }
  // Past the program's batch bound (8), and a dtype it does not take.
  perfopt_model *model = load(optimizer, fx.path);
  std::vector<float> big(9 * 16, 0.5f), big_b(9 * 4, 0.5f);
  int64_t big_shape[2] = {9, 16}, big_shape_b[2] = {9, 4};
  auto past = inputs;
  past[0].data = big.data();
  past[0].shape = big_shape;
  past[1].data = big_b.data();
  past[1].shape = big_shape_b;
  DLManagedTensor *outputs[4] = {};
  size_t n = 0;
  CHECK_STATUS(perfopt_model_run(model, past.data(), past.size(), outputs, 4, &n), PERFOPT_ERR_INVALID_ARGUMENT,
               "shape [<=8, 16]");
  // run_batched splits what one call cannot take.
  CHECK_STATUS(perfopt_model_run_batched(model, past.data(), past.size(), 0, outputs, 4, &n), PERFOPT_OK, "");
  CHECK(n == 2 && outputs[0]->dl_tensor.shape[0] == 9);
  release(outputs, n);
  perfopt_model_free(model);
  Fixture fixed = package_case("two_inputs", "static_two.pte");
  model = load(optimizer, fixed.path);
  check_run_matches_eager(model, fixed, inputs);
  CHECK_STATUS(perfopt_model_run(model, past.data(), past.size(), outputs, 4, &n), PERFOPT_ERR_INVALID_ARGUMENT,
               "shape [2, 16]");
  perfopt_model_free(model);
  std::string truncated = packages() + "/truncated.pte";
  CHECK_STATUS(perfopt_model_load(optimizer, truncated.c_str(), nullptr, &model), PERFOPT_ERR_MODEL_CORRUPT,
               "truncated.pte");
  // The bundle: the program first, TorchScript measured beside it.
  Fixture bundle = package_case("two_inputs", "two_inputs_pte.perfopt");
  model = load(optimizer, bundle.path);
  CHECK_STATUS(perfopt_model_compile(model, "max-autotune", inputs.data(), inputs.size()), PERFOPT_OK, "");
  check_run_matches_eager(model, bundle, inputs);
  std::string report = model_report(model);
  CHECK(report.find("\"name\":\"executorch: as compiled\"") != std::string::npos);
  CHECK(report.find(has_libtorch() ? "\"name\":\"torchscript: " : "the torchscript form was not measured") !=
        std::string::npos);
  perfopt_model_free(model);
  perfopt_optimizer_free(optimizer);
}

// A model held out from every other suite (tests/python/test_lite.py's
// pitch head, exported there as .onnx and .pte into PERFOPT_HELD_OUT with
// its inputs and eager's outputs): from C, in every compile mode, within
// 1e-4 of eager. Registered for the lite library (make test-lite runs the
// Python suite first).
TEST_CASE(held_out_from_c) {
  const char *folder = std::getenv("PERFOPT_HELD_OUT");
  if (!folder || !*folder) throw Failure{"PERFOPT_HELD_OUT is not set (make test-lite sets it)"};
  perfopt_optimizer *optimizer = new_optimizer(cpu_config());
  for (const char *suffix : {".onnx", ".pte"}) {
    Fixture fx;
    fx.path = std::string(folder) + "/pitch" + suffix;
    fx.inputs.push_back(read_npy(std::string(folder) + "/pitch.input0.npy"));
    for (int i = 0; i < 2; ++i)
      fx.outputs.push_back(read_npy(std::string(folder) + "/pitch.output" + std::to_string(i) + ".npy"));
    auto inputs = fx.dl_inputs();
    for (const char *mode : {"none", "default", "reduce-overhead", "max-autotune"}) {
      perfopt_model *model = load(optimizer, fx.path);
      CHECK_STATUS(perfopt_model_compile(model, mode, inputs.data(), inputs.size()), PERFOPT_OK, "");
      check_run_matches_eager(model, fx, inputs);
      check_run_matches_eager(model, fx, inputs);
      DLManagedTensor *outputs[4] = {};
      size_t n = 0;
      CHECK_STATUS(perfopt_model_run_batched(model, inputs.data(), inputs.size(), 2, outputs, 4, &n), PERFOPT_OK, "");
      CHECK(n == 2);
      for (size_t i = 0; i < n; ++i) CHECK(relative_error(outputs[i], fx.outputs[i]) <= 1e-4);
      release(outputs, n);
      perfopt_model_free(model);
    }
  }
  perfopt_optimizer_free(optimizer);
}

// A named ONNX Runtime that is not there: a clear status naming it, in a
// process of its own (ONNX Runtime loads once per process).
TEST_CASE(onnx_without_its_runtime) {
  if (packages().empty()) throw Failure{"PERFOPT_PACKAGES is not set (make test-cpp sets it)"};
  perfopt_config config = cpu_config();
  config.onnxruntime_library = "/nonexistent/libonnxruntime.so";
  perfopt_optimizer *optimizer = new_optimizer(config);
  perfopt_model *model = nullptr;
  std::string path = packages() + "/two_inputs.onnx";
  CHECK_STATUS(perfopt_model_load(optimizer, path.c_str(), nullptr, &model), PERFOPT_ERR_LOAD_FAILED,
               "/nonexistent/libonnxruntime.so");
  CHECK(std::string(perfopt_last_error()).find("pip install onnxruntime") != std::string::npos);
  perfopt_optimizer_free(optimizer);
}
