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

// Log records, for the calls that cannot return a status (perfopt_value_free).
std::string logged;
void capture_log(int32_t level, const char *message, void *user_data) {
  (void)level;
  (void)user_data;
  logged += message;
  logged += "\n";
}

perfopt_value value(int32_t kind) {
  perfopt_value v{};
  v.struct_size = sizeof(perfopt_value);
  v.kind = kind;
  return v;
}
perfopt_value tensor_value(const DLTensor *t) {
  perfopt_value v = value(PERFOPT_VALUE_TENSOR);
  v.tensor = t;
  return v;
}
perfopt_value int_value(int64_t i, int32_t kind = PERFOPT_VALUE_INT) {
  perfopt_value v = value(kind);
  v.int_value = i;
  return v;
}
perfopt_value string_value(const char *s, size_t length) {
  perfopt_value v = value(PERFOPT_VALUE_STRING);
  v.string = s;
  v.length = length;
  return v;
}
perfopt_value list_value(perfopt_value *items, size_t length, int32_t kind = PERFOPT_VALUE_LIST) {
  perfopt_value v = value(kind);
  v.items = items;
  v.length = length;
  return v;
}

}  // namespace

int main() {
  const std::string dir = fixtures();
  const std::string scratch = dir + "/misuse";
  mkdir(scratch.c_str(), 0755);

  perfopt_config cfg;
  (void)perfopt_config_default(&cfg);
  cfg.device = "cpu";
  cfg.read_environment = 0;
  perfopt_optimizer *opt = nullptr;
  if (perfopt_optimizer_new(&cfg, &opt) != PERFOPT_OK) return 1;

  // A private copy of the model, so that one case can overwrite the file.
  const std::string model_path = scratch + "/two_inputs.pt";
  write_file(model_path, read_file(dir + "/two_inputs.pt"));
  perfopt_model *model = nullptr;
  if (perfopt_model_load(opt, model_path.c_str(), "two_inputs", &model) != PERFOPT_OK) return 1;
  // Models for the ABI 3 calls: a stateful one taking an int, the LSTM with
  // batch dimensions, a dict-returning one, and one never warmed up.
  perfopt_model *vad = nullptr, *lstm = nullptr, *dict = nullptr, *fresh = nullptr, *kinds = nullptr;
  if (perfopt_model_load(opt, (dir + "/stateful.pt").c_str(), "vad", &vad) != PERFOPT_OK ||
      perfopt_model_load(opt, (dir + "/lstm_state.pt").c_str(), "lstm", &lstm) != PERFOPT_OK ||
      perfopt_model_load(opt, (dir + "/returns_dict.pt").c_str(), "dict", &dict) != PERFOPT_OK ||
      perfopt_model_load(opt, (dir + "/kinds.pt").c_str(), "kinds", &kinds) != PERFOPT_OK ||
      perfopt_model_load(opt, (dir + "/two_inputs.pt").c_str(), "fresh", &fresh) != PERFOPT_OK)
    return 1;

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
    (void)perfopt_config_default(&c);
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
    (void)perfopt_model_options_default(&o);
    change(o);
    return perfopt_model_set_options(model, &o);
  };
  static const char bad_utf8[] = {'c', 'p', static_cast<char>(0xfe), 0};
  int64_t huge[2] = {int64_t(1) << 40, int64_t(1) << 30};
  int64_t negative[2] = {2, -1};
  int64_t wrong[2] = {2, 15};
  int64_t zero[2] = {0, 16};
  int64_t neg_strides[2] = {-16, 1};

  // perfopt_value arguments.
  std::vector<perfopt_value> good_values{tensor_value(&good[0]), tensor_value(&good[1])};
  static float chunk[64];
  int64_t chunk_shape[2] = {1, 64};
  DLTensor vad_x = host(chunk, chunk_shape, 2);
  static float lstm_x[5 * 10 * 8], lstm_h[2 * 5 * 16], lstm_c[2 * 5 * 16], lstm_mask[10];
  int64_t lx[3] = {5, 10, 8}, lh[3] = {2, 5, 16}, lm[1] = {10};
  std::vector<DLTensor> lstm_inputs{host(lstm_x, lx, 3), host(lstm_h, lh, 3), host(lstm_c, lh, 3),
                                    host(lstm_mask, lm, 1)};
  const int32_t lstm_in_dims[4] = {0, 1, 1, PERFOPT_NOT_BATCHED}, lstm_out_dims[3] = {0, 1, 1};
  static const char not_utf8[] = {'v', 'a', static_cast<char>(0xff), static_cast<char>(0xfe)};
  // Lists nested 34 deep: the reader stops past 32 levels.
  std::vector<perfopt_value> chain(34);
  for (size_t i = 0; i + 1 < chain.size(); ++i) chain[i] = list_value(&chain[i + 1], 1);
  chain.back() = int_value(1);
  // Calls a method; a result is freed (after the message is kept).
  auto call = [&](perfopt_model *m, const char *method, std::vector<perfopt_value> args) {
    perfopt_value *result = nullptr;
    perfopt_status s = perfopt_model_call(m, method, args.data(), args.size(), &result);
    if (s != PERFOPT_OK) captured = last_error();
    perfopt_value_free(result);
    return s;
  };
  auto with_value = [&](std::function<void(perfopt_value &)> change) {
    std::vector<perfopt_value> args = good_values;
    change(args[0]);
    return args;
  };
  // Releases outputs a successful call handed out.
  auto release = [&](perfopt_status s) {
    if (s == PERFOPT_OK)
      for (size_t i = 0; i < n; ++i) out[i]->deleter(out[i]);
    return s;
  };
  auto run_batched_args = [&](std::vector<perfopt_value> args, int32_t max_batch) {
    return release(perfopt_model_run_batched_args(model, args.data(), args.size(), max_batch, out, 4, &n));
  };
  // Empties what waits for take_outputs on this thread.
  auto drain = [&](perfopt_model *m) {
    perfopt_status s = perfopt_model_take_outputs(m, out, 4, &n);
    release(s);
    return s;
  };
  std::vector<int32_t> many_dims(2000, 0);

  bool has_cuda = false;
  {
    static char report[65536];
    (void)perfopt_optimizer_report(opt, report, sizeof report, &needed);
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
      {"struct_size larger with a tail that is not zero",
       [&] {
         // A newer header's struct: its fields past this library's must be
         // zero (unknown settings are refused, not ignored).
         struct {
           perfopt_config c;
           uint64_t newer_field;
         } newer{};
         (void)perfopt_config_default(&newer.c);
         newer.c.device = "cpu";
         newer.c.read_environment = 0;
         newer.c.struct_size = sizeof newer;
         newer.newer_field = 1;
         perfopt_optimizer *o = nullptr;
         perfopt_status s = perfopt_optimizer_new(&newer.c, &o);
         perfopt_optimizer_free(o);
         return s;
       },
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
      {"tuning_cache_dir empty", [&] { return new_with([](perfopt_config &c) { c.tuning_cache_dir = ""; }); },
       PERFOPT_ERR_INVALID_ARGUMENT, "tuning_cache_dir"},
      {"tuning_cache_dir bad UTF-8", [&] { return new_with([](perfopt_config &c) { c.tuning_cache_dir = bad_utf8; }); },
       PERFOPT_ERR_INVALID_UTF8, "tuning_cache_dir"},
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
         (void)perfopt_inference_enter(opt, &s);
         (void)perfopt_inference_exit(s);
         return perfopt_inference_exit(s);
       },
       PERFOPT_ERR_INVALID_HANDLE, "not a live perfopt_scope"},
      {"exit out of order",
       [&] {
         perfopt_scope *a = nullptr, *b = nullptr;
         (void)perfopt_inference_enter(opt, &a);
         (void)perfopt_inference_enter(opt, &b);
         perfopt_status s = perfopt_inference_exit(a);
         captured = last_error();
         (void)perfopt_inference_exit(b);
         (void)perfopt_inference_exit(a);
         return s;
       },
       PERFOPT_ERR_SCOPE_ORDER, "innermost"},
      {"exit on another thread",
       [&] {
         perfopt_scope *s = nullptr;
         (void)perfopt_inference_enter(opt, &s);
         perfopt_status other = PERFOPT_OK;
         std::thread([&] {
           other = perfopt_inference_exit(s);
           captured = last_error();
         }).join();
         (void)perfopt_inference_exit(s);
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
      {"load a directory", [&] { return load(scratch); }, PERFOPT_ERR_NOT_A_FILE, "directory"},
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
         (void)perfopt_model_load(opt, model_path.c_str(), nullptr, &m);
         perfopt_model_free(m);
         return perfopt_model_run(m, good.data(), 2, out, 4, &n);
       },
       PERFOPT_ERR_INVALID_HANDLE, "not a live perfopt_model"},
      {"free a model twice",
       [&] {
         perfopt_model *m = nullptr;
         (void)perfopt_model_load(opt, model_path.c_str(), nullptr, &m);
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
      // ABI 3: struct sizes (config and options _init)
      {"config_init NULL", [&] { return perfopt_config_init(nullptr, sizeof(perfopt_config)); },
       PERFOPT_ERR_NULL_ARGUMENT, "config"},
      {"config_init size 52",
       [&] {
         perfopt_config c;
         return perfopt_config_init(&c, 52);
       },
       PERFOPT_ERR_STRUCT_SIZE, "struct_size is 52"},
      {"config_init size 0",
       [&] {
         perfopt_config c;
         return perfopt_config_init(&c, 0);
       },
       PERFOPT_ERR_STRUCT_SIZE, "struct_size is 0"},
      {"config_init size larger than any struct",
       [&] {
         alignas(8) static unsigned char big[8192];
         return perfopt_config_init(reinterpret_cast<perfopt_config *>(big), sizeof big);
       },
       PERFOPT_ERR_STRUCT_SIZE, "struct_size is 8192"},
      {"options_init NULL", [&] { return perfopt_model_options_init(nullptr, sizeof(perfopt_model_options)); },
       PERFOPT_ERR_NULL_ARGUMENT, "options"},
      {"options_init size 36",
       [&] {
         perfopt_model_options o;
         return perfopt_model_options_init(&o, 36);
       },
       PERFOPT_ERR_STRUCT_SIZE, "struct_size is 36"},
      {"options_init size larger than any struct",
       [&] {
         alignas(8) static unsigned char big[8192];
         return perfopt_model_options_init(reinterpret_cast<perfopt_model_options *>(big), sizeof big);
       },
       PERFOPT_ERR_STRUCT_SIZE, "struct_size is 8192"},
      {"set_options from a newer header with a newer field set",
       [&] {
         struct {
           perfopt_model_options o;
           int64_t newer_field;
         } newer;
         (void)perfopt_model_options_init(&newer.o, sizeof newer);
         newer.newer_field = 1;
         return perfopt_model_set_options(model, &newer.o);
       },
       PERFOPT_ERR_STRUCT_SIZE, "does not know"},
      {"set_options model NULL",
       [&] {
         perfopt_model_options o;
         (void)perfopt_model_options_init(&o, sizeof o);
         return perfopt_model_set_options(nullptr, &o);
       },
       PERFOPT_ERR_NULL_ARGUMENT, "model"},
      {"options precision 2", [&] { return options_with([](perfopt_model_options &o) { o.precision = 2; }); },
       PERFOPT_ERR_INVALID_ARGUMENT, "precision is 2"},
      {"options reduced tolerance inf",
       [&] { return options_with([](perfopt_model_options &o) { o.reduced_tolerance = INFINITY; }); },
       PERFOPT_ERR_INVALID_ARGUMENT, "reduced_tolerance"},
      {"options min cosine -0.5",
       [&] { return options_with([](perfopt_model_options &o) { o.min_cosine = -0.5; }); },
       PERFOPT_ERR_INVALID_ARGUMENT, "min_cosine"},
      {"options tuning budget 600001",
       [&] { return options_with([](perfopt_model_options &o) { o.tuning_budget_ms = 600001; }); },
       PERFOPT_ERR_INVALID_ARGUMENT, "tuning_budget_ms"},
      {"options tuning_cache_dir bad UTF-8",
       [&] { return options_with([](perfopt_model_options &o) { o.tuning_cache_dir = bad_utf8; }); },
       PERFOPT_ERR_INVALID_UTF8, "tuning_cache_dir"},
      {"options tolerance -1", [&] { return options_with([](perfopt_model_options &o) { o.error_tolerance = -1; }); },
       PERFOPT_ERR_INVALID_ARGUMENT, "error_tolerance"},
      // Compiling with values
      {"compile_args model NULL", [&] { return perfopt_model_compile_args(nullptr, "default", nullptr, 0); },
       PERFOPT_ERR_NULL_ARGUMENT, "model"},
      {"compile_args mode unknown", [&] { return perfopt_model_compile_args(model, "fast", nullptr, 0); },
       PERFOPT_ERR_INVALID_ARGUMENT, "fast"},
      {"compile_args mode bad UTF-8", [&] { return perfopt_model_compile_args(model, bad_utf8, nullptr, 0); },
       PERFOPT_ERR_INVALID_UTF8, "mode"},
      {"compile_args warm-up NULL with n 1", [&] { return perfopt_model_compile_args(model, "default", nullptr, 1); },
       PERFOPT_ERR_NULL_ARGUMENT, "warmup_args"},
      {"compile_args warm-up struct_size 0",
       [&] {
         auto args = with_value([](perfopt_value &v) { v.struct_size = 0; });
         return perfopt_model_compile_args(model, "default", args.data(), args.size());
       },
       PERFOPT_ERR_STRUCT_SIZE, "warmup_args[0].struct_size is 0"},
      {"compile_args warm-up the model rejects",
       [&] {
         auto bad = with([&](DLTensor &t) { t.shape = wrong; });
         std::vector<perfopt_value> args{tensor_value(&bad[0]), tensor_value(&bad[1])};
         return perfopt_model_compile_args(model, "default", args.data(), args.size());
       },
       PERFOPT_ERR_TORCH, "mat1 and mat2"},
      // perfopt_model_call: the values
      {"call result NULL", [&] { return perfopt_model_call(model, nullptr, good_values.data(), 2, nullptr); },
       PERFOPT_ERR_NULL_ARGUMENT, "result"},
      {"call model NULL", [&] { return call(nullptr, nullptr, good_values); }, PERFOPT_ERR_NULL_ARGUMENT, "model"},
      {"call args NULL with n 2",
       [&] {
         perfopt_value *result = nullptr;
         return perfopt_model_call(model, nullptr, nullptr, 2, &result);
       },
       PERFOPT_ERR_NULL_ARGUMENT, "args"},
      {"call 2000 arguments",
       [&] {
         std::vector<perfopt_value> args(2000, good_values[0]);
         return call(model, nullptr, args);
       },
       PERFOPT_ERR_INVALID_ARGUMENT, "at most 1024"},
      {"call kind 8", [&] { return call(model, nullptr, with_value([](perfopt_value &v) { v.kind = 8; })); },
       PERFOPT_ERR_INVALID_ARGUMENT, "kind 8"},
      {"call kind -1", [&] { return call(model, nullptr, with_value([](perfopt_value &v) { v.kind = -1; })); },
       PERFOPT_ERR_INVALID_ARGUMENT, "kind -1"},
      {"call struct_size 0",
       [&] { return call(model, nullptr, with_value([](perfopt_value &v) { v.struct_size = 0; })); },
       PERFOPT_ERR_STRUCT_SIZE, "args[0].struct_size is 0"},
      {"call struct_size of an older layout",
       [&] { return call(model, nullptr, with_value([](perfopt_value &v) { v.struct_size -= 8; })); },
       PERFOPT_ERR_STRUCT_SIZE, "struct_size"},
      {"call struct_size larger",
       [&] { return call(model, nullptr, with_value([](perfopt_value &v) { v.struct_size += 8; })); },
       PERFOPT_ERR_STRUCT_SIZE, "struct_size"},
      {"call a list item's struct_size",
       [&] {
         perfopt_value items[1] = {tensor_value(&good[1])};
         items[0].struct_size = 4;
         return call(model, nullptr, {good_values[0], list_value(items, 1)});
       },
       PERFOPT_ERR_STRUCT_SIZE, "args[1][0].struct_size is 4"},
      {"call list items NULL, length 2",
       [&] { return call(model, nullptr, {good_values[0], list_value(nullptr, 2)}); }, PERFOPT_ERR_NULL_ARGUMENT,
       "args[1].items"},
      {"call tuple items NULL, length 1",
       [&] { return call(model, nullptr, {list_value(nullptr, 1, PERFOPT_VALUE_TUPLE), good_values[1]}); },
       PERFOPT_ERR_NULL_ARGUMENT, "args[0].items"},
      {"call bool int_value 2",
       [&] { return call(vad, nullptr, {tensor_value(&vad_x), int_value(2, PERFOPT_VALUE_BOOL)}); },
       PERFOPT_ERR_INVALID_ARGUMENT, "0 or 1"},
      {"call string not UTF-8",
       [&] { return call(vad, nullptr, {tensor_value(&vad_x), string_value(not_utf8, sizeof not_utf8)}); },
       PERFOPT_ERR_INVALID_UTF8, "args[1]"},
      {"call string NULL, length 3",
       [&] { return call(vad, nullptr, {tensor_value(&vad_x), string_value(nullptr, 3)}); },
       PERFOPT_ERR_NULL_ARGUMENT, "args[1].string"},
      {"call tensor NULL", [&] { return call(vad, nullptr, {tensor_value(nullptr), int_value(16000)}); },
       PERFOPT_ERR_NULL_ARGUMENT, "args[0].tensor"},
      {"call a bad tensor inside a list",
       [&] {
         DLTensor bad = good[0];
         bad.dtype.lanes = 2;
         perfopt_value items[1] = {tensor_value(&bad)};
         return call(model, nullptr, {good_values[0], list_value(items, 1)});
       },
       PERFOPT_ERR_INVALID_ARGUMENT, "args[1][0]"},
      {"call lists nested 33 deep", [&] { return call(model, nullptr, {chain[0], good_values[1]}); },
       PERFOPT_ERR_INVALID_ARGUMENT, "deeper than 32"},
      {"call method bad UTF-8", [&] { return call(vad, bad_utf8, {tensor_value(&vad_x), int_value(16000)}); },
       PERFOPT_ERR_INVALID_UTF8, "method"},
      {"call a method that does not exist", [&] { return call(vad, "reset", {}); }, PERFOPT_ERR_INVALID_ARGUMENT,
       "no method `reset`"},
      {"call method empty", [&] { return call(vad, "", {}); }, PERFOPT_ERR_INVALID_ARGUMENT, "no method"},
      {"call a string where an int goes",
       [&] { return call(vad, "forward", {tensor_value(&vad_x), string_value("16000", 5)}); },
       PERFOPT_ERR_INVALID_ARGUMENT, "`sr`"},
      {"call an int where a tensor goes", [&] { return call(vad, "forward", {int_value(1), int_value(16000)}); },
       PERFOPT_ERR_INVALID_ARGUMENT, "`x`"},
      {"call a tensor where an int goes",
       [&] { return call(vad, "forward", {tensor_value(&vad_x), tensor_value(&vad_x)}); },
       PERFOPT_ERR_INVALID_ARGUMENT, "`sr`"},
      {"call too few arguments", [&] { return call(vad, "forward", {tensor_value(&vad_x)}); },
       PERFOPT_ERR_INVALID_ARGUMENT, "takes 2"},
      {"call reset_states with an argument", [&] { return call(vad, "reset_states", {int_value(1)}); },
       PERFOPT_ERR_INVALID_ARGUMENT, "reset_states() of model vad takes 0"},
      {"call a model returning a dict", [&] { return call(dict, nullptr, {good_values[0]}); }, PERFOPT_ERR_UNSUPPORTED_MODEL,
       "Dict[str, Tensor]"},
      {"call the model with a shape it rejects",
       [&] {
         auto bad = with([&](DLTensor &t) { t.shape = wrong; });
         return call(model, nullptr, {tensor_value(&bad[0]), tensor_value(&bad[1])});
       },
       PERFOPT_ERR_TORCH, "mat1 and mat2"},
      // Results: perfopt_value_free never crashes on what it did not make.
      {"value_free NULL, a foreign pointer, a result twice",
       [&] {
         logged.clear();
         (void)perfopt_set_log_callback(capture_log, nullptr, PERFOPT_LOG_ERROR);
         perfopt_value_free(nullptr);
         perfopt_value foreign = int_value(1);
         perfopt_value_free(&foreign);
         perfopt_value *result = nullptr;
         perfopt_status s = perfopt_model_call(model, nullptr, good_values.data(), 2, &result);
         if (s == PERFOPT_OK) perfopt_value_free(&result->items[1]);  // refused: inside a result, not its root
         perfopt_value_free(result);
         perfopt_value_free(result);  // refused: no longer live
         (void)perfopt_set_log_callback(nullptr, nullptr, PERFOPT_LOG_OFF);
         size_t refusals = 0;
         for (size_t at = logged.find("not a live result"); at != std::string::npos;
              at = logged.find("not a live result", at + 1))
           ++refusals;
         captured = refusals == 3 ? logged : "refusals logged: " + std::to_string(refusals) + ": " + logged;
         return s == PERFOPT_OK && refusals == 3 ? PERFOPT_OK : PERFOPT_ERR_INTERNAL;
       },
       PERFOPT_OK, "not a live result"},
      // Warm-up, batches and reports with values
      {"warmup_args 0 iterations",
       [&] { return perfopt_model_warmup_args(model, good_values.data(), 2, 0, nullptr, 0, &needed); },
       PERFOPT_ERR_INVALID_ARGUMENT, "iterations"},
      {"warmup_args 100001 iterations",
       [&] { return perfopt_model_warmup_args(model, good_values.data(), 2, 100001, nullptr, 0, &needed); },
       PERFOPT_ERR_INVALID_ARGUMENT, "iterations"},
      {"warmup_args NULL with n 2", [&] { return perfopt_model_warmup_args(model, nullptr, 2, 1, nullptr, 0, &needed); },
       PERFOPT_ERR_NULL_ARGUMENT, "args"},
      {"warmup_args kind 9",
       [&] {
         auto args = with_value([](perfopt_value &v) { v.kind = 9; });
         return perfopt_model_warmup_args(model, args.data(), 2, 1, nullptr, 0, &needed);
       },
       PERFOPT_ERR_INVALID_ARGUMENT, "kind 9"},
      {"warmup_args model NULL",
       [&] { return perfopt_model_warmup_args(nullptr, good_values.data(), 2, 1, nullptr, 0, &needed); },
       PERFOPT_ERR_NULL_ARGUMENT, "model"},
      {"warmup_args buffer too small: the report is kept",
       [&] {
         perfopt_status s = perfopt_model_warmup_args(model, good_values.data(), 2, 2, buf, sizeof buf, &needed);
         captured = last_error();
         // Read back without running again: the size it said, the iterations asked.
         std::string kept(needed, '\0');
         size_t again = 0;
         if (perfopt_model_last_report(model, PERFOPT_REPORT_WARMUP, kept.data(), kept.size(), &again) != PERFOPT_OK ||
             again != needed || kept.find("\"iterations\":2") == std::string::npos)
           return PERFOPT_ERR_INTERNAL;
         return s;
       },
       PERFOPT_ERR_BUFFER_TOO_SMALL, "perfopt_model_last_report"},
      {"warmup_args report NULL, len 8",
       [&] { return perfopt_model_warmup_args(model, good_values.data(), 2, 1, nullptr, 8, &needed); },
       PERFOPT_ERR_NULL_ARGUMENT, "report"},
      {"recommend_batch_args batch NULL",
       [&] { return perfopt_model_recommend_batch_args(model, good_values.data(), 2, nullptr, nullptr, 0, &needed); },
       PERFOPT_ERR_NULL_ARGUMENT, "batch"},
      {"recommend_batch_args NULL with n 2",
       [&] { return perfopt_model_recommend_batch_args(model, nullptr, 2, &batch, nullptr, 0, &needed); },
       PERFOPT_ERR_NULL_ARGUMENT, "sample_args"},
      {"recommend_batch_args on batch 2",
       [&] { return perfopt_model_recommend_batch_args(model, good_values.data(), 2, &batch, nullptr, 0, &needed); },
       PERFOPT_ERR_INVALID_ARGUMENT, "dimension 0 of size 1"},
      {"recommend_batch_args bool 3",
       [&] {
         auto args = with_value([](perfopt_value &v) { v = int_value(3, PERFOPT_VALUE_BOOL); });
         return perfopt_model_recommend_batch_args(model, args.data(), 2, &batch, nullptr, 0, &needed);
       },
       PERFOPT_ERR_INVALID_ARGUMENT, "0 or 1"},
      {"run_batched_args max_batch -1", [&] { return run_batched_args(good_values, -1); },
       PERFOPT_ERR_INVALID_ARGUMENT, "max_batch"},
      {"run_batched_args n_outputs NULL",
       [&] { return perfopt_model_run_batched_args(model, good_values.data(), 2, 1, out, 4, nullptr); },
       PERFOPT_ERR_NULL_ARGUMENT, "n_outputs"},
      {"run_batched_args outputs NULL",
       [&] { return perfopt_model_run_batched_args(model, good_values.data(), 2, 1, nullptr, 4, &n); },
       PERFOPT_ERR_NULL_ARGUMENT, "outputs"},
      {"run_batched_args NULL with n 2",
       [&] { return perfopt_model_run_batched_args(model, nullptr, 2, 1, out, 4, &n); }, PERFOPT_ERR_NULL_ARGUMENT,
       "args"},
      {"run_batched_args struct_size 0",
       [&] { return run_batched_args(with_value([](perfopt_value &v) { v.struct_size = 0; }), 1); },
       PERFOPT_ERR_STRUCT_SIZE, "args[0].struct_size"},
      {"run_batched_args one argument of two", [&] { return run_batched_args({good_values[0]}, 1); },
       PERFOPT_ERR_INVALID_ARGUMENT, "takes 2 input(s)"},
      // Outputs waiting for take_outputs
      {"take_outputs with nothing waiting",
       [&] {
         drain(model);  // whatever an earlier case left
         return perfopt_model_take_outputs(model, out, 4, &n);
       },
       PERFOPT_ERR_INVALID_ARGUMENT, "no outputs are waiting"},
      {"take_outputs n_outputs NULL", [&] { return perfopt_model_take_outputs(model, out, 4, nullptr); },
       PERFOPT_ERR_NULL_ARGUMENT, "n_outputs"},
      {"take_outputs model NULL", [&] { return perfopt_model_take_outputs(nullptr, out, 4, &n); },
       PERFOPT_ERR_NULL_ARGUMENT, "model"},
      {"take_outputs with too few slots again: they keep waiting",
       [&] {
         (void)perfopt_model_run(model, good.data(), 2, out, 1, &n);
         perfopt_status s = perfopt_model_take_outputs(model, out, 1, &n);
         captured = last_error();
         perfopt_status later = drain(model);
         return later == PERFOPT_OK && n == 2 ? s : later;
       },
       PERFOPT_ERR_BUFFER_TOO_SMALL, "outputs_capacity is 1"},
      {"take_outputs for another model",
       [&] {
         (void)perfopt_model_run(model, good.data(), 2, out, 1, &n);
         perfopt_status s = perfopt_model_take_outputs(lstm, out, 4, &n);
         captured = last_error();
         perfopt_status later = drain(model);  // still waiting for their own model
         return later == PERFOPT_OK ? s : later;
       },
       PERFOPT_ERR_INVALID_ARGUMENT, "no outputs are waiting"},
      {"take_outputs on another thread",
       [&] {
         (void)perfopt_model_run(model, good.data(), 2, out, 1, &n);
         perfopt_status other = PERFOPT_OK;
         std::thread([&] {
           size_t count = 0;
           other = perfopt_model_take_outputs(model, out, 4, &count);
           captured = last_error();
         }).join();
         perfopt_status later = drain(model);
         return later == PERFOPT_OK ? other : later;
       },
       PERFOPT_ERR_INVALID_ARGUMENT, "this thread"},
      {"run_batched_args one slot for two: outputs wait",
       [&] {
         perfopt_status s = perfopt_model_run_batched_args(model, good_values.data(), 2, 1, out, 1, &n);
         captured = last_error();
         perfopt_status later = drain(model);
         return later == PERFOPT_OK && n == 2 ? s : later;
       },
       PERFOPT_ERR_BUFFER_TOO_SMALL, "perfopt_model_take_outputs"},
      // Output count, methods, kept reports
      {"output_count count NULL", [&] { return perfopt_model_output_count(model, nullptr); },
       PERFOPT_ERR_NULL_ARGUMENT, "count"},
      {"output_count model NULL",
       [&] {
         size_t count = 0;
         return perfopt_model_output_count(nullptr, &count);
       },
       PERFOPT_ERR_NULL_ARGUMENT, "model"},
      {"output_count of a dict result before any run",
       [&] {
         size_t count = 0;
         return perfopt_model_output_count(dict, &count);
       },
       PERFOPT_ERR_INVALID_ARGUMENT, "known after the first run"},
      {"methods model NULL", [&] { return perfopt_model_methods(nullptr, buf, sizeof buf, &needed); },
       PERFOPT_ERR_NULL_ARGUMENT, "model"},
      {"methods NULL buffer, len 8", [&] { return perfopt_model_methods(vad, nullptr, 8, &needed); },
       PERFOPT_ERR_NULL_ARGUMENT, "buf"},
      {"methods buffer too small", [&] { return perfopt_model_methods(vad, buf, sizeof buf, &needed); },
       PERFOPT_ERR_BUFFER_TOO_SMALL, "needed"},
      {"last_report kind 0", [&] { return perfopt_model_last_report(model, 0, buf, sizeof buf, &needed); },
       PERFOPT_ERR_INVALID_ARGUMENT, "kind is 0"},
      {"last_report kind 3", [&] { return perfopt_model_last_report(model, 3, buf, sizeof buf, &needed); },
       PERFOPT_ERR_INVALID_ARGUMENT, "kind is 3"},
      {"last_report before any warm-up",
       [&] { return perfopt_model_last_report(fresh, PERFOPT_REPORT_WARMUP, nullptr, 0, &needed); },
       PERFOPT_ERR_INVALID_ARGUMENT, "no such report yet"},
      {"last_report before any recommend_batch",
       [&] { return perfopt_model_last_report(fresh, PERFOPT_REPORT_RECOMMEND_BATCH, nullptr, 0, &needed); },
       PERFOPT_ERR_INVALID_ARGUMENT, "no such report yet"},
      {"last_report model NULL",
       [&] { return perfopt_model_last_report(nullptr, PERFOPT_REPORT_WARMUP, buf, sizeof buf, &needed); },
       PERFOPT_ERR_NULL_ARGUMENT, "model"},
      {"last_report buffer too small",
       [&] {
         (void)perfopt_model_warmup(model, good.data(), 2, 1, nullptr, 0, &needed);
         return perfopt_model_last_report(model, PERFOPT_REPORT_WARMUP, buf, sizeof buf, &needed);
       },
       PERFOPT_ERR_BUFFER_TOO_SMALL, "needed"},
      // Batch dimensions
      {"set_batch_dims input -2",
       [&] {
         int32_t dims[1] = {-2};
         return perfopt_model_set_batch_dims(model, dims, 1, nullptr, 0);
       },
       PERFOPT_ERR_INVALID_ARGUMENT, "input_dims[0] is -2"},
      {"set_batch_dims input 64",
       [&] {
         int32_t dims[2] = {0, 64};
         return perfopt_model_set_batch_dims(model, dims, 2, nullptr, 0);
       },
       PERFOPT_ERR_INVALID_ARGUMENT, "is 64; a batch dimension"},
      {"set_batch_dims output -1 (not batched is for inputs)",
       [&] {
         int32_t dims[1] = {PERFOPT_NOT_BATCHED};
         return perfopt_model_set_batch_dims(model, nullptr, 0, dims, 1);
       },
       PERFOPT_ERR_INVALID_ARGUMENT, "output_dims[0] is -1"},
      {"set_batch_dims output 64",
       [&] {
         int32_t dims[1] = {64};
         return perfopt_model_set_batch_dims(model, nullptr, 0, dims, 1);
       },
       PERFOPT_ERR_INVALID_ARGUMENT, "is 64; a batch dimension"},
      {"set_batch_dims input NULL with count 2",
       [&] { return perfopt_model_set_batch_dims(model, nullptr, 2, nullptr, 0); }, PERFOPT_ERR_NULL_ARGUMENT,
       "input_dims"},
      {"set_batch_dims output NULL with count 1",
       [&] { return perfopt_model_set_batch_dims(model, nullptr, 0, nullptr, 1); }, PERFOPT_ERR_NULL_ARGUMENT,
       "output_dims"},
      {"set_batch_dims 2000 inputs",
       [&] { return perfopt_model_set_batch_dims(model, many_dims.data(), many_dims.size(), nullptr, 0); },
       PERFOPT_ERR_INVALID_ARGUMENT, "at most"},
      {"set_batch_dims model NULL", [&] { return perfopt_model_set_batch_dims(nullptr, nullptr, 0, nullptr, 0); },
       PERFOPT_ERR_NULL_ARGUMENT, "model"},
      {"set_batch_dims refused keeps the dimensions set before",
       [&] {
         (void)perfopt_model_set_batch_dims(lstm, lstm_in_dims, 4, lstm_out_dims, 3);
         int32_t bad[4] = {0, 1, 1, -3};
         perfopt_status s = perfopt_model_set_batch_dims(lstm, bad, 4, lstm_out_dims, 3);
         captured = last_error();
         perfopt_status later =
             release(perfopt_model_run_batched(lstm, lstm_inputs.data(), lstm_inputs.size(), 2, out, 4, &n));
         return later == PERFOPT_OK ? s : later;
       },
       PERFOPT_ERR_INVALID_ARGUMENT, "input_dims[3] is -3"},
      {"run_batched an output without the batch there",
       [&] {
         // Output 1 (h) carries the batch in dimension 1, not 2.
         int32_t outs[3] = {0, 2, 1};
         (void)perfopt_model_set_batch_dims(lstm, lstm_in_dims, 4, outs, 3);
         perfopt_status s = release(perfopt_model_run_batched(lstm, lstm_inputs.data(), 4, 2, out, 4, &n));
         captured = last_error();
         (void)perfopt_model_set_batch_dims(lstm, lstm_in_dims, 4, lstm_out_dims, 3);
         return s;
       },
       PERFOPT_ERR_INVALID_ARGUMENT, "output 1"},
  };

  int passed = 0, failed = 0;
  const bool verbose = std::getenv("PERFOPT_MISUSE_VERBOSE") != nullptr;
  for (const Case &c : cases) {
    captured.clear();
    perfopt_status status = c.call();
    std::string message = captured.empty() ? last_error() : captured;
    bool ok = status == c.expected && message.find(c.needle) != std::string::npos;
    // The next correct calls on the same objects succeed.
    bool recovered = run(good) == PERFOPT_OK && perfopt_optimal_batch_size(opt, &batch) == PERFOPT_OK;
    if (verbose) std::printf("%s: %s: %s\n", c.name, perfopt_status_name(status), message.c_str());
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
  for (perfopt_model *m : {vad, lstm, dict, fresh, kinds}) perfopt_model_free(m);
  perfopt_optimizer_free(opt);
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
