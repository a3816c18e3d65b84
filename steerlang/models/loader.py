"""One loader for every supported vision-language model family.

    model, config = load_pretrained(folder_or_id, dtype=torch.bfloat16, device_map="auto")
    processor = load_processor(folder_or_id)

The class is the one the folder's `config.json` names (`architectures[0]`, looked up in
transformers), else the image-text-to-text class transformers maps the config's `model_type` to;
a class the folder does not name is never built. Before any weight is read:

- the class must have a steering adapter (or be a family steerlang knows it cannot steer: the
  reason is given);
- the model is built on the meta device and its size (parameters x bytes of the dtype) compared
  with the memory available where it will live (`psutil`, else /proc/meminfo, or the GPU's free
  memory), or with `max_memory` when given; too large is one line naming the size and what to do.

Hub ids keep working for users with network: only the config is fetched for the checks
(`AutoConfig.from_pretrained`). Remote code is never run unless `trust_remote_code=True`. Only
safetensors weights are read.
"""

from __future__ import annotations

import inspect
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from steerlang.errors import ModelLoadError

__all__ = ["LoadPlan", "available_memory", "format_bytes", "format_count", "load_pretrained", "load_processor", "model_class",
           "parse_memory", "plan_load", "resolve_dtype", "resolve_source"]

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def format_bytes(n: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def format_count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return str(n)


def parse_memory(value: int | float | str | dict | None) -> int | None:
    """Bytes from 12_000_000_000, "12GB", "11.2GiB", or accelerate's {device: size} (summed)."""
    if value is None:
        return None
    if isinstance(value, dict):
        return sum(parse_memory(v) or 0 for v in value.values())
    if isinstance(value, (int, float)):
        return int(value)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?I?B?)\s*", str(value).upper())
    if not m or m.group(2) not in _UNITS:
        raise ModelLoadError(f"max_memory {value!r} is not a size (write e.g. 12GB, 11.5GiB or a number of bytes)")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def available_memory(device: str | torch.device = "cpu") -> int | None:
    """Free memory in bytes where a model would live: the GPU's free memory for "cuda[:i]", else
    the host's available memory (psutil if installed, else /proc/meminfo); None if unknown."""
    dev = torch.device(device)
    if dev.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(dev.index or 0)[0])
        except (RuntimeError, AssertionError):
            return None
    if dev.type != "cpu":
        return None
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def resolve_dtype(dtype: torch.dtype | str | None, config: Any = None) -> torch.dtype:
    """The dtype weights will be loaded in: the one given; "auto" = the checkpoint's; None = float32."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None:
        return torch.float32
    if dtype == "auto":
        got = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
        text = config.get_text_config() if config is not None and hasattr(config, "get_text_config") else None
        got = got or getattr(text, "dtype", None)
        return resolve_dtype(got, None) if got is not None and got != "auto" else torch.float32
    name = str(dtype).removeprefix("torch.")
    got = getattr(torch, name, None)
    if not isinstance(got, torch.dtype):
        raise ModelLoadError(f"unknown dtype {dtype!r} (use e.g. torch.bfloat16, \"bfloat16\" or \"auto\")")
    return got


def _is_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~"))


def resolve_source(name_or_path: str | os.PathLike) -> tuple[str, Path | None]:
    """(what to pass to from_pretrained, the folder or None for a hub id); errors for a missing
    folder or one without config.json."""
    name = str(name_or_path)
    p = Path(name).expanduser()
    looks_like_path = p.exists() or (os.sep in name and not _is_hub_id(name)) or name.startswith(".")
    if looks_like_path and not p.is_dir():
        raise ModelLoadError(f"model folder {name!r} does not exist; pass \"toyworld\", a folder saved with save_pretrained, or a hub id")
    if p.is_dir():
        if not (p / "config.json").exists():
            raise ModelLoadError(f"{p}: no config.json here; is this a folder written by save_pretrained?")
        return str(p), p
    return name, None


def _read_config(source: str, path: Path | None, trust_remote_code: bool) -> Any:
    from transformers import AutoConfig

    if path is not None:
        try:
            raw = json.loads((path / "config.json").read_text())
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{path / 'config.json'}: cannot read it: {exc}") from None
        if raw.get("auto_map") and not trust_remote_code and _needs_remote(raw):
            raise ModelLoadError(f"{path}: its config names its own code (auto_map: {sorted(raw['auto_map'])}); steerlang runs "
                                 "no remote code unless you pass trust_remote_code=True")
    try:
        return AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"cannot read the config of {source!r}: {str(exc).splitlines()[0]}") from None


def _needs_remote(raw: dict) -> bool:
    import transformers

    arch = (raw.get("architectures") or [None])[0]
    if arch and hasattr(transformers, arch):
        return False
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    return raw.get("model_type") not in CONFIG_MAPPING_NAMES


def model_class(config: Any, *, trust_remote_code: bool = False) -> type:
    """The class to build: `architectures[0]` when transformers has it, else the class
    `AutoModelForImageTextToText` maps this config to; ModelLoadError otherwise."""
    import transformers

    arch = (getattr(config, "architectures", None) or [None])[0]
    if arch:
        cls = getattr(transformers, arch, None)
        if isinstance(cls, type):
            return cls
        auto_map = getattr(config, "auto_map", None) or {}
        if auto_map and trust_remote_code:
            from transformers import AutoModelForImageTextToText
            from transformers.dynamic_module_utils import get_class_from_dynamic_module

            ref = auto_map.get("AutoModelForImageTextToText") or auto_map.get("AutoModelForCausalLM") or auto_map.get("AutoModel")
            if ref:
                return get_class_from_dynamic_module(ref, config.name_or_path)
            return AutoModelForImageTextToText  # pragma: no cover - remote code without a class reference
        remote = " (it is remote code: pass trust_remote_code=True if you trust it)" if auto_map else ""
        raise ModelLoadError(f"the config names {arch}, which transformers {transformers.__version__} does not have{remote}")
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING

    try:
        return MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING[type(config)]
    except KeyError:
        raise ModelLoadError(f"the config (model_type {getattr(config, 'model_type', '?')!r}) names no architecture and "
                             "is not an image-text-to-text model transformers knows") from None


@dataclass
class LoadPlan:
    """What `plan_load` found before any weight is read."""

    source: str
    path: Path | None
    config: Any
    cls: type
    n_params: int
    dtype: torch.dtype
    size_bytes: int
    budget_bytes: int | None  # memory available (or max_memory); None when unknown or not checked

    @property
    def class_name(self) -> str:
        return self.cls.__name__


def _meta_size(cls: type, config: Any) -> int:
    """Parameter count of `cls(config)`, built on the meta device (no memory, no weights)."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        try:
            model = cls._from_config(config) if hasattr(cls, "_from_config") else cls(config)  # type: ignore[attr-defined]
        except Exception as exc:  # noqa: BLE001 - any failure to build is reported as a load error
            raise ModelLoadError(f"cannot build {cls.__name__} from its config: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    seen, n = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            n += p.numel()
    return n


def plan_load(name_or_path: str | os.PathLike, *, device: str = "cpu", device_map: Any = None,
              dtype: torch.dtype | str | None = None, max_memory: Any = None, trust_remote_code: bool = False,
              require_adapter: bool = True) -> LoadPlan:
    """Resolve the source, the class and the size, and refuse what cannot be loaded (no weights read)."""
    source, path = resolve_source(name_or_path)
    config = _read_config(source, path, trust_remote_code)
    cls = model_class(config, trust_remote_code=trust_remote_code)
    if require_adapter:
        from steerlang.runtime.adapters import adapter_class_for

        adapter_class_for([c.__name__ for c in cls.__mro__])
    dt = resolve_dtype(dtype, config)
    n = _meta_size(cls, config)
    size = n * dt.itemsize
    budget = parse_memory(max_memory)
    if budget is None and device_map is None:
        budget = available_memory(device)
    plan = LoadPlan(source, path, config, cls, n, dt, size, budget)
    quantized = getattr(config, "quantization_config", None) is not None
    if budget is not None and size > budget and not quantized and (device_map is None or max_memory is not None):
        limit = (f"max_memory allows {format_bytes(budget)}" if max_memory is not None
                 else f"{device} has {format_bytes(budget)} available")
        options = []
        if device_map is None:
            options.append('device_map="auto" (spreads it over GPUs, CPU and disk)')
        if dt.itemsize > 2:
            options.append(f"a smaller dtype (dtype=torch.bfloat16: {format_bytes(n * 2)})")
        todo = f"load it with {' or '.join(options)}, or" if options else ""
        raise ModelLoadError(
            f"{Path(source).name or source} ({cls.__name__}, {format_count(n)} parameters) needs {format_bytes(size)} in "
            f"{str(dt).removeprefix('torch.')} but {limit}: {todo} pass max_memory=... to change the limit")
    return plan


def load_pretrained(name_or_path: str | os.PathLike, *, device: str = "cpu", device_map: Any = None,
                    dtype: torch.dtype | str | None = None, max_memory: Any = None, trust_remote_code: bool = False,
                    require_adapter: bool = True, offload_folder: str | os.PathLike | None = None,
                    ) -> tuple[torch.nn.Module, LoadPlan]:
    """(model in eval mode, its LoadPlan): checked by `plan_load`, then `from_pretrained` of the
    class the folder names. `device_map`, `dtype` and (with a device_map) `max_memory` and
    `offload_folder` (where accelerate keeps the weights a map sends to "disk") pass through."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # library code stays quiet; the CLI draws its own progress
    plan = plan_load(name_or_path, device=device, device_map=device_map, dtype=dtype, max_memory=max_memory,
                     trust_remote_code=trust_remote_code, require_adapter=require_adapter)
    kwargs: dict[str, Any] = {"config": plan.config, "dtype": plan.dtype, "use_safetensors": True}
    if trust_remote_code:
        kwargs["trust_remote_code"] = True
    if device_map is not None:
        kwargs["device_map"] = device_map
        if isinstance(max_memory, dict):
            kwargs["max_memory"] = max_memory
        if offload_folder is not None:
            kwargs["offload_folder"] = str(offload_folder)
    try:
        model = plan.cls.from_pretrained(plan.source, **kwargs)  # type: ignore[attr-defined]
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load model {str(name_or_path)!r}: {str(exc).splitlines()[0]}") from exc
    if device_map is None:
        model.to(device)
    return model.eval(), plan


def load_processor(source: str | os.PathLike, *, trust_remote_code: bool = False) -> Any:
    """`AutoProcessor.from_pretrained`; where that fails for want of torchvision (a video processor,
    a torchvision image processor), the same processor class rebuilt with the PIL image processor
    and no video processor. ModelLoadError when neither works."""
    from transformers import AutoProcessor

    src = str(source)
    try:
        return AutoProcessor.from_pretrained(src, trust_remote_code=trust_remote_code)
    except Exception as exc:  # noqa: BLE001 - transformers raises many kinds here; the fallback decides
        first = exc
    try:
        return _pil_processor(src, trust_remote_code)
    except Exception as exc:  # noqa: BLE001
        cause = str(first).strip().splitlines()[0] if str(first).strip() else type(first).__name__
        hint = " (install torchvision matching your torch)" if "torchvision" in (str(first) + str(exc)).lower() else ""
        raise ModelLoadError(f"cannot load the processor of {src!r}{hint}: {cause}") from exc


def _pil_processor(src: str, trust_remote_code: bool) -> Any:
    import transformers
    from transformers import AutoImageProcessor, AutoTokenizer
    from transformers.utils import cached_file

    name = None
    for fname in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json"):
        try:
            f = cached_file(src, fname, _raise_exceptions_for_missing_entries=False)
        except OSError:
            f = None
        if f:
            data = json.loads(Path(f).read_text())
            name = data.get("processor_class") or name
            if name:
                break
    if name == "PixtralProcessor":  # its module imports torchvision: steerlang's own (steerlang.models.pixtral)
        from steerlang.models.pixtral import PixtralPilProcessor

        return PixtralPilProcessor.from_folder(
            src, AutoImageProcessor.from_pretrained(src, backend="pil", trust_remote_code=trust_remote_code),
            AutoTokenizer.from_pretrained(src, trust_remote_code=trust_remote_code))
    cls = getattr(transformers, name, None) if name else None
    if not isinstance(cls, type) or not hasattr(cls, "get_attributes"):
        raise ModelLoadError(f"no processor class to rebuild ({name!r})")
    image_processor = AutoImageProcessor.from_pretrained(src, backend="pil", trust_remote_code=trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(src, trust_remote_code=trust_remote_code)
    wanted = [a for a in cls.get_attributes() if a not in ("image_processor", "tokenizer")]
    if any(a != "video_processor" for a in wanted):
        raise ModelLoadError(f"{name} also needs {', '.join(wanted)}")
    extra: dict[str, Any] = {}
    try:
        cfg = cached_file(src, "processor_config.json", _raise_exceptions_for_missing_entries=False)
    except OSError:
        cfg = None
    params = inspect.signature(cls.__init__).parameters
    if cfg:
        extra = {k: v for k, v in json.loads(Path(cfg).read_text()).items() if k in params and k not in ("image_processor", "tokenizer", "video_processor")}
    if "chat_template" in params and getattr(tokenizer, "chat_template", None) and "chat_template" not in extra:
        extra["chat_template"] = tokenizer.chat_template
    # A subclass without the video processor: the image path never touches it.
    without = type(cls.__name__, (cls,), {"get_attributes": classmethod(lambda _c: ["image_processor", "tokenizer"])})
    if "video_processor" in params:
        extra["video_processor"] = None
    proc = without(image_processor=image_processor, tokenizer=tokenizer, **extra)
    proc.video_processor = None
    return proc
