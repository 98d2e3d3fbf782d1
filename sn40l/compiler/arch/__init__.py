"""Architectures: one model description each (names, config keys, defaults, math switches),
all run by the shared decoder math of :mod:`sn40l.compiler.arch.decoder` with the RoPE variants
of :mod:`sn40l.compiler.arch.rope`. Adding an architecture = one module here and one line in
:data:`ARCHITECTURES`.
"""

from __future__ import annotations

from sn40l.compiler.arch.base import COMMON_KEYS, Architecture, Key, KeyUse
from sn40l.compiler.arch.llama import Llama
from sn40l.compiler.arch.mistral import Mistral
from sn40l.compiler.arch.qwen2 import Qwen2
from sn40l.compiler.arch.qwen3 import Qwen3
from sn40l.errors import ConfigError

ARCHITECTURES: dict[str, Architecture] = {a.hf_name: a for a in (Llama(), Mistral(), Qwen2(),
                                                                 Qwen3())}
_BY_NAME = {a.name: a for a in ARCHITECTURES.values()}


def architecture(name: str) -> Architecture:
    """The description named ``name`` (ours, e.g. "qwen3", or transformers', e.g.
    "Qwen3ForCausalLM")."""
    found = _BY_NAME.get(name) or ARCHITECTURES.get(name)
    if found is None:
        raise ConfigError(f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}")
    return found


__all__ = ["ARCHITECTURES", "COMMON_KEYS", "Architecture", "Key", "KeyUse", "architecture"]
