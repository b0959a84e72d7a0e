"""GRPO with the HiMed-RL hierarchical reward.

    accelerate launch --config_file launch/zero2.yaml recipes/himed_grpo.py --config recipes/qwen2.5-vl-3b/grpo.yaml
    python recipes/himed_grpo.py --config recipes/quickstart/grpo.yaml          # CPU, tiny model

The YAML holds TRL's GRPOConfig (plus himed's vllm_dtype) and ModelConfig fields, himed's data fields and the reward block (schedule, rewards,
impute); any field can be overridden on the command line (``--learning_rate 1e-6``). Unknown keys are errors.
"""

from himed.trainers.config import parse_recipe
from himed.trainers.grpo import RECIPE_ARGUMENTS, run_grpo

if __name__ == "__main__":
    # 1. Parse the recipe: YAML values become defaults, command-line flags override them.
    data_args, reward_args, grpo_args, model_args = parse_recipe(RECIPE_ARGUMENTS)
    # 2. Build policy, processor, prompts and reward components; train with scheduled weights; save.
    run_grpo(data_args, reward_args, grpo_args, model_args)
