"""The activation fake quantizer's values and LSQ gradients, and the allocator setting."""
import pytest
import torch

from golden.malloc_tuning import keep_freed_memory
from quant.quantizers import fake_quant


def _explicit(x, s, z, lo, hi):
    """The plain expression with LSQ's gradient written out (inclusive code range)."""
    xs = x / s
    r = torch.round(xs) + z
    inside = (r >= lo) & (r <= hi)
    # inside: round(x/s) * s with d/dx = 1, d/ds = round(x/s) - x/s; outside: (clamped code - z) * s
    code_in = xs + (torch.round(xs) - xs).detach()
    return torch.where(inside, code_in * s, (r.clamp(lo, hi) - z) * s)


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (1, 6, 1, 1)])
def test_fake_quant_values_and_lsq_gradients(shape):
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(4, 6, 5, 5, generator=g) * 3
    s0 = torch.rand(shape, generator=g) * 0.05 + 0.02
    z = torch.randint(0, 256, shape, generator=g).float()
    x0[0, :, 0, 0] = ((255 - z) * s0).flatten()     # exactly on the top code: inside (LSQ)
    grad = torch.randn(x0.shape, generator=g)
    x1, s1 = x0.clone().requires_grad_(), s0.clone().requires_grad_()
    (fake_quant(x1, s1, z, 0, 255) * grad).sum().backward()
    x2, s2 = x0.clone().requires_grad_(), s0.clone().requires_grad_()
    ref = _explicit(x2, s2, z, 0, 255)
    (ref * grad).sum().backward()
    with torch.no_grad():
        assert torch.equal(fake_quant(x0, s0, z, 0, 255), ref)
        plain = (torch.round(x0 / s0) + z).clamp(0, 255)
        assert torch.equal(fake_quant(x0, s0, z, 0, 255), (plain - z) * s0)
    assert torch.allclose(x1.grad, x2.grad)
    assert torch.allclose(s1.grad, s2.grad, rtol=1e-4, atol=1e-3)
    inside = ((torch.round(x0 / s0) + z >= 0) & (torch.round(x0 / s0) + z <= 255)).float()
    assert torch.equal(x1.grad, grad * inside)
    assert 0 < inside.mean() < 1  # both branches exercised


def test_allocator_tuning_applies_on_glibc():
    import platform
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert keep_freed_memory()
