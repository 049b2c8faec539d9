"""The no-install path: `target.generate(custom_generate=<folder or repo id>, trust_remote_code=True)` run by a
Python process that cannot import jetspec_hf gives the tokens of plain greedy decoding, through the tree loop."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig

import torch

from hub_cache import add_to_hub_cache
from jetspec_hf.hub import prepare_hub_folder
from tiny_models import random_prompt

REPO = "me/tiny-jetspec"

# Runs in the child. `-I -S` start Python without the user's paths and without `site`, so the editable install's
# `.pth` hook (which maps `jetspec_hf` to the source tree) never runs; site-packages is then added as a bare path.
CHILD = r"""
import importlib.util, json, sys
sys.path.extend(SITE_PACKAGES)
assert importlib.util.find_spec("jetspec_hf") is None, "jetspec_hf must not be importable here"
try:
    import jetspec_hf
except ModuleNotFoundError:
    pass
else:
    raise AssertionError("jetspec_hf was imported")

import torch
from transformers import AutoModelForCausalLM

target = AutoModelForCausalLM.from_pretrained(TARGET, attn_implementation="sdpa").eval()
results = []
for prompt in PROMPTS:
    input_ids = torch.tensor([prompt])
    attention_mask = torch.ones_like(input_ids)
    plain = target.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=24, do_sample=False)
    runs = {}
    for label, extra in RUNS.items():
        out = target.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=24, do_sample=False,
                              trust_remote_code=True, return_dict_in_generate=True, **extra)
        runs[label] = {"tokens": out.sequences[0].tolist(), "output": type(out).__name__,
                       "rounds": len(out.accepted_lengths)}
    results.append({"plain": plain[0].tolist(), "runs": runs})
assert not any(name == "jetspec_hf" or name.startswith("jetspec_hf.") for name in sys.modules)
print("RESULTS " + json.dumps(results))
"""


def _site_packages() -> list[str]:
    paths = sysconfig.get_paths()
    return sorted({paths["purelib"], paths["platlib"]})


def test_custom_generate_without_the_package_matches_plain_greedy(tmp_path, target, head):
    target.save_pretrained(tmp_path / "target")
    # One folder meant for the Hub (loads the head from REPO, here served by an offline cache), one for local use
    # (loads the head from its own path).
    for_hub = prepare_hub_folder(head, tmp_path / "for_hub", base_model="me/tiny-target", repo_id=REPO)
    local = prepare_hub_folder(head, tmp_path / "local", base_model="me/tiny-target")
    cache = tmp_path / "hub-cache"
    add_to_hub_cache(cache, REPO, for_hub)

    runs = {
        "local folder, its own head": {"custom_generate": str(local)},
        "local folder, draft_head=": {"custom_generate": str(for_hub), "draft_head": str(for_hub)},
        "repo id from the cache": {"custom_generate": REPO},
    }
    prompts = [random_prompt(seed, length).tolist()[0] for seed, length in ((11, 7), (12, 15))]
    script = (f"SITE_PACKAGES = {_site_packages()!r}\nTARGET = {str(tmp_path / 'target')!r}\n"
              f"PROMPTS = {prompts!r}\nRUNS = {runs!r}\n" + CHILD)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "HF_", "TRANSFORMERS_"))}
    env.update(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache), HF_MODULES_CACHE=str(tmp_path / "modules"),
               HF_HOME=str(tmp_path / "hf-home"),
               # One thread: the tiny model gains nothing from more, and spinning OpenMP workers on a busy two-core
               # machine made the child ten times slower.
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    completed = subprocess.run([sys.executable, "-I", "-S", "-c", script], cwd=tmp_path, env=env,
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-4000:]
    line = next(line for line in completed.stdout.splitlines() if line.startswith("RESULTS "))
    results = json.loads(line.removeprefix("RESULTS "))

    for prompt, result in zip(prompts, results):
        # The child's plain greedy equals this process's: the saved target is the same model.
        expected = target.generate(torch.tensor([prompt]), max_new_tokens=24, do_sample=False)[0].tolist()
        assert result["plain"] == expected
        for label, run in result["runs"].items():
            assert run["tokens"] == expected, label
            # The tree loop ran: its output type, and fewer rounds than tokens when any draft was accepted.
            assert run["output"] == "JetSpecGenerateOutput", label
            assert 1 <= run["rounds"] <= 24, label
