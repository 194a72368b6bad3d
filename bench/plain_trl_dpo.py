"""The baseline: DPO as a user writes it with TRL alone (no align-train), same settings as the recipe.

Every DPOConfig field that align-train sets for the tiny DPO recipe is set here to the same value,
so the two runs are the same computation and their loss curves must match.
"""

from __future__ import annotations

import copy

import torch
from datasets import load_dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
from trl import DPOConfig, DPOTrainer


def train(model: str, rows: str, out: str, steps: int, global_batch: int, per_device: int, lr: float = 1e-4,
          seed: int = 42, max_length: int = 256, lora: bool = False, separate_reference: bool = True,
          precompute: bool = False, callbacks=()):
    set_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(model)
    policy = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    dataset = load_dataset("json", data_files=rows, split="train")
    args = DPOConfig(
        output_dir=out,
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=global_batch // per_device,
        learning_rate=lr,
        max_steps=steps,
        lr_scheduler_type="cosine",
        warmup_steps=0.1,
        seed=seed,
        bf16=False,
        activation_checkpointing=False,
        logging_steps=1,
        logging_first_step=True,
        save_strategy="no",
        report_to=[],
        use_cpu=not torch.cuda.is_available(),
        max_length=max_length,
        beta=0.1,
        precompute_ref_log_probs=precompute,
        disable_tqdm=True,
    )
    kwargs = {}
    reference = None
    if lora:
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, task_type="CAUSAL_LM",
                            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                            "down_proj"])
        if separate_reference:  # the pattern many scripts use: a full frozen copy of the base as reference
            reference = copy.deepcopy(policy).eval().requires_grad_(False)
            policy = get_peft_model(policy, config)
        else:
            kwargs["peft_config"] = config
    elif not precompute:
        reference = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    trainer = DPOTrainer(model=policy, ref_model=reference, args=args, train_dataset=dataset,
                         processing_class=tokenizer, callbacks=list(callbacks), **kwargs)
    trainer.train()
    return trainer
