// perfopt.hpp: a header-only C++17 layer over perfopt.h (ABI 3).
//
// RAII owners for the optimizer, models, inference scopes and call results,
// exceptions that carry perfopt's status and message, arguments of any kind
// (perfopt::Value) and reports as JSON strings. Nothing here adds behaviour:
// every method is one C call (a report too large for the first buffer is read
// back with a second call that does not repeat the work).
//
//   perfopt::Optimizer opt(perfopt::Config().device("cpu"));
//   perfopt::Model model = opt.load("vocoder.pt");
//   model.compile("reduce-overhead");
//   { perfopt::InferenceScope scope(opt); auto out = model.run({input}); }
//
//   perfopt::Model vad = opt.load("stateful.pt");
//   perfopt::Result r = vad.call("forward", {chunk, 16000});
//   perfopt::Tensor y = r.take_tensor();
//   vad.call("reset_states");
#ifndef PERFOPT_HPP
#define PERFOPT_HPP

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
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
/// The loaded library's ABI; this header is PERFOPT_ABI_VERSION.
inline uint32_t abi_version() { return perfopt_abi_version(); }

/// perfopt_config with chainable setters; strings are kept alive here.
class Config {
 public:
  Config() { check(perfopt_config_init(&config_, sizeof config_)); }
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
  /// The ONNX Runtime library ONNX models run on (default: found).
  Config &onnxruntime_library(std::string path) { onnxruntime_ = std::move(path); return *this; }
  /// Where max-autotune remembers choices for models whose options name no
  /// folder; models load as their tuning last chose (default: none).
  Config &tuning_cache_dir(std::string dir) { cache_dir_ = std::move(dir); return *this; }

  const perfopt_config *get() {
    config_.device = device_.empty() ? nullptr : device_.c_str();
    config_.compile_mode = mode_.empty() ? nullptr : mode_.c_str();
    config_.onnxruntime_library = onnxruntime_.empty() ? nullptr : onnxruntime_.c_str();
    config_.tuning_cache_dir = cache_dir_.empty() ? nullptr : cache_dir_.c_str();
    return &config_;
  }

 private:
  perfopt_config config_{};
  std::string device_, mode_, onnxruntime_, cache_dir_;
};

/// perfopt_model_options with chainable setters; the cache folder is kept
/// alive here (perfopt copies it when the options are applied).
class Options {
 public:
  Options() { check(perfopt_model_options_init(&options_, sizeof options_)); }
  Options &outputs_on_device(bool on) { options_.outputs_on_device = on; return *this; }
  Options &error_tolerance(double tolerance) { options_.error_tolerance = tolerance; return *this; }
  Options &graph_cache_size(uint32_t n) { options_.graph_cache_size = n; return *this; }
  Options &graph_warmup_runs(uint32_t n) { options_.graph_warmup_runs = n; return *this; }
  Options &memory_margin(double margin) { options_.memory_margin = margin; return *this; }
  Options &tuning_budget_ms(uint32_t ms) { options_.tuning_budget_ms = ms; return *this; }
  Options &tuning_cache_dir(std::string dir) { cache_dir_ = std::move(dir); return *this; }
  /// Threads per call of this model, from its next compile on (0: the optimizer's).
  Options &threads(uint32_t n) { options_.threads = n; return *this; }
  Options &batch_budget_ms(uint32_t ms) { options_.batch_budget_ms = ms; return *this; }
  /// PERFOPT_PRECISION_ALLOW_REDUCED lets max-autotune choose a bundle's
  /// reduced-precision form, kept only within reduced_tolerance (relative
  /// error) or, with min_cosine above 0, at least that cosine similarity.
  Options &precision(int32_t p) { options_.precision = p; return *this; }
  Options &reduced_tolerance(double relative) { options_.reduced_tolerance = relative; return *this; }
  Options &min_cosine(double cosine) { options_.min_cosine = cosine; return *this; }

  const perfopt_model_options *get() {
    options_.tuning_cache_dir = cache_dir_.empty() ? nullptr : cache_dir_.c_str();
    return &options_;
  }

