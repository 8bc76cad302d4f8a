"""The one registry of decode backends. Help text, validation, dispatch, the packages
recorded in `versions`, and whether a backend may share a loaded model all read from
`BACKENDS`, so they cannot drift apart.

Each entry names its factory as "module:function" so nothing heavy is imported
until a backend is used. A factory has the signature

    factory(model: edgeprof.sources.LoadedModel, device: str, max_ctx: int, **options) -> Decoder
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field

from edgeprof.errors import BackendUnavailableError, ConfigError, UnknownChoiceError

_GPTQ_HINT = "pip install 'edgeprof[gptq]' (llmcompressor; bash scripts/setup.sh installs it)"
_FAST_OPTIONS = {"use_graph": "False to launch op by op instead of one CUDA graph",
                 "ops": "'triton' or 'torch' kernels (default: triton on CUDA)"}


@dataclass(frozen=True)
class BackendInfo:
    name: str
    summary: str
    weights: str  # weight format for the floor (edgeprof.floor.parse_format)
    factory: str  # "module:function"
    needs_gpu: bool = False
    packages: tuple[str, ...] = ()  # import names that must be present
    unavailable_reason: str | None = None  # set when it can never run (e.g. no maintained package)
    version_package: str | None = None  # distribution whose version a record names (`versions.backend_package`)
    # True when building it changes the loaded model's weights (in-place quantisation): it cannot
    # share one load with another backend, and the gate reference must run before it.
    mutates_weights: bool = False
    options: dict[str, str] = field(default_factory=dict)  # factory keyword options: name -> what it does
    install_hint: str = "pip install 'edgeprof[quant]'"  # what to run when `packages` are missing
    # True when it reads GGUF files only (llama.cpp): on a synthetic preset a cell then runs that preset's
    # SYNTHETIC Q4_0 GGUF (edgeprof.synthetic_gguf.cached) and the reference runs its dequantized weights
    reads_gguf: bool = False

    def availability(self) -> tuple[bool, str]:
        """(available, reason). Cheap: looks for packages and a GPU, imports nothing heavy."""
        if self.unavailable_reason:
            return False, self.unavailable_reason
        missing = [p for p in self.packages if importlib.util.find_spec(p) is None]
        if missing:
            return False, f"package(s) not installed: {', '.join(missing)} ({self.install_hint})"
        if self.needs_gpu and not _cuda_available():
            return False, "needs an NVIDIA GPU with CUDA; none is visible"
        return True, "available"


def _cuda_available() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


BACKENDS: dict[str, BackendInfo] = {
    b.name: b
    for b in [
        BackendInfo("hf-eager", "transformers, SDPA, dynamic cache (the paper's controlled setup)", "bf16",
                    "edgeprof.backends.hf:make_eager", packages=("transformers",)),
        BackendInfo("hf-static", "transformers, static cache, no graph", "bf16",
                    "edgeprof.backends.hf:make_static", packages=("transformers",)),
        BackendInfo("hf-graph", "transformers, static cache, one decode step captured as a CUDA graph", "bf16",
                    "edgeprof.backends.hf:make_graph", needs_gpu=True, packages=("transformers",)),
        BackendInfo("hf-compile", "transformers, static cache, torch.compile mode=reduce-overhead", "bf16",
                    "edgeprof.backends.hf:make_compile", packages=("transformers",)),
        BackendInfo("bnb-nf4", "bitsandbytes NF4 (blocksize 64, double-quant), static cache + CUDA graph", "nf4",
                    "edgeprof.backends.bnb:make_nf4", packages=("transformers", "bitsandbytes"),  # CPU: bnb's CPU kernels
                    version_package="bitsandbytes", mutates_weights=True),
        BackendInfo("bnb-int8", "bitsandbytes LLM.int8, static cache", "int8",
                    "edgeprof.backends.bnb:make_int8", packages=("transformers", "bitsandbytes"),
                    version_package="bitsandbytes", mutates_weights=True),
        # torchao's int4 weight-only tinygemm layout dispatches to aten._weight_int4pack_mm, which we call
        # directly (torchao's config API churns between releases), so torchao itself is not required.
        BackendInfo("torchao-int4", "torch tinygemm int4 weight-only (aten._weight_int4pack_mm) on the rtn4 weights, "
                    "static cache + CUDA graph", "rtn4-g128", "edgeprof.backends.torchao_int4:make",
                    packages=("transformers",), version_package="torch", mutates_weights=True,
                    options={"group": "quantisation group size (default 128)"}),
        BackendInfo("exllamav2", "the rtn4 weights as a GPTQ-layout checkpoint through ExLlamaV2DynamicGenerator, one "
                    "iterate() per token, greedy (as ExLlamaV2's users run it)", "rtn4-g128",
                    "edgeprof.backends.exl2:make", needs_gpu=True, packages=("exllamav2",),
                    version_package="exllamav2", mutates_weights=True,  # quantising replaces the weights in place
                    options={"group": "group size (default 128)",
                             "checkpoint_dir": "reuse this GPTQ-layout checkpoint instead of quantising"}),
        BackendInfo("exllamav2-forward", "the same checkpoint through a plain per-token model.forward (diagnostic: "
                    "no generator)", "rtn4-g128", "edgeprof.backends.exl2:make_forward", needs_gpu=True,
                    packages=("exllamav2",), version_package="exllamav2", mutates_weights=True,
                    options={"group": "group size (default 128)",
                             "checkpoint_dir": "reuse this GPTQ-layout checkpoint instead of quantising"}),
        BackendInfo("awq", "AWQ int4", "awq4-g128", "edgeprof.backends.hf:make_eager",
                    unavailable_reason="AutoAWQ is archived with no wheels for current Python/torch, and no "
                    "maintained AWQ runtime installs here; GPTQ int4 (exllamav2, edgeprof-fast) covers 4-bit",
                    mutates_weights=True),
        BackendInfo("llamacpp", "llama.cpp (llama-cpp-python built from source) reading a GGUF file directly: "
                    "llama_decode of one token + host argmax; CPU, or every layer on the GPU with a CUDA build",
                    "gguf", "edgeprof.backends.llamacpp:make", packages=("llama_cpp",),
                    version_package="llama_cpp_python",
                    install_hint="bash scripts/setup.sh (builds llama-cpp-python from source once and caches the "
                    "wheel; or pip install 'edgeprof[llamacpp]')", reads_gguf=True),
        BackendInfo("edgeprof-fast", "edgeprof's own decoder: the whole step in one CUDA graph, bf16", "bf16",
                    "edgeprof.fast.decoder:make_bf16", packages=("torch",), options=_FAST_OPTIONS),
        BackendInfo("edgeprof-fast-int4", "edgeprof's own decoder, rtn4 int4 weights (tinygemm)",
                    "rtn4-g128", "edgeprof.fast.decoder:make_int4", packages=("torch",),
                    options={**_FAST_OPTIONS, "group": "int4 group size (default 128, 64 where 128 does not divide)"}),
        # Real GPTQ (calibrated) from llmcompressor, the same (q, z, s) tensors any int4 runtime packs from.
        BackendInfo("edgeprof-fast-int4-gptq", "edgeprof's own decoder, GPTQ int4 weights (llmcompressor GPTQ "
                    "calibrated on edgeprof/data/calibration.txt, no act-order; tinygemm)", "gptq4-g128",
                    "edgeprof.fast.decoder:make_int4_gptq", packages=("torch", "llmcompressor"),
                    version_package="llmcompressor", install_hint=_GPTQ_HINT,
                    options={**_FAST_OPTIONS, "group": "int4 group size (default 128, 64 where 128 does not divide)"}),
        BackendInfo("edgeprof-fast-int4-gptq-actorder", "edgeprof-fast-int4-gptq with llmcompressor's static "
                    "act-order (columns quantized in Hessian order; groups stay contiguous, so no g_idx is needed)",
                    "gptq4ao-g128", "edgeprof.fast.decoder:make_int4_gptq_actorder",
                    packages=("torch", "llmcompressor"), version_package="llmcompressor", install_hint=_GPTQ_HINT,
                    options={**_FAST_OPTIONS, "group": "int4 group size (default 128, 64 where 128 does not divide)"}),
        BackendInfo("edgeprof-fast-int4-cuda", "edgeprof's own decoder, rtn4 int4 weights through edgeprof's "
                    "CUDA W4A16 GEMV (JIT-built; falls back to tinygemm without nvcc or an sm_80+ GPU)",
                    "rtn4-g128", "edgeprof.fast.decoder:make_int4_cuda", packages=("torch",),
                    options={**_FAST_OPTIONS, "group": "int4 group size (32, 64 or 128)"}),
        BackendInfo("edgeprof-fast-int4-gemlite", "edgeprof's own decoder, rtn4 int4 weights (gemlite's Triton "
                    "GEMV)", "rtn4-g128", "edgeprof.fast.decoder:make_int4_gemlite", needs_gpu=True,
                    packages=("torch", "gemlite"), version_package="gemlite",
                    options={**_FAST_OPTIONS, "group": "int4 group size"}),
    ]
}


def names() -> list[str]:
    return list(BACKENDS)


def get(name: str) -> BackendInfo:
    if name not in BACKENDS:
        raise UnknownChoiceError("backend", name, BACKENDS)
    return BACKENDS[name]


def require(name: str) -> BackendInfo:
    """The entry, or a BackendUnavailableError saying why it cannot run here."""
    info = get(name)
    ok, reason = info.availability()
    if not ok:
        raise BackendUnavailableError(name, reason)
    return info


def can_share_model(*names: str) -> bool:
    """Whether these backends may run one after another on one loaded model (none changes its weights)."""
    return not any(get(n).mutates_weights for n in names)


def create(name: str, model, device: str, max_ctx: int, **options):
    """Build a ready `Decoder` for `model` (an edgeprof.sources.LoadedModel)."""
    info = require(name)
    unknown = sorted(set(options) - set(info.options))
    if unknown:
        valid = ", ".join(info.options) or "none"
        raise ConfigError(f"option {unknown[0]!r}", f"not an option of backend {name}; its options: {valid}")
    module_name, func = info.factory.split(":")
    return getattr(importlib.import_module(module_name), func)(model, device=device, max_ctx=max_ctx, **options)
