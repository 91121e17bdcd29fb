// perfopt.hpp: a header-only C++17 layer over perfopt.h.
//
// RAII owners for the optimizer, models and inference scopes, exceptions
// that carry perfopt's status and message, and reports as JSON strings.
// Nothing here adds behaviour: every call is one C call.
//
//   perfopt::Optimizer opt(perfopt::Config().device("cpu"));
//   perfopt::Model model = opt.load("vocoder.pt");
//   model.compile("reduce-overhead");
//   { perfopt::InferenceScope scope(opt); auto out = model.run({input}); }
#ifndef PERFOPT_HPP
#define PERFOPT_HPP

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "perfopt.h"

namespace perfopt {

/// A failed perfopt call: status() is the code, what() perfopt's message.
class Error : public std::runtime_error {
 public:
  Error(perfopt_status status, const std::string &message)
      : std::runtime_error(std::string(perfopt_status_name(status)) + ": " + message), status_(status) {}
  perfopt_status status() const noexcept { return status_; }

 private:
  perfopt_status status_;
};

inline void check(perfopt_status status) {
  if (status != PERFOPT_OK) {
    const char *message = perfopt_last_error();
    throw Error(status, message ? message : "no message");
  }
}

/// Runs a (buf, len, needed) report call, with room for a report that grew
/// since the size query (reports are made fresh on each call).
template <typename Call>
std::string read_report(Call call) {
  size_t needed = 4096;
  for (;;) {
    std::string text(needed + 256, '\0');
    perfopt_status status = call(text.data(), text.size(), &needed);
    if (status == PERFOPT_ERR_BUFFER_TOO_SMALL && needed > text.size()) continue;
    check(status);
    text.resize(needed - 1);
    return text;
  }
}

inline std::string version() { return perfopt_version(); }

/// perfopt_config with chainable setters; strings are kept alive here.
class Config {
 public:
  Config() { check(perfopt_config_default(&config_)); }
  Config &device(std::string d) { device_ = std::move(d); return *this; }
  Config &compile_mode(std::string m) { mode_ = std::move(m); return *this; }
  Config &cudnn_benchmark(bool on) { config_.cudnn_benchmark = on; return *this; }
  Config &tf32(bool on) { config_.tf32 = on; return *this; }
  Config &cpu_optimization(bool on) { config_.cpu_optimization = on; return *this; }
  Config &torch_compile(bool on) { config_.torch_compile = on; return *this; }
  Config &threads(int32_t intra, int32_t inter = 0) {
    config_.intra_op_threads = intra;
    config_.inter_op_threads = inter;
    return *this;
  }
  Config &read_environment(bool on) { config_.read_environment = on; return *this; }
  Config &malloc_tuning(bool on) { config_.malloc_tuning = on; return *this; }

  const perfopt_config *get() {
    config_.device = device_.empty() ? nullptr : device_.c_str();
    config_.compile_mode = mode_.empty() ? nullptr : mode_.c_str();
    return &config_;
  }

 private:
  perfopt_config config_{};
  std::string device_, mode_;
};

class Model;

/// Owns a perfopt_optimizer. Move-only.
class Optimizer {
 public:
  explicit Optimizer(Config config = Config()) { check(perfopt_optimizer_new(config.get(), &handle_)); }
  ~Optimizer() { perfopt_optimizer_free(handle_); }
  Optimizer(Optimizer &&other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}
  Optimizer &operator=(Optimizer &&other) noexcept {
    std::swap(handle_, other.handle_);
    return *this;
  }
  Optimizer(const Optimizer &) = delete;
  Optimizer &operator=(const Optimizer &) = delete;

  std::string report() const {
    return read_report([&](char *b, size_t n, size_t *need) { return perfopt_optimizer_report(handle_, b, n, need); });
  }
  int32_t optimal_batch_size() const {
    int32_t out = 0;
    check(perfopt_optimal_batch_size(handle_, &out));
    return out;
  }
  inline Model load(const std::string &path, const std::string &name = "");
  perfopt_optimizer *get() const noexcept { return handle_; }

 private:
  perfopt_optimizer *handle_ = nullptr;
};

/// c10::InferenceMode for the lifetime of the object, on this thread.
class InferenceScope {
 public:
  explicit InferenceScope(Optimizer &optimizer) { check(perfopt_inference_enter(optimizer.get(), &scope_)); }
  ~InferenceScope() {
    // A destructor cannot throw; RAII guarantees the thread and the order.
    if (scope_) perfopt_inference_exit(scope_);
  }
  InferenceScope(const InferenceScope &) = delete;
  InferenceScope &operator=(const InferenceScope &) = delete;

 private:
  perfopt_scope *scope_ = nullptr;
};

/// An output tensor owned through its DLPack deleter. Move-only.
class Tensor {
 public:
  explicit Tensor(DLManagedTensor *managed) noexcept : managed_(managed) {}
  ~Tensor() {
    if (managed_ && managed_->deleter) managed_->deleter(managed_);
  }
  Tensor(Tensor &&other) noexcept : managed_(std::exchange(other.managed_, nullptr)) {}
  Tensor &operator=(Tensor &&other) noexcept {
    std::swap(managed_, other.managed_);
    return *this;
  }
  Tensor(const Tensor &) = delete;
  Tensor &operator=(const Tensor &) = delete;

