"""The service's translation service on perfopt: a list of requests batched
with the measured batch size. The request's shape and dtype come from the
model (NAME.inputs.json beside it, or a package's metadata), so an encoder
over token ids works as one over features does.

    python examples/python/translation_service.py MODELS_DIR [ENCODER]   (encoder.pt: make fixtures)
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
    with perfopt.Optimizer() as optimizer, optimizer.load(path, "encoder") as encoder:
        encoder.compile("default")
        report = encoder.recommend_batch(*perfopt.example_inputs(specs, 1, fill=0.5))
        print(f"recommended batch {report['recommended_batch']} ({report['reason']}); "
              f"the service's rule says {optimizer.optimal_batch_size()}")
        rng = np.random.default_rng(0)
        requests = []
        for _ in range(20):
            (one,) = perfopt.example_inputs(specs[:1], 1)
            if one.dtype.kind == "f":
                one = rng.standard_normal(one.shape).astype(one.dtype)
            else:
                one = rng.integers(0, 100, one.shape).astype(one.dtype)
            requests.append(one[0])
        with optimizer.inference():
            (encoded,) = encoder.run_batched(np.stack(requests))
        print(f"encoded {len(requests)} requests into {list(encoded.shape)}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "build/fixtures"), sys.argv[2] if len(sys.argv) > 2 else "encoder.pt")
