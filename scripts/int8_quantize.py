"""Static QDQ int8 quantization shared by scripts/quantize_detector.py and quantize_recognizer.py.

Why one place: both copies must keep every metadata entry of the float model (serving reads its
contract from there) and say in their version which weights ran, so hits and status tell them apart.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from edge.modelcontract import read_metadata


def quantize_qdq(src: Path, dst: Path, reader, note: str, op_types: list[str] | None = None) -> None:
    """Write `dst`, an int8 copy of `src` calibrated on the inputs `reader` (an onnxruntime
    CalibrationDataReader) yields: uint8 activations, per-channel int8 weights, `op_types` only
    (all the quantizer supports when None). The float model's metadata is kept, its version gets an
    "-int8" suffix and `note` is recorded as "quantization"."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(dst), reader, quant_format=QuantFormat.QDQ, op_types_to_quantize=op_types,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)
    m = onnx.load(str(dst))
    meta = read_metadata(src)
    meta["version"] = meta.get("version", "model") + "-int8"
    meta["quantization"] = note
    del m.metadata_props[:]
    for k, v in meta.items():
        p = m.metadata_props.add()
        p.key, p.value = k, v
    onnx.save(m, str(dst))
