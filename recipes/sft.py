"""The supervised cold start (and, with the stage recipes, the supervised baselines) before RL.

    accelerate launch --config_file launch/zero2.yaml recipes/sft.py --config recipes/qwen2.5-vl-3b/sft.yaml
    python recipes/sft.py --config recipes/quickstart/sft.yaml                   # CPU, tiny model

The YAML holds TRL's SFTConfig and ModelConfig fields and himed's data and stage fields; any field can be overridden
on the command line. Unknown keys are errors.
"""

from himed.trainers.config import parse_recipe
from himed.trainers.sft import RECIPE_ARGUMENTS, run_sft

if __name__ == "__main__":
    # 1. Parse the recipe: YAML values become defaults, command-line flags override them.
    data_args, stage_args, sft_args, model_args = parse_recipe(RECIPE_ARGUMENTS)
    # 2. Build policy, processor and prompt/target pairs; train with a completion-only loss; save.
    run_sft(data_args, stage_args, sft_args, model_args)
