// The service's TTS backend on perfopt: initialise the optimizer, load and
// compile the vocoder with a warm-up input, then synthesise.
//
//   tts_backend MODELS_DIR     (MODELS_DIR holds vocoder.pt: make fixtures)
#include <cstdio>
#include <vector>

#include "perfopt.hpp"

int main(int argc, char **argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s MODELS_DIR\n", argv[0]);
    return 2;
  }
  try {
    perfopt::Optimizer optimizer;  // device, TF32, threads: from the config and TRANSLATOR_*
    perfopt::Model vocoder = optimizer.load(std::string(argv[1]) + "/vocoder.pt", "vocoder");

    // A silent mel spectrogram of the shape requests will have: 80 bins x 32 frames.
    const int64_t batch = optimizer.optimal_batch_size();
    std::vector<int64_t> shape{batch, 80, 32};
    std::vector<float> mel(static_cast<size_t>(batch * 80 * 32), 0.0f);
    std::vector<DLTensor> warmup{perfopt::host_tensor(mel.data(), shape)};
    vocoder.compile("", warmup);  // the configured mode (reduce-overhead by default)
    std::printf("warm-up: %s\n", vocoder.warmup(warmup, 3).c_str());

    // Synthesise: a ramp as a stand-in for a real spectrogram.
    for (size_t i = 0; i < mel.size(); ++i) mel[i] = static_cast<float>(i % 80) / 80.0f;
    perfopt::InferenceScope scope(optimizer);
    std::vector<perfopt::Tensor> audio = vocoder.run({perfopt::host_tensor(mel.data(), shape)});
    std::vector<int64_t> out = audio.at(0).shape();
    std::printf("synthesised %lld waveform(s) of %lld samples\n", static_cast<long long>(out[0]),
                static_cast<long long>(out.back()));
    return 0;
  } catch (const perfopt::Error &e) {
    std::fprintf(stderr, "tts_backend: %s\n", e.what());
    return 1;
  }
}
