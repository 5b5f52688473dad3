"""The detector's training loss (targets: encoding.py).

CenterNet focal loss on the centre heat, weighted smooth L1 on box and corner regression.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .encoding import N_REG

REG_WEIGHTS = torch.tensor([1, 1, 1, 1] + [4] * 8, dtype=torch.float32).view(1, N_REG, 1, 1)


def detector_loss(logit, reg, heat_t, heat_w, reg_t, reg_w):
    """CenterNet focal loss on heat (per plate) plus weighted L1 on the regression channels."""
    p = torch.sigmoid(logit).clamp(1e-4, 1 - 1e-4)
    pos = (heat_t >= 0.999).float()
    neg = (1 - pos) * heat_w
    pos_l = -torch.log(p) * (1 - p) ** 2 * pos
    neg_l = -torch.log(1 - p) * p ** 2 * (1 - heat_t) ** 4 * neg
    n = pos.sum().clamp(min=1.0)
    l_heat = (pos_l.sum() + neg_l.sum()) / n
    l1 = F.smooth_l1_loss(reg, reg_t, reduction="none", beta=0.05) * REG_WEIGHTS.to(reg.device)
    l_reg = (l1 * reg_w).sum() / reg_w.sum().clamp(min=1.0)
    return l_heat + l_reg, l_heat.detach(), l_reg.detach()
