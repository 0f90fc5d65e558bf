#!/usr/bin/env bash
# Every check and figure that needs an NVIDIA GPU, in one run (docs/benchmarks.md#on-a-gpu),
# the figures first (a lease is short; each step has its own time limit):
#
#   1. benchmarks/gpu_throughput.py: SFT tokens/s and MFU in bf16 on the ~1B Llama shape,
#      rollout generation tokens/s with model.generate, the decode loop and vLLM when installed,
#      PPO episodes/s;
#   2. the stages' CUDA paths in bf16 autocast, on the demo task at tiny sizes (`device: auto`
#      picks the GPU): prepare -> SFT -> reward model -> DPO, PPO, GRPO; each stage's log and
#      exit status are kept;
#   3. the same SFT under DeepSpeed ZeRO-2 and ZeRO-3 (one rank), when DeepSpeed is installed.
#
# Usage: benchmarks/gpu_checks.sh OUT, from the repository root. The package runs from src/
# (PYTHONPATH), so a machine with torch, transformers and datasets already installed needs no
# `pip install -e .`; without MLflow, KFP or boto3 too. Results: OUT/summary.txt (one line per
# step with its exit status and seconds), OUT/<step>.log, OUT/throughput/.
#
# On a CPU, as the benchmark tests run it: GPU_CHECKS_SIZE=micro GPU_CHECKS_PRECISION=fp32
# (the stages then run on the CPU, and the throughput step at the micro size).
set -uo pipefail

out=${1:?usage: benchmarks/gpu_checks.sh OUT}
size=${GPU_CHECKS_SIZE:-1b}
precision=${GPU_CHECKS_PRECISION:-bf16}
python=${PYTHON:-python3}
mkdir -p "$out"
out=$(cd "$out" && pwd)
export PYTHONPATH="$PWD/src:$PWD/benchmarks${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
: >"$out/summary.txt"
failed=0

# step NAME SECONDS COMMAND...: run it with its output in OUT/NAME.log, record the result.
step() {
    local name=$1 limit=$2 started=$SECONDS rc
    shift 2
    echo "== $name: $*"
    timeout "$limit" "$@" >"$out/$name.log" 2>&1
    rc=$?
    [ "$rc" -eq 0 ] || failed=1
    printf '%-14s rc=%-3s %4ss\n' "$name" "$rc" "$((SECONDS - started))" | tee -a "$out/summary.txt"
    [ "$rc" -eq 0 ] || tail -n 5 "$out/$name.log"
}

rlhf=("$python" -m rlhf.cli)  # no MLflow here (--no-track): the logs are the record

step versions 60 "$python" - <<'EOF'
import importlib.metadata as md, platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda)
print("device", torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")
for name in ("transformers", "datasets", "pyarrow", "peft", "deepspeed", "vllm", "accelerate"):
    try:
        print(name, md.version(name))
    except md.PackageNotFoundError:
        print(name, "not installed")
EOF

throughput=(--out "$out/throughput" --size "$size" --precision "$precision")
if [ "$size" = micro ]; then  # the CPU check: seconds, not minutes
    throughput+=(--device cpu --batch 2 --length 32 --steps 2 --peak-tflops 1 --gen-batch 4
        --gen-prompt 8 --gen-new-tokens 8 --gen-rollouts 1 --ppo-rollout-batch 8
        --ppo-minibatch 4 --ppo-new-tokens 8 --ppo-iterations 1)
else  # fewer repeats than gpu_throughput.py's defaults: the whole script fits a 10-minute lease
    throughput+=(--steps 6 --gen-rollouts 2 --ppo-iterations 2)
fi
step throughput 300 "$python" benchmarks/gpu_throughput.py "${throughput[@]}"

d=$out/stages f=$out/stages/files
bf16=(--set "distributed.precision=$precision")
small=(--set sft_rows=400 --set preference_rows=400 --set prompt_rows=64 --set eval_prompt_rows=16)
step demo-data 60 "${rlhf[@]}" demo-data --no-track --out "$f" "${small[@]}"
step prepare 60 "${rlhf[@]}" prepare --no-track --sft "$f/sft.jsonl" \
    --preferences "$f/preferences.jsonl" --prompts "$f/prompts.jsonl" \
    --eval-prompts "$f/eval_prompts.jsonl" --out "$d/data"
step sft 90 "${rlhf[@]}" sft --no-track --data "$d/data/sft" --out "$d/sft" "${bf16[@]}" \
    --set epochs=1 --set max_steps=20
step reward 90 "${rlhf[@]}" reward --no-track --preferences "$d/data/preferences" \
    --sft-model "$d/sft" --out "$d/reward" "${bf16[@]}" --set max_steps=10
step dpo 90 "${rlhf[@]}" dpo --no-track --preferences "$d/data/preferences" \
    --sft-model "$d/sft" --out "$d/dpo" "${bf16[@]}" --set max_steps=10
step ppo 120 "${rlhf[@]}" ppo --no-track --prompts "$d/data/prompts" --sft-model "$d/sft" \
    --reward-model "$d/reward" --out "$d/ppo" "${bf16[@]}" --set iterations=3 \
    --set rollout_batch_size=16 --set minibatch_size=8
step grpo 120 "${rlhf[@]}" grpo --no-track --prompts "$d/data/prompts" --sft-model "$d/sft" \
    --reward-model "$d/reward" --out "$d/grpo" "${bf16[@]}" --set iterations=3 \
    --set prompts_per_iteration=4 --set group_size=4 --set minibatch_size=8

if "$python" -c "import deepspeed" >/dev/null 2>&1; then
    for zero in 2 3; do
        step "sft-zero$zero" 120 "${rlhf[@]}" sft --no-track --data "$d/data/sft" \
            --out "$d/sft-zero$zero" "${bf16[@]}" --set epochs=1 --set max_steps=10 \
            --set "distributed.zero_stage=$zero"
    done
else
    echo "deepspeed      not installed: the ZeRO steps are skipped" | tee -a "$out/summary.txt"
fi

echo "summary: $out/summary.txt"
exit "$failed"