 private:
  perfopt_model_options options_{};
  std::string cache_dir_;
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
    if (scope_) (void)perfopt_inference_exit(scope_);
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

/// A host float32 tensor to pass in: views `data` and `shape` (both must
/// outlive the DLTensor; a perfopt::Value made from it copies the shape).
inline DLTensor host_tensor(const float *data, const std::vector<int64_t> &shape) {
  DLTensor t{};
  t.data = const_cast<float *>(data);
  t.device = DLDevice{kDLCPU, 0};
  t.ndim = static_cast<int32_t>(shape.size());
  t.dtype = DLDataType{kDLFloat, 32, 1};
  t.shape = const_cast<int64_t *>(shape.data());
  return t;
}

/// One argument of any kind, owning what its perfopt_value points at: the
/// string, the list's items, a tensor's DLTensor with its shape and strides
/// (the tensor's data stays the caller's, borrowed for the call). Built
/// implicitly from a DLTensor, an output Tensor, an integer, a double, a
/// bool or a string; Value::none() (or nullptr), Value::list({...}),
/// Value::tuple({...}).
/// get() is the perfopt_value, valid while the Value lives unchanged.
class Value {
 public:
  Value() noexcept : v_(blank(PERFOPT_VALUE_NONE)) {}
  Value(const DLTensor &t) : v_(blank(PERFOPT_VALUE_TENSOR)), tensor_(t) {  // NOLINT: implicit
    if (t.ndim > 0 && t.shape) shape_.assign(t.shape, t.shape + t.ndim);
    if (t.ndim > 0 && t.strides) strides_.assign(t.strides, t.strides + t.ndim);
    bind();
  }
  Value(const Tensor &t) : Value(t.dl()) {}  // NOLINT: implicit
  template <typename I, std::enable_if_t<std::is_integral_v<I> && !std::is_same_v<I, bool>, int> = 0>
  Value(I i) noexcept : v_(blank(PERFOPT_VALUE_INT)) {  // NOLINT: implicit
    v_.int_value = static_cast<int64_t>(i);
  }
  Value(double d) noexcept : v_(blank(PERFOPT_VALUE_DOUBLE)) { v_.double_value = d; }  // NOLINT: implicit
  Value(bool b) noexcept : v_(blank(PERFOPT_VALUE_BOOL)) { v_.int_value = b ? 1 : 0; }  // NOLINT: implicit
  Value(std::string s) : v_(blank(PERFOPT_VALUE_STRING)), string_(std::move(s)) { bind(); }  // NOLINT: implicit
  Value(const char *s) : Value(s ? std::string(s) : throw std::invalid_argument("perfopt::Value: NULL string")) {}  // NOLINT
  Value(std::nullptr_t) noexcept : Value() {}  // NOLINT: implicit; None, as Python's
  /// Any other pointer would silently become a bool.
  template <typename T, std::enable_if_t<!std::is_same_v<std::remove_cv_t<T>, char>, int> = 0>
  Value(T *) = delete;

  static Value none() { return Value(); }
  static Value list(std::vector<Value> items) { return Value(PERFOPT_VALUE_LIST, std::move(items)); }
  static Value tuple(std::vector<Value> items) { return Value(PERFOPT_VALUE_TUPLE, std::move(items)); }

  Value(const Value &other)
      : v_(other.v_),
        tensor_(other.tensor_),
        shape_(other.shape_),
        strides_(other.strides_),
        string_(other.string_),
        children_(other.children_) {
    bind();
  }
  Value(Value &&other) noexcept
      : v_(other.v_),
        tensor_(other.tensor_),
        shape_(std::move(other.shape_)),
        strides_(std::move(other.strides_)),
        string_(std::move(other.string_)),
        children_(std::move(other.children_)),
        items_(std::move(other.items_)) {
    bind();
  }
  Value &operator=(Value other) noexcept {
    v_ = other.v_;
    tensor_ = other.tensor_;
    shape_ = std::move(other.shape_);
    strides_ = std::move(other.strides_);
    string_ = std::move(other.string_);
    children_ = std::move(other.children_);
    items_ = std::move(other.items_);
    bind();
    return *this;
  }

  int32_t kind() const noexcept { return v_.kind; }
  const perfopt_value &get() const noexcept { return v_; }

 private:
  Value(int32_t kind, std::vector<Value> items) : v_(blank(kind)), children_(std::move(items)) { bind(); }

  static perfopt_value blank(int32_t kind) noexcept {
    perfopt_value v{};
    v.struct_size = sizeof(perfopt_value);
    v.kind = kind;
    return v;
  }

  // Points v_ at this object's own storage (after construction, copy, move).
  void bind() {
    switch (v_.kind) {
      case PERFOPT_VALUE_TENSOR:
        tensor_.shape = shape_.empty() ? nullptr : shape_.data();
        tensor_.strides = strides_.empty() ? nullptr : strides_.data();
        v_.tensor = &tensor_;
        break;
      case PERFOPT_VALUE_STRING:
        v_.string = string_.data();
        v_.length = string_.size();
        break;
      case PERFOPT_VALUE_LIST:
      case PERFOPT_VALUE_TUPLE:
        // Children are heap objects of children_; their own pointers are bound.
        items_.clear();
        for (const Value &child : children_) items_.push_back(child.v_);
        v_.items = items_.empty() ? nullptr : items_.data();
        v_.length = items_.size();
        break;
      default:
        break;
    }
  }

