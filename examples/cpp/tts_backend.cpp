// The service's TTS backend on perfopt: initialise the optimizer, load and
// compile the vocoder with a warm-up input, then synthesise. The input's shape
// comes from NAME.inputs.json beside the model: a 100-bin vocoder works as an
// 80-bin one does.
//
//   tts_backend MODELS_DIR [VOCODER]     (MODELS_DIR holds vocoder.pt: make fixtures)
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
    perfopt::Optimizer optimizer;  // device, TF32, threads: from the config and TRANSLATOR_*
    const std::string path = std::string(argv[1]) + "/" + (argc > 2 ? argv[2] : "vocoder.pt");
    const examples::InputSpec spec = examples::read_input_specs(path).at(0);
    perfopt::Model vocoder = optimizer.load(path, "vocoder");

    // A silent spectrogram of the shape requests will have.
    const int64_t batch = optimizer.optimal_batch_size();
    std::vector<int64_t> shape = examples::with_batch(spec, batch);
    std::vector<float> mel(examples::elements(shape), 0.0f);
    std::vector<DLTensor> warmup{perfopt::host_tensor(mel.data(), shape)};
    if (auto note = vocoder.compile("", warmup)) std::printf("compile: %s\n", note->c_str());  // the configured mode
    std::printf("warm-up: %s\n", vocoder.warmup(warmup, 3).c_str());

    // Synthesise: a ramp as a stand-in for a real spectrogram.
    for (size_t i = 0; i < mel.size(); ++i) mel[i] = static_cast<float>(i % 97) / 97.0f;
    perfopt::InferenceScope scope(optimizer);
    std::vector<perfopt::Tensor> audio = vocoder.run({perfopt::host_tensor(mel.data(), shape)});
    std::vector<int64_t> out = audio.at(0).shape();
    std::printf("synthesised %lld waveform(s) of %lld samples\n", static_cast<long long>(out[0]),
                static_cast<long long>(out.back()));
    return 0;
  } catch (const std::exception &e) {
    std::fprintf(stderr, "tts_backend: %s\n", e.what());
    return 1;
  }
}
