// The misuse suite: every exported function called wrongly, in a table.
// Each bad call must return its own status with a message naming the
// problem, and the next correct call on the same objects must succeed.
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "perfopt.h"

namespace {

std::string fixtures() {
  const char *dir = std::getenv("PERFOPT_FIXTURES");
  return dir ? dir : "build/fixtures";
}

struct Case {
  const char *name;
  std::function<perfopt_status()> call;
  perfopt_status expected;
  const char *needle;
};

// Set by a case whose cleanup calls would replace the message under test.
std::string captured;

std::string last_error() {
  const char *m = perfopt_last_error();
  return m ? m : "";
}

void write_file(const std::string &path, const std::string &bytes) {
  FILE *f = std::fopen(path.c_str(), "wb");
  std::fwrite(bytes.data(), 1, bytes.size(), f);
  std::fclose(f);
}

std::string read_file(const std::string &path) {
  std::string bytes;
  FILE *f = std::fopen(path.c_str(), "rb");
  char chunk[4096];
  size_t n;
  while (f && (n = std::fread(chunk, 1, sizeof chunk, f)) > 0) bytes.append(chunk, n);
  if (f) std::fclose(f);
  return bytes;
}

DLTensor host(float *data, int64_t *shape, int32_t ndim) {
  DLTensor t{};
  t.data = data;
  t.device = DLDevice{kDLCPU, 0};
  t.ndim = ndim;
  t.dtype = DLDataType{kDLFloat, 32, 1};
  t.shape = shape;
  return t;
}

}  // namespace

