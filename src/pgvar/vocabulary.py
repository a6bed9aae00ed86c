"""The words and colours every surface shows, defined once: the lesson's four configurations, the
baseline kinds and what to call them. The library, the command line, the explorer and the reports
all read them from here, so a name never differs between a table, a page and a JSON document.
"""

from __future__ import annotations

#: The lesson's presets: a spelling the user may type, and the spec it stands for.
PRESETS: dict[str, str] = {
    "vanilla": "return+none",
    "rtg": "rtg+none",
    "base": "return+lesson",
    "rtg+base": "rtg+lesson",
}

#: The lesson's four configurations in its order (reward-to-go off/on, baseline off/on).
LESSON_FOUR: tuple[str, ...] = tuple(PRESETS)

#: The lesson's display name of each configuration, by canonical spec.
LESSON_LABELS: dict[str, str] = {
    "return+none": "vanilla",
    "rtg+none": "reward-to-go",
    "return+lesson": "baseline",
    "rtg+lesson": "rtg + baseline",
}

#: One colour per configuration of the lesson, safe for colour-blind readers (Okabe & Ito 2008:
#: vermillion, orange, sky blue, blue), on every page, figure and report.
LESSON_COLOURS: dict[str, str] = {
    "return+none": "#D55E00",
    "rtg+none": "#E69F00",
    "return+lesson": "#56B4E9",
    "rtg+lesson": "#0072B2",
}
MEASURED_COLOUR = "#3b6fb6"  # a measured series that is not one of the four (history, variance against N)

#: Baseline kinds of a spec ``WEIGHT+BASELINE``, and what a page or table calls each.
BASELINE_KINDS: dict[str, str] = {
    "none": "no baseline",
    "lesson": "lesson's running mean of G_t",
    "running": "matched running mean",
    "running-value": "running mean of G_t per state",
    "value": "exact V(s)",
    "optimal": "optimal constant",
    "optimal-per-parameter": "optimal per parameter",
    "learned": "learned value table",
    "loo": "leave-one-out mean of the group (RLOO)",
    "group": "group mean (GRPO, Dr. GRPO)",
    "group-std": "group mean and std (GRPO)",
}

#: Baselines computed from the other episodes of a group of K that share a start state (a prompt).
GROUP_BASELINES: tuple[str, ...] = ("loo", "group", "group-std")

#: The few words added to a configuration's lesson name when its baseline is not the lesson's.
BASELINE_SHORT: dict[str, str] = {
    "none": "",
    "lesson": "",
    "running": "matched running mean",
    "running-value": "running V per state",
    "value": "exact V",
    "optimal": "optimal b",
    "optimal-per-parameter": "optimal b per parameter",
    "learned": "learned V",
    "loo": "RLOO",
    "group": "group mean",
    "group-std": "GRPO",
}


def label(canonical: str) -> str:
    """The lesson's name of a configuration (``return+none`` -> ``vanilla``), else the spec itself."""
    return LESSON_LABELS.get(canonical, canonical)
