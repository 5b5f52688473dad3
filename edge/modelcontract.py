"""Shared loading of ONNX models and the metadata that describes how to feed them.

Every model ships its own input size, normalisation and label set as ONNX custom metadata
(`metadata_props`), so serving code holds no constants that could drift from the trained model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import onnxruntime as ort


class ModelContractError(ValueError):
    """A model file is missing, unreadable, or lacks metadata that serving needs."""


def make_session(path: str | Path, threads: int = 1) -> ort.InferenceSession:
    """Open an ONNX model on the CPU with a fixed thread count (the Pi shares 4 cores between stages)."""
    p = Path(path)
    if not p.is_file():
        raise ModelContractError(f"model file not found: {p}")
    if threads < 0:
        raise ModelContractError(f"threads must be >= 0 (0 = onnxruntime default), got {threads}")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(p), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises several unrelated types
        raise ModelContractError(f"cannot load ONNX model {p}: {exc}") from exc


def read_metadata(path: str | Path) -> dict[str, str]:
    """The model's custom metadata (ONNX `metadata_props`) as a plain dict."""
    p = Path(path)
    if not p.is_file():
        raise ModelContractError(f"model file not found: {p}")
    try:
        import onnx  # only the protobuf header is needed; avoids building a session

        model = onnx.load(str(p), load_external_data=False)
        return {prop.key: prop.value for prop in model.metadata_props}
    except ImportError:
        sess = make_session(p, 1)
        return dict(sess.get_modelmeta().custom_metadata_map)
    except Exception as exc:
        raise ModelContractError(f"cannot read metadata of {p}: {exc}") from exc


def _floats(meta: dict[str, str], key: str, default: str, path: Path) -> tuple[float, ...]:
    raw = meta.get(key, default)
    try:
        return tuple(float(x) for x in raw.split(",") if x.strip())
    except ValueError:
        raise ModelContractError(f"{path}: metadata {key!r} must be comma-separated numbers, got {raw!r}") from None


def _int(meta: dict[str, str], key: str, path: Path, default: int | None = None) -> int:
    raw = meta.get(key)
    if raw is None:
        if default is None:
            raise ModelContractError(f"{path}: metadata key {key!r} is missing")
        return default
    try:
        return int(raw)
    except ValueError:
        raise ModelContractError(f"{path}: metadata {key!r} must be an integer, got {raw!r}") from None


@dataclass(frozen=True)
class ModelContract:
    """What a model expects as input and says about itself, read from its ONNX metadata.

    Standard keys: `kind`, `version`, `input_height`, `input_width`, `input_channels`,
    `mean`, `std` (comma-separated, one per channel, applied to pixels scaled to 0..1).
    Model-specific keys stay available in `metadata`.
    """

    path: Path
    kind: str
    version: str
    input_height: int
    input_width: int
    input_channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    metadata: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_onnx(cls, path: str | Path) -> "ModelContract":
        p = Path(path)
        meta = read_metadata(p)
        channels = _int(meta, "input_channels", p)
        mean = _floats(meta, "mean", "0", p)
        std = _floats(meta, "std", "1", p)
        if len(mean) == 1:
            mean = mean * channels
        if len(std) == 1:
            std = std * channels
        if len(mean) != channels or len(std) != channels:
            raise ModelContractError(f"{p}: mean/std need 1 or {channels} values, got {len(mean)}/{len(std)}")
        if any(s <= 0 for s in std):
            raise ModelContractError(f"{p}: std values must be > 0, got {std}")
        return cls(
            path=p,
            kind=meta.get("kind", ""),
            version=meta.get("version", ""),
            input_height=_int(meta, "input_height", p),
            input_width=_int(meta, "input_width", p),
            input_channels=channels,
            mean=mean,
            std=std,
            metadata=meta,
        )

    def get(self, key: str, default: str = "") -> str:
        return self.metadata.get(key, default)

    def require(self, key: str) -> str:
        """A model-specific metadata value that serving cannot do without."""
        if key not in self.metadata:
            raise ModelContractError(f"{self.path}: metadata key {key!r} is missing")
        return self.metadata[key]
