"""pygen.ops.reparameterize_kl (and its stacked variant, reparameterize_kl_stacked) against the
reference twin, its gradients, its noise, its errors."""

from __future__ import annotations

import pytest
import torch
from conftest import FLOAT_DTYPES, assert_close, nested_derivatives, requires_cuda
from scipy import stats

from pygen.layers import GaussianReparameterize
from pygen.ops import logdet_dtype, reference, reparameterize_kl, reparameterize_kl_stacked

# Rows of 12: a multiple of 4 but not of the CUDA kernels' 8-element groups (the element path).
SHAPES = [(1, 1), (3, 7), (1000, 33), (2, 3, 5, 8), (6, 12), (4, 256)]
fused = torch.ops.pygen.reparameterize_kl  # (mu, logvar, noise, seed, n_samples)


def make_inputs(shape, dtype, device, n_samples=1, seed=0):
    gen = torch.Generator().manual_seed(seed)
    mu = torch.randn(shape, generator=gen, dtype=torch.float64)
    logvar = 0.5 * torch.randn(shape, generator=gen, dtype=torch.float64)
    z_shape = shape if n_samples == 1 else (n_samples, *shape)
    noise = torch.randn(z_shape, generator=gen, dtype=torch.float64)
    return [t.to(device=device, dtype=dtype) for t in (mu, logvar, noise)]


def seed_tensor(value: int, device="cpu") -> torch.Tensor:
    return torch.tensor([value], dtype=torch.int64, device=device)


@pytest.mark.parametrize("n_samples", [1, 3])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_values_match_reference(device, shape, dtype, n_samples):
    mu, logvar, noise = make_inputs(shape, dtype, device, n_samples)
    z, kl = reparameterize_kl(mu, logvar, noise, n_samples=n_samples)
    z_ref, kl_ref = reference.reparameterize_kl(
        mu.double(), logvar.double(), noise.double(), n_samples=n_samples
    )
    # The KL, a sum over the latent dimensions, is float32 for 16-bit inputs (as a flow's logdet).
    assert z.dtype == dtype and kl.dtype == logdet_dtype(dtype)
    assert z.shape == z_ref.shape and kl.shape == shape[:-1]
    assert_close(z, z_ref, dtype)
    assert_close(kl, kl_ref, kl.dtype, scale=max(1.0, shape[-1] ** 0.5))


@pytest.mark.parametrize("used", ["both", "z", "kl"])
@pytest.mark.parametrize("n_samples", [1, 2])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("shape", [(3, 7), (1000, 33), (2, 3, 5, 8)])
def test_gradients_match_reference(device, shape, dtype, n_samples, used):
    mu, logvar, noise = make_inputs(shape, dtype, device, n_samples)
    gen = torch.Generator().manual_seed(1)
    z_shape = noise.shape
    grad_z = torch.randn(z_shape, generator=gen, dtype=torch.float64).to(device)
    grad_kl = torch.randn(shape[:-1], generator=gen, dtype=torch.float64).to(device)

    def grads(op, m, lv, eps):
        m = m.detach().requires_grad_()
        lv = lv.detach().requires_grad_()
        eps = eps.detach().requires_grad_()
        z, kl = op(m, lv, eps, n_samples=n_samples)
        outputs = {"both": (z, kl), "z": (z,), "kl": (kl,)}[used]
        seeds = {"both": (grad_z, grad_kl), "z": (grad_z,), "kl": (grad_kl,)}[used]
        seeds = tuple(g.to(out.dtype) for g, out in zip(seeds, outputs, strict=True))
        return torch.autograd.grad(outputs, (m, lv, eps), seeds, allow_unused=True)

    got = grads(reparameterize_kl, mu, logvar, noise)
    want = grads(reference.reparameterize_kl, mu.double(), logvar.double(), noise.double())
    for g, w in zip(got, want, strict=True):
        if w is None:
            assert g is None or not g.any()
        else:
            assert_close(g, w, dtype, scale=n_samples)


# Second derivatives (gradgradcheck) come from the twin's arithmetic (pygen/ops/_higher_order.py).
@pytest.mark.parametrize(
    "check", [torch.autograd.gradcheck, torch.autograd.gradgradcheck], ids=lambda f: f.__name__
)
@pytest.mark.parametrize("n_samples", [1, 3])
def test_gradcheck_float64_explicit_and_internal_noise(device, n_samples, check):
    mu, logvar, noise = make_inputs((3, 5), torch.float64, device, n_samples)
    mu.requires_grad_()
    logvar.requires_grad_()
    noise.requires_grad_()
    seed = seed_tensor(7, device)
    assert check(lambda m, lv, e: fused(m, lv, e, None, n_samples), (mu, logvar, noise))
    assert check(lambda m, lv: fused(m, lv, None, seed, n_samples), (mu, logvar))


