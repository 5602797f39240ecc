"""The paper's own ablation numbers (VidTok, arXiv 2412.13061, Tables 2-4), shown beside ours and always labelled
as the paper's: they are reported values, never measured here.

    python -m vidtok.studies.paper   # print the three tables

Source: the paper's Tables 2, 3 and 4 (arXiv 2412.13061), transcribed by hand. Protocol of
every number: MCL-JCV, 17 frames at 256x256 (causal models), 30 fps test sampling; models of 126M-245M parameters
trained on the paper's data. Our CPU profile's tiny models are not comparable in absolute terms: compare orderings
and gaps, not values.
"""

from __future__ import annotations

import re

import pandas as pd

CITATION = "VidTok (arXiv 2412.13061)"
PROTOCOL = "MCL-JCV, 17 frames, 256x256, 30 fps test sampling, KL 4 channels unless stated"

# Table 2: architecture ablation (KL-4chn, MCL-JCV). FLOPs as the paper counts them (multiply-adds).
TABLE2 = pd.DataFrame(
    [
        ("Variant 1: fully 3D", 245, 16.98, 29.39, 0.847, 0.117, 176.9),
        ("Variant 2: w/o AlphaBlender", 142, 7.17, 29.36, 0.846, 0.119, 185.7),
        ("Variant 3: w/o 3D", 126, 10.18, 29.26, 0.846, 0.120, 200.6),
        ("Ours (VidTok)", 157, 10.35, 29.64, 0.852, 0.114, 194.2),
    ],
    columns=["variant", "params (M)", "TFLOPs", "psnr", "ssim", "lpips", "fvd"],
)

# Table 3: quantizer ablation. R.L. = regularisation (aux) loss; U.R. = codebook utilisation.
TABLE3 = pd.DataFrame(
    [
        ("VQ 262,144", "vq", 18, False, None, None, None, None, None),
        ("VQ 262,144", "vq", 18, True, 23.22, 0.657, 0.336, 960.5, 0.002),
        ("LFQ 262,144", "lfq", 18, False, 23.91, 0.688, 0.251, 619.8, 0.042),
        ("LFQ 262,144", "lfq", 18, True, 28.04, 0.833, 0.133, 208.1, 0.999),
        ("FSQ 262,144", "fsq", 18, False, 29.75, 0.866, 0.109, 167.5, 0.998),
        ("FSQ 262,144", "fsq", 18, True, 29.82, 0.867, 0.106, 160.1, 0.998),
        ("FSQ 32,768", "fsq", 15, True, 29.16, 0.854, 0.117, 196.9, 1.000),
        ("FSQ 4,096", "fsq", 12, True, 28.36, 0.832, 0.133, 218.1, 1.000),
    ],
    columns=["regularizer", "quantizer", "log2_codes", "aux loss", "psnr", "ssim", "lpips", "fvd", "utilisation"],
)
TABLE3_NOTE = "VQ 262,144 without the aux loss failed to train (no numbers)."

# Table 4: training strategy (KL-4chn, Training Set 1). Compute in A100 GPU-hours.
TABLE4 = pd.DataFrame(
    [
        (3, "256²", "-", "-", 29.19, 0.843, 0.127, 174.9, 3072),
        (3, "128²", "-", "-", 29.02, 0.838, 0.130, 221.7, 960),
        (3, "128²", "256²", "no", 29.15, 0.842, 0.127, 203.2, 1728),
        (3, "128²", "256²", "yes", 29.21, 0.843, 0.125, 189.8, 1536),
        (8, "128²", "256²", "yes", 29.02, 0.839, 0.126, 219.2, 1536),
    ],
    columns=["fps", "stage 1", "stage 2", "encoder fixed", "psnr", "ssim", "lpips", "fvd", "GPU hours (A100)"],
)


def _norm(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", label.lower())


# Our variant labels -> the paper's row. Matching is on the label with case, spaces and punctuation removed, so
# "no_alphablender", "w/o AlphaBlender" and "No AlphaBlender" all match.
_TABLE2_MATCH = (
    (("fully3d", "full3d", "all3d"), "Variant 1: fully 3D"),
    (("noalphablender", "woalphablender", "withoutalphablender", "conv", "temporalconv", "plainconv"),
     "Variant 2: w/o AlphaBlender"),
    (("no3d", "wo3d", "without3d", "2d", "all2d", "fully2d"), "Variant 3: w/o 3D"),
    (("ours", "vidtok", "baseline", "default", "full", "reference", "alphablender"), "Ours (VidTok)"),
)  # fmt: skip


def paper_row(variant: str) -> tuple[str, dict] | None:
    """The paper's row an ablation variant corresponds to: ("Table 2: ...", numbers) or None. Quantizer variants
    start with vq / lfq / fsq (a "noaux" anywhere in the label means without the aux loss: Table 3)."""
    key = _norm(variant)
    for name in ("vq", "lfq", "fsq"):
        if key.startswith(name):
            aux = not any(t in key for t in ("noaux", "woaux", "norl", "noreg", "noregularization", "noentropy"))
            rows = TABLE3[(TABLE3["quantizer"] == name) & (TABLE3["aux loss"] == aux) & (TABLE3["log2_codes"] == 18)]
            if len(rows):
                row = rows.iloc[0]
                label = f"Table 3: {row['regularizer']} {'with' if aux else 'without'} aux loss"
                return label, {k: row[k] for k in ("psnr", "ssim", "lpips", "fvd")}
    for keys, row_name in _TABLE2_MATCH:
        if key in keys:
            row = TABLE2[TABLE2["variant"] == row_name].iloc[0]
            return f"Table 2: {row_name}", {k: row[k] for k in ("psnr", "ssim", "lpips", "fvd")}
    return None


def points(factor: str) -> pd.DataFrame:
    """The paper's PSNR at levels of one of our studies' factors, for plotting beside ours: columns level_value,
    label, quantizer, psnr. fps: Table 4's two-stage, encoder-fixed rows (3 and 8 fps); log2_codes: Table 3's rows
    with the aux loss. Empty for factors the paper gives no such points for (its staging rows are not our levels)."""
    columns = ["level_value", "label", "quantizer", "psnr"]
    if factor == "fps":
        rows = TABLE4[(TABLE4["stage 2"] != "-") & (TABLE4["encoder fixed"] == "yes")]
        return pd.DataFrame(
            [(float(r.fps), f"{r.fps} fps", "kl", float(r.psnr)) for r in rows.itertuples()], columns=columns
        )
    if factor == "log2_codes":
        rows = TABLE3[TABLE3["aux loss"] & TABLE3["psnr"].notna()]
        return pd.DataFrame(
            [(float(r.log2_codes), r.regularizer, r.quantizer, float(r.psnr)) for r in rows.itertuples()],
            columns=columns,
        )
    return pd.DataFrame(columns=columns)


if __name__ == "__main__":
    for title, table in (("Table 2", TABLE2), ("Table 3", TABLE3), ("Table 4", TABLE4)):
        print(f"{CITATION} {title} (the paper's numbers)\n{table.to_string(index=False)}\n")
