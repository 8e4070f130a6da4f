"""Write ecgstream/dsp/_designs.json: the filter designs the daemon uses,
computed with SciPy (see ecgstream/dsp/design.py for why).

Covers the default DspConfig (no notch, 50 Hz, 60 Hz notch), the default
detector, and the resampler for the usual wearable rates. Run after changing
any default: ``python tools/gen_dsp_designs.py`` (``--check`` compares).
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace

from ecgstream.dsp import BeatPipeline, DspConfig, design

RATES = (100, 125, 128, 200, 250, 256, 300, 360, 400, 500, 512, 1000)


def compute() -> dict:
    design.use_table = False
    design.computed.clear()
    for notch in (None, 50.0, 60.0):
        cfg = replace(DspConfig(), notch_hz=notch)
        for fs in RATES:
            BeatPipeline("gen", float(fs), cfg)
    return dict(sorted(design.computed.items()))


def main() -> int:
    table = compute()
    path = design._TABLE_PATH
    text = json.dumps(table, indent=0, sort_keys=True) + "\n"
    if "--check" in sys.argv:
        ok = path.exists() and path.read_text() == text
        print("up to date" if ok else f"{path} differs from SciPy's designs: rerun without --check")
        return 0 if ok else 1
    path.write_text(text)
    print(f"wrote {len(table)} designs to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