int main() {
  const std::string dir = fixtures();
  const std::string scratch = dir + "/misuse";
  mkdir(scratch.c_str(), 0755);

  perfopt_config cfg;
  perfopt_config_default(&cfg);
  cfg.device = "cpu";
  cfg.read_environment = 0;
  perfopt_optimizer *opt = nullptr;
  if (perfopt_optimizer_new(&cfg, &opt) != PERFOPT_OK) return 1;

  // A private copy of the model, so that one case can overwrite the file.
  const std::string model_path = scratch + "/two_inputs.pt";
  write_file(model_path, read_file(dir + "/two_inputs.pt"));
  perfopt_model *model = nullptr;
  if (perfopt_model_load(opt, model_path.c_str(), "two_inputs", &model) != PERFOPT_OK) return 1;

  static float x[2 * 16], y[2 * 4];
  for (float &v : x) v = 0.5f;
  for (float &v : y) v = -0.25f;
  int64_t xs[2] = {2, 16}, ys[2] = {2, 4};
  std::vector<DLTensor> good{host(x, xs, 2), host(y, ys, 2)};
  DLManagedTensor *out[4] = {};
  size_t n = 0;
  char buf[16];
  size_t needed = 0;
  int32_t batch = 0;

  // Bad inputs built from the good ones.
  auto with = [&](std::function<void(DLTensor &)> change) {
    std::vector<DLTensor> inputs = good;
    change(inputs[0]);
    return inputs;
  };
  auto run = [&](std::vector<DLTensor> inputs) {
    perfopt_status s = perfopt_model_run(model, inputs.data(), inputs.size(), out, 4, &n);
    if (s == PERFOPT_OK)
      for (size_t i = 0; i < n; ++i) out[i]->deleter(out[i]);
    return s;
  };
  auto new_with = [&](std::function<void(perfopt_config &)> change) {
    perfopt_config c;
    perfopt_config_default(&c);
    c.device = "cpu";
    c.read_environment = 0;
    change(c);
    perfopt_optimizer *o = nullptr;
    perfopt_status s = perfopt_optimizer_new(&c, &o);
    perfopt_optimizer_free(o);
    return s;
  };
  auto env_new = [&](const char *name, const char *value) {
    setenv(name, value, 1);
    perfopt_optimizer *o = nullptr;
    perfopt_status s = perfopt_optimizer_new(nullptr, &o);
    unsetenv(name);
    perfopt_optimizer_free(o);
    return s;
  };
  auto load = [&](const std::string &path, const char *name = nullptr) {
    perfopt_model *m = nullptr;
    perfopt_status s = perfopt_model_load(opt, path.c_str(), name, &m);
    perfopt_model_free(m);
    return s;
  };
  auto options_with = [&](std::function<void(perfopt_model_options &)> change) {
    perfopt_model_options o;
    perfopt_model_options_default(&o);
    change(o);
    return perfopt_model_set_options(model, &o);
  };
  static const char bad_utf8[] = {'c', 'p', static_cast<char>(0xfe), 0};
  int64_t huge[2] = {int64_t(1) << 40, int64_t(1) << 30};
  int64_t negative[2] = {2, -1};
  int64_t wrong[2] = {2, 15};
  int64_t zero[2] = {0, 16};
  int64_t neg_strides[2] = {-16, 1};

  bool has_cuda = false;
  {
    static char report[65536];
    perfopt_optimizer_report(opt, report, sizeof report, &needed);
    has_cuda = std::strstr(report, "\"cuda_device_count\":0") == nullptr;
  }

  std::vector<Case> cases = {
      // Library
      {"log level below range", [&] { return perfopt_set_log_callback(nullptr, nullptr, -1); },
       PERFOPT_ERR_INVALID_ARGUMENT, "max_level"},
      {"log level above range", [&] { return perfopt_set_log_callback(nullptr, nullptr, 6); },
       PERFOPT_ERR_INVALID_ARGUMENT, "max_level"},
      // Config and optimizer creation
      {"config_default NULL", [&] { return perfopt_config_default(nullptr); }, PERFOPT_ERR_NULL_ARGUMENT, "config"},
      {"optimizer_new out NULL", [&] { return perfopt_optimizer_new(&cfg, nullptr); }, PERFOPT_ERR_NULL_ARGUMENT,
       "out"},
      {"struct_size 0", [&] { return new_with([](perfopt_config &c) { c.struct_size = 0; }); },
       PERFOPT_ERR_STRUCT_SIZE, "struct_size"},
      {"struct_size 4", [&] { return new_with([](perfopt_config &c) { c.struct_size = 4; }); },
       PERFOPT_ERR_STRUCT_SIZE, "struct_size"},
      {"struct_size larger", [&] { return new_with([](perfopt_config &c) { c.struct_size += 8; }); },
       PERFOPT_ERR_STRUCT_SIZE, "struct_size"},
      {"device empty", [&] { return new_with([](perfopt_config &c) { c.device = ""; }); },
       PERFOPT_ERR_INVALID_ARGUMENT, "unknown device"},
      {"device unknown", [&] { return new_with([](perfopt_config &c) { c.device = "gpu0"; }); },
       PERFOPT_ERR_INVALID_ARGUMENT, "gpu0"},
      {"device cuda:", [&] { return new_with([](perfopt_config &c) { c.device = "cuda:"; }); },
       PERFOPT_ERR_INVALID_ARGUMENT, "cuda:"},
      {"device cuda:-1", [&] { return new_with([](perfopt_config &c) { c.device = "cuda:-1"; }); },
       PERFOPT_ERR_INVALID_ARGUMENT, "cuda:-1"},
      {"device cuda:1x", [&] { return new_with([](perfopt_config &c) { c.device = "cuda:1x"; }); },
       PERFOPT_ERR_INVALID_ARGUMENT, "cuda:1x"},
      {"device bad UTF-8", [&] { return new_with([](perfopt_config &c) { c.device = bad_utf8; }); },
       PERFOPT_ERR_INVALID_UTF8, "config.device"},
      {"device cuda:99", [&] { return new_with([](perfopt_config &c) { c.device = "cuda:99"; }); },
       has_cuda ? PERFOPT_ERR_DEVICE_NOT_FOUND : PERFOPT_ERR_UNSUPPORTED_DEVICE, "cuda"},
      {"compile_mode unknown", [&] { return new_with([](perfopt_config &c) { c.compile_mode = "turbo"; }); },
       PERFOPT_ERR_INVALID_ARGUMENT, "turbo"},
      {"compile_mode empty", [&] { return new_with([](perfopt_config &c) { c.compile_mode = ""; }); },
       PERFOPT_ERR_INVALID_ARGUMENT, "compile mode"},
      {"compile_mode bad UTF-8", [&] { return new_with([](perfopt_config &c) { c.compile_mode = bad_utf8; }); },
       PERFOPT_ERR_INVALID_UTF8, "compile_mode"},
      {"cudnn_benchmark 2", [&] { return new_with([](perfopt_config &c) { c.cudnn_benchmark = 2; }); },
       PERFOPT_ERR_INVALID_ARGUMENT, "cudnn_benchmark"},
      {"tf32 -2", [&] { return new_with([](perfopt_config &c) { c.tf32 = -2; }); }, PERFOPT_ERR_INVALID_ARGUMENT,
       "tf32"},
      {"cpu_optimization 9", [&] { return new_with([](perfopt_config &c) { c.cpu_optimization = 9; }); },
       PERFOPT_ERR_INVALID_ARGUMENT, "cpu_optimization"},
      {"torch_compile 3", [&] { return new_with([](perfopt_config &c) { c.torch_compile = 3; }); },
       PERFOPT_ERR_INVALID_ARGUMENT, "torch_compile"},
      {"read_environment 2", [&] { return new_with([](perfopt_config &c) { c.read_environment = 2; }); },
       PERFOPT_ERR_INVALID_ARGUMENT, "read_environment"},
      {"intra_op_threads -1", [&] { return new_with([](perfopt_config &c) { c.intra_op_threads = -1; }); },
       PERFOPT_ERR_INVALID_ARGUMENT, "intra_op_threads"},
      {"inter_op_threads -5", [&] { return new_with([](perfopt_config &c) { c.inter_op_threads = -5; }); },
       PERFOPT_ERR_INVALID_ARGUMENT, "inter_op_threads"},
      {"TRANSLATOR_TORCH_COMPILE perhaps", [&] { return env_new("TRANSLATOR_TORCH_COMPILE", "perhaps"); },
       PERFOPT_ERR_ENVIRONMENT, "TRANSLATOR_TORCH_COMPILE"},
      {"TRANSLATOR_COMPILE_MODE warp", [&] { return env_new("TRANSLATOR_COMPILE_MODE", "warp"); },
       PERFOPT_ERR_ENVIRONMENT, "TRANSLATOR_COMPILE_MODE"},
      {"TRANSLATOR_CUDNN_BENCHMARK empty", [&] { return env_new("TRANSLATOR_CUDNN_BENCHMARK", ""); },
       PERFOPT_ERR_ENVIRONMENT, "TRANSLATOR_CUDNN_BENCHMARK"},
      {"TRANSLATOR_CPU_OPTIMIZATION 2", [&] { return env_new("TRANSLATOR_CPU_OPTIMIZATION", "2"); },
       PERFOPT_ERR_ENVIRONMENT, "TRANSLATOR_CPU_OPTIMIZATION"},
      // Optimizer calls
      {"report NULL optimizer", [&] { return perfopt_optimizer_report(nullptr, buf, sizeof buf, &needed); },
       PERFOPT_ERR_NULL_ARGUMENT, "optimizer"},
      {"report NULL buffer, len 8", [&] { return perfopt_optimizer_report(opt, nullptr, 8, &needed); },
       PERFOPT_ERR_NULL_ARGUMENT, "buf"},
      {"report buffer too small", [&] { return perfopt_optimizer_report(opt, buf, sizeof buf, &needed); },
       PERFOPT_ERR_BUFFER_TOO_SMALL, "needed"},
      {"batch size out NULL", [&] { return perfopt_optimal_batch_size(opt, nullptr); }, PERFOPT_ERR_NULL_ARGUMENT,
       "out"},
      {"model handle as optimizer",
       [&] { return perfopt_optimal_batch_size(reinterpret_cast<perfopt_optimizer *>(model), &batch); },
       PERFOPT_ERR_INVALID_HANDLE, "perfopt_model"},
      {"stack address as optimizer",
       [&] { return perfopt_optimal_batch_size(reinterpret_cast<perfopt_optimizer *>(&batch), &batch); },
       PERFOPT_ERR_INVALID_HANDLE, "not a live"},
      // Scopes
      {"enter out NULL", [&] { return perfopt_inference_enter(opt, nullptr); }, PERFOPT_ERR_NULL_ARGUMENT, "out"},
      {"enter optimizer NULL",
       [&] {
         perfopt_scope *s = nullptr;
         return perfopt_inference_enter(nullptr, &s);
       },
       PERFOPT_ERR_NULL_ARGUMENT, "optimizer"},
      {"exit NULL", [&] { return perfopt_inference_exit(nullptr); }, PERFOPT_ERR_NULL_ARGUMENT, "scope"},
      {"exit twice",
       [&] {
         perfopt_scope *s = nullptr;
         perfopt_inference_enter(opt, &s);
         perfopt_inference_exit(s);
         return perfopt_inference_exit(s);
       },
       PERFOPT_ERR_INVALID_HANDLE, "not a live perfopt_scope"},
      {"exit out of order",
       [&] {
         perfopt_scope *a = nullptr, *b = nullptr;
         perfopt_inference_enter(opt, &a);
         perfopt_inference_enter(opt, &b);
         perfopt_status s = perfopt_inference_exit(a);
         captured = last_error();
         perfopt_inference_exit(b);
         perfopt_inference_exit(a);
         return s;
       },
       PERFOPT_ERR_SCOPE_ORDER, "innermost"},
      {"exit on another thread",
       [&] {
         perfopt_scope *s = nullptr;
         perfopt_inference_enter(opt, &s);
         perfopt_status other = PERFOPT_OK;
         std::thread([&] {
           other = perfopt_inference_exit(s);
           captured = last_error();
         }).join();
         perfopt_inference_exit(s);
         return other;
       },
       PERFOPT_ERR_WRONG_THREAD, "thread"},
      // Loading
      {"load path NULL",
       [&] {
         perfopt_model *m = nullptr;
         return perfopt_model_load(opt, nullptr, nullptr, &m);
       },
       PERFOPT_ERR_NULL_ARGUMENT, "path"},
      {"load out NULL", [&] { return perfopt_model_load(opt, model_path.c_str(), nullptr, nullptr); },
       PERFOPT_ERR_NULL_ARGUMENT, "out"},
      {"load empty path", [&] { return load(""); }, PERFOPT_ERR_FILE_NOT_FOUND, "empty"},
      {"load missing file", [&] { return load(scratch + "/missing.pt"); }, PERFOPT_ERR_FILE_NOT_FOUND,
       "missing.pt"},
      {"load a directory", [&] { return load(scratch); }, PERFOPT_ERR_LOAD_FAILED, "directory"},
      {"load a text file",
       [&] {
         write_file(scratch + "/text.pt", "hello, not a model");
         return load(scratch + "/text.pt");
       },
       PERFOPT_ERR_LOAD_FAILED, "text.pt"},
      {"load an empty file",
       [&] {
         write_file(scratch + "/empty.pt", "");
         return load(scratch + "/empty.pt");
       },
       PERFOPT_ERR_LOAD_FAILED, "empty.pt"},
      {"load a truncated archive",
       [&] {
         write_file(scratch + "/cut.pt", read_file(model_path).substr(0, 1000));
         return load(scratch + "/cut.pt");
       },
       PERFOPT_ERR_MODEL_CORRUPT, "cut.pt"},
      {"load a zip that is not TorchScript",
       [&] {
         std::string zip("PK\x03\x04", 4);
         zip += "payload";
         zip += std::string("PK\x05\x06", 4) + std::string(18, '\0');
         write_file(scratch + "/zip.pt", zip);
         return load(scratch + "/zip.pt");
       },
       PERFOPT_ERR_LOAD_FAILED, "zip.pt"},
      {"load path bad UTF-8", [&] { return load(std::string(bad_utf8)); }, PERFOPT_ERR_INVALID_UTF8, "path"},
      {"load name bad UTF-8", [&] { return load(model_path, bad_utf8); }, PERFOPT_ERR_INVALID_UTF8, "name"},
      // Compiling
      {"compile mode unknown", [&] { return perfopt_model_compile(model, "fast", nullptr, 0); },
       PERFOPT_ERR_INVALID_ARGUMENT, "fast"},
      {"compile mode empty", [&] { return perfopt_model_compile(model, "", nullptr, 0); },
       PERFOPT_ERR_INVALID_ARGUMENT, "compile mode"},
      {"compile warm-up NULL with n 1", [&] { return perfopt_model_compile(model, "default", nullptr, 1); },
       PERFOPT_ERR_NULL_ARGUMENT, "warmup_inputs"},
      {"compile warm-up the model rejects",
       [&] {
         auto bad = with([&](DLTensor &t) { t.shape = wrong; });
         return perfopt_model_compile(model, "default", bad.data(), bad.size());
       },
       PERFOPT_ERR_TORCH, "mat1 and mat2"},
      {"compile model NULL", [&] { return perfopt_model_compile(nullptr, "default", nullptr, 0); },
       PERFOPT_ERR_NULL_ARGUMENT, "model"},
      // Options
      {"options_default NULL", [&] { return perfopt_model_options_default(nullptr); }, PERFOPT_ERR_NULL_ARGUMENT,
       "options"},
      {"set_options NULL", [&] { return perfopt_model_set_options(model, nullptr); }, PERFOPT_ERR_NULL_ARGUMENT,
       "options"},
      {"options struct_size", [&] { return options_with([](perfopt_model_options &o) { o.struct_size = 1; }); },
       PERFOPT_ERR_STRUCT_SIZE, "struct_size"},
      {"options tolerance NaN", [&] { return options_with([](perfopt_model_options &o) { o.error_tolerance = NAN; }); },
       PERFOPT_ERR_INVALID_ARGUMENT, "error_tolerance"},
      {"options cache 0", [&] { return options_with([](perfopt_model_options &o) { o.graph_cache_size = 0; }); },
       PERFOPT_ERR_INVALID_ARGUMENT, "graph_cache_size"},
      {"options cache 5000", [&] { return options_with([](perfopt_model_options &o) { o.graph_cache_size = 5000; }); },
       PERFOPT_ERR_INVALID_ARGUMENT, "graph_cache_size"},
      {"options warm-up runs 500",
       [&] { return options_with([](perfopt_model_options &o) { o.graph_warmup_runs = 500; }); },
       PERFOPT_ERR_INVALID_ARGUMENT, "graph_warmup_runs"},
      {"options margin 1.5", [&] { return options_with([](perfopt_model_options &o) { o.memory_margin = 1.5; }); },
       PERFOPT_ERR_INVALID_ARGUMENT, "memory_margin"},
      {"options outputs_on_device 3",
       [&] { return options_with([](perfopt_model_options &o) { o.outputs_on_device = 3; }); },
       PERFOPT_ERR_INVALID_ARGUMENT, "outputs_on_device"},
      // Running
      {"run n_outputs NULL", [&] { return perfopt_model_run(model, good.data(), 2, out, 4, nullptr); },
       PERFOPT_ERR_NULL_ARGUMENT, "n_outputs"},
      {"run outputs NULL", [&] { return perfopt_model_run(model, good.data(), 2, nullptr, 4, &n); },
       PERFOPT_ERR_NULL_ARGUMENT, "outputs"},
      {"run inputs NULL", [&] { return perfopt_model_run(model, nullptr, 2, out, 4, &n); },
       PERFOPT_ERR_NULL_ARGUMENT, "inputs"},
      {"run 2000 inputs", [&] { return perfopt_model_run(model, good.data(), 2000, out, 4, &n); },
       PERFOPT_ERR_INVALID_ARGUMENT, "at most 1024"},
      {"run one input of two", [&] { return run({good[0]}); }, PERFOPT_ERR_INVALID_ARGUMENT, "takes 2 input(s)"},
      {"run complex dtype", [&] { return run(with([](DLTensor &t) { t.dtype = DLDataType{kDLComplex, 64, 1}; })); },
       PERFOPT_ERR_INVALID_ARGUMENT, "dtype"},
      {"run 2 lanes", [&] { return run(with([](DLTensor &t) { t.dtype.lanes = 2; })); },
       PERFOPT_ERR_INVALID_ARGUMENT, "lanes"},
      {"run float8", [&] { return run(with([](DLTensor &t) { t.dtype.bits = 8; })); },
       PERFOPT_ERR_INVALID_ARGUMENT, "bits 8"},
      {"run ndim -1", [&] { return run(with([](DLTensor &t) { t.ndim = -1; })); }, PERFOPT_ERR_INVALID_ARGUMENT,
       "ndim"},
      {"run ndim 65", [&] { return run(with([](DLTensor &t) { t.ndim = 65; })); }, PERFOPT_ERR_INVALID_ARGUMENT,
       "ndim"},
      {"run shape NULL", [&] { return run(with([](DLTensor &t) { t.shape = nullptr; })); },
       PERFOPT_ERR_INVALID_ARGUMENT, "shape is NULL"},
      {"run negative size", [&] { return run(with([&](DLTensor &t) { t.shape = negative; })); },
       PERFOPT_ERR_INVALID_ARGUMENT, "sizes must be >= 0"},
      {"run data NULL", [&] { return run(with([](DLTensor &t) { t.data = nullptr; })); },
       PERFOPT_ERR_INVALID_ARGUMENT, "data is NULL"},
      {"run huge tensor", [&] { return run(with([&](DLTensor &t) { t.shape = huge; })); },
       PERFOPT_ERR_INVALID_ARGUMENT, "at most 2^48"},
      {"run negative stride", [&] { return run(with([&](DLTensor &t) { t.strides = neg_strides; })); },
       PERFOPT_ERR_INVALID_ARGUMENT, "negative strides"},
      {"run Vulkan memory", [&] { return run(with([](DLTensor &t) { t.device.device_type = kDLVulkan; })); },
       PERFOPT_ERR_INVALID_ARGUMENT, "device type"},
      {"run device pointer on a missing GPU", [&] { return run(with([](DLTensor &t) { t.device = {kDLCUDA, 9}; })); },
       PERFOPT_ERR_INVALID_ARGUMENT, "CUDA"},
      {"run a shape the model rejects", [&] { return run(with([&](DLTensor &t) { t.shape = wrong; })); },
       PERFOPT_ERR_TORCH, "mat1 and mat2"},
      {"run int64 where floats go",
       [&] {
         static int64_t ints[2 * 16] = {};
         return run(with([&](DLTensor &t) {
           t.data = ints;
           t.dtype = DLDataType{kDLInt, 64, 1};
         }));
       },
       PERFOPT_ERR_TORCH, "two_inputs"},
      {"run int8 where floats go", [&] { return run(with([](DLTensor &t) { t.dtype = DLDataType{kDLInt, 8, 1}; })); },
       PERFOPT_ERR_TORCH, "two_inputs"},
      {"run one output slot for two", [&] { return perfopt_model_run(model, good.data(), 2, out, 1, &n); },
       PERFOPT_ERR_BUFFER_TOO_SMALL, "outputs_capacity is 1"},
      {"run a zero-size batch",
       [&] {
         auto inputs = good;
         inputs[0].shape = zero;
         int64_t zero_y[2] = {0, 4};
         inputs[1].shape = zero_y;
         perfopt_status s = run(inputs);
         // An empty batch is legal: empty outputs.
         return s == PERFOPT_OK ? perfopt_model_run(model, nullptr, 1, out, 4, &n) : s;
       },
       PERFOPT_ERR_NULL_ARGUMENT, "inputs"},
      {"run model freed",
       [&] {
         perfopt_model *m = nullptr;
         perfopt_model_load(opt, model_path.c_str(), nullptr, &m);
         perfopt_model_free(m);
         return perfopt_model_run(m, good.data(), 2, out, 4, &n);
       },
       PERFOPT_ERR_INVALID_HANDLE, "not a live perfopt_model"},
      {"free a model twice",
       [&] {
         perfopt_model *m = nullptr;
         perfopt_model_load(opt, model_path.c_str(), nullptr, &m);
         perfopt_model_free(m);
         perfopt_model_free(m);  // logged, not a crash
         return perfopt_model_report(m, buf, sizeof buf, &needed);
       },
       PERFOPT_ERR_INVALID_HANDLE, "not a live"},
      // Warm-up, reports, batches
      {"warmup 0 iterations", [&] { return perfopt_model_warmup(model, good.data(), 2, 0, nullptr, 0, &needed); },
       PERFOPT_ERR_INVALID_ARGUMENT, "iterations"},
      {"warmup buffer too small", [&] { return perfopt_model_warmup(model, good.data(), 2, 1, buf, sizeof buf, &needed); },
       PERFOPT_ERR_BUFFER_TOO_SMALL, "needed"},
      {"model report NULL buffer, len 8", [&] { return perfopt_model_report(model, nullptr, 8, &needed); },
       PERFOPT_ERR_NULL_ARGUMENT, "buf"},
      {"recommend_batch batch NULL",
       [&] { return perfopt_model_recommend_batch(model, good.data(), 2, nullptr, nullptr, 0, &needed); },
       PERFOPT_ERR_NULL_ARGUMENT, "batch"},
      {"recommend_batch on batch 2",
       [&] { return perfopt_model_recommend_batch(model, good.data(), 2, &batch, nullptr, 0, &needed); },
       PERFOPT_ERR_INVALID_ARGUMENT, "dimension 0 of size 1"},
      {"run_batched max_batch -1", [&] { return perfopt_model_run_batched(model, good.data(), 2, -1, out, 4, &n); },
       PERFOPT_ERR_INVALID_ARGUMENT, "max_batch"},
      {"run_batched mismatched dimension 0",
       [&] {
         auto inputs = good;
         int64_t one_y[2] = {1, 4};
         inputs[1].shape = one_y;
         return perfopt_model_run_batched(model, inputs.data(), 2, 1, out, 4, &n);
       },
       PERFOPT_ERR_INVALID_ARGUMENT, "dimension 0 of size 2"},
      {"run_batched scalar",
       [&] {
         auto inputs = with([](DLTensor &t) { t.ndim = 0; });
         return perfopt_model_run_batched(model, inputs.data(), 2, 1, out, 4, &n);
       },
       PERFOPT_ERR_INVALID_ARGUMENT, "batch dimension"},
  };

  int passed = 0, failed = 0;
  for (const Case &c : cases) {
    captured.clear();
    perfopt_status status = c.call();
    std::string message = captured.empty() ? last_error() : captured;
    bool ok = status == c.expected && message.find(c.needle) != std::string::npos;
    // The next correct calls on the same objects succeed.
    bool recovered = run(good) == PERFOPT_OK && perfopt_optimal_batch_size(opt, &batch) == PERFOPT_OK;
    if (ok && recovered) {
      ++passed;
    } else {
      ++failed;
      std::printf("FAIL %s: %s (expected %s with \"%s\"): %s%s\n", c.name, perfopt_status_name(status),
                  perfopt_status_name(c.expected), c.needle, message.c_str(), recovered ? "" : " [not recovered]");
    }
  }

  // A model whose file changed after loading keeps running what it loaded.
  write_file(model_path, "overwritten");
  bool changed_ok = run(good) == PERFOPT_OK;
  if (changed_ok) ++passed; else { ++failed; std::printf("FAIL model file changed after loading\n"); }

  std::printf("misuse: %zu cases\n", cases.size() + 1);
  perfopt_model_free(model);
  perfopt_optimizer_free(opt);
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
