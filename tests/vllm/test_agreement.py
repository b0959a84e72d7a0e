"""The prompt vLLM generates from is exactly the prompt the trainer scores: token ids, image grids, image positions.

Captured from a real colocate GRPO step: on vLLM's side the requests its input processor built (after its own
multimodal expansion), on the trainer's side the batch TRL scored (``_generate_and_score_completions``' output).
Before the fixes in himed.trainers.vllm_engine, vLLM expanded the already-expanded image placeholders a second time
(TRL PR #6718 / issue #6294) and the trainer marked image tokens at the wrong offsets in left-padded rows.
"""

import pytest

from himed.trainers import grpo
from tests.vllm.test_grpo_colocate import colocate_args

pytestmark = pytest.mark.vllm


def tensor_of(field):
    return field.data if hasattr(field, "data") else field


# An image budget below the 112 px demo images' default (max_pixels 56 x 56: 4 visual tokens instead of 16): the
# colocated engine must resize as the trainer's processor does (issue 11's budget reaching vLLM).
BUDGET = {"min_pixels": 28 * 28, "max_pixels": 56 * 56}


@pytest.mark.parametrize(
    "variant,images_per_study,budget", [("with_text", 1, None), ("two_images", 2, None), ("two_images", 2, BUDGET)]
)
def test_vllm_generates_from_the_ids_and_grids_the_trainer_scores(
    tmp_path, tiny_model_dir, demo_variants, monkeypatch, variant, images_per_study, budget
):
    from vllm.v1.engine.input_processor import InputProcessor  # here: the default suite (no vLLM) collects this file

    requests, scored = [], []
    process_inputs = InputProcessor.process_inputs

    def record_request(self, *args, **kwargs):
        request = process_inputs(self, *args, **kwargs)
        requests.append(request)
        return request

    generate_and_score = grpo.HimedGRPOTrainer._generate_and_score_completions

    def record_scored(self, inputs):
        output = generate_and_score(self, inputs)
        scored.append((inputs, output))
        return output

    forwards = []
    logps = grpo.HimedGRPOTrainer._get_per_token_logps_and_entropies

    def record_forward(self, model, input_ids, *args, **kwargs):
        forwards.append((input_ids.clone(), kwargs.get("mm_token_type_ids")))
        return logps(self, model, input_ids, *args, **kwargs)

    monkeypatch.setattr(grpo.HimedGRPOTrainer, "_get_per_token_logps_and_entropies", record_forward)
    monkeypatch.setattr(InputProcessor, "process_inputs", record_request)
    monkeypatch.setattr(grpo.HimedGRPOTrainer, "_generate_and_score_completions", record_scored)
    trainer = grpo.run_grpo(
        *colocate_args(tmp_path, tiny_model_dir, demo_variants[variant], data_overrides=budget, max_steps=1)
    )
    image_token_id = trainer.processing_class.image_token_id

    ((inputs, output),) = scored
    assert len(requests) == len(inputs)  # one vLLM request per completion (TRL's colocate n=1)
    grids = output["image_grid_thw"].tolist()
    if budget is not None:
        assert all(grid == [1, 4, 4] for grid in grids)  # 56 x 56 pixels: 4 x 4 patches, 4 visual tokens
    image_counts = [len(row["images"]) for row in inputs]
    assert set(image_counts) == {images_per_study}
    lengths = output["prompt_mask"].sum(1).tolist()
    assert len(set(lengths)) > 1 or variant == "two_images"  # with_text: rows of different lengths share a batch
    for row, request in enumerate(requests):
        # Token ids: vLLM's expanded prompt == the trainer's unpadded prompt (TRL left-pads).
        trainer_ids = output["prompt_ids"][row][output["prompt_mask"][row].bool()].tolist()
        assert request.prompt_token_ids == trainer_ids, f"row {row}: vLLM and trainer prompts differ"
        # Image grids: the ones vLLM's processor produced for this request == the ones the trainer scored.
        first = sum(image_counts[:row])
        trainer_grids = grids[first : first + image_counts[row]]
        vllm_grids = [tensor_of(f.data["image_grid_thw"]).tolist() for f in request.mm_features if f.data is not None]
        if vllm_grids:  # vLLM's processor cache sends the data once per image; repeats carry only the hash
            assert vllm_grids == trainer_grids, f"row {row}"
        # Image positions: vLLM's placeholder ranges cover exactly the image tokens the trainer marks as such.
        vllm_positions = [
            i
            for f in request.mm_features
            for i in range(f.mm_position.offset, f.mm_position.offset + f.mm_position.length)
        ]
        assert vllm_positions == [i for i, token in enumerate(trainer_ids) if token == image_token_id]
    # The scoring forward: the tokens it marks as image tokens (mm_token_type_ids, which Qwen-VL's M-RoPE index
    # reads) are exactly the image tokens of its input ids, in every (left-padded) row.
    assert forwards
    for input_ids, mm_token_type_ids in forwards:
        assert mm_token_type_ids is not None
        for row in range(input_ids.shape[0]):
            marked = (mm_token_type_ids[row] == 1).nonzero().flatten().tolist()
            tokens = (input_ids[row] == image_token_id).nonzero().flatten().tolist()
            assert marked == tokens, f"row {row}: the trainer scores image tokens at other positions"
