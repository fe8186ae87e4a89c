#!/usr/bin/python3
"""gen_tokenizers.py — writes small tokenizer.json files into two fixture model folders, so
that those folders are complete Hugging Face checkpoints for the text-row, tokenizer-discovery
and generation tests (tests/test_dataset.c, tests/text_data.sh):

  tests/fixtures/hf/gpt2/tokenizer.json        byte-level BPE as GPT-2's (ByteLevel pre-tokenizer
      with GPT-2's split pattern, no merges): id b = byte b, 256 = <|endoftext|> (vocab 257,
      the fixture's vocab_size); no BOS template, as GPT-2.
  tests/fixtures/hf/llama_bf16/tokenizer.json  SentencePiece-style BPE as Llama 2's (Prepend and
      Replace "▁" normalizer, byte fallback, fuse_unk, TemplateProcessing "<s> $A"):
      0 <unk>, 1 <s>, 2 </s>, 3..258 <0x00>..<0xFF>, 259 "▁" (vocab 260, the fixture's).

No merges: every character is one token (or its UTF-8 bytes), so the expected ids of a text
are easy to state in a test.

Into six fixture folders it writes generate.json: the prompt, its ids, and the greedy continuation that the
PyTorch reference (nlref.forward, the whole sequence recomputed at every step) picks — what
`neuronlab generate --temp 0` must print with its KV cache (tests/text_data.sh).
Deterministic; gen_fixtures.py calls it after rewriting the folders; alone:
  /usr/bin/python3 tests/reference/gen_tokenizers.py
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
HF = os.path.join(ROOT, "tests", "fixtures", "hf")


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def added(i, content):
    return {"id": i, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
            "normalized": False, "special": True}


def gpt2():
    b2u = bytes_to_unicode()
    vocab = {b2u[b]: b for b in range(256)}
    vocab["<|endoftext|>"] = 256
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [added(256, "<|endoftext|>")],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "vocab": vocab, "merges": []},
    }


def llama():
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab["<0x%02X>" % b] = 3 + b
    vocab["▁"] = 259
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [added(0, "<unk>"), added(1, "<s>"), added(2, "</s>")],
        "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"},
                                                           {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
        "pre_tokenizer": None,
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                                    {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": vocab, "merges": []},
    }


PROMPT = "Hello"
GREEDY_STEPS = 24


def greedy(folder, prompt_ids, steps):
    import torch
    import nlref
    torch.set_num_threads(1)
    cfg, tensors = nlref.load_folder(folder)
    ids = list(prompt_ids)
    for _ in range(steps):
        logits = nlref.forward(cfg, tensors, ids)["logits"][-1]
        top2 = torch.topk(logits, 2).values
        if float(top2[0] - top2[1]) < 1e-3:    # a near tie could go either way in float32: stop here
            break
        ids.append(int(torch.argmax(logits)))
    return ids[len(prompt_ids):]


def main():
    for name, t in (("gpt2", gpt2()), ("llama_bf16", llama())):
        path = os.path.join(HF, name, "tokenizer.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(t, f, ensure_ascii=False, indent=1)
            f.write("\n")
        print("wrote", os.path.relpath(path, ROOT))
    # greedy continuations: each model with its own tokenizer, and others (a sliding window, q/k/v
    # bias, parallel residual, partial rotary) through llama_bf16's with --tokenizer
    raw = PROMPT.encode()
    for name, tok in (("gpt2", "gpt2"), ("llama_bf16", "llama_bf16"), ("mistral_sharded", "llama_bf16"),
                      ("qwen2", "llama_bf16"), ("phi", "llama_bf16"), ("gpt_neox_seq", "llama_bf16")):
        prompt_ids = list(raw) if tok == "gpt2" else [1, 259] + [3 + b for b in raw]
        folder = os.path.join(HF, name)
        cont = greedy(folder, prompt_ids, GREEDY_STEPS)
        assert len(cont) >= 4, f"{name}: near tie within 4 steps; pick another prompt"
        exp = {"prompt": PROMPT, "tokenizer": tok, "prompt_tokens": prompt_ids,
               "greedy": cont}
        with open(os.path.join(folder, "generate.json"), "w") as f:
            json.dump(exp, f)
            f.write("\n")
        print("wrote", os.path.relpath(os.path.join(folder, "generate.json"), ROOT), exp["greedy"][:8], "…")

if __name__ == "__main__":
    main()
