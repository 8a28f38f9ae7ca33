"""PyTorch: round trips of torch tensors (bf16, fp16, fp8) through files, numpy/ml_dtypes views of the same bits."""

import ml_dtypes
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch)")

import ckpt_container as cc  # noqa: E402
from ckpt_container import safe_open  # noqa: E402
from ckpt_container.numpy import load_file as load_numpy  # noqa: E402
from ckpt_container.torch import load, load_file, save, save_file  # noqa: E402

from _support import needs_ckpt, run_ckpt  # noqa: E402

FP8 = [getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz",
                                    "float8_e8m0fnu") if hasattr(torch, n)]


def tensors():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 32, generator=g)
    out = {"f32": x, "f16": x.half(), "bf16": x.bfloat16(), "f64": x.double()[:4], "i64": torch.arange(10),
           "i8": torch.arange(-5, 5, dtype=torch.int8), "bool": x > 0, "c64": torch.complex(x, -x),
           "scalar": torch.tensor(2.5), "empty": torch.zeros(0, 3)}
    for dtype in FP8:
        out[str(dtype).split(".")[1]] = x.abs().to(dtype) if "e8m0" in str(dtype) else x.to(dtype)
    return out


def same(a, b) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.numel() == 0:
        return True
    width = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
    if a.is_complex():
        return torch.equal(torch.view_as_real(a), torch.view_as_real(b))
    if a.dtype == torch.bool:
        return torch.equal(a, b)
    return torch.equal(a.contiguous().view(width[a.element_size()]), b.contiguous().view(width[b.element_size()]))


@pytest.mark.parametrize("codec", ["none", "lz4", "zstd"])
def test_torch_round_trip(tmp_path, codec: str) -> None:
    original = tensors()
    path = tmp_path / "t.ckpt"
    save_file(original, path, metadata={"framework": "pt"}, codec=codec, chunk_size=256)
    loaded = load_file(path, device="cpu")
    assert sorted(loaded) == sorted(original)
    for name, tensor in original.items():
        assert same(loaded[name], tensor), name
    assert same(load(save(original))["bf16"], original["bf16"])


def test_torch_and_numpy_see_the_same_bits(tmp_path) -> None:
    original = tensors()
    path = tmp_path / "t.ckpt"
    save_file(original, path)
    arrays = load_numpy(path)
    assert arrays["bf16"].dtype == ml_dtypes.bfloat16
    assert arrays["bf16"].view(np.int16).tobytes() == original["bf16"].view(torch.int16).numpy().tobytes()
    if hasattr(torch, "float8_e4m3fn"):
        assert arrays["float8_e4m3fn"].dtype == ml_dtypes.float8_e4m3fn
        assert arrays["float8_e4m3fn"].view(np.uint8).tobytes() == \
            original["float8_e4m3fn"].view(torch.uint8).numpy().tobytes()
    # numpy/ml_dtypes arrays saved, read back as torch
    np_path = tmp_path / "n.ckpt"
    cc.save_file({"bf": np.arange(8, dtype=np.float32).astype(ml_dtypes.bfloat16)}, np_path)
    assert torch.equal(load_file(np_path)["bf"], torch.arange(8, dtype=torch.float32).bfloat16())


def test_safe_open_pt_gives_writable_copy_on_write_views(tmp_path) -> None:
    path = tmp_path / "t.ckpt"
    save_file({"w": torch.ones(1000)}, path)
    before = path.read_bytes()
    with safe_open(path, framework="pt") as f:
        w = f.get_tensor("w")
        assert w.dtype == torch.float32 and w.shape == (1000,)
        w[0] = 5.0  # a private mapping: neither the file nor another tensor sees it
        assert f.get_tensor("w")[0].item() == 1.0
        assert f.get_slice("w")[2:4].tolist() == [1.0, 1.0]
    assert path.read_bytes() == before


def test_dtypes_without_a_torch_dtype_raise(tmp_path) -> None:
    path = tmp_path / "f4.ckpt"
    cc.save_file({"f4": np.zeros(4, ml_dtypes.float4_e2m1fn), "s": np.array(["a"])}, path)
    with safe_open(path, framework="pt") as f:
        with pytest.raises(cc.UnsupportedError, match="F4"):
            f.get_tensor("f4")
        with pytest.raises(cc.UnsupportedError, match="STRING"):
            f.get_tensor("s")


@needs_ckpt
def test_safetensors_torch_model_through_swift_convert(tmp_path) -> None:
    import safetensors.torch
    original = {k: v for k, v in tensors().items() if k not in ("scalar",)}
    source = tmp_path / "m.safetensors"
    safetensors.torch.save_file(original, str(source))
    out = tmp_path / "m.ckpt"
    run_ckpt("convert", str(source), str(out), "--codec", "zstd", "--chunk-size", "1K")
    loaded = load_file(out)
    for name, tensor in original.items():
        assert same(loaded[name], tensor), name
    back = tmp_path / "back.safetensors"
    save_file(original, tmp_path / "py.ckpt", codec="lz4hc")
    run_ckpt("convert", str(tmp_path / "py.ckpt"), str(back))
    for name, tensor in safetensors.torch.load_file(str(back)).items():
        assert same(tensor, original[name]), name
