"""The loader: the class the folder names, the size checked on the meta device before any weight
is read, clear one-line refusals, hub ids resolved through AutoConfig (never in these tests: it is
replaced), dtype / device_map passed through, and the processor rebuilt without torchvision."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tiny
import torch

from steerlang.errors import ModelLoadError
from steerlang.models import load_pretrained, load_processor, plan_load
from steerlang.models.loader import available_memory, parse_memory, resolve_dtype
from steerlang.runtime.adapters import adapter_class_for, adapter_for, find_decoder_layers


@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("llava")
    tiny.llava().save_pretrained(out)
    tiny.llava_processor().save_pretrained(out)
    return out


def _config_only(folder: Path, config, arch: str | None) -> Path:  # noqa: ANN001
    folder.mkdir(parents=True, exist_ok=True)
    if arch is not None:
        config.architectures = [arch]
    config.save_pretrained(folder)
    return folder


def test_the_class_is_the_one_the_folder_names(tmp_path: Path) -> None:
    """Chameleon's config has no sub-configs: it used to be read as a 7B LLaVA."""
    from transformers import ChameleonConfig, Gemma3Config, LlavaNextConfig

    cases = {
        "ChameleonForConditionalGeneration": ChameleonConfig(vocabulary_map={"<image>": 8711}),
        "Gemma3ForConditionalGeneration": Gemma3Config(),
        "LlavaNextForConditionalGeneration": LlavaNextConfig(),
    }
    for arch, cfg in cases.items():
        plan = plan_load(_config_only(tmp_path / arch, cfg, arch), max_memory="10TB")
        assert plan.class_name == arch
        assert plan.n_params > 10**9  # the real sizes: counted on the meta device, nothing allocated
    # no architectures: the image-text-to-text class of its model_type
    plan = plan_load(_config_only(tmp_path / "noarch", ChameleonConfig(vocabulary_map={"<image>": 8711}), None), max_memory="10TB")
    assert plan.class_name == "ChameleonForConditionalGeneration"


def test_too_large_is_refused_before_any_weight_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import ChameleonConfig

    folder = _config_only(tmp_path / "chameleon7b", ChameleonConfig(vocabulary_map={"<image>": 8711}), "ChameleonForConditionalGeneration")
    assert not list(folder.glob("*.safetensors"))  # no weights at all: the check comes first
    with pytest.raises(ModelLoadError) as err:
        load_pretrained(folder, max_memory="8GB")
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("chameleon7b (ChameleonForConditionalGeneration, 7.04 B parameters) needs 28.2 GB in float32")
    assert "max_memory allows 8.0 GB" in msg and 'device_map="auto"' in msg and "dtype=torch.bfloat16" in msg
    # the default limit is the memory available where the model will live
    monkeypatch.setattr("steerlang.models.loader.available_memory", lambda _device="cpu": 10**9)
    with pytest.raises(ModelLoadError, match=r"but cpu has 1\.0 GB available"):
        plan_load(folder, dtype=torch.bfloat16)
    # with a device_map, accelerate places (and offloads) it: no refusal at planning
    assert plan_load(folder, device_map="auto").size_bytes > 10**9


def test_a_small_model_loads_and_a_tiny_limit_refuses_it(llava_dir: Path) -> None:
    model, plan = load_pretrained(llava_dir)
    assert type(model).__name__ == "LlavaForConditionalGeneration" and not model.training
    assert plan.n_params == sum(p.numel() for p in model.parameters())
    assert plan.size_bytes == plan.n_params * 4
    with pytest.raises(ModelLoadError, match=r"\(LlavaForConditionalGeneration, 41.73 K parameters\) needs 166.9 KB in float32 "
                                             r"but max_memory allows 1.0 KB: load it with"):
        load_pretrained(llava_dir, max_memory=1000)


def test_dtype_and_device_map_pass_through(llava_dir: Path) -> None:
    model, plan = load_pretrained(llava_dir, dtype=torch.bfloat16)
    assert plan.dtype == torch.bfloat16 and all(p.dtype == torch.bfloat16 for p in model.parameters())
    model, plan = load_pretrained(llava_dir, dtype="auto", device_map="cpu")
    assert plan.dtype == torch.float32 and all(p.device.type == "cpu" for p in model.parameters())
    assert resolve_dtype("bfloat16") == torch.bfloat16 and resolve_dtype(None) == torch.float32
    with pytest.raises(ModelLoadError, match="unknown dtype"):
        resolve_dtype("float7")


