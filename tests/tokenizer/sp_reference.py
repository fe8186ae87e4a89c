#!/usr/bin/python3
"""sp_reference.py — expected ids from the original SentencePiece (Debian's python3-sentencepiece).

    /usr/bin/python3 tests/tokenizer/sp_reference.py TOKENIZER.model OUT_DIR INPUT.jsonl...

Writes OUT_DIR/sp.<input basename> with rows {"tokens": [...], "roundtrip": bool, "pieces": [...]}
(sp.encode(text): the normalizer's dummy prefix "▁" is added, BOS/EOS are not) and
OUT_DIR/sp.vocab.json (id -> piece). Inputs are decoded like the JS reference does
(invalid UTF-8 -> U+FFFD per maximal subpart: Python's "replace" handler and the WHATWG
decoder agree), then each line is parsed as JSON. Rows whose text holds lone surrogates,
which SentencePiece cannot take, get {"tokens": null}.
"""
import json
import os
import sys

import sentencepiece as spm


def main():
    if len(sys.argv) < 4:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    model, out_dir = sys.argv[1], sys.argv[2]
    sp = spm.SentencePieceProcessor(model_file=model)
    os.makedirs(out_dir, exist_ok=True)
    for path in sys.argv[3:]:
        with open(path, "rb") as f:
            lines = f.read().decode("utf-8", "replace").split("\n")
        rows = []
        for line in lines:
            if not line:
                continue
            text = json.loads(line)["text"]
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                rows.append({"tokens": None, "roundtrip": False, "pieces": None})
                continue
            ids = sp.encode(text)
            rows.append({"tokens": ids, "roundtrip": sp.decode(ids) == text,
                         "pieces": [sp.id_to_piece(i) for i in ids]})
        with open(os.path.join(out_dir, "sp." + os.path.basename(path)), "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    with open(os.path.join(out_dir, "sp.vocab.json"), "w", encoding="utf-8") as f:
        json.dump([sp.id_to_piece(i) for i in range(sp.get_piece_size())], f, ensure_ascii=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
