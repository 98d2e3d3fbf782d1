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
    # Non-empty: why the engine cannot run this model's math (it is not a Llama-math model);
    # the preset then serves phantom runs only (shapes, capacity, modeled time).
    phantom_only: str = ""
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
    # Table III of the SN40L paper beyond Llama (shapes from each model's config.json).
    # Falcon and BLOOM are not Llama-math models (see _NOT_LLAMA); their GELU MLP of two
    # h x 4h matrices is carried as the SwiGLU width with the same weights and FLOPs,
    # 2 * 4h / 3 rounded down (error < 0.01 %). Known error: both tie the LM head to the input
    # embedding, which ModelConfig counts twice (Falcon-40B +1.3 %, BLOOM-176B +2 % weights).
    ModelConfig("falcon-40b", 60, 8192, 128, 8, 2 * 4 * 8192 // 3, 65024, max_position=2048,
                phantom_only="falcon-40b (tiiuae/falcon-40b): attention and MLP in parallel "
                "off one LayerNorm, a GELU MLP and a tied LM head are not the Llama math the "
                "engine runs"),
    ModelConfig("bloom-176b", 70, 14336, 112, 112, 2 * 4 * 14336 // 3, 250880,
                max_position=8192,
                phantom_only="bloom-176b (bigscience/bloom): ALiBi positions instead of RoPE, "
                "LayerNorms with bias, a GELU MLP and a tied LM head are not the Llama math the "
                "engine runs"),
    # Tiny models for tests: 16 heads (TP up to 16), GQA with 2 KV heads (fewer than TP 8),
    # a prime vocabulary that no TP size divides, and llama3 RoPE scaling.
    ModelConfig("tiny", 2, 64, 16, 2, 96, 97, 500000.0,
                RopeScaling(8.0, 1.0, 4.0, 32), norm_eps=1e-5, max_position=256),
    # A draft for speculative decoding of "tiny": its vocabulary and shapes with one of its two
    # layers (``sn40l run tiny --draft tiny-draft`` gives it the target's first layer, a
    # layer-skip draft, so it agrees with the target often but not always).
    ModelConfig("tiny-draft", 1, 64, 16, 2, 96, 97, 500000.0,
                RopeScaling(8.0, 1.0, 4.0, 32), norm_eps=1e-5, max_position=256),
    ModelConfig("tiny-mha", 2, 32, 4, 4, 64, 61, max_position=128),
)}


# Table III benchmarks (model, context lengths of the paper's Fig. 10 / 11 sweep).
TABLE_III: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("llama2-7b", (4096,)), ("mistral-7b", (2048, 4096)), ("llama2-70b", (4096,)),
    ("falcon-40b", (2048,)), ("bloom-176b", (8192,)))


def check_materializable(model: ModelConfig) -> None:
    """Refuse a materialized run of a phantom-only preset by name, with the reason."""
    if model.phantom_only:
        raise ConfigError(f"model {model.name!r} runs with phantom weights only: "
                          f"{model.phantom_only}; use --weights phantom")


def preset(name: str) -> ModelConfig:
    """The preset ``name``; an unknown name lists the presets."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown model preset {name!r}; presets: "
                          f"{', '.join(PRESETS)}") from None
