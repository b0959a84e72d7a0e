"""Token-weighted SFT (LLM-RG4), on TRL's ``SFTTrainer``.

LLM-RG4 up-weights the loss of the report tokens that carry clinical findings. The paper selects those tokens by
integrated-gradients attribution; this is the attribution-free variant: a token weighs ``positive_weight`` (lambda,
1.75 by default) when it lies in a sentence of the finding or impression section in which the rule labeler finds a
positive or uncertain mention (``himed.data.examples.weighted_spans``), and 1 otherwise (negative sentences, the
<think> rationale, the tags and the end-of-turn tokens).

Loss: ``sum_t(w_t * CE_t) / sum_t(w_t)`` over the completion tokens TRL trains on (labels != -100), so lambda = 1
gives TRL's completion-only loss exactly. With gradient accumulation (and ``average_tokens_across_devices``) the
denominator is the total weight of the whole accumulated (global) batch, the weighted analogue of TRL's token count
``num_items_in_batch``: every token's share of the gradient is the same whatever micro-batch it falls in.

How the weights reach the loss: the dataset's ``weighted_spans`` column holds character spans of the target text.
``TokenWeightCollator`` runs TRL's own vision collator, then takes each row's trained tokens (labels != -100, i.e.
exactly the tokens in the loss), re-tokenizes their decoded text with offsets, and weights the tokens whose
characters overlap a span. The fused LM head of ``SFTTrainer`` returns no per-token weights hook, so the loss is
computed here from the full logits (an extra batch x length x vocabulary tensor; the token accuracy and entropy
metrics of ``SFTTrainer`` are not logged by this stage).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from trl import SFTTrainer

from himed.data.sections import completion_text

IGNORE_INDEX = -100
SPANS_COLUMN = "weighted_spans"


def token_weights_for(
    tokenizer, token_ids: Sequence[int], content: str, spans: Sequence[Sequence[int]], positive_weight: float
) -> list[float]:
    """The weight of each of ``token_ids`` (a completion as TRL tokenized it: ``content`` plus end-of-turn text).

    ``spans`` are ``[start, end)`` character offsets into ``content``; a token weighs ``positive_weight`` when its
    characters overlap a span, else 1.
    """
    token_ids = [int(i) for i in token_ids]
    text = tokenizer.decode(token_ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    if list(encoded["input_ids"]) != token_ids:
        raise ValueError(
            "the completion does not re-tokenize to the tokens TRL trains on, so weights cannot be placed; "
            f"completion starts {text[:80]!r}"
        )
    shift = text.find(content)
    if shift < 0:
        if not content.startswith(text.rstrip()):  # a completion cut by max_length is a prefix of the content
            raise ValueError(f"the completion text {text[:80]!r} does not contain its target")
        shift = 0
    shifted = [(start + shift, end + shift) for start, end in spans]
    return [
        positive_weight if any(a < end and b > start for start, end in shifted) else 1.0
        for a, b in encoded["offset_mapping"]
    ]


class TokenWeightCollator:
    """Wraps TRL's vision collator: pops ``weighted_spans`` and adds ``token_weights`` (0 where labels are -100)."""

    def __init__(self, collator, tokenizer, positive_weight: float):
        self.collator, self.tokenizer, self.positive_weight = collator, tokenizer, positive_weight

    def __call__(self, examples: list[dict]) -> dict:
        spans = [example.pop(SPANS_COLUMN, None) or [] for example in examples]
        contents = [completion_text(example["completion"]) for example in examples]  # before TRL rewrites them
        batch = self.collator(examples)
        labels = batch["labels"]
        weights = torch.zeros(labels.shape, dtype=torch.float32)
        for row, (content, row_spans) in enumerate(zip(contents, spans, strict=True)):
            positions = (labels[row] != IGNORE_INDEX).nonzero().flatten()
            ids = batch["input_ids"][row, positions].tolist()
            values = token_weights_for(self.tokenizer, ids, content, row_spans, self.positive_weight)
            weights[row, positions] = torch.tensor(values, dtype=torch.float32)
        batch["token_weights"] = weights
        return batch


def weighted_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``sum(w_t * CE_t)`` over next-token predictions (position t predicts label t + 1), unnormalised."""
    logits, labels, weights = logits[:, :-1].float(), labels[:, 1:], weights[:, 1:]
    per_token = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none")
    return (per_token * weights.to(per_token.dtype)).sum()


class WeightedSFTTrainer(SFTTrainer):
    """``SFTTrainer`` with the token-weighted loss of the module docstring; the dataset needs ``weighted_spans``."""

    def __init__(self, *args, positive_weight: float = 1.75, **kwargs):
        super().__init__(*args, **kwargs)
        tokenizer = getattr(self.processing_class, "tokenizer", self.processing_class)
        self.data_collator = TokenWeightCollator(self.data_collator, tokenizer, positive_weight)
        # The loss is normalised by the accumulated batch's total weight (num_items_in_batch below), so Trainer must
        # not divide it by the accumulation steps again.
        self.loss_is_scaled_for_ga = True

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if SPANS_COLUMN not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, SPANS_COLUMN]

    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device):
        """The total weight of the accumulated batch (the denominator of the module docstring's loss)."""
        total = sum(batch["token_weights"][..., 1:].sum() for batch in batch_samples)
        total = torch.as_tensor(total, dtype=torch.float32, device=device)
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            total = self.accelerator.gather(total).sum()
        return total

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        weights = inputs.pop("token_weights")
        labels = inputs.pop("labels")
        outputs = model(**inputs, use_cache=False)
        weighted_sum = weighted_cross_entropy(outputs.logits, labels, weights)
        total = weights[:, 1:].sum() if num_items_in_batch is None else num_items_in_batch
        loss = weighted_sum / torch.as_tensor(total, device=weighted_sum.device).clamp(min=1e-8)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            # num_items_in_batch is the weight of every rank and DDP averages gradients across ranks (as in TRL).
            loss = loss * self.accelerator.num_processes
        return (loss, outputs) if return_outputs else loss
