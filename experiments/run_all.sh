#!/usr/bin/env bash
# Re-runs every CPU row of experiments/README.md on the real data, one after another.
#
#   experiments/run_all.sh                  # all rows
#   experiments/run_all.sh mnist_cnn ...    # some rows
#
# DATA (default ../shared/data) holds mnist/, sst2/, tinyshakespeare/. Each row trains in
# experiments/runs/NAME, then experiments/summarize.py prints the table rows and copies
# each run's curves.png to experiments/plots/NAME.png.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
RUNS=experiments/runs
declare -A ROWS=(
  [mnist_mlp]="configs/mnist_mlp.py --config.data.dir=$DATA/mnist"
  [mnist_cnn]="configs/mnist_cnn.py --config.data.dir=$DATA/mnist"
  [mnist_lenet]="configs/mnist_lenet.py --config.data.dir=$DATA/mnist"
  [sst2_bilstm]="configs/sst2_bilstm.py --config.data.dir=$DATA/sst2"
  [sst2_minilm]="configs/sst2_minilm.py --config.data.dir=$DATA/sst2"
  [shakespeare_gpt]="configs/shakespeare_gpt.py --config.data.dir=$DATA/tinyshakespeare"
  [shakespeare_lstm]="configs/shakespeare_lstm.py --config.data.dir=$DATA/tinyshakespeare"
  [seed_fnn]="configs/seed_fnn.py"
)
ORDER=(seed_fnn mnist_mlp mnist_lenet mnist_cnn shakespeare_gpt sst2_bilstm shakespeare_lstm sst2_minilm)
[ $# -gt 0 ] && ORDER=("$@")
for name in "${ORDER[@]}"; do
  args=${ROWS[$name]:?unknown row $name}
  mkdir -p "$RUNS/$name"
  start=$(date +%s)
  # shellcheck disable=SC2086
  python -m train --config $args --workdir "$RUNS/$name" 2>&1 | tee "$RUNS/$name/train.log" | grep -E "done at|error" || true
  echo "$(( $(date +%s) - start ))" > "$RUNS/$name/wall_seconds"
  if [ "$name" = shakespeare_gpt ]; then
    python -m train.sample --workdir "$RUNS/$name" --prompt "ROMEO:" --num_tokens 400 > "$RUNS/$name/sample.txt"
  fi
done
python experiments/summarize.py "${ORDER[@]}"
