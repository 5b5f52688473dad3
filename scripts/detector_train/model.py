"""A small anchor-free (CenterNet-style) plate detector: stride-4 output, plain 3x3 convs.

Plain convolutions (no depthwise) because they train fastest on one CPU thread and run well in
onnxruntime. Output per stride-4 cell: plate-centre heat (sigmoid, peaks kept by a 3x3 max-pool
in the graph so decoding in numpy is a threshold), and 12 regression channels:
centre offset (2, in cells), log box size (2, log of pixels / stride), corner offsets (8, as
fractions of box width/height from the centre, order TL TR BR BL, x then y).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .encoding import N_REG, STRIDE  # noqa: F401  (STRIDE re-exported: the export writes it)

MEAN = 0.5  # input = (rgb / 255 - MEAN) / STD
STD = 0.25


def cbr(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class PlateNet(nn.Module):
    def __init__(self, width: tuple[int, ...] = (16, 24, 48, 80, 112), head: int = 40):
        super().__init__()
        c1, c2, c3, c4, c5 = width
        self.s2 = cbr(3, c1, 2)
        self.s4 = nn.Sequential(cbr(c1, c2, 2), cbr(c2, c2))
        self.s8 = nn.Sequential(cbr(c2, c3, 2), cbr(c3, c3))
        self.s16 = nn.Sequential(cbr(c3, c4, 2), cbr(c4, c4))
        self.s32 = nn.Sequential(cbr(c4, c5, 2), cbr(c5, c5))
        self.l32 = nn.Conv2d(c5, head, 1)
        self.l16 = nn.Conv2d(c4, head, 1)
        self.l8 = nn.Conv2d(c3, head, 1)
        self.l4 = nn.Conv2d(c2, head, 1)
        self.m8 = cbr(head, head)
        self.m4 = cbr(head, head)
        self.head = cbr(head, head)
        self.heat = nn.Conv2d(head, 1, 1)
        self.reg = nn.Conv2d(head, N_REG, 1)
        nn.init.constant_(self.heat.bias, -4.6)  # prior 1 % so focal loss starts calm

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f4 = self.s4(self.s2(x))
        f8 = self.s8(f4)
        f16 = self.s16(f8)
        f32 = self.s32(f16)
        p = self.l16(f16) + F.interpolate(self.l32(f32), scale_factor=2.0, mode="nearest")
        p = self.m8(self.l8(f8) + F.interpolate(p, scale_factor=2.0, mode="nearest"))
        p = self.m4(self.l4(f4) + F.interpolate(p, scale_factor=2.0, mode="nearest"))
        p = self.head(p)
        return self.heat(p), self.reg(p)


class ExportWrapper(nn.Module):
    """What goes into the ONNX file: uint8-free float input, sigmoid heat with 3x3 peak suppression."""

    def __init__(self, net: PlateNet):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logit, reg = self.net(x)
        heat = torch.sigmoid(logit)
        peak = F.max_pool2d(heat, 3, 1, 1)
        heat = heat * (heat >= peak).to(heat.dtype)
        return heat, reg