@pytest.mark.parametrize("seeded", [False, True])
def test_derivatives_to_third_order_match_the_twin(device, seeded):
    """Arguments derived from one another and cotangents that depend on the inputs: each order
    must be the partial derivatives, chained as the twin's are."""
    a, b, noise = make_inputs((4, 3), torch.float64, device, n_samples=2)
    if seeded:  # the noise the kernel draws, for the twin
        zeros = torch.zeros_like(a)
        noise = fused(zeros, zeros, None, seed_tensor(5, device), 2)[0]

    def run(op):
        def fn(a, b):
            mu, logvar = a * b.exp(), (a + b).tanh()
            if op is reference.reparameterize_kl or not seeded:
                return op(mu, logvar, noise, n_samples=2)
            return fused(mu, logvar, None, seed_tensor(5, device), 2)

        leaves = [t.detach().requires_grad_() for t in (a, b)]
        return nested_derivatives(fn, leaves)

    for got, want in zip(run(reparameterize_kl), run(reference.reparameterize_kl), strict=True):
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10)


def test_torch_func_transforms_run_the_twin(device):
    """Per-sample gradients by vmap of grad (which cannot run the C++ autograd) give what autograd
    gives through the fused op, with the same noise."""
    mu, logvar, noise = make_inputs((4, 3), torch.float64, device, n_samples=2)

    def loss(m, lv, e):  # one row
        z, kl = reparameterize_kl(m, lv, e, n_samples=2)
        return (z**2).sum() + kl

    grads = torch.func.vmap(torch.func.grad(loss, argnums=(0, 1)), in_dims=(0, 0, 1))(
        mu, logvar, noise
    )
    leaves = [t.detach().requires_grad_() for t in (mu, logvar)]
    z, kl = reparameterize_kl(*leaves, noise, n_samples=2)
    expected = torch.autograd.grad((z**2).sum() + kl.sum(), leaves)
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_autocast_promotes_to_the_widest_dtype(device):
    """In an autocast region a bfloat16 logvar next to a float32 mu runs in float32; all-bfloat16
    arguments stay bfloat16."""
    mu, logvar, noise = make_inputs((4, 3), torch.float32, device)
    half = logvar.bfloat16().requires_grad_()
    with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
        z, kl = reparameterize_kl(mu, half, noise)
        z16, _ = reparameterize_kl(mu.bfloat16(), half, noise.bfloat16())
    assert z.dtype == torch.float32 and z16.dtype == torch.bfloat16
    expected = reparameterize_kl(mu, half.float(), noise)
    torch.testing.assert_close((z, kl), expected, rtol=0, atol=0)
    (z.sum() + kl.sum()).backward()
    assert half.grad is not None and half.grad.dtype == torch.bfloat16


def sample_inputs(device):
    for n_samples in (1, 2):
        for grad in (False, True):
            mu, logvar, noise = make_inputs((4, 6), torch.float32, device, n_samples)
            mu.requires_grad_(grad)
            logvar.requires_grad_(grad)
            yield (mu, logvar, noise, None, n_samples)
            yield (mu, logvar, None, seed_tensor(3, device), n_samples)


def test_opcheck(device):
    for args in sample_inputs(device):
        torch.library.opcheck(fused, args)
    mu, logvar, noise = make_inputs((4, 6), torch.float32, device, 2)
    grad_z, grad_kl = torch.randn_like(noise), torch.randn(4, device=device)
    backward = torch.ops.pygen.reparameterize_kl_backward
    torch.library.opcheck(backward, (grad_z, grad_kl, mu, logvar, noise, None, 2))
    torch.library.opcheck(backward, (None, grad_kl, mu, logvar, None, seed_tensor(1, device), 2))
    # Transposed inputs: the kernels' gradients are contiguous, so must the fake ones be (else a
    # compiled backward asserts the strides of mu's).
    mu_t, logvar_t, noise_t = (t.t() for t in make_inputs((6, 4), torch.float32, device))
    grad_z, grad_kl = torch.randn(4, 6, device=device), torch.randn(4, device=device)
    torch.library.opcheck(backward, (grad_z, grad_kl, mu_t, logvar_t, noise_t, None, 1))
    # The halves of one tensor, read in place: the gradients stay contiguous.
    mu_h, logvar_h = torch.randn(4, 12, device=device).chunk(2, dim=-1)
    torch.library.opcheck(fused, (mu_h, logvar_h, None, seed_tensor(3, device), 1))
    torch.library.opcheck(
        backward, (grad_z, grad_kl, mu_h, logvar_h, None, seed_tensor(3, device), 1)
    )
    # 16-bit inputs: the KL and its gradient are float32.
    mu, logvar, noise = make_inputs((4, 6), torch.bfloat16, device, 1)
    torch.library.opcheck(fused, (mu.requires_grad_(), logvar, noise, None, 1))
    grad_z, grad_kl = torch.randn_like(noise), torch.randn(4, device=device)
    torch.library.opcheck(backward, (grad_z, grad_kl, mu, logvar, noise, None, 1))


