#!/usr/bin/env python3
"""Leave-one-capture-out cross-validation of the flood classifier's settings over the
training sets of a manifest (the held-out sets are never read).

For each capture of the sets named (mining captures aside), a model is trained on the
others with each setting and evaluated on it; the errors are summed per setting.
`make model-cv` runs it on data/manifest.json over train and train-apps.

Usage: scripts/detect-cv.py [MANIFEST] [STATEWALL] [SETS] (defaults: data/manifest.json,
target/debug/statewall, train). Settings: trees, depth, min-votes.
"""
import json
import os
import subprocess
import sys

SETTINGS = [(25, 12, 17), (25, 16, 17), (50, 16, 34)]


def main():
    manifest = sys.argv[1] if len(sys.argv) > 1 else "data/manifest.json"
    binary = sys.argv[2] if len(sys.argv) > 2 else "target/debug/statewall"
    sets = (sys.argv[3] if len(sys.argv) > 3 else "train").split(",")
    m = json.load(open(manifest))
    train = [c for c in m["captures"] if c["set"] in sets and c["kind"] != "mining"]
    if not train:
        sys.exit(f"{manifest}: no training capture")
    # The fold's manifest sits beside the captures: their paths are relative to it.
    fold = os.path.join(os.path.dirname(manifest) or ".", "cv-fold.json")
    model = os.path.join(os.path.dirname(manifest) or ".", "cv-model.json")
    totals = {s: {"tp": 0, "fp": 0, "tn": 0, "fn": 0, "errors": []} for s in SETTINGS}
    try:
        for cap in train:
            mm = json.loads(json.dumps(m))
            for c in mm["captures"]:
                if c["file"] == cap["file"]:
                    c["set"] = "cv-fold"
                elif c["set"] in sets:
                    c["set"] = "train"
            with open(fold, "w") as f:
                json.dump(mm, f)
            for s in SETTINGS:
                trees, depth, votes = (str(x) for x in s)
                subprocess.run(
                    [binary, "detect", "train", "--manifest", fold, "--set", "train",
                     "--window", "2", "--trees", trees, "--depth", depth,
                     "--min-votes", votes, "--out", model],
                    check=True, capture_output=True)
                out = subprocess.run(
                    [binary, "detect", "eval", "--model", model, "--manifest", fold,
                     "--set", "cv-fold", "--json"],
                    check=True, capture_output=True, text=True).stdout
                v = json.loads([l for l in out.splitlines() if l.startswith("{")][-1])
                for k in ("tp", "fp", "tn", "fn"):
                    totals[s][k] += v[k]
                if v["fp"] or v["fn"]:
                    totals[s]["errors"].append(f'{cap["file"]} fp {v["fp"]} fn {v["fn"]}')
            print(f"fold {cap['file']} done", file=sys.stderr, flush=True)
    finally:
        for p in (fold, model):
            if os.path.exists(p):
                os.remove(p)
    for s, t in totals.items():
        print(f"trees {s[0]} depth {s[1]} min-votes {s[2]}: tp {t['tp']} fp {t['fp']} "
              f"tn {t['tn']} fn {t['fn']} errors {t['fp'] + t['fn']}")
        for e in t["errors"]:
            print(f"  {e}")


if __name__ == "__main__":
    main()
