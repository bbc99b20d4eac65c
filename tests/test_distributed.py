"""DDP on CPU: two gloo ranks launched by torchrun see disjoint shards, end with identical
weights (BatchNorm buffers included, for DCGAN), and only rank 0 writes the run directory."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file


SCRIPT = r"""
import json, sys
from pathlib import Path
import torch
import genfast
from genfast import data
from safetensors.torch import save_file

model, run_dir, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
OPTIONS = {"vae": {}, "ebgan": {"hidden": 64}, "dcgan": {"ngf": 8, "ndf": 8, "image_size": 16}}
seen = []
original = data.batches
def recording(*args, **kwargs):
    for batch in original(*args, **kwargs):
        seen.extend(batch.tolist())
        yield batch
data.batches = recording
result = genfast.train(model, run_dir=run_dir, epochs=1, max_steps=6, batch_size=32, device="cpu",
                       progress=False, **OPTIONS[model])
weights = {f"model/{k}": v.contiguous() for k, v in result.trainer.model.state_dict().items()}
save_file(weights, str(out / f"rank{result.rank}.safetensors"))
(out / f"seen{result.rank}.json").write_text(json.dumps(seen))
"""


@pytest.mark.parametrize("model", ["vae", "ebgan", "dcgan"])
def test_two_gloo_ranks(tmp_path, model):
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    run_dir, out = tmp_path / "run", tmp_path / "out"
    out.mkdir()
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                    str(script), model, str(run_dir), str(out)], check=True, timeout=300, cwd=tmp_path)
    seen = [set(json.loads((out / f"seen{r}.json").read_text())) for r in (0, 1)]
    assert len(seen[0]) == len(seen[1]) == 6 * 32 and seen[0].isdisjoint(seen[1])
    weights = [load_file(out / f"rank{r}.safetensors") for r in (0, 1)]
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 1
    assert json.loads((run_dir / "config.json").read_text())["world_size"] == 2
    saved = load_file(run_dir / "model.safetensors")
    assert all(torch.equal(saved[k], weights[0][k]) for k in saved)
