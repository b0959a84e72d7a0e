"""CheXbert (Smit et al. 2020) implemented in himed: BERT + 14 linear heads, strict loading of the user's checkpoint.

Variant implemented: the published ``bert_labeler`` of stanfordmlgroup/CheXbert - a BERT encoder (bert-base-uncased
shape by default, built here from a ``BertConfig``, never downloaded), dropout on the final hidden state of [CLS],
13 linear heads of 4 classes (blank, positive, negative, uncertain) and 1 head of 2 classes (blank, positive) for
No Finding, in ``CHEXBERT_OBSERVATIONS`` order. Inputs are tokenized as CheXbert does: whitespace collapsed,
[CLS] tokens [SEP], cut to 512 tokens (keeping the final [SEP]); an empty report is just [CLS] [SEP].

Where it departs from the original code:

- Loading is strict. The published ``chexbert.pth`` is ``{"model_state_dict": {...}}`` saved from
  ``nn.DataParallel``, so every key starts with ``module.``; we strip that prefix and then require the keys and shapes
  to match exactly (the original CPU path and the ``f1chexbert`` package load with ``strict=False`` in some
  versions, which silently leaves random weights in place). Two buffers that some transformers versions saved
  (``bert.embeddings.position_ids``, ``bert.embeddings.token_type_ids``) are ignored: they hold constants.
- Labels follow docs/data.md: blank -> unmentioned, positive -> 1, negative -> 0, uncertain -> -1, and by
  default No Finding is set by ``with_no_finding`` from the 13 other heads, like every himed labeler. With
  ``no_finding="head"`` the model's own No Finding head decides instead (1 when it predicts positive).

CheXbert's weights are licensed for non-commercial research use only: himed never ships or downloads them. Get
``chexbert.pth`` from the CheXbert authors (https://github.com/stanfordmlgroup/CheXbert, "Checkpoint download"),
and a bert-base-uncased tokenizer folder (``vocab.txt``; ``tokenizer.json`` optional) from a local copy of
https://huggingface.co/bert-base-uncased.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import BertConfig, BertModel, BertTokenizer

from himed.clinical.observations import (
    CHEXBERT_OBSERVATIONS,
    NEGATIVE,
    NO_FINDING,
    POSITIVE,
    UNCERTAIN,
    with_no_finding,
)
from himed.data.jsonl import read_json

# CheXbert's class indices: heads 0-12 predict blank / positive / negative / uncertain; head 13 blank / positive.
CLASS_TO_LABEL: dict[int, int | None] = {0: None, 1: POSITIVE, 2: NEGATIVE, 3: UNCERTAIN}
MAX_TOKENS = 512
# Constant buffers that transformers 3.x-4.30 wrote into state dicts; newer BertModels do not keep them as state.
IGNORABLE_KEYS = frozenset({"bert.embeddings.position_ids", "bert.embeddings.token_type_ids"})
SETUP_HINT = (
    "CheXbert needs two local files: checkpoint=PATH to CheXbert's chexbert.pth (non-commercial licence; get it from "
    "https://github.com/stanfordmlgroup/CheXbert) and tokenizer=DIR, a bert-base-uncased tokenizer folder with "
    "vocab.txt (from a local copy of https://huggingface.co/bert-base-uncased)"
)
_WHITESPACE = re.compile(r"\s+")


class CheXbert(nn.Module):
    """BERT encoder + 13 heads of 4 classes + 1 head of 2 classes, with CheXbert's parameter names."""

    def __init__(self, config: BertConfig | None = None, dropout: float = 0.1) -> None:
        super().__init__()
        # BertConfig() is bert-base-uncased's shape (vocab 30522, hidden 768, 12 layers, 12 heads).
        self.config = config if config is not None else BertConfig()
        self.bert = BertModel(self.config)
        self.dropout = nn.Dropout(dropout)
        hidden = self.config.hidden_size
        heads = [nn.Linear(hidden, 4) for _ in range(len(CHEXBERT_OBSERVATIONS) - 1)]
        heads.append(nn.Linear(hidden, 2))
        self.linear_heads = nn.ModuleList(heads)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[torch.Tensor]:
        """Logits per head: 13 tensors of shape (batch, 4), then one of shape (batch, 2)."""
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        # CheXbert classifies from the final hidden state of [CLS], not from BERT's pooler output.
        cls = self.dropout(hidden[:, 0, :])
        return [head(cls) for head in self.linear_heads]


