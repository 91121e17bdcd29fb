"""The service's translation service on perfopt: a list of inputs batched
with the measured batch size.

    python examples/python/translation_service.py MODELS_DIR   (encoder.pt: make fixtures)
"""
import sys
from pathlib import Path

import numpy as np

import perfopt


def main(models: Path) -> None:
    with perfopt.Optimizer() as optimizer, optimizer.load(str(models / "encoder.pt"), "encoder") as encoder:
        encoder.compile("default")
        report = encoder.recommend_batch(np.full((1, 16, 64), 0.5, np.float32))
        print(f"recommended batch {report['recommended_batch']} ({report['reason']}); "
              f"the service's rule says {optimizer.optimal_batch_size()}")
        requests = [np.random.default_rng(i).standard_normal((16, 64), dtype=np.float32) for i in range(20)]
        with optimizer.inference():
            (encoded,) = encoder.run_batched(np.stack(requests))
        print(f"encoded {len(requests)} requests into {list(encoded.shape)}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "build/fixtures"))
