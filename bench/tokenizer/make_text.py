#!/usr/bin/env python3
"""make_text.py — the tokenizer benchmark's input: a few MB of mixed text as JSONL.

    python3 bench/tokenizer/make_text.py OUT.jsonl [MB]      (default 4 MB of text)

Rows {"text": ...} of 1–6 KB: natural paragraphs (English prose, code, and the corpus's
sentences in many scripts) joined by spaces and newlines, chosen by a fixed xorshift
generator, so the file is the same on every run. The whole conformance corpus comes first
(tests/tokenizer/corpus.jsonl), then documents built from its natural-language and code
texts plus the paragraphs below, until the UTF-8 text (not the JSON) reaches MB megabytes
(10^6 bytes). Prints rows, text bytes and file bytes.
"""
import json
import os
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")

PROSE = [
    "The history of computing is a history of abstraction. Early machines were programmed by "
    "rewiring them; later, instructions were stored in memory alongside data, and programs could "
    "be written, loaded and changed like any other information. Assemblers gave names to "
    "instructions, compilers translated whole languages, and operating systems hid the details "
    "of the hardware behind files, processes and sockets.",
    "Neural language models assign probabilities to sequences of tokens. A transformer computes, "
    "for every position, a vector that depends on all the previous positions through attention, "
    "then passes it through a feed-forward network whose hidden units are often called neurons. "
    "Researchers record these activations to find units that respond to dates, to code, to "
    "negation, or to a particular language.",
    "It rained all morning, so we stayed inside and read. By noon the clouds had broken up, and "
    "the children ran out to the garden to look for snails; they found eleven, named each one, "
    "and lined them up on the wall to see which would reach the top first. Nobody won.",
    "Tokenization matters more than it seems. Two tokenizers that disagree on a single merge "
    "produce different ids for every word that contains that pair of symbols, and a model "
    "evaluated with the wrong tokenizer looks far worse than it is. Exact agreement with the "
    "original implementation is therefore the only acceptable standard.",
    "Der schnelle braune Fuchs springt über den faulen Hund. Im Sommer fahren wir an die See, "
    "im Winter in die Berge; dazwischen arbeiten wir, lesen und kochen für Freunde.",
    "La ciencia avanza a pasos pequeños: una hipótesis, un experimento, un resultado que no "
    "encaja, y otra hipótesis. Lo importante es medir bien y publicar lo que se encuentra.",
    "Машинное обучение — это раздел искусственного интеллекта, изучающий методы построения "
    "алгоритмов, способных обучаться на данных. Большие языковые модели обучаются на текстах.",
    "自然语言处理是人工智能的一个重要方向。它研究能实现人与计算机之间用自然语言进行有效通信的各种理论和方法。",
    "機械学習は人工知能の一分野であり、データから学習して予測や判断を行うアルゴリズムを研究する。",
    "인공지능은 인간의 학습능력과 추론능력, 지각능력을 인공적으로 구현하려는 컴퓨터 과학의 세부분야 중 하나이다.",
    "कृत्रिम बुद्धिमत्ता कंप्यूटर विज्ञान की एक शाखा है जो ऐसी मशीनें बनाने का प्रयास करती है जो सोच सकें।",
    "الذكاء الاصطناعي هو فرع من علوم الحاسوب يهتم بصنع آلات قادرة على التفكير والتعلم.",
]
CODE = [
    "def tokenize(text, vocab, merges):\n    words = pretokenize(text)\n    out = []\n    for w in words:\n"
    "        symbols = list(w)\n        while len(symbols) > 1:\n            best = min(pairs(symbols), key=merges.get)\n"
    "            if best not in merges:\n                break\n            symbols = merge(symbols, best)\n"
    "        out.extend(vocab[s] for s in symbols)\n    return out\n",
    "static int cmp(const void *a, const void *b) {\n    const struct pair *x = a, *y = b;\n"
    "    return (x->rank > y->rank) - (x->rank < y->rank);\n}\n\nint main(void) {\n"
    "    qsort(pairs, n, sizeof *pairs, cmp);\n    for (int i = 0; i < n; i++)\n"
    "        printf(\"%d %s\\n\", pairs[i].rank, pairs[i].text);\n    return 0;\n}\n",
    "{\"model\": {\"type\": \"BPE\", \"dropout\": null, \"unk_token\": null, \"fuse_unk\": false, "
    "\"byte_fallback\": false, \"vocab\": {\"!\": 0, \"\\\"\": 1, \"#\": 2}, \"merges\": [\"Ġ t\", \"Ġ a\"]}}",
]


class XorShift:
    def __init__(self, seed):
        self.s = seed

    def below(self, n):
        s = self.s
        s ^= (s << 13) & 0xFFFFFFFF
        s ^= s >> 17
        s ^= (s << 5) & 0xFFFFFFFF
        self.s = s
        return s % n


def main():
    out = sys.argv[1]
    target = int(float(sys.argv[2] if len(sys.argv) > 2 else 4) * 1e6)
    with open(os.path.join(ROOT, "tests", "tokenizer", "corpus.jsonl"), encoding="utf-8") as f:
        corpus = [json.loads(l)["text"] for l in f if l.strip()]
    natural = [t for t in corpus if len(t) >= 20 and len(set(t)) > 8] + PROSE * 3 + CODE * 2
    rng = XorShift(424242)
    rows = list(corpus)
    size = sum(len(t.encode("utf-8")) for t in rows)
    seps = [" ", " ", "\n", "\n\n", " "]
    while size < target:
        parts, n = [], 0
        want = 1000 + rng.below(5000)
        while n < want:
            t = natural[rng.below(len(natural))]
            parts.append(t)
            parts.append(seps[rng.below(len(seps))])
            n += len(t.encode("utf-8")) + 1
        text = "".join(parts).strip()
        rows.append(text)
        size += len(text.encode("utf-8"))
    with open(out, "w", encoding="utf-8") as f:
        for t in rows:
            f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
    print("%d rows, %d text bytes, %d file bytes" % (len(rows), size, os.path.getsize(out)))


if __name__ == "__main__":
    main()
