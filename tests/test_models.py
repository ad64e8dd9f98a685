"""The SAGAN pieces against plain reference computations."""
import math

import pytest
import torch

from pipeline import losses
from pipeline.models import Discriminator, Generator, ModelConfig, SelfAttention, gammas


def reference_attention(x, att: SelfAttention):
    """The tutorial's math with explicit f, g, h 1x1 convs: x + gamma * v(softmax(f g^T) h)."""
    b, c, hh, ww = x.shape
    d = att.inner
    w = att.fgh.weight.detach()[:, :, 0, 0]
    bias = att.fgh.bias.detach()
    xf = x.reshape(b, c, hh * ww)                                   # (B, C, N)
    f = torch.einsum("oc,bcn->bno", w[:d], xf) + bias[:d]           # (B, N, d)
    g = torch.einsum("oc,bcn->bno", w[d:2 * d], xf) + bias[d:2 * d]
    h = torch.einsum("oc,bcn->bno", w[2 * d:], xf) + bias[2 * d:]
    beta = torch.softmax(torch.bmm(f, g.transpose(1, 2)), dim=-1)  # no 1/sqrt(d) scaling
    ctx = torch.bmm(beta, h)                                        # (B, N, d)
    vw = att.v.weight.detach()[:, :, 0, 0]
    o = torch.einsum("cd,bnd->bcn", vw, ctx)
    if att.v.bias is not None:
        o = o + att.v.bias.detach()[None, :, None]
    return x + att.gamma.detach() * o.reshape(b, c, hh, ww)


@pytest.mark.parametrize("channels,side", [(64, 14), (32, 28), (16, 7)])
@pytest.mark.parametrize("value_bias", [False, True])
def test_attention_matches_reference(channels, side, value_bias):
    torch.manual_seed(0)
    att = SelfAttention(channels, gamma_init=0.7, value_bias=value_bias)
    x = torch.randn(3, channels, side, side)
    torch.testing.assert_close(att(x), reference_attention(x, att), rtol=1e-5, atol=1e-5)
    # channels_last input (the fast path) gives the same numbers
    xl = x.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(att(xl), reference_attention(x, att), rtol=1e-5, atol=1e-5)


def test_attention_map_rows_are_distributions():
    att = SelfAttention(32)
    a = att.attention_map(torch.randn(2, 32, 7, 7))
    assert a.shape == (2, 49, 49)
    torch.testing.assert_close(a.sum(-1), torch.ones(2, 49))


def test_gamma_zero_is_identity_and_gamma_learns():
    att = SelfAttention(32, gamma_init=0.0)
    x = torch.randn(2, 32, 7, 7, requires_grad=True)
    y = att(x)
    torch.testing.assert_close(y, x)
    (y ** 2).sum().backward()
    assert att.gamma.grad is not None and att.gamma.grad.abs() > 0


def _structure(model):
    return [type(m).__name__ for m in model.modules()]


def test_three_positions_are_three_different_graphs():
    torch.manual_seed(0)
    z = torch.randn(4, 100)
    outs, traces = {}, {}
    for pos in ("post", "pre", "none"):
        cfg = ModelConfig(position=pos, gamma_init=0.5)
        torch.manual_seed(1)
        g = Generator(cfg).eval()
        d = Discriminator(cfg)
        order = []
        hooks = [m.register_forward_hook(lambda m, i, o, n=n: order.append(n))
                 for n, m in g.named_modules() if n.count(".") == 1 and n.startswith("up14")]
        outs[pos] = g(z)
        for h in hooks:
            h.remove()
        traces[pos] = order
        assert d(outs[pos]).shape == (4,)
        assert len(gammas(g, d)) == (0 if pos == "none" else 3)
    assert traces["post"] == ["up14.conv", "up14.norm", "up14.act", "up14.attn"]
    assert traces["pre"] == ["up14.conv", "up14.norm", "up14.attn", "up14.act"]
    assert traces["none"] == ["up14.conv", "up14.norm", "up14.act"]
    assert not torch.allclose(outs["post"], outs["pre"])
    assert not torch.allclose(outs["post"], outs["none"])


