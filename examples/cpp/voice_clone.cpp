// The service's voice-clone service on perfopt: speaker embeddings for many
// clips inside one inference scope.
//
// The clip's shape comes from NAME.inputs.json beside the model.
//
//   voice_clone MODELS_DIR [SPEAKER]     (MODELS_DIR holds speaker.pt: make fixtures)
#include <cmath>
#include <cstdio>
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
    const std::string path = std::string(argv[1]) + "/" + (argc > 2 ? argv[2] : "speaker.pt");
    std::vector<int64_t> shape = examples::with_batch(examples::read_input_specs(path).at(0), 6);
    perfopt::Model encoder = optimizer.load(path, "speaker");
    encoder.compile("default");

    std::vector<float> audio(examples::elements(shape));
    for (size_t i = 0; i < audio.size(); ++i) audio[i] = std::sin(0.01f * static_cast<float>(i));

    perfopt::InferenceScope scope(optimizer);  // the service's torch.inference_mode() block
    std::vector<perfopt::Tensor> embeddings = encoder.run_batched({perfopt::host_tensor(audio.data(), shape)});
    const perfopt::Tensor &e = embeddings.at(0);
    std::vector<int64_t> dims = e.shape();
    for (int64_t c = 0; c < dims[0]; ++c) {
      double norm = 0;
      for (int64_t k = 0; k < dims[1]; ++k) norm += std::pow(e.data<float>()[c * dims[1] + k], 2);
      std::printf("clip %lld: embedding of %lld, norm %.3f\n", static_cast<long long>(c),
                  static_cast<long long>(dims[1]), std::sqrt(norm));
    }
    return 0;
  } catch (const std::exception &e) {
    std::fprintf(stderr, "voice_clone: %s\n", e.what());
    return 1;
  }
}
