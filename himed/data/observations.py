"""The observation-level stage of DCRRG: one prompt per observation, answered by the report's sentences about it.

DCRRG trains the model to describe one observation at a time ("Describe the pleural effusion.") before it writes
full reports. ``observation_examples(row)`` turns a study row into those examples:

- the target is every sentence of the reference text (findings, then impression) in which the rule labeler finds a
  mention of the observation, in report order, each once;
- when no sentence mentions it but the row's labels say negative, the target is the negative sentence
  ``"No <observation>."`` (the report was labeled negative from text the rules did not match);
- otherwise (not mentioned and not labeled, or labeled positive/uncertain without a matching sentence) the row gives
  no example for that observation: a target would have to be invented.

The prompt is the report prompt of ``build_prompt`` (same images, views, indication and prior report) with the
request replaced by the observation's, so every input scenario of the report stage works here too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from himed.clinical.observations import FIVE_OBSERVATIONS, NEGATIVE, normalize_labels
from himed.data.prompts import build_prompt
from himed.data.sections import reference_text

OBSERVATION_INSTRUCTION = "Describe the {observation}."
NEGATIVE_TARGET = "No {observation}."


def observation_targets(row: Mapping, observations: Sequence[str] = FIVE_OBSERVATIONS, labeler=None) -> dict:
    """``{observation: target text}`` for the observations of ``row`` that have one (module docstring)."""
    from himed.clinical.rules import ChexpertRuleLabeler, split_sentences

    labeler = labeler or ChexpertRuleLabeler()
    text = reference_text(row.get("findings") or "", row.get("impression") or "")
    sentences = split_sentences(text)
    mentioned: dict[str, list[int]] = {}
    for mention in labeler.mentions(text):
        indices = mentioned.setdefault(mention.observation, [])
        if mention.sentence_index not in indices:
            indices.append(mention.sentence_index)
    labels = normalize_labels(row.get("labels"), where=f"row {row.get('id')!r} labels")
    targets = {}
    for observation in observations:
        if observation in mentioned:
            targets[observation] = " ".join(text[slice(*sentences[i])] for i in sorted(mentioned[observation]))
        elif labels.get(observation) == NEGATIVE:
            targets[observation] = NEGATIVE_TARGET.format(observation=observation.lower())
    return targets


def observation_examples(
    row: Mapping,
    observations: Sequence[str] = FIVE_OBSERVATIONS,
    *,
    include_indication: bool = True,
    include_prior: bool = True,
    labeler=None,
) -> list[dict]:
    """One ``{id, observation, prompt, target}`` per observation of ``row`` with a target, in ``observations`` order.

    ``id`` is ``"<row id>/<observation>"``; ``prompt`` is conversational messages (``build_prompt``) whose image
    slots take the row's images in order.
    """
    out = []
    for observation, target in observation_targets(row, observations, labeler).items():
        prompt = build_prompt(
            row,
            include_indication=include_indication,
            include_prior=include_prior,
            instruction=OBSERVATION_INSTRUCTION.format(observation=observation.lower()),
        )
        out.append({"id": f"{row['id']}/{observation}", "observation": observation, "prompt": prompt, "target": target})
    return out