def test_bad_gradients_raise():
    backward = torch.ops.pygen.reparameterize_kl_backward
    mu = torch.zeros(3, 4, dtype=torch.bfloat16)
    with pytest.raises(TypeError, match="grad_kl must have dtype Float, got BFloat16"):
        backward(None, torch.zeros(3, dtype=torch.bfloat16), mu, mu, mu, None, 1)
    with pytest.raises(ValueError, match=r"grad_kl must have shape \[3\], got \[4\]"):
        backward(None, torch.zeros(4), mu, mu, mu, None, 1)
    with pytest.raises(TypeError, match="grad_z has dtype Float but mu has dtype BFloat16"):
        backward(torch.zeros(3, 4), None, mu, mu, mu, None, 1)


def test_torch_compile_matches_eager(device):
    mu, logvar, noise = make_inputs((64, 16), torch.float32, device, 2)
    mu.requires_grad_()

    def loss(m, lv, eps):
        z, kl = reparameterize_kl(m, lv, eps, n_samples=2)
        return z.square().mean() + kl.mean()

    compiled = torch.compile(loss, fullgraph=True)
    eager_value = loss(mu, logvar, noise)
    compiled_value = compiled(mu, logvar, noise)
    torch.testing.assert_close(compiled_value, eager_value)
    torch.testing.assert_close(
        torch.autograd.grad(compiled_value, mu)[0], torch.autograd.grad(eager_value, mu)[0]
    )
    z, kl = torch.compile(lambda m, lv: reparameterize_kl(m, lv), fullgraph=True)(mu, logvar)
    assert z.shape == mu.shape and torch.isfinite(z).all()
    torch.testing.assert_close(kl, reference.reparameterize_kl(mu, logvar, noise[0])[1])


def test_internal_noise_is_reproducible_and_seeded(device):
    mu, logvar, _ = make_inputs((8, 32), torch.float32, device)
    torch.manual_seed(123)
    z1, kl1 = reparameterize_kl(mu, logvar)
    torch.manual_seed(123)
    z2, kl2 = reparameterize_kl(mu, logvar)
    z3, _ = reparameterize_kl(mu, logvar)
    assert torch.equal(z1, z2) and torch.equal(kl1, kl2)
    assert not torch.equal(z1, z3)
    gen_a = torch.Generator(device).manual_seed(5)
    gen_b = torch.Generator(device).manual_seed(5)
    za, _ = reparameterize_kl(mu, logvar, generator=gen_a)
    zb, _ = reparameterize_kl(mu, logvar, generator=gen_b)
    assert torch.equal(za, zb)


def draw_noise(shape, n_samples, seed, device="cpu") -> torch.Tensor:
    """The kernel's internal eps: with mu = 0 and logvar = 0, z is eps itself."""
    zeros = torch.zeros(shape, device=device)
    return fused(zeros, zeros, None, seed_tensor(seed, device), n_samples)[0]


def test_internal_noise_is_standard_normal_and_independent():
    # 2 x 1000 x 500 = 10^6 draws: a sample mean's standard error is 1e-3 and a sample variance's
    # is sqrt(2)*1e-3; the bounds are 5 standard errors. Correlations of independent draws have
    # standard error 1/sqrt(n) (n >= 5e5 pairs): bound 5/sqrt(n) < 7.1e-3.
    eps = draw_noise((1000, 500), 2, seed=2024).double()
    flat = eps.flatten()
    assert abs(flat.mean().item()) < 5e-3
    assert abs(flat.var().item() - 1.0) < 7.1e-3
    kurtosis = ((flat - flat.mean()) ** 4).mean() / flat.var() ** 2
    assert abs(kurtosis.item() - 3.0) < 0.05  # standard error sqrt(24/n) ~ 5e-3
    assert stats.kstest(flat[:200_000].numpy(), "norm").pvalue > 1e-3

    def corr(a, b):
        return torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1].item()

    assert abs(corr(eps[0, :, :-1], eps[0, :, 1:])) < 7.1e-3  # neighbours in a row
    assert abs(corr(eps[0, :-1], eps[0, 1:])) < 7.1e-3  # neighbouring rows
    assert abs(corr(eps[0], eps[1])) < 7.1e-3  # samples of the same row
    other = draw_noise((1000, 500), 1, seed=2025).double()
    assert abs(corr(eps[0], other)) < 7.1e-3  # different seeds


