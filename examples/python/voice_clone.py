"""The service's voice-clone service on perfopt: speaker embeddings for many
clips inside one inference scope.

    python examples/python/voice_clone.py MODELS_DIR   (speaker.pt: make fixtures)
"""
import sys
from pathlib import Path

import numpy as np

import perfopt


def main(models: Path) -> None:
    with perfopt.Optimizer() as optimizer, optimizer.load(str(models / "speaker.pt"), "speaker") as encoder:
        encoder.compile("default")
        clips = np.sin(0.01 * np.arange(6 * 50 * 40, dtype=np.float32)).reshape(6, 50, 40)
        with optimizer.inference():  # the service's torch.inference_mode() block
            (embeddings,) = encoder.run_batched(clips)
        for i, e in enumerate(embeddings):
            print(f"clip {i}: embedding of {e.shape[0]}, norm {np.linalg.norm(e):.3f}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "build/fixtures"))