  perfopt_value v_;
  DLTensor tensor_{};
  std::vector<int64_t> shape_, strides_;
  std::string string_;
  std::vector<Value> children_;
  std::vector<perfopt_value> items_;
};

/// The arguments of one call: a braced list of Values ({chunk, 16000}), a
/// std::vector<Value>, or the std::vector<DLTensor> the tensor-only calls
/// took. data() is the perfopt_value array for the call.
class Args {
 public:
  Args() = default;
  Args(std::initializer_list<Value> values) : values_(values) { bind(); }  // NOLINT: implicit
  Args(std::vector<Value> values) : values_(std::move(values)) { bind(); }  // NOLINT: implicit
  Args(const std::vector<DLTensor> &tensors) : values_(tensors.begin(), tensors.end()) { bind(); }  // NOLINT
  Args(const Args &other) : values_(other.values_) { bind(); }
  Args(Args &&other) noexcept : values_(std::move(other.values_)), c_(std::move(other.c_)) {}
  Args &operator=(Args other) noexcept {
    values_ = std::move(other.values_);
    c_ = std::move(other.c_);
    return *this;
  }

  const perfopt_value *data() const noexcept { return c_.empty() ? nullptr : c_.data(); }
  size_t size() const noexcept { return c_.size(); }
  bool empty() const noexcept { return c_.empty(); }
  const std::vector<Value> &values() const noexcept { return values_; }

 private:
  void bind() {
    c_.clear();
    for (const Value &v : values_) c_.push_back(v.get());
  }

  std::vector<Value> values_;
  std::vector<perfopt_value> c_;  // copies of values_' perfopt_values (they point into values_)
};

/// A view of one perfopt_value inside a Result (valid while the Result lives).
class ValueRef {
 public:
  explicit ValueRef(perfopt_value *v) noexcept : v_(v) {}

  int32_t kind() const noexcept { return v_->kind; }
  bool is_none() const noexcept { return v_->kind == PERFOPT_VALUE_NONE; }
  int64_t as_int() const { return expect(PERFOPT_VALUE_INT, "an int").int_value; }
  double as_double() const { return expect(PERFOPT_VALUE_DOUBLE, "a double").double_value; }
  bool as_bool() const { return expect(PERFOPT_VALUE_BOOL, "a bool").int_value != 0; }
  std::string as_string() const {
    const perfopt_value &v = expect(PERFOPT_VALUE_STRING, "a string");
    return std::string(v.string ? v.string : "", v.length);
  }
  /// Items of a list or a tuple.
  size_t size() const {
    if (v_->kind != PERFOPT_VALUE_LIST && v_->kind != PERFOPT_VALUE_TUPLE)
      throw std::invalid_argument("perfopt::ValueRef: kind " + std::to_string(v_->kind) + " is not a list or tuple");
    return v_->length;
  }
  ValueRef operator[](size_t i) const {
    if (i >= size()) throw std::out_of_range("perfopt::ValueRef: item " + std::to_string(i) + " of " + std::to_string(size()));
    return ValueRef(v_->items + i);
  }
  /// A tensor still owned by the result.
  const DLTensor &tensor() const {
    const perfopt_value &v = expect(PERFOPT_VALUE_TENSOR, "a tensor");
    if (!v.managed) throw std::logic_error("perfopt::ValueRef: the tensor was taken");
    return v.managed->dl_tensor;
  }
  /// Takes the tensor out of the result as an owned output (`managed` set to NULL).
  Tensor take_tensor() const {
    perfopt_value &v = const_cast<perfopt_value &>(expect(PERFOPT_VALUE_TENSOR, "a tensor"));
    if (!v.managed) throw std::logic_error("perfopt::ValueRef: the tensor was taken");
    DLManagedTensor *managed = std::exchange(v.managed, nullptr);
    v.tensor = nullptr;  // pointed into the tensor now owned by the caller
    return Tensor(managed);
  }
  std::vector<int64_t> int_list() const {
    std::vector<int64_t> out;
    for (size_t i = 0; i < size(); ++i) out.push_back((*this)[i].as_int());
    return out;
  }
  perfopt_value *get() const noexcept { return v_; }

