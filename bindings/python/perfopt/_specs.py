"""What a model's inputs look like, from the model's maker: the specs an
AOTInductor package made by perfopt.export carries in its metadata, or a
NAME.inputs.json file beside a model (perfopt.export and the fixture scripts
write one): [{"name": "mel", "dtype": "float32", "shape": [-1, 80, 100]}],
-1 being the batch (or any size). Examples and tools read shapes here
instead of hard-coding them."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Optional


def input_specs(model_path: str) -> Optional[List[Dict[str, Any]]]:
    """The model's input specs, or None when its maker left none.

    A package's own metadata comes first: it is what the library checks the
    inputs against, so a NAME.inputs.json beside it that says otherwise (an
    older export's, a hand edit) does not change the answer. Both are read
    as the library reads JSON (the last of duplicate keys wins)."""
    path = Path(model_path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as package:
            for name in package.namelist():
                if "data/aotinductor/" in name and name.endswith("wrapper_metadata.json"):
                    metadata = json.loads(package.read(name))
                    if "perfopt_inputs" in metadata:
                        found: List[Dict[str, Any]] = json.loads(metadata["perfopt_inputs"])
                        return found
    # A bundle (a folder) keeps them inside.
    beside = path / "inputs.json" if path.is_dir() else path.with_suffix(".inputs.json")
    if beside.exists():
        specs: List[Dict[str, Any]] = json.loads(beside.read_text())
        return specs
    return None


def example_inputs(specs: List[Dict[str, Any]], batch: int = 1, fill: float = 0.0) -> List[Any]:
    """Arrays shaped as `specs`, with `batch` where a spec says -1: floats
    filled with `fill`, integers and booleans with zeros and ones."""
    import numpy as np

    arrays = []
    for spec in specs:
        shape = [batch if d < 0 else d for d in spec["shape"]]
        dtype = np.dtype(spec["dtype"])
        if dtype.kind == "f":
            arrays.append(np.full(shape, fill, dtype))
        elif "mask" in spec.get("name", "") or dtype.kind == "b":
            arrays.append(np.ones(shape, dtype))
        else:
            arrays.append(np.zeros(shape, dtype))
    return arrays
