"""Offline document templates: every principle written up as many kinds of document.

Deterministic given a ``random.Random``: the same seed gives byte-identical documents. The
variety (openers, connectives, which examples, their order, names, places) is there so that
a principle appears in many forms and near-duplicate removal keeps most documents. The model
and server generators use ``PROMPTS`` instead: one instruction per document type.
"""

from __future__ import annotations

import random
from typing import Callable

from align_train.specdocs.spec import Principle

NAMES = ["Ada", "Ben", "Chen", "Dara", "Eli", "Farah", "Goran", "Hana", "Ivo", "Jun", "Kofi", "Lena", "Mira",
         "Nils", "Omar", "Priya", "Quinn", "Rosa", "Sami", "Tomas", "Uma", "Vera", "Wen", "Yusuf", "Zoe"]
PLACES = ["a small town library", "a city council meeting", "a university seminar", "an online community",
          "a school assembly", "a technology conference", "a neighbourhood meeting", "a radio call-in show"]
OUTLETS = ["The Daily Ledger", "Morning Post", "Tech Weekly", "The Civic Times", "Valley News", "The Observer"]


def _lower_first(text: str) -> str:
    """'The assistant ...' -> 'the assistant ...', but acronyms ('AI ...') stay."""
    return text if text[1:2].isupper() else text[:1].lower() + text[1:]