def test_shapes_follow_the_tutorial():
    cfg = ModelConfig()
    g, d = Generator(cfg), Discriminator(cfg)
    captured = {}
    for name in ("fc_norm", "up14", "up28", "out"):
        getattr(g, name).register_forward_hook(lambda m, i, o, n=name: captured.__setitem__(n, tuple(o.shape)))
    for name in ("down14", "down7"):
        getattr(d, name).register_forward_hook(lambda m, i, o, n=name: captured.__setitem__(n, tuple(o.shape)))
    x = g(torch.randn(2, 100))
    d(x)
    assert captured == {"fc_norm": (2, 128, 7, 7), "up14": (2, 64, 14, 14), "up28": (2, 32, 28, 28),
                        "out": (2, 1, 28, 28), "down14": (2, 16, 14, 14), "down7": (2, 32, 7, 7)}
    assert x.min() >= -1 and x.max() <= 1
    assert set(g.attention_layers()) == {"g14", "g28"} and set(d.attention_layers()) == {"d14"}
    g2 = Generator(ModelConfig(g_attention_at=(28,)))
    assert set(g2.attention_layers()) == {"g28"}


def test_hinge_loss_by_hand():
    real = torch.tensor([2.0, 0.5, -1.0])
    fake = torch.tensor([-2.0, 0.0, 0.5])
    # D: mean(relu(1-real)) = (0 + 0.5 + 2)/3 ; mean(relu(1+fake)) = (0 + 1 + 1.5)/3
    assert losses.d_loss("hinge", real, fake).item() == pytest.approx(2.5 / 3 + 2.5 / 3)
    assert losses.g_loss("hinge", fake).item() == pytest.approx(-(-2.0 + 0.0 + 0.5) / 3)


def test_bce_loss_by_hand():
    real = torch.tensor([2.0, -1.0])
    fake = torch.tensor([0.0, 1.0])
    sp = lambda v: math.log1p(math.exp(v))  # noqa: E731
    d = (sp(-2.0) + sp(1.0)) / 2 + (sp(0.0) + sp(1.0)) / 2
    g = (sp(-0.0) + sp(-1.0)) / 2
    assert losses.d_loss("bce", real, fake).item() == pytest.approx(d)
    assert losses.g_loss("bce", fake).item() == pytest.approx(g)
    # the same as torch's BCE with logits against labels 1 (real) and 0 (fake)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    assert losses.d_loss("bce", real, fake).item() == pytest.approx(
        bce(real, torch.ones(2)).item() + bce(fake, torch.zeros(2)).item())


def test_discriminator_width_is_a_setting():
    d = Discriminator(ModelConfig(d_channels=64))
    out = d.down7(d.down14(torch.randn(3, 1, 28, 28)))
    assert out.shape == (3, 128, 7, 7) and d(torch.randn(3, 1, 28, 28)).shape == (3,)
    assert d.down14.attn.inner == 8


def test_discriminator_depth_is_a_setting():
    tutorial = Discriminator(ModelConfig())
    deeper = Discriminator(ModelConfig(d_channels=32, d_extra_convs=2))
    convs = lambda m: [c for c in m.modules() if isinstance(c, torch.nn.Conv2d) and c.kernel_size == (3, 3)]  # noqa: E731
    assert convs(tutorial) == [] and len(convs(deeper)) == 4          # two per resolution
    assert all(c.stride == (1, 1) for c in convs(deeper))
    x = torch.randn(3, 1, 28, 28)
    assert deeper(x).shape == (3,)
    # spectral norm covers the new convs too (every weight is parametrized)
    assert all(hasattr(c, "parametrizations") for c in convs(deeper))
