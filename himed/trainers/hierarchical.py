"""The findings-impression consistency term of Hi-MrGn, adapted to a VLM, on TRL's ``SFTTrainer``.

Hi-MrGn writes the findings first and then the impression from the images and the findings, and adds a contrastive
module "to enhance the semantic coherence between findings and impression" (its abstract). The hierarchical stage
(``himed.trainers.sft``, ``himed.data.examples.hierarchical_examples``) already trains the two turns; this module adds
the contrastive term as an optional auxiliary loss:

    loss = CE (TRL's completion-only loss, unchanged) + consistency_weight * L_c / accumulation steps
    L_c = 1/2 [ CE_rows(S, I) + CE_columns(S, I) ],   S_ij = cos(f_i, m_j) / temperature

over the impression examples ``i`` of a micro-batch: ``f_i`` is the mean of the policy's last hidden states over the
tokens of the ``<finding>`` text in the example's prompt (the findings turn, held there as the assistant's answer),
``m_i`` the mean over the tokens of the ``<impression>`` text of its completion. Each study's findings are pulled
towards its own impression and pushed from the other studies' impressions in the batch (symmetric InfoNCE, as in
CLIP), and the reverse.

How it departs from the paper, as far as its published description goes (we had no code of it):

- Hi-MrGn is its own encoder-decoder network; here there is no separate text encoder or projection head: the two
  representations are mean-pooled last-layer hidden states of the VLM itself, on the tokens it trains on, so the
  term shapes the policy's own states (and, through them, what it writes).
- Only the impression examples contribute (they hold both sections of one study); findings-only examples, and
  impression examples whose sections cannot be located in the tokens (cut by ``max_length``), contribute nothing.
- The negatives are the other impression examples of the same micro-batch on the same rank: no memory bank, no
  gathering across ranks or accumulation steps. A micro-batch with fewer than two impression examples gives 0 (a
  softmax over one candidate). With the stage's interleaved dataset, a micro-batch of B examples holds about B/2.
- Gradient accumulation: the term is a per-micro-batch mean and is divided by the accumulation steps, as TRL does
  with its MoE auxiliary loss, so that the accumulated gradient is the mean over micro-batches.

``consistency_weight: 0`` (the default) leaves TRL's loss untouched. Logged: ``consistency/infonce`` (L_c) and
``consistency/pairs`` (impression examples in the micro-batch).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from trl import SFTTrainer

from himed.data.sections import completion_text

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
FINDINGS_MASK = "consistency_findings_mask"
IMPRESSION_MASK = "consistency_impression_mask"


def section_span(text: str, name: str) -> tuple[int, int] | None:
    """``[start, end)`` of the text inside ``<name>...</name>`` in ``text`` (first occurrence), or None."""
    match = re.search(rf"<{name}>(.*?)</{name}>", text, re.DOTALL)
    return match.span(1) if match and match.group(1).strip() else None


def hierarchical_pair(example: dict) -> tuple[str, str] | None:
    """(findings answer, impression answer) of an impression example, or None for a findings-only example."""
    answers = [m for m in example.get("prompt") or [] if m.get("role") == "assistant"]
    completion = completion_text(example.get("completion") or "")
    if not answers or section_span(completion, "impression") is None:
        return None
    findings = completion_text([answers[-1]])
    return (findings, completion) if section_span(findings, "finding") is not None else None


def locate_section(tokenizer, row_ids: Sequence[int], allowed: Sequence[bool], answer: str, name: str) -> list[int]:
    """Positions in ``row_ids`` of the tokens of ``answer``'s ``<name>`` text, searched where ``allowed``; [] if absent.

    ``answer`` is tokenized alone from the section's opening tag on (a chat template may drop an earlier turn's
    ``<think>`` block, as Qwen3's does): in the row that text follows a line break and ends at ``<|im_end|>``,
    boundaries that a byte-level BPE does not merge across, so its tokens appear as such (checked by the tests).
    """
    if section_span(answer, name) is None:
        return []
    answer = answer[answer.index(f"<{name}>") :]
    span = section_span(answer, name)
    encoded = tokenizer(answer, add_special_tokens=False, return_offsets_mapping=True)
    piece, offsets = list(encoded["input_ids"]), encoded["offset_mapping"]
    if not piece:
        return []
    row_ids, first, size = list(row_ids), piece[0], len(piece)
    for start in range(len(row_ids) - size + 1):
        if row_ids[start] != first:
            continue
        if row_ids[start : start + size] == piece and all(allowed[start : start + size]):
            return [start + k for k, (a, b) in enumerate(offsets) if a < span[1] and b > span[0]]
    return []


class SectionMaskCollator:
    """Wraps TRL's vision collator: adds the findings and impression token masks of every impression example."""

    def __init__(self, collator, tokenizer):
        self.collator, self.tokenizer = collator, tokenizer
        self.unlocated = 0

    def __call__(self, examples: list[dict]) -> dict:
        pairs = [hierarchical_pair(example) for example in examples]  # before TRL rewrites the examples
        batch = self.collator(examples)
        ids, labels = batch["input_ids"], batch["labels"]
        findings = torch.zeros(ids.shape, dtype=torch.bool)
        impression = torch.zeros(ids.shape, dtype=torch.bool)
        for row, pair in enumerate(pairs):
            if pair is None:
                continue
            trained = (labels[row] != IGNORE_INDEX).tolist()
            prompt = [not t for t in trained]
            row_ids = ids[row].tolist()
            f = locate_section(self.tokenizer, row_ids, prompt, pair[0], "finding")
            m = locate_section(self.tokenizer, row_ids, trained, pair[1], "impression")
            if not f or not m:
                self.unlocated += 1
                if self.unlocated == 1:
                    logger.warning(
                        "consistency term: an impression example's sections are not in its tokens (cut by "
                        "max_length?); such examples contribute nothing (counted)"
                    )
                continue
            findings[row, f] = True
            impression[row, m] = True
        batch[FINDINGS_MASK], batch[IMPRESSION_MASK] = findings, impression
        return batch


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per row, the mean of ``hidden`` (rows x length x dim) over the positions where ``mask`` is true."""
    mask = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)


def consistency_infonce(
    hidden: torch.Tensor, findings_mask: torch.Tensor, impression_mask: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, int]:
    """L_c of the module docstring and the number of pairs; rows without both masks are left out."""
    rows = findings_mask.any(dim=1) & impression_mask.any(dim=1)
    n = int(rows.sum())
    if n < 2:
        return hidden.sum() * 0.0, n  # no negatives: 0, still connected to the graph
    hidden = hidden[rows].float()
    f = F.normalize(mean_pool(hidden, findings_mask[rows]), dim=-1)
    m = F.normalize(mean_pool(hidden, impression_mask[rows]), dim=-1)
    logits = f @ m.T / temperature
    targets = torch.arange(n, device=logits.device)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)), n


def _backbone(model):
    """The module whose ``last_hidden_state`` feeds the LM head (what TRL's fused head reads)."""
    if hasattr(model, "get_base_model"):  # PEFT
        model = model.get_base_model()
    return model.base_model


class HierarchicalSFTTrainer(SFTTrainer):
    """``SFTTrainer`` plus the consistency term of the module docstring (off when ``consistency_weight`` is 0)."""

    def __init__(self, *args, consistency_weight: float = 0.0, consistency_temperature: float = 0.1, **kwargs):
        super().__init__(*args, **kwargs)
        self.consistency_weight = float(consistency_weight)
        self.consistency_temperature = float(consistency_temperature)
        if self.consistency_weight > 0:
            tokenizer = getattr(self.processing_class, "tokenizer", self.processing_class)
            self.data_collator = SectionMaskCollator(self.data_collator, tokenizer)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        findings_mask = inputs.pop(FINDINGS_MASK, None)
        impression_mask = inputs.pop(IMPRESSION_MASK, None)
        if self.consistency_weight == 0 or findings_mask is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        captured = {}

        def keep_hidden(module, args, output):
            # The first call is the loss forward; with return_outputs TRL runs a second, no-grad one for the logits.
            captured.setdefault(
                "hidden", output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
            )

        handle = _backbone(self.accelerator.unwrap_model(model)).register_forward_hook(keep_hidden)
        try:
            result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        finally:
            handle.remove()
        loss, outputs = result if return_outputs else (result, None)
        term, pairs = consistency_infonce(
            captured["hidden"],
            findings_mask.to(loss.device),
            impression_mask.to(loss.device),
            self.consistency_temperature,
        )
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["consistency/infonce"].append(float(term.detach()))
        self._metrics[mode]["consistency/pairs"].append(float(pairs))
        # As TRL's MoE auxiliary loss: with num_items_in_batch the CE is already a share of the accumulated batch.
        steps = self.current_gradient_accumulation_steps if num_items_in_batch is not None else 1
        loss = loss + self.consistency_weight * term / steps
        return (loss, outputs) if return_outputs else loss
