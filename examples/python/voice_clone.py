"""The service's voice-clone service on perfopt: speaker embeddings for many
clips inside one inference scope. The clip's shape comes from the model
(NAME.inputs.json beside it, or a package's metadata).

    python examples/python/voice_clone.py MODELS_DIR [SPEAKER]   (speaker.pt: make fixtures)
"""
import sys
from pathlib import Path

import numpy as np

import perfopt


def main(models: Path, model: str) -> None:
    path = str(models / model)
    specs = perfopt.input_specs(path)
    if specs is None:
        sys.exit(f"{path}: no input specs (write {Path(path).with_suffix('.inputs.json')})")
    with perfopt.Optimizer() as optimizer, optimizer.load(path, "speaker") as encoder:
        encoder.compile("default")
        (template,) = perfopt.example_inputs(specs[:1], 6)
        clips = np.sin(0.01 * np.arange(template.size, dtype=np.float32)).reshape(template.shape)
        with optimizer.inference():  # the service's torch.inference_mode() block
            (embeddings,) = encoder.run_batched(clips)
        for i, e in enumerate(embeddings):
            print(f"clip {i}: embedding of {e.shape[0]}, norm {np.linalg.norm(e):.3f}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "build/fixtures"), sys.argv[2] if len(sys.argv) > 2 else "speaker.pt")
