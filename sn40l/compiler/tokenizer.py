"""A checkpoint's tokenizer: ``tokenizer.json`` through the ``tokenizers`` library, and its chat
template rendered with jinja2 the way transformers renders it.

transformers (5.x, ``utils/chat_template_utils.py``) renders templates in an
``ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)`` with the loop-controls
extension, a ``tojson`` filter that does not escape HTML, and the globals ``raise_exception``
and ``strftime_now``; the special tokens of ``tokenizer_config.json`` (``bos_token``, ...) are
template variables. The rendered text is encoded without adding special tokens (the template
writes them), a plain prompt with them (the post-processor's BOS, if any), and a continuation
is decoded skipping special tokens: what ``tokenizer(text)``, ``apply_chat_template(...,
add_generation_prompt=True)`` and ``decode(..., skip_special_tokens=True)`` do.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from sn40l.errors import ConfigError


class CheckpointTokenizer:
    """The tokenizer of one checkpoint directory. ``__init__`` only stores; use
    :meth:`from_dir`."""

    def __init__(self, tokenizer, template: str | None, specials: dict[str, str], path: str):
        self.tokenizer, self.template, self.specials, self.path = (tokenizer, template,
                                                                   specials, path)

    @classmethod
    def from_dir(cls, path: str | Path) -> "CheckpointTokenizer":
        from tokenizers import Tokenizer

        path = Path(path)
        file = path / "tokenizer.json"
        if not file.is_file():
            raise ConfigError(f"--prompt needs the checkpoint's tokenizer: {file} does not "
                              "exist; use --prompt-ids")
        try:
            tok = Tokenizer.from_file(str(file))
        except Exception as exc:  # the library raises its own Exception type
            raise ConfigError(f"{file}: not a tokenizers file: {exc}") from None
        config = {}
        cfg_file = path / "tokenizer_config.json"
        if cfg_file.is_file():
            try:
                config = json.loads(cfg_file.read_text())
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{cfg_file}: not JSON: {exc}") from None
        template = config.get("chat_template")
        if isinstance(template, list):  # named templates: transformers uses "default"
            named = {t.get("name"): t.get("template") for t in template}
            template = named.get("default")
        jinja = path / "chat_template.jinja"
        if template is None and jinja.is_file():
            template = jinja.read_text()
        specials = {}
        for key in ("bos_token", "eos_token", "unk_token", "pad_token"):
            value = config.get(key)
            if isinstance(value, dict):
                value = value.get("content")
            if value is not None:
                specials[key] = str(value)
        return cls(tok, template, specials, str(path))

    def encode(self, text: str) -> list[int]:
        """Ids of a plain prompt (special tokens added as the post-processor says)."""
        return self.tokenizer.encode(text, add_special_tokens=True).ids

    def render_chat(self, text: str) -> str:
        """The chat template applied to one user message, with the assistant's turn opened."""
        if not self.template:
            raise ConfigError(f"--chat needs a chat template; {self.path} has none "
                              "(tokenizer_config.json chat_template or chat_template.jinja)")
        import jinja2
        from jinja2.ext import loopcontrols
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message):
            raise ConfigError(f"the chat template of {self.path} refused the prompt: {message}")

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            extensions=[loopcontrols])
        env.filters["tojson"] = lambda x, ensure_ascii=False, indent=None, separators=None, \
            sort_keys=False: json.dumps(x, ensure_ascii=ensure_ascii, indent=indent,
                                        separators=separators, sort_keys=sort_keys)
        env.globals["raise_exception"] = raise_exception
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        try:
            return env.from_string(self.template).render(
                messages=[{"role": "user", "content": text}], add_generation_prompt=True,
                **self.specials)
        except jinja2.TemplateError as exc:
            raise ConfigError(f"the chat template of {self.path} fails: {exc}") from None

    def encode_chat(self, text: str) -> list[int]:
        return self.tokenizer.encode(self.render_chat(text), add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)
