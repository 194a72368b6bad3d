"""A prompt as the model sees it: text from a row, the chat template around it, and its token ids.

Every reader of a model renders a prompt here, so the evaluation suites, the judges, NeST's
probe and BCO's prompt embeddings see the same prompt as the same token ids. A model with a chat
template gets the prompt as one user turn (after an optional system turn) followed by the
generation prompt, tokenised without adding special tokens (the template has them); a model
without one gets the raw text with its tokenizer's special tokens.
"""

from __future__ import annotations

import torch



def uses_chat_template(tokenizer, chat: bool = True) -> bool:
    return bool(chat and getattr(tokenizer, "chat_template", None))


def render_prompt(tokenizer, prompt, system_prompt: str | None = None, chat: bool = True) -> str:
    """The prompt's text as the model reads it: in its chat template (a string is one user turn), or raw text.

    Chat messages read without a template are their turns' contents, one per line.
    """
    if not uses_chat_template(tokenizer, chat):
        return prompt if isinstance(prompt, str) else "\n".join(str(m.get("content", "")) for m in prompt)
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    if system_prompt and not any(m.get("role") == "system" for m in messages):
        messages = [{"role": "system", "content": system_prompt}, *messages]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def prompt_ids(tokenizer, prompt, system_prompt: str | None = None, chat: bool = True,
               max_length: int | None = None) -> list[int]:
    """The token ids of a rendered prompt (the first ``max_length`` of them when given)."""
    text = render_prompt(tokenizer, prompt, system_prompt, chat)
    ids = list(tokenizer(text, add_special_tokens=not uses_chat_template(tokenizer, chat))["input_ids"])
    if not ids:
        raise ValueError(f"prompt {prompt!r} tokenises to no tokens")
    return ids[:max_length] if max_length else ids


def pad_id(tokenizer) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return candidate
    return 0


def pad(seqs: list[list[int]], pad_token: int, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id lists as one padded batch and its attention mask (``side``: where the padding goes)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_token, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, seq in enumerate(seqs):
        span = slice(width - len(seq), width) if side == "left" else slice(0, len(seq))
        ids[i, span] = torch.tensor(seq, dtype=torch.long)
        mask[i, span] = 1
    return ids, mask


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only, so a prompt reads the same whatever it is batched with."""
    return (mask.cumsum(-1) - 1).clamp(min=0)