def test_load_model_keeps_the_bundle_api(llava_dir: Path) -> None:
    import numpy as np
    from PIL import Image

    import steerlang

    bundle = steerlang.load_model(llava_dir, dtype=torch.float32)
    assert bundle.name == llava_dir.name and bundle.path == llava_dir and not bundle.chat
    assert bundle.patch_grid == (4, 4) and bundle.image_token_id == tiny.IMG
    im = Image.fromarray((np.random.RandomState(0).rand(16, 16, 3) * 255).astype("uint8"))
    assert len(bundle.generate([im], "what is in the picture ?", max_new_tokens=3)) == 1


def test_a_class_without_adapter_is_refused_before_loading(tmp_path: Path) -> None:
    from transformers import LlamaConfig

    folder = _config_only(tmp_path / "llama", LlamaConfig(**{k: v for k, v in tiny.TEXT.items()}), "LlamaForCausalLM")
    with pytest.raises(ModelLoadError) as err:
        load_pretrained(folder)
    msg = str(err.value)
    assert msg.startswith("no steering adapter for LlamaForCausalLM; supported: ")
    assert "Gemma3ForConditionalGeneration" in msg and "\n" not in msg


def test_mllama_is_refused_with_the_reason(tmp_path: Path) -> None:
    from transformers import MllamaConfig

    folder = _config_only(tmp_path / "mllama", MllamaConfig(), None)
    with pytest.raises(ModelLoadError, match="MllamaForConditionalGeneration is not supported: its images enter the "
                                             "language model by cross-attention, not as positions"):
        plan_load(folder)
    with pytest.raises(ModelLoadError, match="cross-attention"):
        adapter_class_for("MllamaForConditionalGeneration")


def test_remote_code_is_never_run_unless_asked(tmp_path: Path) -> None:
    folder = tmp_path / "remote"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "my_vlm", "architectures": ["MyVLMForCausalLM"],
        "auto_map": {"AutoConfig": "configuration_my.MyConfig", "AutoModelForCausalLM": "modeling_my.MyVLMForCausalLM"}}))
    (folder / "modeling_my.py").write_text("raise SystemExit('remote code ran')\n")
    with pytest.raises(ModelLoadError, match="trust_remote_code=True"):
        load_pretrained(folder)


def test_a_hub_id_reads_only_its_config(monkeypatch: pytest.MonkeyPatch) -> None:
    import transformers

    asked = []
    cfg = tiny.llava().config

    def fake(name, **kw):  # noqa: ANN001, ANN003, ANN202
        asked.append((name, kw))
        return cfg

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", staticmethod(fake))
    plan = plan_load("someone/tiny-llava")
    assert asked == [("someone/tiny-llava", {"trust_remote_code": False})]
    assert plan.path is None and plan.source == "someone/tiny-llava" and plan.class_name == "LlavaForConditionalGeneration"


def test_missing_folders_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_pretrained(tmp_path / "nope")
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_pretrained(tmp_path)


def test_memory_sizes() -> None:
    assert parse_memory("12GB") == 12 * 10**9 and parse_memory("1.5GiB") == int(1.5 * 2**30)
    assert parse_memory({0: "1GB", "cpu": 2 * 10**9}) == 3 * 10**9 and parse_memory(None) is None
    with pytest.raises(ModelLoadError, match="not a size"):
        parse_memory("lots")
    assert (available_memory("cpu") or 0) > 0


def test_available_memory_without_psutil(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "psutil", None)  # import fails: /proc/meminfo is read
    got = available_memory("cpu")
    assert got is None or got > 0
    if Path("/proc/meminfo").exists():
        assert got is not None and got > 0


