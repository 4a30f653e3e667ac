#!/usr/bin/env bash
# The CPU ablation of MODEL_CARD.md (GSR-Net Table 2 layout): train DL + CP, GS-Net and GSR-Net at the same
# budget, evaluate each on the held-out generated set and on NoSo, print the table.
#   bash scripts/run_ablations.sh [RUNS_DIR]        (default runs/; re-running resumes unfinished trainings)
set -euo pipefail
runs="${1:-runs}"
data="${MANIPSEG_DATA:-../shared/data}"
heldout="$runs/heldout256"
if [ ! -f "$heldout/manifest.jsonl" ]; then
  manipseg generate --sources "$data/natural/sun-hays" "$data/natural/imagenet-sample" --n 200 \
    --kinds splice,copymove,poisson,removal,sbi,enhance,gan --size 256 --seed 778 \
    --config configs/generate/generate_heldout.yaml --out "$heldout"
fi
rows=()
for name in abl_dl_cp abl_gs abl_gsr; do
  run="$runs/$name"
  if [ ! -f "$run/model.safetensors" ]; then
    if [ -d "$run/checkpoints" ]; then resume=--resume; else resume=; fi
    manipseg train "configs/segment/$name.yaml" --out "$run" $resume
  fi
  for ds in heldout256 noso; do
    src="$heldout"; [ "$ds" = noso ] && src="$data/dev/noso"
    [ -f "$run/eval/$ds/report.json" ] || manipseg evaluate "$src" --model "$run/model.safetensors" --out "$run/eval/$ds"
  done
done
python scripts/ablation_table.py --row "DL + CP" "$runs/abl_dl_cp/eval" --row "GS-Net" "$runs/abl_gs/eval" \
  --row "GSR-Net" "$runs/abl_gsr/eval" --datasets heldout256 noso
