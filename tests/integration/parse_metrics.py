#!/usr/bin/python3
"""Parses Prometheus text (stdin) with prometheus_client's own parser.

Prints JSON: {"families": {name: type}, "samples": {"name{k=v,...}": value}}
with label pairs sorted, so a C++ test can look samples up. Exits 1 with the
parser's error if the text is not valid exposition format.
"""
import json
import math
import sys

from prometheus_client.parser import text_string_to_metric_families


def main():
    text = sys.stdin.read()
    families, samples = {}, {}
    try:
        for fam in text_string_to_metric_families(text):
            families[fam.name] = fam.type
            for s in fam.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
                key = f"{s.name}{{{labels}}}"
                if key in samples:
                    raise ValueError(f"duplicate sample {key}")
                samples[key] = None if math.isnan(s.value) else s.value
    except Exception as e:  # the parser raises ValueError and friends
        print(f"not valid Prometheus text: {e}", file=sys.stderr)
        return 1
    json.dump({"families": families, "samples": samples}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
