"""Start a training run from the weights inside a shipped ONNX model (training side only).

Why: a checkpoint folder (`runs/`) does not survive a new machine, but `models/*.onnx` is
committed. Exporting folds each BatchNorm into the convolution before it, so the fused weights
cannot be split back exactly; instead the BatchNorm is rebuilt around the fused convolution with
statistics measured on real training batches: eval output then equals the ONNX model's output, and
batch statistics in training mode start close to the running ones, so fine-tuning starts where
the shipped model stands instead of from scratch.

Handles what our two networks use: Conv (+ folded BatchNorm), MatMul + Add (a Linear on 3-D
input), and a one-layer (bi)directional LSTM.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import torch
import torch.nn as nn


def _onnx_layers(path: Path) -> list[tuple[str, list[np.ndarray]]]:
    """Weighted layers of an ONNX graph in graph order: (op, [arrays])."""
    import onnx
    from onnx import numpy_helper

    g = onnx.load(str(path)).graph
    inits = {i.name: np.array(numpy_helper.to_array(i)) for i in g.initializer}
    out: list[tuple[str, list[np.ndarray]]] = []
    nodes = list(g.node)
    for k, n in enumerate(nodes):
        ws = [inits[i] for i in n.input if i in inits]
        if n.op_type in ("Conv", "LSTM") and ws:
            out.append((n.op_type, ws))
        elif n.op_type == "MatMul" and ws:
            bias = None
            for m in nodes[k + 1:]:
                if m.op_type == "Add" and n.output[0] in m.input:
                    bias = next((inits[i] for i in m.input if i in inits), None)
                    break
            out.append(("MatMul", ws + ([bias] if bias is not None else [])))
    return out


def _torch_layers(model: nn.Module, x: torch.Tensor) -> list[nn.Module]:
    """Conv2d / BatchNorm2d / Linear / LSTM modules in the order a forward pass runs them."""
    order: list[nn.Module] = []
    hooks = [m.register_forward_hook(lambda mod, i, o: order.append(mod))
             for m in model.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.Linear, nn.LSTM))]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return order


def _lstm_gates(a: np.ndarray, hidden: int) -> np.ndarray:
    """ONNX gate blocks (i, o, f, c) -> PyTorch (i, f, g, o)."""
    i, o, f, c = (a[k * hidden:(k + 1) * hidden] for k in range(4))
    return np.concatenate([i, f, c, o], axis=0)


@torch.no_grad()
def load_onnx_weights(model: nn.Module, path: Path, calib: Iterable[torch.Tensor]) -> str:
    """Copy an exported model's weights into `model`; `calib` yields input batches for BN stats.

    `model` must have the architecture the ONNX file was exported from; any mismatch in layer
    count or shape raises ValueError naming the layer. Returns a one-line summary.
    """
    batches = list(calib)
    was_training = model.training
    model.eval()
    order = _torch_layers(model, batches[0][:2])
    layers = _onnx_layers(path)
    weighted = [m for m in order if not isinstance(m, nn.BatchNorm2d)]
    if len(weighted) != len(layers):
        raise ValueError(f"{path}: {len(layers)} weighted layers in the ONNX graph, {len(weighted)} in the model")
    folded: list[tuple[nn.Conv2d, nn.BatchNorm2d, np.ndarray]] = []
    for idx, (mod, (op, ws)) in enumerate(zip(weighted, layers)):
        where = f"{path} layer {idx} ({op} -> {type(mod).__name__})"
        if isinstance(mod, nn.Conv2d):
            if op != "Conv" or tuple(ws[0].shape) != tuple(mod.weight.shape):
                raise ValueError(f"{where}: shape {ws[0].shape} vs {tuple(mod.weight.shape)}")
            mod.weight.copy_(torch.from_numpy(ws[0]))
            bias = ws[1] if len(ws) > 1 else np.zeros(ws[0].shape[0], np.float32)
            pos = order.index(mod)
            bn = order[pos + 1] if pos + 1 < len(order) and isinstance(order[pos + 1], nn.BatchNorm2d) else None
            if bn is None:
                if mod.bias is None:
                    raise ValueError(f"{where}: ONNX conv has a bias the model cannot hold")
                mod.bias.copy_(torch.from_numpy(bias))
            else:
                # placeholder identity BN (output = conv + bias) until the statistics are measured
                bn.running_mean.zero_()
                bn.running_var.fill_(1.0 - bn.eps)
                bn.weight.fill_(1.0)
                bn.bias.copy_(torch.from_numpy(bias))
                folded.append((mod, bn, bias))
        elif isinstance(mod, nn.Linear):
            w = ws[0].T
            if op != "MatMul" or tuple(w.shape) != tuple(mod.weight.shape):
                raise ValueError(f"{where}: shape {ws[0].shape} vs {tuple(mod.weight.shape)}")
            mod.weight.copy_(torch.from_numpy(np.ascontiguousarray(w)))
            if mod.bias is not None:
                mod.bias.copy_(torch.from_numpy(ws[1]))
        elif isinstance(mod, nn.LSTM):
            if op != "LSTM" or mod.num_layers != 1:
                raise ValueError(f"{where}: only one-layer LSTMs are supported")
            w, r, b = ws
            h = mod.hidden_size
            for d, sfx in enumerate(["", "_reverse"][: 2 if mod.bidirectional else 1]):
                getattr(mod, f"weight_ih_l0{sfx}").copy_(torch.from_numpy(_lstm_gates(w[d], h)))
                getattr(mod, f"weight_hh_l0{sfx}").copy_(torch.from_numpy(_lstm_gates(r[d], h)))
                getattr(mod, f"bias_ih_l0{sfx}").copy_(torch.from_numpy(_lstm_gates(b[d][:4 * h], h)))
                getattr(mod, f"bias_hh_l0{sfx}").copy_(torch.from_numpy(_lstm_gates(b[d][4 * h:], h)))
        else:
            raise ValueError(f"{where}: unsupported layer")

    # measure each folded conv's output statistics (independent of the BN values chosen, since
    # the placeholders make every layer's eval output equal the ONNX model's)
    sums = {id(c): [0.0, 0.0, 0] for c, _, _ in folded}

    def hook(mod, i, o):
        s = sums[id(mod)]
        s[0] = s[0] + o.double().sum(dim=(0, 2, 3))
        s[1] = s[1] + (o.double() ** 2).sum(dim=(0, 2, 3))
        s[2] += o.shape[0] * o.shape[2] * o.shape[3]

    hooks = [c.register_forward_hook(hook) for c, _, _ in folded]
    try:
        for x in batches:
            model(x)
    finally:
        for hk in hooks:
            hk.remove()
    for conv, bn, bias in folded:
        s0, s1, n = sums[id(conv)]
        mean = s0 / n
        var = (s1 / n - mean ** 2).clamp(min=1e-6)
        bn.running_mean.copy_(mean.float())
        bn.running_var.copy_(var.float())
        bn.weight.copy_(torch.sqrt(var + bn.eps).float())
        bn.bias.copy_(mean.float() + torch.from_numpy(bias))
    model.train(was_training)
    return f"initialised {len(layers)} layers ({len(folded)} with rebuilt BatchNorm) from {path}"


def max_output_difference(model: nn.Module, path: Path, x: torch.Tensor) -> float:
    """Largest absolute difference between `model` (eval) and the ONNX file on input x."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    was = model.training
    model.eval()
    with torch.no_grad():
        ref = model(x)
    model.train(was)
    ref = ref if isinstance(ref, (tuple, list)) else (ref,)
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    return max(float(np.abs(a.numpy() - b).max()) for a, b in zip(ref, got))