def read_config(config: BertConfig | Mapping[str, Any] | str | os.PathLike | None) -> BertConfig:
    """A ``BertConfig`` from an instance, a mapping of its fields, a config.json path, or None (bert-base)."""
    if config is None:
        return BertConfig()
    if isinstance(config, BertConfig):
        return config
    if isinstance(config, Mapping):
        return BertConfig(**config)
    path = Path(config)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"CheXbert config not found: {path}")
    return BertConfig(**read_json(path))


def read_checkpoint(checkpoint: str | os.PathLike) -> dict[str, torch.Tensor]:
    """CheXbert's state dict from ``chexbert.pth``, with DataParallel's ``module.`` prefix and constant buffers removed."""
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"CheXbert checkpoint not found: {path}. {SETUP_HINT}")
    try:
        # weights_only: the published file holds tensors and plain containers; never run pickled code.
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({type(error).__name__}: {error})") from None
    state = saved.get("model_state_dict", saved) if isinstance(saved, Mapping) else None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a state dict or {{'model_state_dict': state dict}} of tensors")
    # Saved from nn.DataParallel: "module.bert.embeddings..." -> "bert.embeddings...".
    state = {key.removeprefix("module."): value for key, value in state.items()}
    return {key: value for key, value in state.items() if key not in IGNORABLE_KEYS}


def check_state_dict(state: Mapping[str, torch.Tensor], config: BertConfig, where: str) -> None:
    """Raise ValueError naming ``where`` unless ``state`` has exactly CheXbert's keys and shapes for ``config``."""
    # Built on the meta device: shapes only, no memory and no random initialisation (bert-base takes seconds).
    with torch.device("meta"):
        expected = {key: value.shape for key, value in CheXbert(config).state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(
        f"{key} {tuple(state[key].shape)} vs {tuple(expected[key])}"
        for key in set(state) & set(expected)
        if state[key].shape != expected[key]
    )
    problems = []
    for title, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched)):
        if keys:
            shown = ", ".join(keys[:5]) + (f", ... ({len(keys)} in all)" if len(keys) > 5 else "")
            problems.append(f"{title} keys: {shown}")
    if problems:
        hint = (
            " (the model's BertConfig does not match the checkpoint: pass config= with the checkpoint's shape)"
            if mismatched or (missing and unexpected)
            else ""
        )
        raise ValueError(f"{where}: not a CheXbert checkpoint for this model; " + "; ".join(problems) + hint)


def load_chexbert(checkpoint: str | os.PathLike, config: BertConfig | None = None) -> CheXbert:
    """A CheXbert with the checkpoint's weights, loaded strictly (see ``check_state_dict``)."""
    config = config if config is not None else BertConfig()
    state = read_checkpoint(checkpoint)
    check_state_dict(state, config, str(checkpoint))
    model = CheXbert(config)
    model.load_state_dict(state, strict=True)
    return model


def load_tokenizer(tokenizer: str | os.PathLike) -> BertTokenizer:
    """The WordPiece tokenizer in a local folder (``vocab.txt``, optionally ``tokenizer.json``); never downloads."""
    path = Path(tokenizer)
    if not path.is_dir() or not ((path / "vocab.txt").is_file() or (path / "tokenizer.json").is_file()):
        raise FileNotFoundError(f"CheXbert tokenizer folder with vocab.txt not found: {path}. {SETUP_HINT}")
    return BertTokenizer.from_pretrained(str(path), local_files_only=True)


