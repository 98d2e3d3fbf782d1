"""Llama-family model descriptions: shapes plus the switches of their math, the published
configurations and tiny ones for tests.

Shapes are those of each model's Hugging Face ``config.json``. Parameter counts follow from them
(untied input embedding and LM head), e.g. Llama-2-7B = 6,738,415,616. ``arch`` names the
architecture (:mod:`sn40l.compiler.arch`) whose math runs the model; the other fields are the
switches that math reads (biases, per-head q/k norms, RoPE variant, sliding window).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from sn40l.choices import Choice
from sn40l.errors import ConfigError


class RopeType(Choice):
    """RoPE frequency variants, named as transformers' ``rope_type``."""

    DEFAULT = "default"
    LINEAR = "linear"
    DYNAMIC = "dynamic"
    LLAMA3 = "llama3"
    YARN = "yarn"


@dataclass(frozen=True)
class RopeScaling:
    """RoPE frequency scaling (``kind``; defaults: Llama 3.1's "llama3"). Fields a kind does not
    use keep their defaults: ``low/high_freq_factor`` (llama3), ``original_max_position``
    (llama3, yarn), ``beta_fast/beta_slow/attention_factor/mscale/mscale_all_dim/truncate``
    (yarn); ``factor`` is every kind's scale."""

    factor: float = 8.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position: int = 8192
    kind: str = "llama3"
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    attention_factor: float | None = None
    mscale: float | None = None
    mscale_all_dim: float | None = None
    truncate: bool = True

    def __post_init__(self) -> None:
        RopeType.from_str(self.kind)
        if not self.factor > 0:
            raise ConfigError(f"RoPE scaling factor must be > 0, got {self.factor!r}")

    @property
    def type(self) -> RopeType:
        return RopeType.from_str(self.kind)


@dataclass(frozen=True)
class ModelConfig:
    """Shape and math switches of a Llama-family decoder (RMSNorm, RoPE, GQA attention,
    SwiGLU MLP). ``head_dim`` 0 means hidden / heads; ``sliding_layers`` are the layers whose
    attention sees only the last ``sliding_window`` positions."""

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
    arch: str = "llama"
    head_dim: int = 0
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False
    tie_embeddings: bool = False
    sliding_window: int | None = None
    sliding_layers: tuple[int, ...] = ()
    dtype: str = "bf16"
    extra: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        for key in ("layers", "hidden", "heads", "kv_heads", "intermediate", "vocab"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"model {self.name!r}: {key} must be a whole number >= 1, "
                                  f"got {value!r}")
        if not self.head_dim:
            if self.hidden % self.heads:
                raise ConfigError(f"model {self.name!r}: hidden {self.hidden} is not a multiple"
                                  f" of heads {self.heads} and no head_dim is given")
            object.__setattr__(self, "head_dim", self.hidden // self.heads)
        if not isinstance(self.head_dim, int) or self.head_dim < 2 or self.head_dim % 2:
            raise ConfigError(f"model {self.name!r}: head_dim must be an even whole number >= 2"
                              f" (RoPE rotates pairs), got {self.head_dim!r}")
        if self.heads % self.kv_heads:
            raise ConfigError(f"model {self.name!r}: heads {self.heads} is not a multiple of "
                              f"kv_heads {self.kv_heads} (grouped-query attention)")
        object.__setattr__(self, "sliding_layers", tuple(int(i) for i in self.sliding_layers))
        if self.sliding_layers and not (isinstance(self.sliding_window, int)
                                        and self.sliding_window >= 1):
            raise ConfigError(f"model {self.name!r}: sliding_window must be a whole number >= 1"
                              f" for layers {list(self.sliding_layers)}, got "
                              f"{self.sliding_window!r}")
        bad = [i for i in self.sliding_layers if not 0 <= i < self.layers]
        if bad:
            raise ConfigError(f"model {self.name!r}: sliding layers {bad} outside 0..."
                              f"{self.layers - 1}")

    def window(self, layer: int) -> int | None:
        """The attention window of ``layer`` (None: all earlier positions)."""
        return self.sliding_window if layer in self.sliding_layers else None

    def to_plan(self) -> dict:
        """Plain data for the .pef (``extra`` stays out)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()
                if k != "extra"}

    @classmethod
    def from_plan(cls, data: dict) -> "ModelConfig":
        m = dict(data)
        if m.get("rope_scaling"):
            m["rope_scaling"] = RopeScaling(**m["rope_scaling"])
        if "sliding_layers" in m:
            m["sliding_layers"] = tuple(m["sliding_layers"])
        return cls(**m)

    @property
    def q_width(self) -> int:
        """Width of the query projection (heads x head_dim; not always hidden)."""
        return self.heads * self.head_dim

    @property
    def layer_params(self) -> int:
        """Weights of one decoder layer: q, k, v, o projections, SwiGLU MLP, two RMSNorms
        (plus the biases and q/k norms the model has)."""
        kv = self.kv_heads * self.head_dim
        q = self.q_width
        n = (self.hidden * (q + 2 * kv) + q * self.hidden
             + 3 * self.hidden * self.intermediate + 2 * self.hidden)
        n += (q + 2 * kv) * self.qkv_bias + self.hidden * self.o_bias
        n += (2 * self.intermediate + self.hidden) * self.mlp_bias + 2 * self.head_dim * self.qk_norm
        return n

    @property
    def params(self) -> int:
        """All weights: embedding, layers, final norm, LM head (unless tied)."""
        head = 0 if self.tie_embeddings else self.vocab * self.hidden
        return self.vocab * self.hidden + head + self.layers * self.layer_params + self.hidden

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
