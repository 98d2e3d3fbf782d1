"""Llama-family model shapes: the published configurations and tiny ones for tests.

Shapes are those of each model's Hugging Face ``config.json``. Parameter counts follow from them
(untied input embedding and LM head), e.g. Llama-2-7B = 6,738,415,616.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sn40l.errors import ConfigError


@dataclass(frozen=True)
class RopeScaling:
    """Llama 3.1 ("llama3") RoPE frequency scaling."""

    factor: float = 8.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position: int = 8192


@dataclass(frozen=True)
class ModelConfig:
    """Shape of a Llama-family decoder (RMSNorm, RoPE, GQA attention, SwiGLU MLP)."""

    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    norm_eps: float = 1e-5
    max_position: int = 4096
    extra: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        for key in ("layers", "hidden", "heads", "kv_heads", "intermediate", "vocab"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"model {self.name!r}: {key} must be a whole number >= 1, "
                                  f"got {value!r}")
        if self.hidden % self.heads:
            raise ConfigError(f"model {self.name!r}: hidden {self.hidden} is not a multiple of "
                              f"heads {self.heads}")
        if self.heads % self.kv_heads:
            raise ConfigError(f"model {self.name!r}: heads {self.heads} is not a multiple of "
                              f"kv_heads {self.kv_heads} (grouped-query attention)")

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def layer_params(self) -> int:
        """Weights of one decoder layer: q, k, v, o projections, SwiGLU MLP, two RMSNorms."""
        kv = self.kv_heads * self.head_dim
        return (self.hidden * (self.hidden + 2 * kv) + self.hidden * self.hidden
                + 3 * self.hidden * self.intermediate + 2 * self.hidden)

    @property
    def params(self) -> int:
        """All weights: embedding, layers, final norm, untied LM head."""
        return 2 * self.vocab * self.hidden + self.layers * self.layer_params + self.hidden

    def kv_bytes_per_token(self, itemsize: int = 2) -> int:
        """KV-cache bytes one token adds over all layers (K and V)."""
        return 2 * self.layers * self.kv_heads * self.head_dim * itemsize


_L31 = RopeScaling()
PRESETS: dict[str, ModelConfig] = {m.name: m for m in (
    ModelConfig("llama2-7b", 32, 4096, 32, 32, 11008, 32000),
    ModelConfig("llama2-70b", 80, 8192, 64, 8, 28672, 32000),
    ModelConfig("llama3.1-8b", 32, 4096, 32, 8, 14336, 128256, 500000.0, _L31,
                max_position=131072),
    ModelConfig("llama3.1-70b", 80, 8192, 64, 8, 28672, 128256, 500000.0, _L31,
                max_position=131072),
    ModelConfig("llama3.1-405b", 126, 16384, 128, 8, 53248, 128256, 500000.0, _L31,
                max_position=131072),
    ModelConfig("mistral-7b", 32, 4096, 32, 8, 14336, 32000, max_position=32768),
    # Tiny models for tests: 16 heads (TP up to 16), GQA with 2 KV heads (fewer than TP 8),
    # a prime vocabulary that no TP size divides, and llama3 RoPE scaling.
    ModelConfig("tiny", 2, 64, 16, 2, 96, 97, 500000.0,
                RopeScaling(8.0, 1.0, 4.0, 32), norm_eps=1e-5, max_position=256),
    ModelConfig("tiny-mha", 2, 32, 4, 4, 64, 61, max_position=128),
)}


def preset(name: str) -> ModelConfig:
    """The preset ``name``; an unknown name lists the presets."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown model preset {name!r}; presets: "
                          f"{', '.join(PRESETS)}") from None
