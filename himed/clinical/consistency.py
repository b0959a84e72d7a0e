"""Label clashes between two sections of one report: the count behind the consistency reward and metric.

A *clash* is an observation labelled positive (1) in one section and negative (0) in the other; uncertain (-1)
against either is hedging, not a clash, and an observation one section does not mention is not a clash either. No
Finding is never labelled 0, so it cannot clash; the observation sets compared leave it out. Used by the consistency
reward (``himed.rewards.consistency``) and ``himed evaluate``'s ``consistency_rate``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from himed.clinical.observations import NEGATIVE, NO_FINDING, OBSERVATION_SETS, POSITIVE, observation_set


def clash_observations(name: str, who: str | None = None) -> tuple[str, ...]:
    """The observations of set ``name`` (``five`` or ``all``) that can clash: all but No Finding."""
    return tuple(obs for obs in observation_set(name, who) if obs != NO_FINDING)


# Set name -> the observations compared, for callers that look a set up by name.
CLASH_OBSERVATION_SETS: dict[str, tuple[str, ...]] = {name: clash_observations(name) for name in OBSERVATION_SETS}


def count_clashes(
    finding: Mapping[str, int], impression: Mapping[str, int], observations: Sequence[str]
) -> tuple[int, int]:
    """(clashes, shared): observations positive in one section and negative in the other, and those with a
    definite label in both."""
    clashes = shared = 0
    for name in observations:
        a, b = finding.get(name), impression.get(name)
        if a in (POSITIVE, NEGATIVE) and b in (POSITIVE, NEGATIVE):
            shared += 1
            clashes += a != b
    return clashes, shared