def test_backward_with_internal_noise_equals_explicit_noise(device):
    mu, logvar, _ = make_inputs((16, 12), torch.float32, device, 3)
    eps = draw_noise((16, 12), 3, seed=11, device=device)
    grad_z = torch.randn(3, 16, 12, device=device)
    grad_kl = torch.randn(16, device=device)

    def grads(noise, seed):
        m, lv = mu.detach().requires_grad_(), logvar.detach().requires_grad_()
        z, kl = fused(m, lv, noise, seed, 3)
        return z, torch.autograd.grad((z, kl), (m, lv), (grad_z, grad_kl))

    z_int, g_int = grads(None, seed_tensor(11, device))
    z_exp, g_exp = grads(eps, None)
    torch.testing.assert_close(z_int, z_exp, rtol=1e-6, atol=1e-6)
    for a, b in zip(g_int, g_exp, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_non_contiguous_inputs(device):
    mu, logvar, noise = make_inputs((33, 20), torch.float32, device)
    mu_t, logvar_t, noise_t = mu.t(), logvar.t(), noise.t()
    z, kl = reparameterize_kl(mu_t, logvar_t, noise_t)
    z_ref, kl_ref = reference.reparameterize_kl(mu_t, logvar_t, noise_t)
    torch.testing.assert_close(z, z_ref)
    torch.testing.assert_close(kl, kl_ref)
    sliced = torch.randn(10, 17, device=device)[:, 1:]  # offset and strided rows
    z, kl = reparameterize_kl(sliced, sliced, sliced)
    torch.testing.assert_close(z, reference.reparameterize_kl(sliced, sliced, sliced)[0])


def rows_apart(t: torch.Tensor, layout: str) -> torch.Tensor:
    """t's values with its rows (over the last dimension) laid out as ``layout`` says."""
    if layout == "half":  # the second half of an encoder's output, as chunk(2, dim=-1) gives it
        return torch.cat([torch.full_like(t, float("nan")), t], dim=-1).chunk(2, dim=-1)[1]
    if layout == "batch_slice":  # every other row of a batch twice as long
        wide = torch.stack([t, torch.full_like(t, float("nan"))], dim=-2).flatten(-3, -2)
        return wide[..., ::2, :]
    if layout == "expanded":  # one row read by every row (stride 0)
        return t[..., :1, :].expand_as(t)
    return t.transpose(-1, -2).contiguous().transpose(-1, -2)  # rows not contiguous: copied


@pytest.mark.parametrize("n_samples", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("layout", ["half", "batch_slice", "expanded", "transposed"])
@pytest.mark.parametrize("shape", [(6, 16), (2, 3, 16)])
def test_mu_and_logvar_rows_apart(device, shape, layout, dtype, n_samples):
    # The kernels read mu and logvar rows where they lie: the contiguous inputs' results.
    mu, logvar, noise = make_inputs(shape, dtype, device, n_samples)
    if layout == "expanded":
        mu, logvar = (t[..., :1, :].expand(shape).contiguous() for t in (mu, logvar))
    gen = torch.Generator().manual_seed(1)
    grad_z = torch.randn(noise.shape, generator=gen).to(device, dtype)
    grad_kl = torch.randn(shape[:-1], generator=gen).to(device, logdet_dtype(dtype))
    results = []
    for apart in (False, True):
        inputs = [rows_apart(t, layout) if apart else t.clone() for t in (mu, logvar)]
        inputs = [t.requires_grad_() for t in inputs]
        z, kl = reparameterize_kl(*inputs, noise, n_samples=n_samples)
        grads = torch.autograd.grad((z, kl), inputs, (grad_z, grad_kl))
        results.append((z, kl, *grads))
    for got, want in zip(*results, strict=True):
        assert_close(got, want, want.dtype)


def test_the_halves_of_an_encoder_output_are_not_copied():
    hidden = torch.randn(8, 2 * 16, requires_grad=True)
    mu, logvar = hidden.chunk(2, dim=-1)
    grad_z, grad_kl = torch.randn(8, 16), torch.randn(8)
    with torch.profiler.profile() as prof:
        z, kl = reparameterize_kl(mu, logvar)
        torch.autograd.backward((z, kl), (grad_z, grad_kl))
    ops = {event.name for event in prof.events()}
    assert "pygen::reparameterize_kl_backward" in ops
    assert not ops & {"aten::contiguous", "aten::clone", "aten::copy_"}


def test_overflowing_variance_leaves_the_unused_output_out_of_the_gradients(device):
    # exp(logvar) overflows: with the gradient of z alone or of the KL alone, the other output's
    # terms (zero gradient times an infinite factor) must vanish, as in the twin's gradients.
    mu = torch.zeros(2, 3, device=device, requires_grad=True)
    logvar = torch.full((2, 3), 180.0, device=device, requires_grad=True)
    noise = torch.ones(2, 3, device=device)
    for output in (0, 1):
        grads = []
        for op in (reparameterize_kl, reference.reparameterize_kl):
            out = op(mu, logvar, noise)[output]
            grads.append(torch.autograd.grad(out.sum(), (mu, logvar), materialize_grads=True))
        for got, want in zip(*grads, strict=True):
            assert torch.equal(got, want)


def test_empty_batch(device):
    mu = torch.zeros(0, 5, device=device, requires_grad=True)
    z, kl = reparameterize_kl(mu, mu)
    assert z.shape == (0, 5) and kl.shape == (0,)
    (z.sum() + kl.sum()).backward()
    assert mu.grad.shape == (0, 5)


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: (torch.zeros(3, 4), torch.zeros(3, 5)), ValueError, "logvar"),
        (lambda: (torch.zeros(3, 4, dtype=torch.int64), torch.zeros(3, 4)), TypeError, "mu"),
        (lambda: (torch.zeros(3, 4), torch.zeros(3, 4, dtype=torch.int32)), TypeError, "logvar"),
        (lambda: (torch.zeros(3, 4), torch.zeros(3, 4, dtype=torch.float64)), TypeError, "logvar"),
        (lambda: (torch.zeros(3, 0), torch.zeros(3, 0)), ValueError, "empty last"),
        (lambda: (torch.tensor(1.0), torch.tensor(1.0)), ValueError, "at least one dimension"),
    ],
)
def test_bad_inputs_raise(make, error, match):
    mu, logvar = make()
    with pytest.raises(error, match=match):
        reparameterize_kl(mu, logvar)


