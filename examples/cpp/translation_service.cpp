// The service's translation service on perfopt: a list of inputs batched
// with the measured batch size.
//
//   translation_service MODELS_DIR     (MODELS_DIR holds encoder.pt: make fixtures)
#include <cstdio>
#include <string>
#include <vector>

#include "perfopt.hpp"

int main(int argc, char **argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s MODELS_DIR\n", argv[0]);
    return 2;
  }
  try {
    perfopt::Optimizer optimizer;
    perfopt::Model encoder = optimizer.load(std::string(argv[1]) + "/encoder.pt", "encoder");
    encoder.compile("default");

    const int64_t tokens = 16, width = 64;
    std::vector<float> one(static_cast<size_t>(tokens * width), 0.5f);
    std::vector<int64_t> sample_shape{1, tokens, width};
    int32_t batch = encoder.recommend_batch({perfopt::host_tensor(one.data(), sample_shape)});
    std::printf("recommended batch %d (the service's rule says %d)\n", batch, optimizer.optimal_batch_size());

    // Twenty requests, embedded in chunks of the recommended size.
    const int64_t requests = 20;
    std::vector<float> queue(static_cast<size_t>(requests * tokens * width));
    for (size_t i = 0; i < queue.size(); ++i) queue[i] = static_cast<float>(i % 7) / 7.0f;
    std::vector<int64_t> shape{requests, tokens, width};
    perfopt::InferenceScope scope(optimizer);
    std::vector<perfopt::Tensor> encoded = encoder.run_batched({perfopt::host_tensor(queue.data(), shape)});
    std::vector<int64_t> dims = encoded.at(0).shape();
    std::printf("encoded %lld requests into [%lld, %lld, %lld]\n", static_cast<long long>(requests),
                static_cast<long long>(dims[0]), static_cast<long long>(dims[1]), static_cast<long long>(dims[2]));
    return 0;
  } catch (const perfopt::Error &e) {
    std::fprintf(stderr, "translation_service: %s\n", e.what());
    return 1;
  }
}
