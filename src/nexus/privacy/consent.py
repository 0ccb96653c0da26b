"""Consent: what a visitor allowed, and what that permits (pure: no I/O).

A visitor gives or withholds consent per *purpose*. What a purpose covers on the server:

* ``analytics`` -- storing the visitor's events at all (funnels, experiments' results);
* ``emotion_analysis`` -- reading the visitor's words for emotion and keeping the text;
* ``personalisation`` -- decisions made for this visitor from what is known about them: the
  emotion context and the UI adaptation a contextual bandit picks;
* ``marketing`` -- using the visitor's data to reach them (CRM exports, campaigns): recorded and
  exported for the integrations that act on it.

A workspace's *consent mode* says what silence means. ``opt_in`` (GDPR's default for anything
not strictly necessary): a purpose is permitted only once granted. ``opt_out``: permitted unless
denied. An explicit answer always wins over the mode.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final, Literal


class Purpose(StrEnum):
    ANALYTICS = "analytics"
    EMOTION_ANALYSIS = "emotion_analysis"
    PERSONALISATION = "personalisation"
    MARKETING = "marketing"


ConsentMode = Literal["opt_in", "opt_out"]
CONSENT_MODES: Final = ("opt_in", "opt_out")


@dataclass(frozen=True, slots=True)
class ConsentState:
    """A visitor's explicit answers; a purpose in neither set was never answered."""

    granted: frozenset[Purpose] = field(default_factory=frozenset)
    denied: frozenset[Purpose] = field(default_factory=frozenset)

    def answer(self, purpose: Purpose) -> bool | None:
        if purpose in self.granted:
            return True
        if purpose in self.denied:
            return False
        return None

    def permits(self, purpose: Purpose, mode: ConsentMode) -> bool:
        answered = self.answer(purpose)
        return answered if answered is not None else mode == "opt_out"

    def updated(self, answers: Mapping[Purpose, bool]) -> ConsentState:
        """This state with ``answers`` applied (a later answer replaces an earlier one)."""
        granted = set(self.granted)
        denied = set(self.denied)
        for purpose, given in answers.items():
            (granted if given else denied).add(purpose)
            (denied if given else granted).discard(purpose)
        return ConsentState(frozenset(granted), frozenset(denied))

    def as_answers(self) -> dict[str, bool]:
        out = {p.value: True for p in self.granted}
        out.update({p.value: False for p in self.denied})
        return dict(sorted(out.items()))


NO_ANSWERS: Final = ConsentState()


@dataclass(frozen=True, slots=True)
class Permissions:
    """What the server may do with one visitor's data under a workspace's mode."""

    analytics: bool
    emotion_analysis: bool
    personalisation: bool
    marketing: bool

    @classmethod
    def of(cls, state: ConsentState, mode: ConsentMode) -> Permissions:
        return cls(
            analytics=state.permits(Purpose.ANALYTICS, mode),
            emotion_analysis=state.permits(Purpose.EMOTION_ANALYSIS, mode),
            personalisation=state.permits(Purpose.PERSONALISATION, mode),
            marketing=state.permits(Purpose.MARKETING, mode),
        )


def merge(states: list[ConsentState]) -> ConsentState:
    """One person's answers recorded under several ids (anonymous id, user id): a denial under
    any id wins, so a visitor who said no on one device is not tracked through another."""
    granted: set[Purpose] = set()
    denied: set[Purpose] = set()
    for state in states:
        granted |= state.granted
        denied |= state.denied
    return ConsentState(frozenset(granted - denied), frozenset(denied))
