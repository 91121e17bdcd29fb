// include/perfopt.hpp: owners free on scope exit, errors become exceptions
// carrying the status, and the calls behave as the C ones do.
#include "perfopt.hpp"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

#define EXPECT(cond)                                                       \
  do {                                                                     \
    if (!(cond)) {                                                         \
      std::fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, #cond);     \
      return 1;                                                            \
    }                                                                      \
  } while (0)

int main() {
  const char *env = std::getenv("PERFOPT_FIXTURES");
  std::string fixtures = env ? env : "build/fixtures";
  perfopt::Optimizer optimizer(perfopt::Config().device("cpu").read_environment(false));
  EXPECT(optimizer.report().find("\"kind\":\"cpu\"") != std::string::npos);
  EXPECT(optimizer.optimal_batch_size() == 1);

  try {
    perfopt::Optimizer bad(perfopt::Config().device("tpu"));
    EXPECT(false);
  } catch (const perfopt::Error &e) {
    EXPECT(e.status() == PERFOPT_ERR_INVALID_ARGUMENT);
    EXPECT(std::string(e.what()).find("tpu") != std::string::npos);
  }
  try {
    optimizer.load(fixtures + "/missing.pt");
    EXPECT(false);
  } catch (const perfopt::Error &e) {
    EXPECT(e.status() == PERFOPT_ERR_FILE_NOT_FOUND);
  }

  perfopt::Model model = optimizer.load(fixtures + "/two_inputs.pt");
  std::vector<float> x(2 * 16, 1.0f), y(2 * 4, 2.0f);
  std::vector<int64_t> xs{2, 16}, ys{2, 4};
  std::vector<DLTensor> inputs{perfopt::host_tensor(x.data(), xs), perfopt::host_tensor(y.data(), ys)};
  model.compile("max-autotune", inputs);
  {
    perfopt::InferenceScope scope(optimizer);
    std::vector<perfopt::Tensor> out = model.run(inputs);
    EXPECT(out.size() == 2 && out[0].shape() == std::vector<int64_t>({2, 8}) && out[0].numel() == 16);
    std::vector<perfopt::Tensor> batched = model.run_batched(inputs, 1);
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
  options.error_tolerance = 1e-4;
  model.set_options(options);
  std::string report = model.report();
  EXPECT(report.find("\"candidates\":[") != std::string::npos);
  EXPECT(model.warmup(inputs, 2).find("\"success\":true") != std::string::npos);
  std::printf("perfopt.hpp: 1 passed, 0 failed\n");
  return 0;
}
