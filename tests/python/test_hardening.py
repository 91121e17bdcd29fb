"""Regression tests of the hardening issue (#18), as the defects were found
from Python: each failed before its fix."""
import os
import typing
from pathlib import Path

import numpy as np
import pytest

import perfopt

FIXTURES = Path(os.environ.get("PERFOPT_FIXTURES", Path(__file__).resolve().parents[2] / "build" / "fixtures"))


def test_type_hints_of_the_public_classes_resolve():
    # Before: NameError: name 'Optimizer' is not defined.
    hints = typing.get_type_hints(perfopt.Model.__init__)
    assert hints["optimizer"] is perfopt.Optimizer
    for owner in (perfopt.Optimizer, perfopt.Model):
        for name, member in vars(owner).items():
            if callable(member) and not name.startswith("__"):
                typing.get_type_hints(member)


def test_negated_and_conjugated_torch_views_run_as_their_values():
    torch = pytest.importorskip("torch")
    with perfopt.Optimizer("cpu", read_environment=False) as opt, opt.load(str(FIXTURES / "vocoder.pt")) as model:
        re = torch.rand(2, 80, 32)
        im = torch.rand(2, 80, 32)
        z = torch.complex(re, im)
        negated = z.conj().imag  # a view with the negative bit: its values are -im
        assert negated.is_neg()
        (got,) = model.run(negated)
        (want,) = model.run((-im).contiguous())
        # Before: it ran on +im, the stored values (a wrong answer, no error).
        np.testing.assert_allclose(got, want, rtol=0, atol=0)
        (plain,) = model.run(im.contiguous())
        assert not np.allclose(got, plain)
