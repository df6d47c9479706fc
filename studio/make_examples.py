"""Write the studio's example images: first frames of the toy source's clips, in the look the shipped toy
model was trained on (flat backgrounds, smooth sprites, 1 or 2 of them, a quarter to 0.4 of the frame),
rendered at 4x the toy model's 80x48 so that they also read well on the page.

    python -m studio.make_examples [--out studio/examples] [--seed 2024] [--num 4]

Writes ``<name>.png`` per example and ``examples.json`` (name, prompt, file, and how it was made).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2

from ardrag.data.sources.toy import ToyConfig, ToySource
from ardrag.fsutil import atomic_write

SIZE = (192, 320)  # (height, width): 4x the toy model's 80x48


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(Path(__file__).parent / "examples"))
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--num", type=int, default=4)
    args = ap.parse_args(argv)
    config = ToyConfig(
        num_clips=args.num, seed=args.seed, num_frames=2, buckets=["640x368"], min_sprites=1, max_sprites=2,
        min_sprite_size=0.25, max_sprite_size=0.4, fast_prob=0.0, occlusion_prob=0.0, leave_frame_prob=0.0,
        background="flat", sprite_texture="smooth", size=SIZE,
    )  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for i, sample in enumerate(ToySource(config).samples()):
        name = f"toy-{i + 1}"
        ok, data = cv2.imencode(".png", cv2.cvtColor(sample.video[0], cv2.COLOR_RGB2BGR))
        assert ok
        atomic_write(out / f"{name}.png", data.tobytes())
        entries.append({"name": name, "prompt": sample.prompt, "file": f"{name}.png"})
    made_by = f"python -m studio.make_examples --seed {args.seed} --num {args.num}"
    for e in entries:
        e["made_by"] = made_by
    atomic_write(out / "examples.json", (json.dumps(entries, indent=1) + "\n").encode())
    print(f"{len(entries)} examples written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
