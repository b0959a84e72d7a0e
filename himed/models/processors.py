"""Image-only Qwen-VL processors for environments without torchvision.

transformers 5.x builds ``Qwen2_5_VLProcessor`` and ``Qwen3VLProcessor`` with a video processor, and every video
processor needs torchvision (upstream transformers issue #43986). On the CPU environment torchvision cannot be
installed (its PyPI wheels are CUDA builds, see notes/ENVIRONMENT.md), so these subclasses keep everything the
upstream processors do for text and images (placeholder expansion, ``mm_token_type_ids``, chat templates, decoding)
and simply have no video processor. Passing ``videos=`` to them raises a clear error.

They save in the upstream format: ``processor_class`` is the upstream class name, and ``processor_config.json``
gets a ``video_processor`` entry (the upstream video processor class with the image processor's patch, merge, size
and normalisation settings; any other video settings of a hub checkpoint are not kept), so a directory saved here
loads with the full upstream processor on a machine that has torchvision (a GPU machine, vLLM).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor
from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor
from transformers.processing_utils import ProcessorMixin


def _token_attributes(tokenizer: Any, names: tuple[str, ...], defaults: dict[str, str]) -> dict[str, Any]:
    """``{name: token, name_id: id}`` for each name, preferring the tokenizer's own attribute as upstream does."""
    attributes: dict[str, Any] = {}
    for name in names:
        token = getattr(tokenizer, name, None) or defaults[name]
        token_id = getattr(tokenizer, f"{name}_id", None)
        if token_id is None:
            token_id = tokenizer.convert_tokens_to_ids(token)
        if token_id is None or token_id == tokenizer.unk_token_id:
            raise ValueError(f"the tokenizer has no {token!r} token, which a Qwen-VL processor needs")
        attributes[name] = token
        attributes[f"{name}_id"] = token_id
    return attributes


_DEFAULT_TOKENS = {
    "image_token": "<|image_pad|>",
    "video_token": "<|video_pad|>",
    "vision_start_token": "<|vision_start|>",
    "vision_end_token": "<|vision_end|>",
}


class _ImageOnlyMixin:
    """Shared behaviour: refuse videos and save under the upstream class name."""

    upstream_name: str
    upstream_video_processor: str

    def __call__(self, images=None, text=None, videos=None, audio=None, **kwargs):
        if videos is not None:
            raise ValueError(
                f"{type(self).__name__} has no video processor (torchvision is not installed); pass images only"
            )
        return super().__call__(images=images, text=text, videos=None, audio=audio, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        # The saved files are exactly the upstream format minus the video processor, so name the upstream class:
        # a machine with torchvision then loads the full processor from the same directory.
        output["processor_class"] = self.upstream_name
        output["video_processor"] = self.video_processor_config()
        return output

    def video_processor_config(self) -> dict[str, Any]:
        """The ``video_processor`` entry the upstream processor needs to load from the saved directory."""
        image = self.image_processor
        return {
            "video_processor_type": self.upstream_video_processor,
            "patch_size": image.patch_size,
            "temporal_patch_size": image.temporal_patch_size,
            "merge_size": image.merge_size,
            "size": {"shortest_edge": image.size.shortest_edge, "longest_edge": image.size.longest_edge},
            "image_mean": list(image.image_mean),
            "image_std": list(image.image_std),
        }

    def save_pretrained(self, save_directory, *args, **kwargs):
        saved = super().save_pretrained(save_directory, *args, **kwargs)
        # ProcessorMixin also stamps its own class name into tokenizer_config.json; write the upstream name there too.
        tokenizer_config = Path(save_directory) / "tokenizer_config.json"
        if tokenizer_config.is_file():
            config = json.loads(tokenizer_config.read_text(encoding="utf-8"))
            if config.get("processor_class") == type(self).__name__:
                config["processor_class"] = self.upstream_name
                tokenizer_config.write_text(
                    json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8"
                )
        self.tokenizer._set_processor_class(self.upstream_name)
        return saved


class Qwen2_5_VLImageOnlyProcessor(_ImageOnlyMixin, Qwen2_5_VLProcessor):
    """``Qwen2_5_VLProcessor`` without the video processor (see the module docstring)."""

    upstream_name = "Qwen2_5_VLProcessor"
    upstream_video_processor = "Qwen2VLVideoProcessor"

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        for name, value in _token_attributes(tokenizer, ("image_token", "video_token"), _DEFAULT_TOKENS).items():
            setattr(self, name, value)
        # Skip Qwen2_5_VLProcessor.__init__, which insists on a video processor; the attribute list of this class
        # (read from this signature) is image_processor + tokenizer.
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)


class Qwen3VLImageOnlyProcessor(_ImageOnlyMixin, Qwen3VLProcessor):
    """``Qwen3VLProcessor`` without the video processor (see the module docstring)."""

    upstream_name = "Qwen3VLProcessor"
    upstream_video_processor = "Qwen3VLVideoProcessor"

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        names = ("image_token", "video_token", "vision_start_token", "vision_end_token")
        for name, value in _token_attributes(tokenizer, names, _DEFAULT_TOKENS).items():
            setattr(self, name, value)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)


# model_type -> image-only processor class; the keys are the architectures the fallback covers.
IMAGE_ONLY_PROCESSORS: dict[str, type[ProcessorMixin]] = {
    "qwen2_5_vl": Qwen2_5_VLImageOnlyProcessor,
    "qwen3_vl": Qwen3VLImageOnlyProcessor,
}