def test_bad_noise_and_sample_count_raise():
    mu = torch.zeros(3, 4)
    with pytest.raises(ValueError, match="n_samples"):
        reparameterize_kl(mu, mu, n_samples=0)
    with pytest.raises(ValueError, match="noise"):
        reparameterize_kl(mu, mu, torch.zeros(3, 5))
    with pytest.raises(ValueError, match="noise"):
        reparameterize_kl(mu, mu, torch.zeros(3, 4), n_samples=2)
    with pytest.raises(TypeError, match="noise"):
        reparameterize_kl(mu, mu, torch.zeros(3, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="n_samples"):
        GaussianReparameterize(n_samples=0)


def test_meta_mix_raises_and_all_meta_gives_the_shapes():
    # A meta tensor among real ones dispatches to the fake implementation, which must check the
    # devices as the kernel does (it returned uninitialized CPU tensors before).
    mu, meta = torch.zeros(3, 4), torch.zeros(3, 4, device="meta")
    with pytest.raises(RuntimeError, match="logvar is on meta but mu is on cpu"):
        reparameterize_kl(mu, meta)
    with pytest.raises(RuntimeError, match="noise is on meta but mu is on cpu"):
        reparameterize_kl(mu, mu, meta)
    z, kl = reparameterize_kl(meta, meta, meta)
    assert z.is_meta and z.shape == (3, 4) and kl.is_meta and kl.shape == (3,)


@requires_cuda
def test_cpu_cuda_mix_raises():
    with pytest.raises(RuntimeError, match="logvar is on"):
        reparameterize_kl(torch.zeros(3, 4, device="cuda"), torch.zeros(3, 4))
    with pytest.raises(RuntimeError, match="noise is on"):
        reparameterize_kl(torch.zeros(3, 4), torch.zeros(3, 4), torch.zeros(3, 4, device="cuda"))


@requires_cuda
@pytest.mark.parametrize("shape", [(5, 8), (7, 33), (3, 1024)])
def test_cuda_noise_equals_cpu_noise(shape):
    cpu = draw_noise(shape, 2, seed=99)
    gpu = draw_noise(shape, 2, seed=99, device="cuda").cpu()
    torch.testing.assert_close(gpu, cpu, rtol=1e-5, atol=1e-5)


def test_layer_matches_op_and_reference():
    mu, logvar, noise = make_inputs((6, 10), torch.float32, "cpu", 2)
    fused_layer = GaussianReparameterize(n_samples=2)
    reference_layer = GaussianReparameterize(n_samples=2, reference=True)
    for a, b in zip(
        fused_layer(mu, logvar, noise), reference_layer(mu, logvar, noise), strict=True
    ):
        torch.testing.assert_close(a, b)
    z, kl = fused_layer(mu, logvar)
    assert z.shape == (2, 6, 10) and kl.shape == (6,)
    assert "n_samples=2" in repr(fused_layer)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cpu_16_bit_outputs_round_like_torch(dtype):
    # z = mu + exp(0) * eps in float32, then one rounding to the 16-bit dtype: the kernel's own
    # conversions (written for its vector loops) against torch's, over 16 decades and specials.
    n = 1 << 16
    gen = torch.Generator().manual_seed(0)
    mu = (torch.randn(n, generator=gen) * torch.logspace(-12, 4, n)).to(dtype).view(64, -1)
    eps = (torch.randn(n, generator=gen) * torch.logspace(4, -12, n)).to(dtype).view(64, -1)
    mu[0, :6] = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 6e4])
    eps[0, :6] = torch.tensor([1.0, 1.0, 1.0, -0.0, -0.0, 6e4])
    z, _ = reparameterize_kl(mu, torch.zeros_like(mu), eps)
    expected = (mu.float() + eps.float()).to(dtype)
    same = (z.view(torch.int16) == expected.view(torch.int16)) | (z.isnan() & expected.isnan())
    assert same.all()


# The stacked variant: mu and logvar the halves of one tensor, stats (..., 2D).
fused_stacked = torch.ops.pygen.reparameterize_kl_stacked  # (stats, noise, seed, n_samples)
stacked_backward = torch.ops.pygen.reparameterize_kl_stacked_backward
STACKED_SHAPES = [(7, 12), (2, 3, 16), (2, 3, 2, 5)]  # mu's: 1, 2 and 3 batch dimensions


