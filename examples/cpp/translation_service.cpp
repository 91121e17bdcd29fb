// The service's translation service on perfopt: a list of inputs batched
// with the measured batch size. The request's shape comes from
// NAME.inputs.json beside the model.
//
//   translation_service MODELS_DIR [ENCODER]     (MODELS_DIR holds encoder.pt: make fixtures)
#include <cstdio>
#include <string>
#include <vector>

#include "input_specs.hpp"
#include "perfopt.hpp"

int main(int argc, char **argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s MODELS_DIR\n", argv[0]);
    return 2;
  }
  try {
    perfopt::Optimizer optimizer;
    const std::string path = std::string(argv[1]) + "/" + (argc > 2 ? argv[2] : "encoder.pt");
    const examples::InputSpec spec = examples::read_input_specs(path).at(0);
    if (spec.dtype != "float32") throw std::runtime_error(path + ": this example feeds float32 requests");
    perfopt::Model encoder = optimizer.load(path, "encoder");
    encoder.compile("default");

    std::vector<int64_t> sample_shape = examples::with_batch(spec, 1);
    std::vector<float> one(examples::elements(sample_shape), 0.5f);
    int32_t batch = encoder.recommend_batch({perfopt::host_tensor(one.data(), sample_shape)});
    std::printf("recommended batch %d (the service's rule says %d)\n", batch, optimizer.optimal_batch_size());

    // Twenty requests, embedded in chunks of the recommended size.
    const int64_t requests = 20;
    std::vector<int64_t> shape = examples::with_batch(spec, requests);
    std::vector<float> queue(examples::elements(shape));
    for (size_t i = 0; i < queue.size(); ++i) queue[i] = static_cast<float>(i % 7) / 7.0f;
    perfopt::InferenceScope scope(optimizer);
    std::vector<perfopt::Tensor> encoded = encoder.run_batched({perfopt::host_tensor(queue.data(), shape)});
    std::vector<int64_t> dims = encoded.at(0).shape();
    std::printf("encoded %lld requests into a result of %zu dimensions, %lld first\n",
                static_cast<long long>(requests), dims.size(), static_cast<long long>(dims.at(0)));
    return 0;
  } catch (const std::exception &e) {
    std::fprintf(stderr, "translation_service: %s\n", e.what());
    return 1;
  }
}