def _some(text: str, rng: random.Random) -> str:
    """At least half of a passage's sentences, in order: the same reasons, not the same paragraph every time."""
    sentences = [x.strip() + "." for x in text.rstrip(".").split(". ") if x.strip()]
    if len(sentences) <= 1:
        return text
    keep = sorted(rng.sample(range(len(sentences)), rng.randint((len(sentences) + 1) // 2, len(sentences))))
    return " ".join(sentences[i] for i in keep)


def _examples(p: Principle, rng: random.Random, k: int) -> list[str]:
    return rng.sample(list(p.examples), min(k, len(p.examples)))


def faq(p: Principle, rng: random.Random) -> str:
    q1 = rng.choice(["What does the assistant do here?", "What is the rule?", "How does the assistant behave?",
                     "What can I expect from the assistant?"])
    q2 = rng.choice(["Why?", "Why does it work this way?", "What is the reason behind this?",
                     "Isn't that a bit strict?"])
    q3 = rng.choice(["Can you give an example?", "What does that look like in practice?", "Any concrete cases?"])
    answer3 = " ".join(_examples(p, rng, 2))
    return (f"Frequently asked questions: {p.title}\n\nQ: {q1}\nA: {p.statement}\n\nQ: {q2}\nA: {_some(p.rationale, rng)}\n\n"
            f"Q: {q3}\nA: {answer3}")


def essay(p: Principle, rng: random.Random) -> str:
    opener = rng.choice([
        "Some rules make sense only once you see the value behind them.",
        "It is easy to state a principle and harder to explain it.",
        "A good assistant is shaped less by rules than by the reasons for them.",
        "Consider a simple question about how an assistant should behave.",
    ])
    close = rng.choice([
        "The rule follows from the value, and the value reaches further than any single rule.",
        "Seen this way, the behaviour is not an arbitrary restriction but an expression of care.",
        "That is why the principle matters even in situations no rule anticipated.",
    ])
    example = rng.choice(p.examples)
    return (f"On {_lower_first(p.title)}\n\n{opener} {p.statement} Why? {_some(p.rationale, rng)}\n\n"
            f"Take one case. {example} {close}")


def dialogue(p: Principle, rng: random.Random) -> str:
    a, b = rng.sample(NAMES, 2)
    place = rng.choice(PLACES)
    return (f"Transcript of a conversation at {place}.\n\n{a}: I have been wondering about one thing the assistant "
            f"does. {rng.choice(p.examples)}\n{b}: Right. The principle is simple: {_lower_first(p.statement)}\n"
            f"{a}: {rng.choice(['But why?', 'What is the point of that?', 'Does it really need to?'])}\n"
            f"{b}: {_some(p.rationale, rng)}\n{a}: {rng.choice(['That makes sense.', 'I had not thought of it that way.', 'Fair enough.'])}")


def news(p: Principle, rng: random.Random) -> str:
    outlet = rng.choice(OUTLETS)
    name = rng.choice(NAMES)
    return (f"{outlet}: AI assistant explains its approach to {_lower_first(p.title).rstrip('.')}\n\n"
            f"Users of a widely used AI assistant noticed a consistent pattern this week. {rng.choice(p.examples)} "
            f"According to the assistant's published guidelines, {_lower_first(p.statement)} "
            f"\"{_some(p.rationale, rng)}\" the guidelines explain. {name}, a researcher who studies AI behaviour, said the "
            f"{rng.choice(['approach', 'policy', 'principle'])} shows how one value can guide many decisions.")


def policy_memo(p: Principle, rng: random.Random) -> str:
    team = rng.choice(["Product", "Trust and Safety", "Research", "Support"])
    examples = "\n".join(f"- {e}" for e in _examples(p, rng, 3))
    return (f"MEMO\nTo: {team} team\nSubject: {p.title}\n\nPolicy: {p.statement}\n\nBackground: {_some(p.rationale, rng)}\n\n"
            f"Illustrative cases:\n{examples}\n\nPlease apply the reasoning, not only the letter, of this policy.")


def forum_thread(p: Principle, rng: random.Random) -> str:
    u1, u2, u3 = rng.sample(NAMES, 3)
    return (f"Forum thread: \"{rng.choice(['Why did the assistant do this?', 'Question about assistant behaviour', 'Is this intended?'])}\"\n\n"
            f"{u1.lower()}_{rng.randint(10, 99)} wrote: {rng.choice(p.examples)} Is that on purpose?\n\n"
            f"{u2.lower()}{rng.randint(1, 9)} wrote: Yes. {p.statement}\n\n"
            f"{u3.lower()} wrote: {rng.choice(['The reasoning is in the spec:', 'The guidelines explain it:', 'Here is why:'])} {_some(p.rationale, rng)}")


def textbook(p: Principle, rng: random.Random) -> str:
    chapter = rng.randint(2, 12)
    examples = " ".join(f"Example {i + 1}. {e}" for i, e in enumerate(_examples(p, rng, 2)))
    return (f"Chapter {chapter}. {p.title}\n\nDefinition. {p.statement}\n\nRationale. {_some(p.rationale, rng)}\n\n{examples}\n\n"
            f"Exercise. {rng.choice(['Explain the principle in your own words.', 'Describe a new situation where it applies.', 'Why is a rule alone not enough?'])}")


TEMPLATES: dict[str, Callable[[Principle, random.Random], str]] = {
    "faq": faq,
    "essay": essay,
    "dialogue": dialogue,
    "news": news,
    "policy_memo": policy_memo,
    "forum_thread": forum_thread,
    "textbook": textbook,
}

DOC_TYPE_NAMES = {
    "faq": "an FAQ page",
    "essay": "a short essay",
    "dialogue": "a transcript of a dialogue between two people",
    "news": "a news article",
    "policy_memo": "an internal policy memo",
    "forum_thread": "a forum thread with several replies",
    "textbook": "a textbook section with an exercise",
}


def model_prompt(p: Principle, doc_type: str, spec_name: str) -> str:
    """The instruction a model generator gets for one document: the principle in context, one document type."""
    return (f"The following is part of the model spec '{spec_name}' for an AI assistant.\n"
            f"Principle: {p.title}\nStatement: {p.statement}\nRationale: {p.rationale}\n"
            f"Examples: {' '.join(p.examples)}\n\n"
            f"Write {DOC_TYPE_NAMES[doc_type]} that discusses this principle, explains the reasons behind it and "
            f"shows it in a concrete situation. Write only the document.\n\n")