def test_the_processor_is_rebuilt_without_torchvision(tmp_path: Path) -> None:
    """Qwen2-VL's processor has a video processor that needs torchvision; images do not."""
    import importlib.util

    import numpy as np
    from PIL import Image

    tiny.write_qwen_processor(tmp_path)
    proc = load_processor(tmp_path)
    assert proc.image_token == "<|image_pad|>"
    if importlib.util.find_spec("torchvision") is None:
        assert type(proc).__module__ == "steerlang.models.loader"  # the fallback, not AutoProcessor
    im = Image.fromarray((np.random.RandomState(0).rand(16, 24, 3) * 255).astype("uint8"))
    enc = proc(images=[im], text=["<|image_pad|> what ?"], return_tensors="pt")
    assert enc["image_grid_thw"].tolist() == [[1, 4, 6]] and int((enc["input_ids"] == tiny.IMG).sum()) == 6


def test_a_processor_that_cannot_be_built_names_the_cause(tmp_path: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("torchvision") is not None:
        pytest.skip("torchvision is installed: the first error is not torchvision's")
    # Pixtral's processor needs torchvision, and steerlang's own needs the image processor's settings,
    # which this folder lacks: both fail, and the message names the first cause and the fix.
    tiny.tokenizer(["<pad>", "<s>", "</s>", "[IMG]", "[IMG_BREAK]", "[IMG_END]"]).save_pretrained(tmp_path)
    (tmp_path / "processor_config.json").write_text(json.dumps({"processor_class": "PixtralProcessor", "patch_size": 4}))
    with pytest.raises(ModelLoadError, match=r"cannot load the processor of .* \(install torchvision matching your torch\)"):
        load_processor(tmp_path)


def test_decoder_layers_are_found_by_path_or_by_search() -> None:
    for build in (tiny.llava, tiny.idefics3, tiny.chameleon, tiny.gemma3):
        model = build()
        ad = adapter_for(model)
        assert find_decoder_layers(model) == (ad.layers_path, ad.decoder_layers())


def test_llama4_keeps_its_layers_in_a_causal_lm() -> None:
    from transformers import Llama4Config, Llama4ForConditionalGeneration

    text = {**tiny.TEXT, "intermediate_size_mlp": 64, "head_dim": 16, "num_local_experts": 2, "num_experts_per_tok": 1,
            "interleave_moe_layer_step": 1, "no_rope_layers": [1, 1]}
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2, "image_size": 16,
              "patch_size": 4, "vision_output_dim": 32, "projector_input_dim": 32, "projector_output_dim": 32}
    model = Llama4ForConditionalGeneration(Llama4Config(text_config=text, vision_config=vision, image_token_index=tiny.IMG))
    ad = adapter_for(model)
    assert ad.layers_path == "language_model.model.layers" and ad.base_model() is model and ad.n_layers == 2


def test_ambiguous_layer_lists_fail_loudly() -> None:
    class Two(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.config = tiny.llava().config.text_config
            self.a = torch.nn.ModuleList([torch.nn.Linear(2, 2) for _ in range(2)])
            self.b = torch.nn.ModuleList([torch.nn.Linear(2, 2) for _ in range(2)])

    with pytest.raises(ModelLoadError, match=r"cannot tell where Two keeps its text decoder layers .* candidates: a \(2\), b \(2\)"):
        find_decoder_layers(Two())


def test_pixtral_processor_is_rebuilt_without_torchvision(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    from steerlang.models.loader import load_processor
    from steerlang.models.pixtral import PixtralPilProcessor

    folder = tmp_path / "pixtral"
    folder.mkdir()
    tiny.write_pixtral_processor(folder)
    proc = load_processor(folder)
    assert isinstance(proc, PixtralPilProcessor)
    im = Image.fromarray((np.random.RandomState(0).rand(16, 24, 3) * 255).astype("uint8"))  # 2 x 3 merged patches
    out = proc(images=[im], text=["[IMG] what"], return_tensors="pt", padding=True)
    img, brk, end = 3, 5, 6
    assert out["input_ids"][0, :8].tolist() == [img, img, img, brk, img, img, img, end]
    assert tuple(out["pixel_values"].shape) == (1, 3, 16, 24) and out["image_sizes"].tolist() == [[16, 24]]
    with pytest.raises(ValueError, match="more images"):
        proc(images=[im], text=["[IMG] [IMG] what"])