def stack(mu: torch.Tensor, logvar: torch.Tensor, layout: str = "contiguous") -> torch.Tensor:
    """stats (..., 2D): mu then logvar over the last dimension, laid out as ``layout`` says."""
    stats = torch.cat([mu, logvar], dim=-1)
    if layout == "slice":  # the middle of a wider tensor: rows read in place, 2D + 6 apart
        pad = torch.full(
            (*stats.shape[:-1], 3), float("nan"), dtype=stats.dtype, device=stats.device
        )
        return torch.cat([pad, stats, pad], dim=-1)[..., 3:-3]
    if layout == "transposed":  # rows not contiguous: the halves are copied
        return stats.transpose(-1, -2).contiguous().transpose(-1, -2)
    return stats


@pytest.mark.parametrize("layout", ["contiguous", "slice", "transposed"])
@pytest.mark.parametrize("n_samples", [1, 3])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("shape", STACKED_SHAPES)
def test_stacked_values_and_gradients_match_reference(device, shape, dtype, n_samples, layout):
    mu, logvar, noise = make_inputs(shape, dtype, device, n_samples)
    gen = torch.Generator().manual_seed(1)
    grad_z = torch.randn(noise.shape, generator=gen, dtype=torch.float64).to(device)
    grad_kl = torch.randn(shape[:-1], generator=gen, dtype=torch.float64).to(device)
    stats = stack(mu, logvar, layout).requires_grad_()
    z, kl = reparameterize_kl_stacked(stats, noise, n_samples=n_samples)
    (grad_stats,) = torch.autograd.grad((z, kl), stats, (grad_z.to(dtype), grad_kl.to(kl.dtype)))
    leaves = [t.double().requires_grad_() for t in (mu, logvar)]
    z_ref, kl_ref = reference.reparameterize_kl(*leaves, noise.double(), n_samples=n_samples)
    grads_ref = torch.autograd.grad((z_ref, kl_ref), leaves, (grad_z, grad_kl))
    assert z.dtype == dtype and kl.dtype == logdet_dtype(dtype)
    assert z.shape == z_ref.shape and kl.shape == shape[:-1]
    assert grad_stats.shape == stats.shape and grad_stats.is_contiguous()
    assert_close(z, z_ref, dtype)
    assert_close(kl, kl_ref, kl.dtype, scale=max(1.0, shape[-1] ** 0.5))
    assert_close(grad_stats, torch.cat(grads_ref, dim=-1), dtype, scale=n_samples)


@pytest.mark.parametrize("noise_given", [True, False], ids=["noise", "drawn"])
@pytest.mark.parametrize("layout", ["contiguous", "slice", "transposed"])
@pytest.mark.parametrize("n_samples", [1, 2])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_stacked_equals_the_halves_bitwise(device, dtype, n_samples, layout, noise_given):
    """The same kernels on the same rows: z (the same Philox stream for the same seed), kl and the
    gradients are those of reparameterize_kl on stats.chunk(2, dim=-1), bit for bit."""
    mu, logvar, noise = make_inputs((2, 5, 24), dtype, device, n_samples)
    grad_z = torch.randn_like(noise)
    noise = noise if noise_given else None
    grad_kl = torch.randn(2, 5, device=device, dtype=logdet_dtype(dtype))
    results = []
    for op in ("stacked", "halves"):
        stats = stack(mu, logvar, layout).requires_grad_()
        torch.manual_seed(7)
        if op == "stacked":
            z, kl = reparameterize_kl_stacked(stats, noise, n_samples=n_samples)
        else:
            z, kl = reparameterize_kl(*stats.chunk(2, dim=-1), noise, n_samples=n_samples)
        results.append((z, kl, *torch.autograd.grad((z, kl), stats, (grad_z, grad_kl))))
    for got, want in zip(*results, strict=True):
        assert torch.equal(got, want)


@pytest.mark.parametrize(
    "check", [torch.autograd.gradcheck, torch.autograd.gradgradcheck], ids=lambda f: f.__name__
)
@pytest.mark.parametrize("n_samples", [1, 3])
def test_stacked_gradcheck_float64(device, n_samples, check):
    mu, logvar, noise = make_inputs((3, 5), torch.float64, device, n_samples)
    stats = stack(mu, logvar).requires_grad_()
    noise.requires_grad_()
    seed = seed_tensor(7, device)
    assert check(lambda s, e: fused_stacked(s, e, None, n_samples), (stats, noise))
    assert check(lambda s: fused_stacked(s, None, seed, n_samples), (stats,))


def test_stacked_under_torch_func_runs_the_twin(device):
    mu, logvar, noise = make_inputs((4, 3), torch.float64, device, n_samples=2)
    stats = stack(mu, logvar)

    def loss(s, e):  # one row
        z, kl = reparameterize_kl_stacked(s, e, n_samples=2)
        return (z**2).sum() + kl

    grads = torch.func.vmap(torch.func.grad(loss), in_dims=(0, 1))(stats, noise)
    leaf = stats.detach().requires_grad_()
    z, kl = reparameterize_kl_stacked(leaf, noise, n_samples=2)
    (expected,) = torch.autograd.grad((z**2).sum() + kl.sum(), leaf)
    torch.testing.assert_close(grads, expected, rtol=1e-12, atol=1e-12)