  const DLTensor &dl() const noexcept { return managed_->dl_tensor; }
  std::vector<int64_t> shape() const { return std::vector<int64_t>(dl().shape, dl().shape + dl().ndim); }
  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < dl().ndim; ++i) n *= dl().shape[i];
    return n;
  }
  /// The data as T (host outputs are contiguous).
  template <typename T>
  const T *data() const noexcept {
    return reinterpret_cast<const T *>(static_cast<const char *>(dl().data) + dl().byte_offset);
  }
  /// Gives up ownership (the caller calls the deleter).
  DLManagedTensor *release() noexcept { return std::exchange(managed_, nullptr); }

 private:
  DLManagedTensor *managed_ = nullptr;
};

/// A host float32 tensor to pass in: owns its shape, views `data`.
inline DLTensor host_tensor(const float *data, const std::vector<int64_t> &shape) {
  DLTensor t{};
  t.data = const_cast<float *>(data);
  t.device = DLDevice{kDLCPU, 0};
  t.ndim = static_cast<int32_t>(shape.size());
  t.dtype = DLDataType{kDLFloat, 32, 1};
  t.shape = const_cast<int64_t *>(shape.data());
  return t;
}

/// Owns a perfopt_model. Move-only; may be run from several threads at once.
class Model {
 public:
  Model(Optimizer &optimizer, const std::string &path, const std::string &name = "") {
    check(perfopt_model_load(optimizer.get(), path.c_str(), name.empty() ? nullptr : name.c_str(), &handle_));
  }
  ~Model() { perfopt_model_free(handle_); }
  Model(Model &&other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}
  Model &operator=(Model &&other) noexcept {
    std::swap(handle_, other.handle_);
    return *this;
  }
  Model(const Model &) = delete;
  Model &operator=(const Model &) = delete;

  /// mode "" = the optimizer's configured mode. Throws perfopt::Error with
  /// PERFOPT_COMPILE_SKIPPED on MPS (the model stays usable).
  void compile(const std::string &mode = "", const std::vector<DLTensor> &warmup = {}) {
    check(perfopt_model_compile(handle_, mode.empty() ? nullptr : mode.c_str(), warmup.empty() ? nullptr : warmup.data(),
                                warmup.size()));
  }
  std::string warmup(const std::vector<DLTensor> &inputs, uint32_t iterations = 3) {
    std::string text(65536, '\0');
    size_t needed = 0;
    check(perfopt_model_warmup(handle_, inputs.data(), inputs.size(), iterations, text.data(), text.size(), &needed));
    text.resize(needed - 1);
    return text;
  }
  std::vector<Tensor> run(const std::vector<DLTensor> &inputs) {
    return collect([&](DLManagedTensor **out, size_t cap, size_t *n) {
      return perfopt_model_run(handle_, inputs.data(), inputs.size(), out, cap, n);
    });
  }
  std::vector<Tensor> run_batched(const std::vector<DLTensor> &inputs, int32_t max_batch = 0) {
    return collect([&](DLManagedTensor **out, size_t cap, size_t *n) {
      return perfopt_model_run_batched(handle_, inputs.data(), inputs.size(), max_batch, out, cap, n);
    });
  }
  /// The recommended batch; `report` (optional) receives the JSON.
  int32_t recommend_batch(const std::vector<DLTensor> &sample, std::string *report = nullptr) {
    std::string text(65536, '\0');
    size_t needed = 0;
    int32_t batch = 0;
    check(perfopt_model_recommend_batch(handle_, sample.data(), sample.size(), &batch, text.data(), text.size(),
                                        &needed));
    if (report) *report = text.substr(0, needed - 1);
    return batch;
  }
  void set_options(perfopt_model_options options) { check(perfopt_model_set_options(handle_, &options)); }
  static perfopt_model_options default_options() {
    perfopt_model_options options;
    check(perfopt_model_options_default(&options));
    return options;
  }
  std::string report() const {
    return read_report([&](char *b, size_t n, size_t *need) { return perfopt_model_report(handle_, b, n, need); });
  }
  perfopt_model *get() const noexcept { return handle_; }

 private:
  template <typename Call>
  std::vector<Tensor> collect(Call call) {
    std::vector<DLManagedTensor *> slots(8);
    size_t n = 0;
    perfopt_status status = call(slots.data(), slots.size(), &n);
    if (status == PERFOPT_ERR_BUFFER_TOO_SMALL && n > slots.size()) {
      slots.resize(n);  // the model ran; runs again with room for every output
      status = call(slots.data(), slots.size(), &n);
    }
    check(status);
    std::vector<Tensor> outputs;
    outputs.reserve(n);
    for (size_t i = 0; i < n; ++i) outputs.emplace_back(slots[i]);
    return outputs;
  }

  perfopt_model *handle_ = nullptr;
};

inline Model Optimizer::load(const std::string &path, const std::string &name) { return Model(*this, path, name); }

}  // namespace perfopt

#endif  // PERFOPT_HPP