class CheXbertLabeler:
    """The ``chexbert`` labeler: CheXbert loaded once, reports labelled in batches without gradients."""

    name = "chexbert"

    def __init__(
        self,
        checkpoint: str | os.PathLike | None = None,
        tokenizer: str | os.PathLike | None = None,
        device: str = "cpu",
        batch_size: int = 32,
        config: BertConfig | Mapping[str, Any] | str | os.PathLike | None = None,
        no_finding: str = "rule",
    ) -> None:
        if checkpoint is None or tokenizer is None:
            raise ValueError(f"the chexbert labeler is missing {'checkpoint' if checkpoint is None else 'tokenizer'}. "
                             f"{SETUP_HINT}")  # fmt: skip
        if no_finding not in ("rule", "head"):
            raise ValueError(
                "no_finding must be 'rule' (derived from the other labels, as every labeler does) or 'head' "
                f"(CheXbert's own No Finding head), got {no_finding!r}"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.tokenizer = load_tokenizer(tokenizer)
        self.model = load_chexbert(checkpoint, read_config(config))
        self.device = torch.device(device)
        self.model.to(self.device).eval()
        self.batch_size = batch_size
        self.no_finding = no_finding
        vocab = self.model.config.vocab_size
        if len(self.tokenizer) > vocab:
            raise ValueError(f"tokenizer {tokenizer} has {len(self.tokenizer)} tokens but the model's vocabulary has "
                             f"{vocab}: use the tokenizer CheXbert was trained with (bert-base-uncased)")  # fmt: skip

    def _encode(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        # CheXbert's preprocessing: strip, newlines and runs of whitespace to one space.
        cleaned = [_WHITESPACE.sub(" ", text if isinstance(text, str) else "").strip() for text in texts]
        encoded = self.tokenizer(
            cleaned,
            truncation=True,
            max_length=MAX_TOKENS,
            padding=True,
            return_tensors="pt",
            return_token_type_ids=False,
        )
        return {
            "input_ids": encoded["input_ids"].to(self.device),
            "attention_mask": encoded["attention_mask"].to(self.device),
        }

    @torch.inference_mode()
    def predict_classes(self, texts: Sequence[str]) -> list[list[int]]:
        """CheXbert's raw class index per head (14 per report), as its ``label.py`` computes them."""
        out: list[list[int]] = []
        for begin in range(0, len(texts), self.batch_size):
            batch = self._encode(texts[begin : begin + self.batch_size])
            logits = self.model(**batch)
            classes = torch.stack([head.argmax(dim=1) for head in logits], dim=1)
            out.extend(classes.tolist())
        return out

    @torch.inference_mode()
    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """The final hidden state of [CLS] per report, (n, hidden) float32 on CPU: what the heads classify from
        (before dropout), and what SembScore (CXR-Report-Metric's ``CheXbert/src/encode.py``) compares."""
        texts = list(texts)
        rows = []
        for begin in range(0, len(texts), self.batch_size):
            batch = self._encode(texts[begin : begin + self.batch_size])
            hidden = self.model.bert(**batch).last_hidden_state
            rows.append(hidden[:, 0, :].float().cpu())
        return torch.cat(rows) if rows else torch.zeros(0, self.model.config.hidden_size)

    def label(self, texts: Sequence[str]) -> list[dict[str, int]]:
        """Labels (docs/data.md) for each report."""
        results = []
        for classes in self.predict_classes(list(texts)):
            labels = {}
            for observation, index in zip(CHEXBERT_OBSERVATIONS[:-1], classes[:-1], strict=True):
                value = CLASS_TO_LABEL[index]
                if value is not None:
                    labels[observation] = value
            if self.no_finding == "head":
                if classes[-1] == 1:
                    labels[NO_FINDING] = POSITIVE
                results.append(labels)
            else:
                results.append(with_no_finding(labels))
        return results
