"""Tiny random-weight Qwen-VL models built fully offline, for tests and the laptop quickstart.

``build_tiny_model`` writes a directory that ``load_policy``/``load_processor`` (and plain
``AutoModelForImageTextToText.from_pretrained``) reload: a Qwen2.5-VL or Qwen3-VL with about a million
parameters, a byte-level BPE tokenizer trained on the report corpus (so a short report is a few dozen tokens, not a
few hundred bytes), the Qwen special tokens, a Qwen2-VL style chat template and a small image processor.

The layout follows the upstream models so every code path (mrope position ids, windowed vision attention for
Qwen2.5-VL, interleaved mrope and deepstack for Qwen3-VL) runs for real; only the sizes shrink. The same seed and
corpus give the same files bit for bit.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

ARCHS = ("qwen2_5_vl", "qwen3_vl")

# The Qwen special tokens, in the order of the real vocabulary; ids 0..6 in the tiny tokenizer.
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
# Section tags of the completion format (docs/data.md). Regular added tokens, never special ones: decoding
# with skip_special_tokens=True (what TRL does before calling rewards) must keep them for the format reward.
TAG_TOKENS = ("<think>", "</think>", "<finding>", "</finding>", "<impression>", "</impression>")

# Longest sequence the tiny models are built for (prompt with a few images + report); also the tokenizer's limit.
MAX_POSITIONS = 4096
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
# Prompt texts appear in every training example, so they are weighted like this many reports in the BPE corpus.
PROMPT_REPEATS = 50
# Used for the tokenizer corpus when himed.data.prompts is not available, so instruction words get merges too.
_FALLBACK_PROMPT = (
    "You are a radiologist. Describe the chest X-ray. First think briefly inside <think></think>, then write the "
    "findings inside <finding></finding> and the impression inside <impression></impression>."
)

# Qwen2-VL style chat template (no default system message). Content is a string or a list of parts; an image part
# becomes one <|image_pad|> that the processor expands to the image's visual tokens. Parts are told apart by their
# "type" only: rows stored by `datasets` carry every key of every part (a text part gets "image": None). Assistant
# turns sit inside {% generation %} so TRL's assistant_only_loss can mask everything else.
CHAT_TEMPLATE = """\
{%- macro render(content) -%}
  {%- if content is string -%}
    {{- content -}}
  {%- else -%}
    {%- for part in content -%}
      {%- if part['type'] in ('image', 'image_url') -%}
        {{- '<|vision_start|><|image_pad|><|vision_end|>' -}}
      {%- elif part['type'] == 'video' -%}
        {{- '<|vision_start|><|video_pad|><|vision_end|>' -}}
      {%- elif part['type'] == 'text' -%}
        {{- part['text'] -}}
      {%- endif -%}
    {%- endfor -%}
  {%- endif -%}
{%- endmacro -%}
{%- for message in messages -%}
  {{- '<|im_start|>' + message['role'] + '\\n' -}}
  {%- if message['role'] == 'assistant' -%}
    {%- generation -%}{{- render(message['content']) + '<|im_end|>' -}}{%- endgeneration -%}
  {%- else -%}
    {{- render(message['content']) + '<|im_end|>' -}}
  {%- endif -%}
  {{- '\\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
  {{- '<|im_start|>assistant\\n' -}}
{%- endif -%}
"""


@dataclasses.dataclass(frozen=True)
class TinySize:
    """Sizes of a tiny model. ``image_size`` is the side (pixels) of the largest image before downscaling."""

    hidden_size: int = 128
    num_hidden_layers: int = 2
    intermediate_size: int = 384
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    vision_depth: int = 2
    vision_hidden_size: int = 64
    vision_intermediate_size: int = 128
    vision_num_heads: int = 4
    patch_size: int = 14
    spatial_merge_size: int = 2
    image_size: int = 112
    vocab_size: int = 1000

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def visual_tokens_per_image(self) -> int:
        """Visual tokens of an ``image_size`` x ``image_size`` image after the spatial merge."""
        return (self.image_size // (self.patch_size * self.spatial_merge_size)) ** 2

    def validate(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by {self.num_attention_heads} heads")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")
        if self.head_dim % 2 or self.head_dim < 8:
            raise ValueError(f"head_dim {self.head_dim} must be even and at least 8 for mrope")
        if self.vision_hidden_size % self.vision_num_heads:
            raise ValueError("vision_hidden_size must be divisible by vision_num_heads")
        factor = self.patch_size * self.spatial_merge_size
        if self.image_size % factor:
            raise ValueError(f"image_size {self.image_size} must be a multiple of patch_size * spatial_merge_size")
        if self.vocab_size < 300:
            raise ValueError("vocab_size must be at least 300 (256 byte symbols + special and tag tokens)")


# Default sizes per architecture: 16 visual tokens per image (112 px at patch 14, 128 px at patch 16; merge 2).
TINY_SIZES: dict[str, TinySize] = {
    "qwen2_5_vl": TinySize(patch_size=14, image_size=112),
    "qwen3_vl": TinySize(patch_size=16, image_size=128),
}


def mrope_section(head_dim: int, arch: str) -> list[int]:
    """Split of the rotary half-dimension into (temporal, height, width) sections; sums to ``head_dim // 2``.

    Keeps the upstream proportions: 16:24:24 of 64 for Qwen2.5-VL, 24:20:20 of 64 for Qwen3-VL.
    """
    half = head_dim // 2
    temporal = round(half * (16 if arch == "qwen2_5_vl" else 24) / 64)
    spatial = (half - temporal) // 2
    temporal = half - 2 * spatial
    section = [temporal, spatial, spatial]
    # Qwen3-VL interleaves sections as t,h,w,t,h,w,...: the height/width stripes (3 * section) must fit in half.
    if arch == "qwen3_vl" and 3 * spatial > half:
        raise ValueError(f"mrope_section {section} cannot be interleaved in {half} rotary dimensions")
    return section


def _resolve_size(arch: str, overrides: dict) -> TinySize:
    if arch not in TINY_SIZES:
        raise ValueError(f"unknown tiny architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    fields = {field.name for field in dataclasses.fields(TinySize)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown size override(s) {unknown}; known: {sorted(fields)}")
    size = dataclasses.replace(TINY_SIZES[arch], **overrides)
    size.validate()
    return size


def default_corpus(seed: int = 0) -> list[str]:
    """The demo report corpus (``himed.data.demo.report_corpus``), imported lazily: it is another area's module."""
    try:
        from himed.data.demo import report_corpus
    except ImportError as error:
        raise ValueError(
            "no corpus given and himed.data.demo.report_corpus is not available; pass a corpus (--corpus FILE)"
        ) from error
    return list(report_corpus(n=2000, seed=seed))


def _prompt_texts() -> list[str]:
    """Texts the policy sees in every prompt and think section, repeated so BPE learns merges for their words.

    Taken from ``himed.data.prompts`` (system prompts and instructions of both section sets, image labels of the
    common views, one think rationale per observation); a fixed instruction when that module is not available.
    """
    try:
        from himed.clinical.observations import CHEXBERT_OBSERVATIONS, NEGATIVE, POSITIVE, UNCERTAIN
        from himed.data.prompts import build_prompt, rationale_from_labels
        from himed.data.sections import DEFAULT_SECTIONS, FINDINGS_ONLY_SECTIONS
    except ImportError:
        return [_FALLBACK_PROMPT] * PROMPT_REPEATS
    texts: list[str] = []
    row = {"id": "tokenizer", "images": [None, None, None], "views": ["PA", "AP", "LATERAL"]}
    for sections in (DEFAULT_SECTIONS, FINDINGS_ONLY_SECTIONS):
        for system in (True, False):
            for message in build_prompt(row, sections=sections, system=system):
                texts += [part["text"] for part in message["content"] if part.get("type") == "text"]
    for name in CHEXBERT_OBSERVATIONS:
        texts += [rationale_from_labels({name: value}) for value in (POSITIVE, UNCERTAIN, NEGATIVE)]
    texts = sorted(set(text for text in texts if text))  # a fixed order keeps the tokenizer deterministic
    return texts * PROMPT_REPEATS


def read_corpus(path: str | Path) -> list[str]:
    """One report per line; blank lines are skipped. Raises FileNotFoundError / ValueError on a missing or empty file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"corpus file not found: {path}")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        raise ValueError(f"corpus file {path} has no non-empty lines")
    return lines


def train_tokenizer(texts: Iterable[str], vocab_size: int):
    """A Qwen2-style byte-level BPE tokenizer trained on ``texts`` (a ``Qwen2Tokenizer``).

    Same normalizer and pre-tokenizer as the real Qwen tokenizer, the Qwen special tokens (eos ``<|im_end|>``, pad
    ``<|endoftext|>``), the section tags as regular added tokens, and ``CHAT_TEMPLATE``. The BPE trainer is
    deterministic for a given corpus, so the same texts give the same vocabulary.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    # The tags are added tokens below, so leave room for them inside the requested vocabulary size.
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(TAG_TOKENS),
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]

    tokenizer = Qwen2Tokenizer(
        vocab=model["vocab"],
        merges=merges,
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=list(SPECIAL_TOKENS[1:]),
        model_max_length=MAX_POSITIONS,
    )
    tokenizer.add_tokens([AddedToken(tag, special=False, normalized=False) for tag in TAG_TOKENS])
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _model_config(arch: str, size: TinySize, tokenizer, vocab_size: int):
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    text = {
        "vocab_size": vocab_size,
        "hidden_size": size.hidden_size,
        "intermediate_size": size.intermediate_size,
        "num_hidden_layers": size.num_hidden_layers,
        "num_attention_heads": size.num_attention_heads,
        "num_key_value_heads": size.num_key_value_heads,
        "max_position_embeddings": MAX_POSITIONS,
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }
    vision = {
        "depth": size.vision_depth,
        "hidden_size": size.vision_hidden_size,
        "intermediate_size": size.vision_intermediate_size,
        "num_heads": size.vision_num_heads,
        "patch_size": size.patch_size,
        "spatial_merge_size": size.spatial_merge_size,
        "temporal_patch_size": 2,
        "out_hidden_size": size.hidden_size,
    }
    tokens = {
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
    }
    section = mrope_section(size.head_dim, arch)
    if arch == "qwen2_5_vl":
        from transformers import Qwen2_5_VLConfig

        text["rope_parameters"] = {"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": section}
        # Windowed attention in every block but the last, as upstream (which uses full attention every 8th block);
        # upstream windows are 112 px (4 x 4 merged patches) on images of ~1000 px; a 56 px window (2 x 2 merged
        # patches) keeps several windows per tiny image, so the windowed path really runs.
        vision["window_size"] = 2 * size.patch_size * size.spatial_merge_size
        vision["fullatt_block_indexes"] = [size.vision_depth - 1]
        vision["hidden_act"] = "silu"
        return Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False, **tokens)
    from transformers import Qwen3VLConfig

    text["head_dim"] = size.head_dim
    text["rope_parameters"] = {
        "rope_type": "default",
        "rope_theta": 5_000_000.0,
        "mrope_section": section,
        "mrope_interleaved": True,
    }
    # Learned position embeddings on a square grid, interpolated to each image's patch grid (upstream: 48 x 48).
    grid_side = 2 * (size.image_size // size.patch_size)
    vision["num_position_embeddings"] = grid_side * grid_side
    vision["hidden_act"] = "gelu_pytorch_tanh"
    # Deepstack: features of the first vision block are also merged and added to the first decoder layer.
    vision["deepstack_visual_indexes"] = [0]
    return Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False, **tokens)


