"""Build the random-weight family miniatures in this directory (config, generation config, tokenizer, template).

    python data/tiny-random/build.py

Each family gets its real ``model_type`` and architecture class at toy size (2 layers, hidden 64), its
real special tokens, end-of-sequence ids and chat template, and a small byte-level BPE tokenizer
trained here on the bundled tiny data (``data/tiny``), with the family's special tokens added.
No weights are written: ``model.init=random`` builds them from ``config.json`` at load time.

The chat templates are the families' published ones, byte for byte: TRL ships them
(``trl/chat_templates``) for Llama 3, Qwen2.5, Qwen3, Gemma 3 and Phi-3, so TRL recognises them and
swaps in its generation-marked variants for assistant-only loss; Mistral's (v0.3 Instruct) is
written out below.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE.parent / "tiny"
VOCAB = 1024  # byte-level BPE merges learnt from the tiny data (plus each family's special tokens)

# Mistral-7B-Instruct-v0.3's template as published in its tokenizer_config.json.
MISTRAL_V03 = (
    '{%- if messages[0]["role"] == "system" %}\n    {%- set system_message = messages[0]["content"] %}\n'
    '    {%- set loop_messages = messages[1:] %}\n{%- else %}\n    {%- set loop_messages = messages %}\n{%- endif %}\n'
    '{%- if not tools is defined %}\n    {%- set tools = none %}\n{%- endif %}\n'
    '{%- set user_messages = loop_messages | selectattr("role", "equalto", "user") | list %}\n\n'
    '{#- This block checks for alternating user/assistant messages, skipping tool calling messages #}\n'
    '{%- set ns = namespace() %}\n{%- set ns.index = 0 %}\n{%- for message in loop_messages %}\n'
    '    {%- if not (message.role == "tool" or message.role == "tool_results" or (message.tool_calls is defined and '
    'message.tool_calls is not none)) %}\n'
    '        {%- if (message["role"] == "user") != (ns.index % 2 == 0) %}\n'
    '            {{- raise_exception("After the optional system message, conversation roles must alternate '
    'user/assistant/user/assistant/...") }}\n'
    '        {%- endif %}\n        {%- set ns.index = ns.index + 1 %}\n    {%- endif %}\n{%- endfor %}\n\n'
    '{{- bos_token }}\n{%- for message in loop_messages %}\n    {%- if message["role"] == "user" %}\n'
    '        {%- if tools is not none and (message == user_messages[-1]) %}\n'
    '            {{- "[AVAILABLE_TOOLS] [" }}\n            {%- for tool in tools %}\n'
    '                {%- set tool = tool.function %}\n'
    '                {{- \'{"type": "function", "function": {\' }}\n'
    '                {%- for key, val in tool.items() if key != "return" %}\n'
    '                    {%- if val is string %}\n'
    '                        {{- \'"\' + key + \'": "\' + val + \'"\' }}\n'
    '                    {%- else %}\n'
    '                        {{- \'"\' + key + \'": \' + val|tojson }}\n'
    '                    {%- endif %}\n                    {%- if not loop.last %}\n'
    '                        {{- ", " }}\n                    {%- endif %}\n                {%- endfor %}\n'
    '                {{- "}}" }}\n                {%- if not loop.last %}\n                    {{- ", " }}\n'
    '                {%- else %}\n                    {{- "]" }}\n                {%- endif %}\n'
    '            {%- endfor %}\n            {{- "[/AVAILABLE_TOOLS]" }}\n            {%- endif %}\n'
    '        {%- if loop.last and system_message is defined %}\n'
    '            {{- "[INST] " + system_message + "\\n\\n" + message["content"] + "[/INST]" }}\n'
    '        {%- else %}\n            {{- "[INST] " + message["content"] + "[/INST]" }}\n        {%- endif %}\n'
    '    {%- elif message.tool_calls is defined and message.tool_calls is not none %}\n'
    '        {{- "[TOOL_CALLS] [" }}\n        {%- for tool_call in message.tool_calls %}\n'
    '            {%- set out = tool_call.function|tojson %}\n            {{- out[:-1] }}\n'
    '            {%- if not tool_call.id is defined or tool_call.id|length != 9 %}\n'
    '                {{- raise_exception("Tool call IDs should be alphanumeric strings with length 9!") }}\n'
    '            {%- endif %}\n            {{- \', "id": "\' + tool_call.id + \'"}\' }}\n'
    '            {%- if not loop.last %}\n                {{- ", " }}\n            {%- else %}\n'
    '                {{- "]" + eos_token }}\n            {%- endif %}\n        {%- endfor %}\n'
    '    {%- elif message["role"] == "assistant" %}\n        {{- " " + message["content"]|trim + eos_token}}\n'
    '    {%- elif message["role"] == "tool_results" or message["role"] == "tool" %}\n'
    '        {%- if message.content is defined and message.content.content is defined %}\n'
    '            {%- set content = message.content.content %}\n        {%- else %}\n'
    '            {%- set content = message.content %}\n        {%- endif %}\n'
    '        {{- \'[TOOL_RESULTS] {"content": \' + content|string + ", " }}\n'
    '        {%- if not message.tool_call_id is defined or message.tool_call_id|length != 9 %}\n'
    '            {{- raise_exception("Tool call IDs should be alphanumeric strings with length 9!") }}\n'
    '        {%- endif %}\n        {{- \'"call_id": "\' + message.tool_call_id + \'"}[/TOOL_RESULTS]\' }}\n'
    '    {%- else %}\n        {{- raise_exception("Only user and assistant roles are supported, with the exception '
    'of an initial optional system message!") }}\n    {%- endif %}\n{%- endfor %}\n'
)

SMALL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             max_position_embeddings=512)

# model_type -> what the family's instruct checkpoint ships (the reference checkpoint is named).
FAMILIES = {
    "llama": dict(
        reference="meta-llama/Meta-Llama-3-8B-Instruct",
        special=["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        bos="<|begin_of_text|>", eos="<|eot_id|>", pad=None, add_bos=True,
        generation_eos=["<|end_of_text|>", "<|eot_id|>"], template="trl:llama3",
        config=dict(num_key_value_heads=2, rope_theta=500000.0, tie_word_embeddings=False)),
    "qwen2": dict(
        reference="Qwen/Qwen2.5-0.5B-Instruct",
        special=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        bos=None, eos="<|im_end|>", pad="<|endoftext|>", add_bos=False,
        generation_eos=["<|im_end|>", "<|endoftext|>"], template="trl:qwen2_5",
        config=dict(num_key_value_heads=2, rope_theta=1000000.0, tie_word_embeddings=True)),
    "qwen3": dict(
        reference="Qwen/Qwen3-0.6B",
        special=["<|endoftext|>", "<|im_start|>", "<|im_end|>"], added=["<think>", "</think>"],
        bos=None, eos="<|im_end|>", pad="<|endoftext|>", add_bos=False,
        generation_eos=["<|im_end|>", "<|endoftext|>"], template="trl:qwen3",
        config=dict(num_key_value_heads=2, head_dim=16, rope_theta=1000000.0, tie_word_embeddings=True)),
    "mistral": dict(
        reference="mistralai/Mistral-7B-Instruct-v0.3",
        special=["<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[TOOL_CALLS]", "[AVAILABLE_TOOLS]",
                 "[/AVAILABLE_TOOLS]", "[TOOL_RESULTS]", "[/TOOL_RESULTS]"],
        bos="<s>", eos="</s>", pad=None, unk="<unk>", add_bos=True,
        generation_eos=["</s>"], template=MISTRAL_V03,
        config=dict(num_key_value_heads=2, rope_theta=1000000.0, sliding_window=None, tie_word_embeddings=False)),
    "gemma3_text": dict(
        reference="google/gemma-3-1b-it",
        special=["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"],
        bos="<bos>", eos="<eos>", pad="<pad>", unk="<unk>", add_bos=True,
        generation_eos=["<eos>", "<end_of_turn>"], template="trl:gemma3",
        config=dict(num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16, sliding_window=64,
                    layer_types=["sliding_attention", "full_attention"],
                    tie_word_embeddings=True)),
    "phi3": dict(
        reference="microsoft/Phi-3-mini-4k-instruct",
        special=["<unk>", "<s>", "</s>", "<|endoftext|>", "<|assistant|>", "<|system|>", "<|end|>", "<|user|>"],
        bos="<s>", eos="<|endoftext|>", pad="<|endoftext|>", unk="<unk>", add_bos=False,
        generation_eos=["<|endoftext|>", "<|assistant|>", "<|end|>"], template="trl:phi3",
        config=dict(num_key_value_heads=4, tie_word_embeddings=False)),
}


def corpus() -> list[str]:
    """Every string of the bundled tiny data, chat markers removed (they are special tokens, not merges)."""
    texts: list[str] = []

    def walk(value):
        if isinstance(value, str):
            texts.append(value.replace("<|im_start|>", "").replace("<|im_end|>", ""))
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            for key, item in value.items():
                if key != "role":
                    walk(item)

    for path in sorted(DATA.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            walk(json.loads(line))
    return texts


def base_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tokenizer.train_from_iterator(corpus(), trainer)
    return tokenizer


def template_text(spec: str) -> str:
    if spec.startswith("trl:"):
        import trl

        return (Path(trl.__file__).parent / "chat_templates" / f"{spec[4:]}.jinja").read_text(encoding="utf-8")
    return spec


def build(model_type: str, family: dict, base_json: str) -> None:
    from tokenizers import AddedToken, Tokenizer, processors
    from transformers import AutoConfig, GenerationConfig, PreTrainedTokenizerFast

    out = HERE / model_type
    shutil.rmtree(out, ignore_errors=True)
    tokenizer = Tokenizer.from_str(base_json)
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in family["special"]])
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in family.get("added", [])])
    ids = {t: tokenizer.token_to_id(t) for t in family["special"]}
    if family["add_bos"]:
        bos = family["bos"]
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, ids[bos])])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=family["bos"], eos_token=family["eos"], pad_token=family["pad"],
        unk_token=family.get("unk"), model_max_length=SMALL["max_position_embeddings"],
        chat_template=template_text(family["template"]),
    )
    fast.save_pretrained(out)

    vocab_size = -(-len(fast) // 64) * 64  # padded to a multiple of 64, as real checkpoints pad theirs
    token_ids = {"bos_token_id": ids.get(family["bos"]), "pad_token_id": ids.get(family["pad"]),
                 "eos_token_id": [ids[t] for t in family["generation_eos"]]}
    config = AutoConfig.for_model(model_type, vocab_size=vocab_size, **SMALL, **family["config"], **token_ids)
    config.save_pretrained(out)
    GenerationConfig(**token_ids).save_pretrained(out)


def main() -> None:
    base = base_tokenizer().to_str()
    for model_type, family in FAMILIES.items():
        build(model_type, family, base)
        print(f"{model_type}: {sorted(p.name for p in (HERE / model_type).iterdir())}")


if __name__ == "__main__":
    main()
