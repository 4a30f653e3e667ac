#!/usr/bin/env bash
# Train and score the real-forgeries experiments (docs/real-forgeries.md), one after the other:
#   bash scripts/run_real_experiments.sh [RUNS_DIR] [NAME ...]     (default: runs/real, every configs/segment/real/*.yaml)
# Each run resumes if its folder has a checkpoint; each finished run appends its rows to the table.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-runs/real}"; shift || true
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
  names=(); for f in configs/segment/real/*.yaml; do names+=("$(basename "$f" .yaml)"); done
fi
for name in "${names[@]}"; do
  out="$runs/$name"
  if [ -f "$out/scores.json" ]; then echo "== $name: already trained and scored ($out)"; continue; fi
  if [ ! -f "$out/model.safetensors" ]; then
    resume=(); if compgen -G "$out/checkpoints/*" > /dev/null; then resume=(--resume); fi
    echo "== $name: training into $out ${resume[*]}"
    manipseg train "configs/segment/real/$name.yaml" --out "$out" "${resume[@]}"
  fi
  # training minutes from the log's throughput (steps x batch / images per second), not wall time
  minutes=$(python -c "
import csv, yaml
batch = yaml.safe_load(open('$out/config.yaml'))['train']['batch_size']
rows = [r for r in csv.DictReader(open('$out/train.csv')) if r['imgs_per_s']]
prev, t = 0, 0.0
for r in rows:
    s = int(r['step']); t += (s - prev) * batch / float(r['imgs_per_s']); prev = s
print(round(t / 60))")
  steps=$(python -c "import yaml,sys; c=yaml.safe_load(open('$out/config.yaml')); print(c['train']['steps'], 'x', c['train']['batch_size'])")
  python benchmarks/bench_real.py --model "$out/model.safetensors" --row "$name" \
      --config "configs/segment/real/$name.yaml" --budget "$steps, ${minutes} min on 2 cores" --json "$out/scores.json"
done