def _image_processor(arch: str, size: TinySize):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    factor = size.patch_size * size.spatial_merge_size
    kwargs = {}
    if arch == "qwen3_vl":
        # Qwen3-VL normalises with mean = std = 0.5 instead of the CLIP statistics.
        kwargs = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
    # Any image is resized so that it has at most image_size**2 pixels (16 visual tokens by default) and at least
    # 2 x 2 merged patches: small enough for CPU tests, large enough for the vision tower to see structure.
    return Qwen2VLImageProcessorPil(
        patch_size=size.patch_size,
        merge_size=size.spatial_merge_size,
        temporal_patch_size=2,
        min_pixels=(2 * factor) ** 2,
        max_pixels=size.image_size**2,
        **kwargs,
    )


def build_tiny_model(
    out_dir: str | Path,
    arch: str = "qwen2_5_vl",
    corpus: Sequence[str] | None = None,
    seed: int = 0,
    **size_overrides,
) -> Path:
    """Build a tiny random-weight ``arch`` model with its processor into ``out_dir`` and return the directory.

    ``corpus``: report texts for the tokenizer (default: ``himed.data.demo.report_corpus(n=2000, seed=seed)``).
    ``size_overrides``: fields of ``TinySize`` (e.g. ``hidden_size=64``). Weights are initialised under
    ``torch.manual_seed(seed)``, so the same arguments give the same files bit for bit.
    """
    import torch
    from transformers import AutoModelForImageTextToText, GenerationConfig

    from himed.models.processors import IMAGE_ONLY_PROCESSORS

    size = _resolve_size(arch, size_overrides)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out-dir {out_dir} exists and is not a directory")
    texts = list(corpus) if corpus is not None else default_corpus(seed)
    texts = [text.strip() for text in texts if text and text.strip()]
    if not texts:
        raise ValueError("the tokenizer corpus is empty")
    # In a completion a sentence often starts right after a tag (``<impression>Moderate ...``), with no space before
    # its first word, so sentences also go in on their own: their first words then get space-less merges too.
    sentences = [sentence for text in texts for sentence in _SENTENCE_END.split(text) if sentence]
    tokenizer = train_tokenizer(texts + sentences + _prompt_texts(), size.vocab_size)

    config = _model_config(arch, size, tokenizer, vocab_size=len(tokenizer))
    # Generator state is global: fork it so building a model does not move the caller's random stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    eos_ids = [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")]
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=eos_ids,
        pad_token_id=tokenizer.pad_token_id,
    )

    processor = IMAGE_ONLY_PROCESSORS[arch](
        image_processor=_image_processor(arch, size), tokenizer=tokenizer, chat_template=CHAT_TEMPLATE
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    n_params = sum(p.numel() for p in model.parameters())
    logger.info(
        "built tiny %s (%d parameters, vocabulary %d, %d visual tokens per %d px image) in %s",
        arch,
        n_params,
        len(tokenizer),
        size.visual_tokens_per_image,
        size.image_size,
        out_dir,
    )
    return out_dir
