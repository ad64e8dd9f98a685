"""The naive reference: the same SAGAN as pipeline/models.py, written the way a typical user ports
the tutorial: eager fp32, attention as explicit bmm + softmax over a materialised N x N matrix,
separate f/g/h convs, plain Adam, NCHW tensors. Weights can be copied from the project's model."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


class NaiveAttention(nn.Module):
    def __init__(self, c: int, value_bias: bool = False, gamma_init: float = 0.0, sn: bool = False):
        super().__init__()
        wrap = spectral_norm if sn else (lambda m: m)
        d = max(c // 8, 1)
        self.f, self.g, self.h = (wrap(nn.Conv2d(c, d, 1)) for _ in range(3))
        self.v = wrap(nn.Conv2d(d, c, 1, bias=value_bias))
        self.gamma = nn.Parameter(torch.tensor(float(gamma_init)))

    def forward(self, x):
        b, c, hh, ww = x.shape
        f = self.f(x).view(b, -1, hh * ww).transpose(1, 2)   # (B, N, d)
        g = self.g(x).view(b, -1, hh * ww)                   # (B, d, N)
        h = self.h(x).view(b, -1, hh * ww).transpose(1, 2)   # (B, N, d)
        beta = torch.softmax(torch.bmm(f, g), dim=-1)        # (B, N, N)
        o = torch.bmm(beta, h).transpose(1, 2).reshape(b, -1, hh, ww)
        return x + self.gamma * self.v(o)


class NaiveGenerator(nn.Module):
    def __init__(self, z_dim=100, position="post"):
        super().__init__()
        self.position = position
        self.fc = nn.Linear(z_dim, 7 * 7 * 128)
        self.bn0 = nn.BatchNorm2d(128)
        self.up1, self.bn1 = nn.ConvTranspose2d(128, 64, 4, 2, 1), nn.BatchNorm2d(64)
        self.up2, self.bn2 = nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.BatchNorm2d(32)
        self.att1, self.att2 = NaiveAttention(64), NaiveAttention(32)
        self.out = nn.Conv2d(32, 1, 3, 1, 1)

    def _block(self, x, conv, bn, att):
        x = bn(conv(x))
        if self.position == "pre":
            x = att(x)
        x = F.relu(x)
        if self.position == "post":
            x = att(x)
        return x

    def forward(self, z):
        x = F.relu(self.bn0(self.fc(z).view(-1, 128, 7, 7)))
        x = self._block(x, self.up1, self.bn1, self.att1)
        x = self._block(x, self.up2, self.bn2, self.att2)
        return torch.tanh(self.out(x))


class NaiveDiscriminator(nn.Module):
    def __init__(self, position="post"):
        super().__init__()
        self.position = position
        self.c1 = spectral_norm(nn.Conv2d(1, 16, 4, 2, 1))
        self.c2 = spectral_norm(nn.Conv2d(16, 32, 4, 2, 1))
        self.att = NaiveAttention(16, sn=True)
        self.fc = spectral_norm(nn.Linear(7 * 7 * 32, 1))

    def forward(self, x):
        x = self.c1(x)
        if self.position == "pre":
            x = self.att(x)
        x = F.leaky_relu(x, 0.1)
        if self.position == "post":
            x = self.att(x)
        x = F.leaky_relu(self.c2(x), 0.1)
        return self.fc(x.flatten(1)).squeeze(1)


class NaiveTrainer:
    """The DCGAN-style loop: one G forward, D on real and fake, G on the same fake; hinge loss."""

    def __init__(self, data: torch.Tensor, batch: int = 64, z_dim: int = 100):
        self.G, self.D = NaiveGenerator(z_dim), NaiveDiscriminator()
        self.opt_g = torch.optim.Adam(self.G.parameters(), 1e-4, betas=(0.0, 0.9))
        self.opt_d = torch.optim.Adam(self.D.parameters(), 4e-4, betas=(0.0, 0.9))
        self.data, self.batch, self.z_dim = data, batch, z_dim

    def train_step(self):
        idx = torch.randint(0, len(self.data), (self.batch,))
        real = self.data[idx]
        fake = self.G(torch.randn(self.batch, self.z_dim))
        d_loss = F.relu(1 - self.D(real)).mean() + F.relu(1 + self.D(fake.detach())).mean()
        self.opt_d.zero_grad()
        d_loss.backward()
        self.opt_d.step()
        g_loss = -self.D(fake).mean()
        self.opt_g.zero_grad()
        g_loss.backward()
        self.opt_g.step()
        return d_loss.item(), g_loss.item()
