"""The service's TTS backend on perfopt: initialise the optimizer, load and
compile the vocoder with a warm-up input, then synthesise. The input's shape
comes from the model (its package metadata, or NAME.inputs.json beside it):
a 100-bin vocoder works as an 80-bin one does.

    python examples/python/tts_backend.py MODELS_DIR [VOCODER]   (vocoder.pt: make fixtures)
"""
import sys
from pathlib import Path

import numpy as np

import perfopt


def main(models: Path, model: str) -> None:
    path = str(models / model)
    specs = perfopt.input_specs(path)
    if specs is None:
        sys.exit(f"{path}: no input specs (write {Path(path).with_suffix('.inputs.json')}, or export with perfopt.export)")
    with perfopt.Optimizer() as optimizer:  # device, TF32, threads: config and TRANSLATOR_*
        batch = optimizer.optimal_batch_size()
        with optimizer.load(path, "vocoder") as vocoder:
            silence = perfopt.example_inputs(specs, batch)
            note = vocoder.compile(None, silence)  # the configured mode
            if note:
                print(f"compile: {note}")
            warm = vocoder.warmup(silence, iterations=3)
            print(f"warm-up: first call {warm['first_call_ms']} ms, then {warm['steady']['p50_ms']} ms")
            mel = [np.linspace(0, 1, a.size, dtype=a.dtype).reshape(a.shape) for a in silence]
            with optimizer.inference():
                (audio,) = vocoder.run(*mel)
            print(f"synthesised {audio.shape[0]} waveform(s) of {audio.shape[-1]} samples "
                  f"from {specs[0]['name']} {list(mel[0].shape)}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "build/fixtures"), sys.argv[2] if len(sys.argv) > 2 else "vocoder.pt")