 private:
  const perfopt_value &expect(int32_t kind, const char *what) const {
    if (v_->kind != kind)
      throw std::invalid_argument(std::string("perfopt::ValueRef: kind ") + std::to_string(v_->kind) + " is not " + what);
    return *v_;
  }

  perfopt_value *v_;
};

/// Owns the perfopt_value tree perfopt_model_call returns (freed with
/// perfopt_value_free, tensors not taken included). Move-only; reads as a
/// ValueRef of its root.
class Result {
 public:
  Result() noexcept = default;
  explicit Result(perfopt_value *root) noexcept : root_(root) {}
  ~Result() { perfopt_value_free(root_); }
  Result(Result &&other) noexcept : root_(std::exchange(other.root_, nullptr)) {}
  Result &operator=(Result &&other) noexcept {
    std::swap(root_, other.root_);
    return *this;
  }
  Result(const Result &) = delete;
  Result &operator=(const Result &) = delete;

  ValueRef root() const {
    if (!root_) throw std::logic_error("perfopt::Result: empty");
    return ValueRef(root_);
  }
  int32_t kind() const { return root().kind(); }
  bool is_none() const { return root().is_none(); }
  int64_t as_int() const { return root().as_int(); }
  double as_double() const { return root().as_double(); }
  bool as_bool() const { return root().as_bool(); }
  std::string as_string() const { return root().as_string(); }
  size_t size() const { return root().size(); }
  ValueRef operator[](size_t i) const { return root()[i]; }
  const DLTensor &tensor() const { return root().tensor(); }
  Tensor take_tensor() { return root().take_tensor(); }
  perfopt_value *get() const noexcept { return root_; }
  /// Gives up ownership (the caller calls perfopt_value_free).
  perfopt_value *release() noexcept { return std::exchange(root_, nullptr); }

 private:
  perfopt_value *root_ = nullptr;
};

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