def test_stacked_autocast_promotes_to_the_widest_dtype(device):
    mu, logvar, noise = make_inputs((4, 3), torch.float32, device)
    stats = stack(mu, logvar).bfloat16().requires_grad_()
    with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
        z, kl = reparameterize_kl_stacked(stats, noise)
        z16, _ = reparameterize_kl_stacked(stats, noise.bfloat16())
    assert z.dtype == torch.float32 and z16.dtype == torch.bfloat16
    torch.testing.assert_close((z, kl), reparameterize_kl_stacked(stats.float(), noise))
    (z.sum() + kl.sum()).backward()
    assert stats.grad is not None and stats.grad.dtype == torch.bfloat16


def test_stacked_opcheck(device):
    for n_samples in (1, 2):
        for grad in (False, True):
            mu, logvar, noise = make_inputs((4, 6), torch.float32, device, n_samples)
            stats = stack(mu, logvar).requires_grad_(grad)
            torch.library.opcheck(fused_stacked, (stats, noise, None, n_samples))
            torch.library.opcheck(fused_stacked, (stats, None, seed_tensor(3, device), n_samples))
    mu, logvar, noise = make_inputs((4, 6), torch.float32, device, 2)
    grad_z, grad_kl = torch.randn_like(noise), torch.randn(4, device=device)
    for stats in (stack(mu, logvar), stack(mu, logvar, "slice"), stack(mu, logvar, "transposed")):
        # Strided stats: the kernels' gradient is contiguous, and so must the fake one be.
        torch.library.opcheck(stacked_backward, (grad_z, grad_kl, stats, noise, None, 2))
        torch.library.opcheck(
            stacked_backward, (None, grad_kl, stats, None, seed_tensor(1, device), 2)
        )
    # 16-bit inputs: the KL and its gradient are float32.
    mu, logvar, noise = make_inputs((4, 6), torch.bfloat16, device, 1)
    stats = stack(mu, logvar)
    torch.library.opcheck(fused_stacked, (stats.requires_grad_(), noise, None, 1))
    grad_z, grad_kl = torch.randn_like(noise), torch.randn(4, device=device)
    torch.library.opcheck(stacked_backward, (grad_z, grad_kl, stats, noise, None, 1))


def test_stacked_backward_copies_nothing():
    # The halves' gradients are written into one tensor: no torch.cat, as the chunks' backward
    # runs (the baseline, which shows the profiler would see one), and no copy of stats.
    grad_z, grad_kl = torch.randn(8, 16), torch.randn(8)

    def ops_run(fn) -> set[str]:
        stats = torch.randn(8, 2 * 16, requires_grad=True)
        with torch.profiler.profile() as prof:
            z, kl = fn(stats)
            torch.autograd.backward((z, kl), (grad_z, grad_kl))
        return {event.name for event in prof.events()}

    assert "aten::cat" in ops_run(lambda s: reparameterize_kl(*s.chunk(2, dim=-1)))
    ops = ops_run(reparameterize_kl_stacked)
    assert "pygen::reparameterize_kl_stacked_backward" in ops
    assert not ops & {"aten::cat", "aten::contiguous", "aten::clone", "aten::copy_"}


def test_stacked_torch_compile_matches_eager(device):
    mu, logvar, noise = make_inputs((64, 16), torch.float32, device, 2)
    stats = stack(mu, logvar).requires_grad_()

    def loss(s, eps):
        z, kl = reparameterize_kl_stacked(s, eps, n_samples=2)
        return z.square().mean() + kl.mean()

    compiled = torch.compile(loss, fullgraph=True)
    eager_value, compiled_value = loss(stats, noise), compiled(stats, noise)
    torch.testing.assert_close(compiled_value, eager_value)
    torch.testing.assert_close(
        torch.autograd.grad(compiled_value, stats)[0], torch.autograd.grad(eager_value, stats)[0]
    )
    z, kl = torch.compile(lambda s: reparameterize_kl_stacked(s), fullgraph=True)(stats)
    assert z.shape == mu.shape and torch.isfinite(z).all()
    torch.testing.assert_close(kl, reference.reparameterize_kl(mu, logvar, noise[0])[1])


def test_stacked_empty_batch(device):
    stats = torch.zeros(0, 10, device=device, requires_grad=True)
    z, kl = reparameterize_kl_stacked(stats)
    assert z.shape == (0, 5) and kl.shape == (0,)
    (z.sum() + kl.sum()).backward()
    assert stats.grad.shape == (0, 10)


