// include/perfopt.hpp: owners free on scope exit, errors become exceptions
// carrying the status, and the calls behave as the C ones do. Each section
// below is one part of the layer, against the fixtures (make_fixtures.py).
#include "perfopt.hpp"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#define EXPECT(cond)                                                       \
  do {                                                                     \
    if (!(cond)) {                                                         \
      std::fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, #cond);     \
      return 1;                                                            \
    }                                                                      \
  } while (0)

namespace {

std::string fixtures() {
  const char *env = std::getenv("PERFOPT_FIXTURES");
  return env ? env : "build/fixtures";
}

// A little-endian float32 .npy in C order (what make_fixtures.py writes).
struct Npy {
  std::vector<int64_t> shape;
  std::vector<float> data;
  DLTensor dl() const { return perfopt::host_tensor(data.data(), shape); }
};

Npy npy(const std::string &name) {
  Npy t;
  std::string path = fixtures() + "/" + name;
  FILE *f = std::fopen(path.c_str(), "rb");
  if (!f) throw std::runtime_error("cannot open " + path);
  unsigned char magic[10];
  if (std::fread(magic, 1, 10, f) != 10) throw std::runtime_error("short " + path);
  size_t header_len = magic[8] | (magic[9] << 8);
  std::string header(header_len, '\0');
  if (std::fread(header.data(), 1, header_len, f) != header_len) throw std::runtime_error("short " + path);
  if (header.find("'<f4'") == std::string::npos) throw std::runtime_error("not float32: " + path);
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
  t.data.resize(numel);
  if (std::fread(t.data.data(), sizeof(float), numel, f) != numel) throw std::runtime_error("short " + path);
  std::fclose(f);
  return t;
}

std::vector<int64_t> shape_of(const DLTensor &t) { return std::vector<int64_t>(t.shape, t.shape + t.ndim); }

// Same shape and every element within tol * max(1, |want|).
bool close(const DLTensor &got, const Npy &want, float tol = 1e-5f) {
  if (got.dtype.code != kDLFloat || got.dtype.bits != 32 || shape_of(got) != want.shape) return false;
  const float *g = reinterpret_cast<const float *>(static_cast<const char *>(got.data) + got.byte_offset);
  for (size_t i = 0; i < want.data.size(); ++i)
    if (!(std::fabs(g[i] - want.data[i]) <= tol * std::fmax(1.0f, std::fabs(want.data[i])))) return false;
  return true;
}

// The integer after "key": in a JSON text, or -1.
long long json_int(const std::string &json, const std::string &key) {
  size_t at = json.find("\"" + key + "\":");
  return at == std::string::npos ? -1 : std::atoll(json.c_str() + at + key.size() + 3);
}

template <typename F>
perfopt_status status_of(F f) {
  try {
    f();
  } catch (const perfopt::Error &e) {
    return e.status();
  }
  return PERFOPT_OK;
}

int sections = 0;

// The ABI 2 surface, as it was: load, compile with tensors, run, batches,
// options, reports.
int basics(perfopt::Optimizer &optimizer) {
  EXPECT(perfopt::abi_version() == PERFOPT_ABI_VERSION);
  EXPECT(optimizer.report().find("\"kind\":\"cpu\"") != std::string::npos);
  EXPECT(optimizer.optimal_batch_size() == 1);
  {
    perfopt::Optimizer cached(perfopt::Config().device("cpu").read_environment(false).tuning_cache_dir("/tmp/perfopt-raii-cache"));
    EXPECT(cached.report().find("\"tuning_cache_dir\":\"/tmp/perfopt-raii-cache\"") != std::string::npos);
  }
  try {
    perfopt::Optimizer bad(perfopt::Config().device("tpu"));
    EXPECT(false);
  } catch (const perfopt::Error &e) {
    EXPECT(e.status() == PERFOPT_ERR_INVALID_ARGUMENT);
    EXPECT(std::string(e.what()).find("tpu") != std::string::npos);
  }
  try {
    optimizer.load(fixtures() + "/missing.pt");
    EXPECT(false);
  } catch (const perfopt::Error &e) {
    EXPECT(e.status() == PERFOPT_ERR_FILE_NOT_FOUND);
  }
  EXPECT(status_of([&] { optimizer.load(fixtures()); }) == PERFOPT_ERR_NOT_A_FILE);

  perfopt::Model model = optimizer.load(fixtures() + "/two_inputs.pt");
  EXPECT(model.output_count() == 2);
  std::vector<float> x(2 * 16, 1.0f), y(2 * 4, 2.0f);
  std::vector<int64_t> xs{2, 16}, ys{2, 4};
  std::vector<DLTensor> inputs{perfopt::host_tensor(x.data(), xs), perfopt::host_tensor(y.data(), ys)};
  // Compiling on the CPU is never skipped: no note.
  EXPECT(!model.compile("max-autotune", inputs).has_value());
  {
    perfopt::InferenceScope scope(optimizer);
    std::vector<perfopt::Tensor> out = model.run(inputs);
    EXPECT(out.size() == 2 && out[0].shape() == std::vector<int64_t>({2, 8}) && out[0].numel() == 16);
    std::vector<perfopt::Tensor> batched = model.run_batched(inputs, 1);
    EXPECT(batched.size() == 2);
    // Chunks of one may take other kernels than the batch of two (max-autotune
    // picks by measurement, so oneDNN's or plain GEMM): equal up to rounding.
    for (int64_t i = 0; i < 16; ++i) {
      float got = batched[0].data<float>()[i], want = out[0].data<float>()[i];
      EXPECT(std::fabs(got - want) <= 1e-5f * std::fmax(1.0f, std::fabs(want)));
    }
  }
  try {
    model.run({inputs[0]});
    EXPECT(false);
  } catch (const perfopt::Error &e) {
    EXPECT(e.status() == PERFOPT_ERR_INVALID_ARGUMENT);
  }
  perfopt_model_options options = perfopt::Model::default_options();
  EXPECT(options.struct_size == sizeof(perfopt_model_options));
  EXPECT(options.tuning_cache_dir == nullptr);
  options.error_tolerance = 1e-4;
  model.set_options(options);
  model.set_options(perfopt::Options().error_tolerance(1e-4).tuning_budget_ms(500));
  EXPECT(status_of([&] { model.set_options(perfopt::Options().tuning_budget_ms(700000)); }) ==
         PERFOPT_ERR_INVALID_ARGUMENT);
  model.set_options(perfopt::Options().precision(PERFOPT_PRECISION_ALLOW_REDUCED).reduced_tolerance(5e-2));
  EXPECT(status_of([&] { model.set_options(perfopt::Options().min_cosine(1.5)); }) ==
         PERFOPT_ERR_INVALID_ARGUMENT);
  model.set_options(perfopt::Options().precision(PERFOPT_PRECISION_FP32));
  std::string report = model.report();
  EXPECT(report.find("\"candidates\":[") != std::string::npos);

  // warmup: the report, kept for last_report (read back without running).
  std::string warm = model.warmup(inputs, 2);
  EXPECT(warm.find("\"success\":true") != std::string::npos);
  EXPECT(model.last_report(PERFOPT_REPORT_WARMUP) == warm);
  // The C call with a buffer too small did the work once; last_report has it.
  char tiny[8];
  size_t needed = 0;
  EXPECT(perfopt_model_warmup(model.get(), inputs.data(), 2, 3, tiny, sizeof tiny, &needed) ==
         PERFOPT_ERR_BUFFER_TOO_SMALL);
  std::string kept = model.last_report(PERFOPT_REPORT_WARMUP);
  EXPECT(kept.size() + 1 == needed && kept != warm && json_int(kept, "iterations") == 3);
  EXPECT(status_of([&] { model.last_report(PERFOPT_REPORT_RECOMMEND_BATCH); }) == PERFOPT_ERR_INVALID_ARGUMENT);
  EXPECT(status_of([&] { model.last_report(9); }) == PERFOPT_ERR_INVALID_ARGUMENT);
  ++sections;
  return 0;
}

// perfopt::Value and perfopt::Args own what they point at; copies and moves
// keep every pointer on their own storage.
int values() {
  std::vector<float> data(6, 1.0f);
  perfopt::Value tensor;
  {
    std::vector<int64_t> shape{2, 3};  // gone before the Value is used
    tensor = perfopt::host_tensor(data.data(), shape);
  }
  EXPECT(tensor.kind() == PERFOPT_VALUE_TENSOR);
  EXPECT(tensor.get().struct_size == sizeof(perfopt_value));
  EXPECT(tensor.get().tensor->ndim == 2 && tensor.get().tensor->shape[1] == 3);
  EXPECT(tensor.get().tensor->data == data.data());

  perfopt::Value a = 7, b = int64_t(1) << 40, c = 2.5, d = true, e = "vad", f = std::string("x\0y", 3);
  EXPECT(a.kind() == PERFOPT_VALUE_INT && a.get().int_value == 7);
  EXPECT(b.kind() == PERFOPT_VALUE_INT && b.get().int_value == int64_t(1) << 40);
  EXPECT(c.kind() == PERFOPT_VALUE_DOUBLE && c.get().double_value == 2.5);
  EXPECT(d.kind() == PERFOPT_VALUE_BOOL && d.get().int_value == 1);
  EXPECT(e.kind() == PERFOPT_VALUE_STRING && e.get().length == 3 && std::memcmp(e.get().string, "vad", 3) == 0);
  EXPECT(f.get().length == 3);
  EXPECT(perfopt::Value::none().kind() == PERFOPT_VALUE_NONE);
  perfopt::Value null = nullptr;
  EXPECT(null.kind() == PERFOPT_VALUE_NONE);
  const char *no_string = nullptr;
  bool refused = false;
  try {
    perfopt::Value bad = no_string;
  } catch (const std::invalid_argument &) {
    refused = true;
  }
  EXPECT(refused);
  EXPECT(perfopt::Value(2.5f).kind() == PERFOPT_VALUE_DOUBLE);

  perfopt::Value nested = perfopt::Value::list({1, perfopt::Value::tuple({"short", std::string(100, 'x')}), tensor});
  EXPECT(nested.kind() == PERFOPT_VALUE_LIST && nested.get().length == 3);
  // A copy, then the original destroyed: the copy points at its own storage.
  perfopt::Value copy = nested;
  { perfopt::Value gone = std::move(nested); }
  const perfopt_value &root = copy.get();
  EXPECT(root.items[0].int_value == 1);
  EXPECT(root.items[1].kind == PERFOPT_VALUE_TUPLE && root.items[1].length == 2);
  EXPECT(std::string(root.items[1].items[0].string, root.items[1].items[0].length) == "short");
  EXPECT(root.items[1].items[1].length == 100 && root.items[1].items[1].string[99] == 'x');
  EXPECT(root.items[2].tensor->shape[0] == 2 && root.items[2].tensor->shape[1] == 3);

  perfopt::Args args = {tensor, 16000, perfopt::Value::list({})};
  perfopt::Args moved = std::move(args);
  perfopt::Args copied = moved;
  moved = {};
  EXPECT(moved.empty() && moved.data() == nullptr);
  EXPECT(copied.size() == 3 && copied.data()[1].int_value == 16000 && copied.data()[2].length == 0);
  EXPECT(copied.data()[0].tensor->shape[0] == 2);
  ++sections;
  return 0;
}

// The stateful stream: forward(x, sr) through call() and run_batched(),
// equal to PyTorch's within 1e-5 in every mode, compiled with warm-up
// arguments (which leave the state alone), then reset_states() and again.
int stateful(perfopt::Optimizer &optimizer) {
  std::vector<Npy> chunks, expected;
  for (int i = 0; i < 20; ++i) {
    chunks.push_back(npy("stateful.chunk" + std::to_string(i) + ".npy"));
    expected.push_back(npy("stateful.expected" + std::to_string(i) + ".npy"));
  }
  for (const char *mode : {"none", "default", "max-autotune"}) {
    perfopt::Model model = optimizer.load(fixtures() + "/stateful.pt", std::string("stateful-") + mode);
    model.set_options(perfopt::Options().tuning_budget_ms(500));
    EXPECT(model.output_count() == 1);
    std::string methods = model.methods();
    EXPECT(methods.find("\"name\":\"reset_states\"") != std::string::npos);
    EXPECT(methods.find("\"name\":\"sr\",\"type\":\"int\"") != std::string::npos);
    EXPECT(!model.compile(mode, {chunks[0].dl(), 16000}).has_value());
    auto calls = [&] {
      perfopt::Result encoded = model.call("encode", {chunks[0].dl()});
      return encoded.kind() == PERFOPT_VALUE_TUPLE && encoded.size() == 2 &&
                     encoded[0].kind() == PERFOPT_VALUE_TENSOR
                 ? encoded[1].as_int()
                 : -1;
    };
    EXPECT(calls() == 0);  // the warm-up runs left the state as it was
    for (int pass = 0; pass < 2; ++pass) {
      for (int i = 0; i < 20; ++i) {
        if (i % 2 == 0) {
          perfopt::Result r = model.call("forward", {chunks[i].dl(), 16000});
          EXPECT(r.kind() == PERFOPT_VALUE_TENSOR && close(r.tensor(), expected[i]));
          perfopt::Tensor y = r.take_tensor();  // owned now; the Result frees the rest
          EXPECT(close(y.dl(), expected[i]));
        } else {
          std::vector<perfopt::Tensor> out = model.run_batched({chunks[i].dl(), 16000}, 1);
          EXPECT(out.size() == 1 && close(out[0].dl(), expected[i]));
        }
        if (i == 9) {
          // A warm-up mid-stream leaves the state too; its report is kept.
          std::string warm = model.warmup({chunks[i].dl(), 16000}, 2);
          EXPECT(warm.find("\"success\":true") != std::string::npos);
          EXPECT(model.last_report(PERFOPT_REPORT_WARMUP) == warm);
        }
      }
      EXPECT(calls() == 20);
      perfopt::Result none = model.call("reset_states");
      EXPECT(none.is_none());
      EXPECT(calls() == 0);
    }
    // A taken tensor is the caller's; reading it again from the result is refused.
    perfopt::Result r = model.call("", {chunks[0].dl(), 16000});
    perfopt::Tensor taken = r.take_tensor();
    bool refused = false;
    try {
      r.take_tensor();
    } catch (const std::logic_error &) {
      refused = true;
    }
    EXPECT(refused);
    // An output fed back as an argument (perfopt::Value from a Tensor).
    perfopt::Result encoded = model.call("encode", {taken});
    EXPECT(encoded[0].tensor().ndim == 2 && encoded[1].as_int() == 1);
    model.call("reset_states");
    // Errors name the argument and the method.
    try {
      model.call("forward", {chunks[0].dl(), "16000"});
      EXPECT(false);
    } catch (const perfopt::Error &e) {
      EXPECT(e.status() == PERFOPT_ERR_INVALID_ARGUMENT && std::string(e.what()).find("`sr`") != std::string::npos);
    }
    EXPECT(status_of([&] { model.call("nope"); }) == PERFOPT_ERR_INVALID_ARGUMENT);
    EXPECT(calls() == 0);
  }
  ++sections;
  return 0;
}

// Every argument kind, and a result mixing them.
int kinds(perfopt::Optimizer &optimizer) {
  perfopt::Model model = optimizer.load(fixtures() + "/kinds.pt");
  Npy x = npy("kinds.x.npy"), y = npy("kinds.y.npy");
  std::vector<float> twos(6, 2.0f), ones(6, 1.0f);
  std::vector<int64_t> shape{2, 3};
  DLTensor maybe = perfopt::host_tensor(twos.data(), shape), one = perfopt::host_tensor(ones.data(), shape);
  perfopt::Args args = {x.dl(), 3, 0.5, true, "vad", maybe, perfopt::Value::list({one, one}),
                        perfopt::Value::list({1, 2}), perfopt::Value::tuple({2, 0.25})};
  EXPECT(!model.compile("default", args).has_value());
  perfopt::Result r = model.call("forward", args);
  EXPECT(r.kind() == PERFOPT_VALUE_TUPLE && r.size() == 5);
  EXPECT(r[0].kind() == PERFOPT_VALUE_TENSOR && close(r[0].tensor(), y));
  EXPECT(r[1].kind() == PERFOPT_VALUE_INT && r[1].as_int() == 5);
  EXPECT(r[2].kind() == PERFOPT_VALUE_BOOL && r[2].as_bool() == false);
  EXPECT(r[3].kind() == PERFOPT_VALUE_STRING && r[3].as_string() == "vad!");
  EXPECT(r[3].get()->string[4] == '\0');  // NUL-terminated too
  EXPECT(r[4].kind() == PERFOPT_VALUE_LIST && r[4].int_list() == std::vector<int64_t>({2, 4}));
  bool wrong_kind = false;
  try {
    r[1].as_string();
  } catch (const std::invalid_argument &) {
    wrong_kind = true;
  }
  EXPECT(wrong_kind);
  perfopt::Tensor kept = r[0].take_tensor();
  EXPECT(close(kept.dl(), y));

  // Conversions to the schema's types: an int where a float is wanted, a list
  // where a tuple is; None for an Optional. y = -(x*1 + 3 + 2*0.25 + 1) = -5.5.
  perfopt::Result converted = model.call("", {x.dl(), 3, 1, true, "", perfopt::Value::none(),
                                              perfopt::Value::list({one}), perfopt::Value::list({}),
                                              perfopt::Value::list({2, 0.25})});
  EXPECT(converted[1].as_int() == 4 && converted[3].as_string() == "!" && converted[4].int_list().empty());
  const DLTensor &t = converted[0].tensor();
  for (int i = 0; i < 6; ++i) EXPECT(std::fabs(static_cast<const float *>(t.data)[i] + 5.5f) < 1e-6f);

  std::string warm = model.warmup(args, 2);
  EXPECT(warm.find("\"success\":true") != std::string::npos && model.last_report(PERFOPT_REPORT_WARMUP) == warm);
  ++sections;
  return 0;
}

// The LSTM whose state carries the batch in dimension 1, and a mask with none.
int lstm(perfopt::Optimizer &optimizer) {
  perfopt::Model model = optimizer.load(fixtures() + "/lstm_state.pt");
  Npy x = npy("lstm_state.input0.npy"), h = npy("lstm_state.input1.npy"), c = npy("lstm_state.input2.npy"),
      mask = npy("lstm_state.input3.npy");
  std::vector<Npy> want{npy("lstm_state.output0.npy"), npy("lstm_state.output1.npy"), npy("lstm_state.output2.npy")};
  EXPECT(model.output_count() == 3);
  model.set_batch_dims({0, 1, 1, std::nullopt}, {0, 1, 1});
  model.set_batch_dims({0, 1, 1, PERFOPT_NOT_BATCHED}, {0, 1, 1});  // the same, spelled in C
  perfopt::Args all = {x.dl(), h.dl(), c.dl(), mask.dl()};

  // Three outputs: more than the first slots, taken without a second run.
  long long before = json_int(model.report(), "calls");
  std::vector<perfopt::Tensor> whole = model.run({x.dl(), h.dl(), c.dl(), mask.dl()});
  EXPECT(json_int(model.report(), "calls") == before + 1);
  EXPECT(whole.size() == 3);
  for (int k = 0; k < 3; ++k) EXPECT(close(whole[k].dl(), want[k]));

  std::vector<perfopt::Tensor> batched = model.run_batched(all, 2);  // chunks of 2, 2, 1
  EXPECT(batched.size() == 3);
  for (int k = 0; k < 3; ++k) EXPECT(close(batched[k].dl(), want[k]));

  // One sample: x[0:1], and h[:, 0:1], c[:, 0:1] as strided views.
  std::vector<int64_t> x1{1, 10, 8}, s1{2, 1, 16}, strides{5 * 16, 16, 1};
  DLTensor hx = perfopt::host_tensor(h.data.data(), s1), cx = perfopt::host_tensor(c.data.data(), s1);
  hx.strides = strides.data();
  cx.strides = strides.data();
  std::string report;
  int32_t batch = model.recommend_batch({perfopt::host_tensor(x.data.data(), x1), hx, cx, mask.dl()}, &report);
  EXPECT(batch >= 1);
  EXPECT(json_int(report, "recommended_batch") == batch);
  EXPECT(model.last_report(PERFOPT_REPORT_RECOMMEND_BATCH) == report);
  std::vector<perfopt::Tensor> automatic = model.run_batched(all);  // the recommended size
  for (int k = 0; k < 3; ++k) EXPECT(close(automatic[k].dl(), want[k]));

  // Reset: every input batched along dimension 0, so h (2 there) and x (5) disagree.
  model.set_batch_dims();
  EXPECT(status_of([&] { model.run_batched(all, 2); }) == PERFOPT_ERR_INVALID_ARGUMENT);
  EXPECT(status_of([&] { model.set_batch_dims({64}); }) == PERFOPT_ERR_INVALID_ARGUMENT);
  EXPECT(status_of([&] { model.set_batch_dims({-2}); }) == PERFOPT_ERR_INVALID_ARGUMENT);
  ++sections;
  return 0;
}

// Outputs own their memory: never the caller's input or a parameter.
int aliasing(perfopt::Optimizer &optimizer) {
  perfopt::Model model = optimizer.load(fixtures() + "/aliasing.pt");
  std::vector<float> data{1, 2, 3, 4, 5, 6};
  std::vector<int64_t> shape{2, 3};
  DLTensor input = perfopt::host_tensor(data.data(), shape);
  perfopt::Result same = model.call("", {input, 0});
  EXPECT(same.tensor().data != data.data() && static_cast<const float *>(same.tensor().data)[5] == 6.0f);
  perfopt::Result row = model.call("", {input, 1});
  EXPECT(shape_of(row.tensor()) == std::vector<int64_t>({3}) && static_cast<const float *>(row.tensor().data)[0] == 1);
  perfopt::Tensor weight = model.call("", {input, 2}).take_tensor();
  const_cast<float *>(weight.data<float>())[0] = 100.0f;
  perfopt::Result again = model.call("", {input, 2});
  EXPECT(static_cast<const float *>(again.tensor().data)[0] == 0.0f);
  EXPECT(static_cast<const float *>(again.tensor().data)[5] == 5.0f);

  // A dict result has no perfopt_value kind: refused with a message.
  perfopt::Model dict = optimizer.load(fixtures() + "/returns_dict.pt");
  try {
    dict.call("", {input});
    EXPECT(false);
  } catch (const perfopt::Error &e) {
    EXPECT(std::string(e.what()).find("Dict") != std::string::npos);
  }
  ++sections;
  return 0;
}

}  // namespace

int main() {
  perfopt::Optimizer optimizer(perfopt::Config().device("cpu").read_environment(false));
  int failed = 0;
  for (auto section : {basics, stateful, kinds, lstm, aliasing}) {
    try {
      failed += section(optimizer);
    } catch (const std::exception &e) {
      std::fprintf(stderr, "unexpected exception: %s\n", e.what());
      ++failed;
    }
  }
  try {
    failed += values();
  } catch (const std::exception &e) {
    std::fprintf(stderr, "unexpected exception: %s\n", e.what());
    ++failed;
  }
  std::printf("perfopt.hpp: %d passed, %d failed\n", sections, failed);
  return failed == 0 ? 0 : 1;
}