  /// mode "" = the optimizer's configured mode; warm-up arguments of any kind
  /// (none: shape-dependent work happens at the first run). Returns the note
  /// saying why compilation was skipped (PERFOPT_COMPILE_SKIPPED, on MPS: not
  /// a failure, the model stays usable as loaded), else std::nullopt.
  std::optional<std::string> compile(const std::string &mode = "", const Args &warmup = {}) {
    perfopt_status status = perfopt_model_compile_args(handle_, mode.empty() ? nullptr : mode.c_str(),
                                                       warmup.data(), warmup.size());
    if (status == PERFOPT_COMPILE_SKIPPED) {
      const char *note = perfopt_last_error();
      return std::string(note ? note : "");
    }
    check(status);
    return std::nullopt;
  }
  /// Runs `iterations` passes and returns the JSON report. A report larger
  /// than the buffer is read back with perfopt_model_last_report (the passes
  /// are not run again).
  std::string warmup(const Args &args, uint32_t iterations = 3) const {
    std::string text(16384, '\0');
    size_t needed = 0;
    perfopt_status status =
        perfopt_model_warmup_args(handle_, args.data(), args.size(), iterations, text.data(), text.size(), &needed);
    if (status == PERFOPT_ERR_BUFFER_TOO_SMALL) return last_report(PERFOPT_REPORT_WARMUP);
    check(status);
    text.resize(needed - 1);
    return text;
  }
  /// forward(inputs): every output, owned. Too many outputs for the first
  /// slots are taken with perfopt_model_take_outputs (never a second run).
  std::vector<Tensor> run(const std::vector<DLTensor> &inputs) const {
    return collect([&](DLManagedTensor **out, size_t cap, size_t *n) {
      return perfopt_model_run(handle_, inputs.data(), inputs.size(), out, cap, n);
    });
  }
  /// Any batch size, in chunks of at most `max_batch` (0: automatic);
  /// non-tensor arguments go whole to every chunk.
  std::vector<Tensor> run_batched(const Args &args, int32_t max_batch = 0) const {
    return collect([&](DLManagedTensor **out, size_t cap, size_t *n) {
      return perfopt_model_run_batched_args(handle_, args.data(), args.size(), max_batch, out, cap, n);
    });
  }
  /// Outputs waiting after a run on this thread that had too few slots.
  std::vector<Tensor> take_outputs() const {
    return collect([&](DLManagedTensor **out, size_t cap, size_t *n) {
      return perfopt_model_take_outputs(handle_, out, cap, n);
    });
  }
  /// Any method ("" = forward) with arguments of any kind; the result as it is.
  Result call(const std::string &method, const Args &args = {}) const {
    perfopt_value *result = nullptr;
    check(perfopt_model_call(handle_, method.empty() ? nullptr : method.c_str(), args.data(), args.size(), &result));
    return Result(result);
  }
  /// The recommended batch; `report` (optional) receives the JSON. A report
  /// larger than the buffer is read back with perfopt_model_last_report
  /// (nothing is measured twice).
  int32_t recommend_batch(const Args &sample, std::string *report = nullptr) const {
    std::string text(16384, '\0');
    size_t needed = 0;
    int32_t batch = 0;
    perfopt_status status = perfopt_model_recommend_batch_args(handle_, sample.data(), sample.size(), &batch,
                                                               text.data(), text.size(), &needed);
    if (status == PERFOPT_ERR_BUFFER_TOO_SMALL) {
      // The work was done; the batch is in the kept report ("recommended_batch").
      text = last_report(PERFOPT_REPORT_RECOMMEND_BATCH);
      if (report) *report = text;
      return batch_from(text);
    }
    check(status);
    if (report) *report = text.substr(0, needed - 1);
    return batch;
  }
  /// Batch dimensions: inputs[i] is input i's, std::nullopt or
  /// PERFOPT_NOT_BATCHED for one passed whole; outputs[k] output k's. Empty
  /// lists reset to dimension 0.
  void set_batch_dims(const std::vector<std::optional<int32_t>> &inputs = {},
                      const std::vector<int32_t> &outputs = {}) {
    std::vector<int32_t> in;
    in.reserve(inputs.size());
    for (const std::optional<int32_t> &d : inputs) in.push_back(d.value_or(PERFOPT_NOT_BATCHED));
    check(perfopt_model_set_batch_dims(handle_, in.empty() ? nullptr : in.data(), in.size(),
                                       outputs.empty() ? nullptr : outputs.data(), outputs.size()));
  }
  /// The methods as JSON: [{"name", "schema", "arguments", "returns"}].
  std::string methods() const {
    return read_report([&](char *b, size_t n, size_t *need) { return perfopt_model_methods(handle_, b, n, need); });
  }
  /// The kept report of the last warm-up (PERFOPT_REPORT_WARMUP) or
  /// recommend_batch (PERFOPT_REPORT_RECOMMEND_BATCH).
  std::string last_report(int32_t kind) const {
    return read_report(
        [&](char *b, size_t n, size_t *need) { return perfopt_model_last_report(handle_, kind, b, n, need); });
  }
  /// How many outputs run() hands out, without running.
  size_t output_count() const {
    size_t count = 0;
    check(perfopt_model_output_count(handle_, &count));
    return count;
  }
  void set_options(perfopt_model_options options) { check(perfopt_model_set_options(handle_, &options)); }
  void set_options(Options options) { check(perfopt_model_set_options(handle_, options.get())); }
  static perfopt_model_options default_options() {
    perfopt_model_options options;
    check(perfopt_model_options_init(&options, sizeof options));
    return options;
  }
  std::string report() const {
    return read_report([&](char *b, size_t n, size_t *need) { return perfopt_model_report(handle_, b, n, need); });
  }
  perfopt_model *get() const noexcept { return handle_; }

 private:
  // Slots for the first try; a model with more outputs has them taken after.
  static constexpr size_t kSlots = 2;

  template <typename Call>
  std::vector<Tensor> collect(Call call) const {
    std::vector<DLManagedTensor *> slots(kSlots);
    size_t n = 0;
    perfopt_status status = call(slots.data(), slots.size(), &n);
    if (status == PERFOPT_ERR_BUFFER_TOO_SMALL && n > slots.size()) {
      // The model ran; its outputs wait for this thread: take them, do not run again.
      slots.resize(n);
      status = perfopt_model_take_outputs(handle_, slots.data(), slots.size(), &n);
    }
    check(status);
    std::vector<Tensor> outputs;
    outputs.reserve(n);
    for (size_t i = 0; i < n; ++i) outputs.emplace_back(slots[i]);
    return outputs;
  }

  static int32_t batch_from(const std::string &json) {
    const std::string key = "\"recommended_batch\":";
    size_t at = json.find(key);
    if (at == std::string::npos) throw std::runtime_error("perfopt: no recommended_batch in the report");
    return static_cast<int32_t>(std::stol(json.substr(at + key.size())));
  }

  perfopt_model *handle_ = nullptr;
};

inline Model Optimizer::load(const std::string &path, const std::string &name) { return Model(*this, path, name); }

}  // namespace perfopt

#endif  // PERFOPT_HPP
