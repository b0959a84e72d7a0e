#!/usr/bin/env bash
# Serve the semantic judge (HiMed-RL eq. 6) with vLLM's OpenAI-compatible server, for `judge: {backend: openai}`.
#
#   CUDA_VISIBLE_DEVICES=6,7 TP=2 launch/serve_verifier.sh                  # Qwen/Qwen3-30B-A3B, the paper's judge
#   CUDA_VISIBLE_DEVICES=7 launch/serve_verifier.sh Qwen/Qwen3-30B-A3B-FP8  # one GPU with FP8 weights
#   export OPENAI_API_KEY=EMPTY   # in the trainer's environment: this server has no --api-key, any value works
#
# and point the reward config at it (the `model` must be the served name, the first argument by default):
#
#   - name: semantic
#     kwargs:
#       judge: {backend: openai, base_url: "http://HOST:8001/v1", model: Qwen/Qwen3-30B-A3B, concurrency: 32,
#               timeout: 60, batch_deadline: 300, cache_path: runs/judge_cache.sqlite}
#
# GPU memory (weights only; the KV cache takes what GPU_UTIL leaves): Qwen3-30B-A3B has 30.5 B parameters (3.3 B
# active per token, a mixture of experts), about 61 GB in bf16 and 31 GB in FP8. bf16 on one 80 GB GPU leaves
# ~10 GB of KV cache at GPU_UTIL 0.9, enough for the judge's short prompts (~1-2 k tokens) at MAX_MODEL_LEN 4096;
# TP=2 on two 80 GB (or 48 GB) GPUs gives room for more concurrent requests; FP8 fits a 48 GB GPU. Keep the judge
# on GPUs the trainer and its rollout server do not use.
#
# Thinking is off by default (THINKING=0): the judge answers one JSON object, and the structured-output request
# (response_format json_schema, vLLM's guided decoding) constrains it. THINKING=1 lets Qwen3 reason first; then give
# the judge a larger max_tokens (e.g. 2048) and a longer timeout. The judge's parser ignores a <think> block
# either way.
#
# Variables: PORT (8001), HOST (0.0.0.0), TP (tensor parallel size, 1), GPU_UTIL (0.9), MAX_MODEL_LEN (4096),
# MAX_NUM_SEQS (64: at least the judge's concurrency times the number of trainer processes), THINKING (0),
# API_KEY (unset: no key required; set it to require one, and export the same value as OPENAI_API_KEY, or the
# variable named by the judge's api_key_env, in the trainer's environment; never put it in a config file).
# Any extra `vllm serve` flags go after the model.
set -euo pipefail
model="${1:-Qwen/Qwen3-30B-A3B}"
[ $# -gt 0 ] && shift
if ! python -c "import vllm" 2>/dev/null; then
  echo "vLLM is not installed in this environment: pip install -e '.[vllm]' on a GPU machine" >&2
  exit 1
fi
thinking=false
[ "${THINKING:-0}" = "1" ] && thinking=true
key_flags=()
[ -n "${API_KEY:-}" ] && key_flags=(--api-key "$API_KEY")
exec vllm serve "$model" \
  --served-model-name "$model" \
  --host "${HOST:-0.0.0.0}" --port "${PORT:-8001}" \
  --tensor-parallel-size "${TP:-1}" \
  --gpu-memory-utilization "${GPU_UTIL:-0.9}" --max-model-len "${MAX_MODEL_LEN:-4096}" \
  --max-num-seqs "${MAX_NUM_SEQS:-64}" \
  --dtype auto \
  --default-chat-template-kwargs "{\"enable_thinking\": $thinking}" \
  "${key_flags[@]}" \
  "$@"
