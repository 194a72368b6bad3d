"""Latent perturbations: random noise, normalised to a hidden state's own statistics, added to a block's output.

The perturbation of "Probing the Robustness of Large Language Models Safety to Latent
Perturbations" (Gu et al., 2025): a Gaussian vector is standardised and rescaled, per token, to
the mean and standard deviation (over the hidden dimension) of the hidden state it is added to,

    delta = (z - mean(z)) / (std(z) + 1e-6) * std(h) + mean(h),    h' = h + scale * delta

so a layer with large activations gets a proportionally large push. Two uses share it:

- the attack (``fixed`` noise): one vector ``z`` drawn from the seed, the same for every prompt,
  added at the prompt's positions only (the first forward of a generation; the generated tokens
  are left alone), as the authors' activation steering attack does with a seeded random vector;
- latent adversarial patch training (``fresh`` noise): new noise for every position of every
  training forward, drawn from a generator seeded once, on the real (unpadded) tokens, and only
  while the model trains with gradients on (reference passes, the evaluation hook and generation
  are left alone).

Layers are 1-based block indices, as everywhere else: layer i is the output of block i.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

EPS = 1e-6


def decoder_blocks(model) -> torch.nn.ModuleList:
    """The transformer blocks of a causal LM (through a peft or DDP wrapper): the longest ModuleList whose
    length is the config's number of hidden layers."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else getattr(model, "module", model)
    config = getattr(base, "config", None)
    n_layers = getattr(getattr(config, "get_text_config", lambda: config)(), "num_hidden_layers", None)
    found = [m for m in base.modules() if isinstance(m, torch.nn.ModuleList) and len(m) > 0
             and (n_layers is None or len(m) == n_layers)]
    if not found:
        raise ValueError(f"cannot find the transformer blocks of {type(base).__name__}")
    return max(found, key=len)


def check_layers(model, layers, key: str) -> list[int]:
    """The layers as ints; an index outside 1..n_blocks raises ValueError naming ``key`` and the model's range."""
    n_blocks = len(decoder_blocks(model))
    bad = [layer for layer in layers if not 1 <= int(layer) <= n_blocks]
    if bad:
        raise ValueError(f"{key}={list(layers)}: the model has {n_blocks} blocks, so layers must lie in "
                         f"1..{n_blocks}; {bad} do not")
    return [int(layer) for layer in layers]


def normalise(noise: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """``noise`` standardised over the last dimension, then given ``hidden``'s mean and std there (float32)."""
    noise, hidden = noise.float(), hidden.float()
    standard = (noise - noise.mean(-1, keepdim=True)) / (noise.std(-1, keepdim=True) + EPS)
    return standard * hidden.std(-1, keepdim=True) + hidden.mean(-1, keepdim=True)


def fixed_noise(width: int, seed: int) -> torch.Tensor:
    """The attack's one random vector: drawn on the CPU, so a seed gives the same vector on any device."""
    return torch.randn(width, generator=torch.Generator().manual_seed(int(seed)))


def _cache_is_empty(kwargs) -> bool:
    cache = kwargs.get("past_key_values", kwargs.get("cache"))
    if cache is None:
        return True
    if hasattr(cache, "get_seq_length"):
        return int(cache.get_seq_length()) == 0
    return len(cache) == 0


class LatentPerturbation:
    """Hooks that add the normalised perturbation to chosen blocks' outputs while attached (``with`` it).

    ``fresh=False`` (the attack): a fixed vector from ``seed``, at the prompt positions of each
    generation's first forward, or at the positions given to ``only`` for a plain forward.
    ``fresh=True`` (training): new noise per forward and token, only while the model trains with
    gradients enabled, on the tokens the attention mask marks real.
    """

    def __init__(self, model, layers: list[int], scale: float = 1.0, seed: int = 0, fresh: bool = False,
                 key: str = "layers"):
        self.model = model
        self.blocks = decoder_blocks(model)
        self.layers = check_layers(model, layers, key)
        self.scale = float(scale)
        self.seed = int(seed)
        self.fresh = fresh
        self.generator: torch.Generator | None = None
        self._explicit: torch.Tensor | None = None  # positions for the next forwards (``only``)
        self._positions: torch.Tensor | bool | None = None  # this forward's positions (True: all)
        self._call_seed = 0
        self._handles: list = []
        self.applied = 0  # block outputs perturbed so far (tests and reports read it)

    # ------------------------------------------------------------------ attaching

    def __enter__(self):
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        self._handles.append(base.register_forward_pre_hook(self._before_forward, with_kwargs=True))
        for layer in self.layers:
            self._handles.append(self.blocks[layer - 1].register_forward_hook(self._after_block(layer)))
        return self

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._positions = None

    @contextmanager
    def only(self, positions: torch.Tensor):
        """Perturb exactly these positions ((batch, tokens) booleans) in the forwards run inside."""
        self._explicit = positions.bool()
        try:
            yield self
        finally:
            self._explicit = None

    # ------------------------------------------------------------------ the hooks

    def _before_forward(self, module, args, kwargs):
        if self.fresh:
            if not (module.training and torch.is_grad_enabled()):
                self._positions = None
                return
            if self.generator is None:
                self.generator = torch.Generator().manual_seed(self.seed)
            # One draw per forward, so a block recomputed under gradient checkpointing gets the same noise.
            self._call_seed = int(torch.randint(0, 2**62, (1,), generator=self.generator))
        if self._explicit is not None:
            self._positions = self._explicit
        elif self.fresh or _cache_is_empty(kwargs):  # training, or the first forward of a generation
            mask = kwargs.get("attention_mask")
            self._positions = mask.bool() if isinstance(mask, torch.Tensor) and mask.dim() == 2 else True
        else:  # a generated token: the prompt was perturbed already
            self._positions = None

    def _after_block(self, layer: int):
        def hook(module, args, output):
            if self._positions is None:
                return None
            hidden = output[0] if isinstance(output, tuple) else output
            delta = self.delta(hidden, layer)
            if self._positions is not True:
                where = self._positions.to(hidden.device)
                if where.shape != hidden.shape[:2]:
                    raise ValueError(f"perturbation positions {tuple(where.shape)} do not match the hidden "
                                     f"states {tuple(hidden.shape[:2])}")
                delta = delta * where.unsqueeze(-1)
            self.applied += 1
            changed = (hidden.float() + self.scale * delta).to(hidden.dtype)
            return (changed, *output[1:]) if isinstance(output, tuple) else changed
        return hook

    def delta(self, hidden: torch.Tensor, layer: int) -> torch.Tensor:
        """The normalised perturbation (before ``scale``) for these hidden states at this layer."""
        if self.fresh:
            generator = torch.Generator().manual_seed((self._call_seed + layer) % 2**63)
            noise = torch.randn(hidden.shape, generator=generator).to(hidden.device)
        else:
            noise = fixed_noise(hidden.shape[-1], self.seed).to(hidden.device).expand(hidden.shape)
        return normalise(noise, hidden)
