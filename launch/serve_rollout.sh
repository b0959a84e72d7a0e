#!/usr/bin/env bash
# Serve the policy with vLLM for GRPO's server-mode rollout (vllm_mode: server).
#
#   CUDA_VISIBLE_DEVICES=7 launch/serve_rollout.sh Qwen/Qwen2.5-VL-3B-Instruct
#   # then, on the other GPUs:
#   accelerate launch --config_file launch/zero2.yaml --num_processes 7 recipes/himed_grpo.py \
#       --config recipes/qwen2.5-vl-3b/grpo.yaml --vllm_mode server --vllm_server_base_url http://HOST:8000
#
# This is the `vllm serve` command that TRL 1.16's deprecated `trl vllm-serve` wraps (TRL's build_command), run
# directly: NCCL weight transfer so the trainer can push new weights every step, processed logprobs for importance
# sampling correction, no logprob cap, and --enable-scale-out for multimodal prompts (vLLM >= 0.30).
# Variables: PORT (8000), HOST (0.0.0.0), TP (tensor parallel size, 1), DP (data parallel size, 1),
# GPU_UTIL (0.9), MAX_MODEL_LEN (4096), plus any extra `vllm serve` flags after the model.
set -euo pipefail
if [ $# -lt 1 ]; then
  echo "usage: $0 MODEL [extra vllm serve flags...]" >&2
  exit 2
fi
if ! python -c "import vllm" 2>/dev/null; then
  echo "vLLM is not installed in this environment: pip install -e '.[vllm]' on a GPU machine" >&2
  exit 1
fi
model="$1"
shift
export VLLM_SERVER_DEV_MODE=1   # the weight-transfer endpoints TRL's client uses live behind vLLM's dev mode
exec vllm serve "$model" \
  --host "${HOST:-0.0.0.0}" --port "${PORT:-8000}" \
  --tensor-parallel-size "${TP:-1}" --data-parallel-size "${DP:-1}" \
  --gpu-memory-utilization "${GPU_UTIL:-0.9}" --max-model-len "${MAX_MODEL_LEN:-4096}" \
  --dtype bfloat16 --limit-mm-per-prompt '{"image": 2}' \
  --weight-transfer-config '{"backend": "nccl"}' \
  --logprobs-mode processed_logprobs --max-logprobs -1 --enable-scale-out \
  "$@"
