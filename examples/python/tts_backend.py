"""The service's TTS backend on perfopt: initialise the optimizer, load and
compile the vocoder with a warm-up input, then synthesise.

    python examples/python/tts_backend.py MODELS_DIR   (vocoder.pt: make fixtures)
"""
import sys
from pathlib import Path

import numpy as np

import perfopt


def main(models: Path) -> None:
    with perfopt.Optimizer() as optimizer:  # device, TF32, threads: config and TRANSLATOR_*
        batch = optimizer.optimal_batch_size()
        with optimizer.load(str(models / "vocoder.pt"), "vocoder") as vocoder:
            silence = np.zeros((batch, 80, 32), np.float32)
            vocoder.compile(None, [silence])  # the configured mode
            warm = vocoder.warmup([silence], iterations=3)
            print(f"warm-up: first call {warm['first_call_ms']} ms, then {warm['steady']['p50_ms']} ms")
            mel = np.linspace(0, 1, batch * 80 * 32, dtype=np.float32).reshape(batch, 80, 32)
            with optimizer.inference():
                (audio,) = vocoder.run(mel)
            print(f"synthesised {audio.shape[0]} waveform(s) of {audio.shape[-1]} samples")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "build/fixtures"))
