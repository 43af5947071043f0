"""How far qecat's configuration strings drift from the OC20 strings a text model is trained on.

    python benchmarks/text_drift.py [--catalog catalogs/bimetallics.yaml --catalog catalogs/organics-on-metals.yaml]

Enumerates each catalog (or reads ``--candidates DIR/candidates.parquet``), splits every string into
its three ``</s>`` fields (adsorbate; bulk formula and Miller index; the bracketed configuration) and
into words (brackets, parentheses and ``</s>`` split off, as the TF-IDF baseline reads them), and
prints per catalog the share of qecat's word occurrences and distinct words that never occur in
``../shared/data/oc20-text/oc20_val_text_8k.parquet``, the share of field values (adsorbate, bulk
formula, Miller index) never seen there, and the most frequent unseen words and values.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
import tempfile
from pathlib import Path

import pandas as pd

OC20 = Path(__file__).resolve().parents[2] / "shared" / "data" / "oc20-text" / "oc20_val_text_8k.parquet"


def words(text: str) -> list[str]:
    return re.sub(r"(</s>|\[|\]|\(|\))", r" \1 ", text).split()


def fields(text: str) -> dict[str, str]:
    parts = text.split("</s>")
    ads, surface = parts[0].strip(), parts[1].strip() if len(parts) > 1 else ""
    m = re.match(r"^(\S+)\s*(\(.*\))?$", surface)
    return {"adsorbate": ads, "bulk": m.group(1) if m else surface, "miller": (m.group(2) or "") if m else ""}


def texts_of(catalog: str | None, candidates: str | None) -> list[str]:
    """The configuration strings of a candidates.parquet, or of a catalog enumerated into a temporary folder."""
    if candidates:
        return pd.read_parquet(candidates, columns=["text"])["text"].tolist()
    from qecat_core.catalog.schema import load_catalog
    from qecat_core.enumerate.candidates import enumerate_catalog

    out = Path(tempfile.mkdtemp(prefix="qecat-drift-"))
    enumerate_catalog(load_catalog(catalog), out, workers=2)
    return pd.read_parquet(out / "candidates.parquet", columns=["text"])["text"].tolist()


def examples(counts: dict[str, int]) -> str:
    top = sorted(counts, key=counts.get, reverse=True)[:6]
    return f", e.g. {', '.join(top)}" if top else ""


def report(name: str, texts: list[str], ref_words: set[str], ref_fields: dict[str, set[str]]) -> None:
    occ = collections.Counter(w for t in texts for w in words(t))
    unseen = {w: n for w, n in occ.items() if w not in ref_words}
    print(f"\n### {name}: {len(texts):,} strings")
    print("| measure | unseen in OC20 |\n|---|---|")
    print(f"| word occurrences | {sum(unseen.values()) / sum(occ.values()):.1%} ({sum(unseen.values()):,} of {sum(occ.values()):,}) |")
    print(f"| distinct words | {len(unseen) / len(occ):.1%} ({len(unseen)} of {len(occ)}) |")
    per = [fields(t) for t in texts]
    for key in ("adsorbate", "bulk", "miller"):
        vals = collections.Counter(f[key] for f in per)
        miss = {v: n for v, n in vals.items() if v not in ref_fields[key]}
        print(f"| `{key}` field (strings) | {sum(miss.values()) / len(texts):.1%} of strings; "
              f"{len(miss)} of {len(vals)} values{examples(miss)} |")
    top = sorted(unseen, key=unseen.get, reverse=True)[:12]
    print(f"| most frequent unseen words | {', '.join(top)} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--catalog", action="append", help="catalog YAML (repeatable)")
    ap.add_argument("--candidates", action="append", help="an existing candidates.parquet (repeatable)")
    ap.add_argument("--oc20", default=str(OC20))
    args = ap.parse_args(argv)
    ref = pd.read_parquet(args.oc20, columns=["text"])["text"].tolist()
    ref_words = {w for t in ref for w in words(t)}
    ref_f = [fields(t) for t in ref]
    ref_fields = {k: {f[k] for f in ref_f} for k in ("adsorbate", "bulk", "miller")}
    print(f"OC20 reference: {len(ref):,} strings, {len(ref_words)} distinct words")
    for c in args.candidates or []:
        report(c, texts_of(None, c), ref_words, ref_fields)
    for c in args.catalog or ([] if args.candidates else ["catalogs/bimetallics.yaml", "catalogs/organics-on-metals.yaml"]):
        report(c, texts_of(c, None), ref_words, ref_fields)
    return 0


if __name__ == "__main__":
    sys.exit(main())