@pytest.mark.parametrize(
    ("shape", "match"),
    [
        ((3, 5), r"stats must have an even, non-empty last dimension \(mu, then logvar\)"),
        ((3, 0), r"even, non-empty last dimension .* got shape \[3, 0\]"),
        ((), r"even, non-empty last dimension .* got shape \[\]"),
    ],
)
def test_stacked_bad_stats_shape_raises(shape, match):
    stats = torch.zeros(shape)
    # The op, its twin and its fake (torch.compile's tracing) alike.
    for op, device in [
        (reparameterize_kl_stacked, "cpu"),
        (reference.reparameterize_kl_stacked, "cpu"),
        (reparameterize_kl_stacked, "meta"),
    ]:
        with pytest.raises(ValueError, match=match):
            op(stats.to(device))


def test_stacked_bad_stats_dtype_raises():
    with pytest.raises(TypeError, match="stats must be float32, float64, float16 or bfloat16"):
        reparameterize_kl_stacked(torch.zeros(3, 4, dtype=torch.int64))


def test_stacked_bad_noise_gradients_and_sample_count_raise():
    stats = torch.zeros(3, 8)
    with pytest.raises(ValueError, match="n_samples must be >= 1"):
        reparameterize_kl_stacked(stats, n_samples=0)
    with pytest.raises(ValueError, match=r"noise must have shape \[3, 4\], got \[3, 8\]"):
        reparameterize_kl_stacked(stats, torch.zeros(3, 8))
    with pytest.raises(ValueError, match=r"noise must have shape \[2, 3, 4\]"):
        reparameterize_kl_stacked(stats, torch.zeros(3, 4), n_samples=2)
    with pytest.raises(TypeError, match="noise has dtype Double but stats has dtype Float"):
        reparameterize_kl_stacked(stats, torch.zeros(3, 4, dtype=torch.float64))
    half = stats.bfloat16()
    with pytest.raises(TypeError, match="grad_kl must have dtype Float, got BFloat16"):
        stacked_backward(None, torch.zeros(3, dtype=torch.bfloat16), half, half[:, :4], None, 1)
    with pytest.raises(ValueError, match=r"grad_kl must have shape \[3\], got \[4\]"):
        stacked_backward(None, torch.zeros(4), half, half[:, :4], None, 1)
    with pytest.raises(TypeError, match="grad_z has dtype Float but stats has dtype BFloat16"):
        stacked_backward(torch.zeros(3, 4), None, half, half[:, :4], None, 1)


def test_stacked_meta_mix_raises_and_all_meta_gives_the_shapes():
    stats, meta = torch.zeros(3, 8), torch.zeros(3, 4, device="meta")
    with pytest.raises(RuntimeError, match="noise is on meta but stats is on cpu"):
        reparameterize_kl_stacked(stats, meta)
    z, kl = reparameterize_kl_stacked(stats.to("meta"), meta, n_samples=1)
    assert z.is_meta and z.shape == (3, 4) and kl.is_meta and kl.shape == (3,)


@requires_cuda
def test_stacked_cpu_cuda_mix_raises():
    with pytest.raises(RuntimeError, match="noise is on"):
        reparameterize_kl_stacked(torch.zeros(3, 8, device="cuda"), torch.zeros(3, 4))


def test_layer_forward_stacked_matches_forward_and_reference():
    mu, logvar, noise = make_inputs((6, 10), torch.float32, "cpu", 2)
    stats = stack(mu, logvar)
    fused_layer = GaussianReparameterize(n_samples=2)
    reference_layer = GaussianReparameterize(n_samples=2, reference=True)
    expected = fused_layer(mu, logvar, noise)
    for layer in (fused_layer, reference_layer):
        torch.testing.assert_close(layer.forward_stacked(stats, noise), expected)
    gen_a, gen_b = (torch.Generator().manual_seed(3) for _ in range(2))
    z, kl = fused_layer.forward_stacked(stats, generator=gen_a, n_samples=3)
    assert z.shape == (3, 6, 10) and kl.shape == (6,)
    assert torch.equal(z, fused_layer(mu, logvar, generator=gen_b, n_samples=3)[0])


@pytest.mark.parametrize("stacked", [False, True])
def test_gradients_batched_over_cotangents(stacked):
    # autograd.grad(..., is_grads_batched=True) runs the backward op under the legacy vmap (its
    # loop fallback): the results of a loop over the cotangents.
    gen = torch.Generator().manual_seed(0)
    stats = torch.randn(5, 6, generator=gen, requires_grad=True)
    noise = torch.randn(5, 3, generator=gen)
    if stacked:
        z, kl = reparameterize_kl_stacked(stats, noise)
    else:
        z, kl = reparameterize_kl(*stats.chunk(2, dim=-1), noise)
    grad_z, grad_kl = torch.randn(4, 5, 3, generator=gen), torch.randn(4, 5, generator=gen)
    (batched,) = torch.autograd.grad(
        (z, kl), stats, (grad_z, grad_kl), is_grads_batched=True, retain_graph=True
    )
    for i in range(4):
        (one,) = torch.autograd.grad((z, kl), stats, (grad_z[i], grad_kl[i]), retain_graph=True)
        torch.testing.assert_close(batched[i], one, rtol=0, atol=0)
