"""`jetspec-hf bench --synthetic` at tiny shapes on a CPU: the random models, the oracle drafter, the report."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import Qwen3ForCausalLM

import jetspec_hf
from jetspec_hf.bench.compilation import compiled
from jetspec_hf.bench.synthetic.oracle import AcceptanceSchedule, acceptance_for_tau, expected_tau
from jetspec_hf.bench.stage_events import EventRoundProfiler
from jetspec_hf.bench.synthetic.timing import oracle_generation, plain_generation
from jetspec_hf.bench.synthetic.models import SHAPES, build_head, build_target, synthetic_prompt, target_config
from jetspec_hf.cli import main as cli_main
from jetspec_hf.generation.profiling import ROUND_STAGES
from tiny_models import random_prompt, tiny_head, tiny_target

CPU = torch.device("cpu")
# Small enough for a few seconds on a CPU, and still every kind of measurement.
QUICK = {"--shapes": "tiny", "--device": "cpu", "--threads": "1", "--budgets": "16 64", "--taus": "2 4",
         "--verify-nodes": "1 16 64", "--max-new-tokens": "24", "--repeats": "2"}


def bench_argv(output_dir, **changes) -> list[str]:
    """`jetspec-hf bench --synthetic` with the QUICK options, `changes` (`max_new_tokens="12"`) replacing them."""
    options = {**QUICK, **{"--" + name.replace("_", "-"): value for name, value in changes.items()}}
    argv = ["bench", "--synthetic", "--output-dir", str(output_dir)]
    for option, value in options.items():
        argv += [option, *value.split()]
    return argv


@pytest.fixture(scope="module")
def synthetic_pair():
    shapes = SHAPES["tiny"]
    target = jetspec_hf.enable(build_target(shapes, CPU, torch.float32))
    return target, build_head(shapes, target), synthetic_prompt(shapes, 32, CPU)


def _tau(generation) -> float:
    return sum(generation.accepted_lengths) / len(generation.accepted_lengths)


def test_the_8b_shapes_are_qwen3_8b_and_its_released_heads():
    shapes = SHAPES["8b"]
    with torch.device("meta"):
        target = Qwen3ForCausalLM(target_config(shapes))
    # Qwen3-8B: 8.19 billion parameters, untied lm_head.
    assert sum(parameter.numel() for parameter in target.parameters()) == 8_190_735_360
    from jetspec_hf.bench.synthetic.models import head_config

    config = head_config(shapes)
    assert (config.num_hidden_layers, config.block_size, config.causal_head) == (5, 16, True)
    assert config.target_layer_ids == [1, 9, 17, 25, 33]
    assert config.mask_token_id < shapes.vocab_size


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_random_target_continues_decisively_in_both_precisions(dtype):
    shapes = SHAPES["tiny"]
    target = build_target(shapes, CPU, dtype)
    head = build_head(shapes, target)
    prompt = synthetic_prompt(shapes, 32, CPU)
    assert target.dtype == head.dtype == dtype and target.config._attn_implementation == "sdpa"
    new = plain_generation(target, prompt, 12).new_tokens(32)
    last = int(prompt[0, -1])
    assert new == [(last + step) % shapes.vocab_size for step in range(1, 13)]
    with torch.no_grad():
        logits = target(prompt).logits[0].float()
    assert torch.isfinite(logits).all()
    top_two = logits.topk(2, dim=-1).values
    assert (top_two[:, 0] - top_two[:, 1]).min() > 10.0  # far beyond any bf16 rounding


def test_acceptance_for_tau_inverts_expected_tau():
    for tau, max_accepted in [(2.0, 15), (4.0, 15), (8.0, 15), (4.0, 3), (1.0, 15)]:
        p = acceptance_for_tau(tau, max_accepted)
        assert expected_tau([p], max_accepted) == pytest.approx(tau, abs=1e-9)
    assert acceptance_for_tau(4.0, 3) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="cannot be forced"):
        acceptance_for_tau(5.0, 3)


def test_the_schedule_plants_each_depth_with_its_conditional_probability():
    # Depth 1 half the time; depth 2 always after depth 1; depth 3 never.
    schedule = AcceptanceSchedule([0.5, 1.0, 0.0], seed=3)
    draws = [schedule.draw(15) for _ in range(1000)]
    assert set(draws) == {0, 2}
    assert draws.count(2) / len(draws) == pytest.approx(0.5, abs=0.01)
    assert max(AcceptanceSchedule([0.9], seed=0).draw(3) for _ in range(50)) == 3  # capped at the depth asked


@pytest.mark.parametrize("tau", [2.0, 4.0])
def test_forced_tau_lands_near_its_target_and_output_equals_plain(synthetic_pair, tau):
    target, head, prompt = synthetic_pair
    reference = plain_generation(target, prompt, 160)
    run = oracle_generation(target, head, prompt, reference.sequences, 16, [acceptance_for_tau(tau, 15)], 160)
    assert torch.equal(run.sequences, reference.sequences)
    assert _tau(run) == pytest.approx(tau, abs=0.5)


@pytest.mark.parametrize("budget", [4, 16, 64])
def test_each_round_accepts_exactly_what_the_oracle_planted_on_a_non_decisive_target(budget):
    """On the tests' ordinary random target (near-ties everywhere), in fp32: output identical to plain, and every
    drafted round commits its planted depths (as many as the budget holds) plus the target's own token."""
    target = jetspec_hf.enable(tiny_target())
    head = tiny_head(target, block_size=16)
    for seed in range(3):
        prompt = random_prompt(seed, 10)
        reference = plain_generation(target, prompt, 40)
        run = oracle_generation(target, head, prompt, reference.sequences, budget, [acceptance_for_tau(4.0, 15)],
                                40, seed=seed)
        assert torch.equal(run.sequences, reference.sequences)
        drafted = len(run.planted)
        assert run.accepted_lengths[:drafted - 1] == [min(planted, budget - 1) + 1 for planted in run.planted[:-1]]


def test_event_profiler_accounts_every_stage_without_syncing_on_cpu(synthetic_pair):
    target, head, prompt = synthetic_pair
    reference = plain_generation(target, prompt, 24)
    profiler = EventRoundProfiler()
    run = oracle_generation(target, head, prompt, reference.sequences, 16, [0.8], 24, round_profiler=profiler)
    summary = profiler.summary()
    assert profiler.rounds == len(run.accepted_lengths)
    # Every stage but `compact`, which squeezes a batch's cache holes (one sequence here has none).
    assert all(summary[name] > 0 for name in ("prefill", *ROUND_STAGES) if name != "compact")
    assert summary["total"] >= sum(summary[name] for name in ("prefill", *ROUND_STAGES))


def test_compiled_mlps_keep_outputs_and_are_put_back(synthetic_pair):
    target, head, prompt = synthetic_pair
    reference = plain_generation(target, prompt, 12)
    with compiled(target, "mlp", backend="eager") as setup:
        assert "MLP" in setup.description and "not compiled" in setup.description and not setup.generation_settings
        assert all("forward" in layer.mlp.__dict__ for layer in target.model.layers)
        assert torch.equal(plain_generation(target, prompt, 12).sequences, reference.sequences)
        run = oracle_generation(target, head, prompt, reference.sequences, 16, [0.8], 12)
        assert torch.equal(run.sequences, reference.sequences)
    assert not any("forward" in layer.mlp.__dict__ for layer in target.model.layers)
    with pytest.raises(ValueError, match="compile mode"):
        with compiled(target, "everything"):
            pass


def test_static_compile_mode_runs_plain_and_tree_through_generate_s_own_compile(synthetic_pair):
    target, head, prompt = synthetic_pair
    reference = plain_generation(target, prompt, 10)
    with compiled(target, "static", backend="eager") as setup:
        assert setup.generation_settings["cache_implementation"] == "static"
        plain = plain_generation(target, prompt, 10, **setup.generation_settings)
        run = oracle_generation(target, head, prompt, reference.sequences, 8, [0.8], 10,
                                generation_settings=setup.generation_settings)
    assert torch.equal(plain.sequences, reference.sequences) and torch.equal(run.sequences, reference.sequences)


@pytest.mark.real_cost_measurement
def test_synthetic_bench_end_to_end_writes_every_field(tmp_path, capsys):
    assert cli_main(bench_argv(tmp_path)) == 0
    report = json.loads((tmp_path / "synthetic.json").read_text())
    markdown = (tmp_path / "synthetic.md").read_text()
    printed = capsys.readouterr().out
    assert printed.strip() == markdown.strip()
    for heading in ("plain step ms", "Verify forward", "Forced τ", "Goals", "cost table"):
        assert heading in markdown

    assert {"mode", "command", "environment", "shapes", "settings", "variants", "goals", "elapsed_seconds"} <= set(
        report)
    assert report["command"].startswith("jetspec-hf bench --synthetic")
    assert report["shapes"]["name"] == "tiny" and report["shapes"]["target_layer_ids"] == [1, 2, 3, 4, 5]
    sdpa, flash = report["variants"]
    assert flash["attention"] == "flash_attention_2" and "CUDA" in flash["skipped_reason"]
    assert sdpa["skipped_reason"] is None and sdpa["compiled"] is None
    assert {"seconds", "ms_per_token", "forward_ms", "step_ms", "prefill_ms", "matches_reference"} <= set(
        sdpa["plain"])
    assert [entry["nodes"] for entry in sdpa["verify"]] == [1, 16, 64]
    assert all(entry["ms"] > 0 and entry["over_plain_forward"] > 0 for entry in sdpa["verify"])
    assert sdpa["draft_ms"] > 0
    auto_costs = sdpa["auto_costs"]
    assert auto_costs["seconds"] > 0 and auto_costs["node_counts"][0] == 1
    assert len(auto_costs["ms"]) == len(auto_costs["prefix_lengths"]) >= 1
    assert all(len(row) == len(auto_costs["node_counts"]) and min(row) > 0 for row in auto_costs["ms"])

    rows = sdpa["forced"]
    assert [(row["budget"], row["tau_target"]) for row in rows] == [(16, 2.0), (16, 4.0), (64, 2.0), (64, 4.0)]
    fields = {"acceptance", "tau", "rounds", "mean_tree_size", "ms_per_token", "speedup", "verify_forward_ms",
              "bound", "speedup_over_bound", "round_ms", "verify_ms", "loop_overhead_ms",
              "loop_overhead_over_verify", "stages_ms", "matches_plain"}
    for row in rows:
        assert fields <= set(row) and row["skipped_reason"] is None
        assert row["matches_plain"] is True
        assert row["round_ms"] == pytest.approx(row["verify_ms"] + row["loop_overhead_ms"])
        assert set(row["stages_ms"]) == {*ROUND_STAGES, "other"}

    syncs = sdpa["host_syncs"]
    assert syncs["budget"] == 64 and syncs["per_round_max"] <= 2 and syncs["rounds"] > 0
    assert sdpa["synced_profile"]["tree_budget"] == 64 and sdpa["synced_profile"]["rounds"] > 0
    assert report["goals"]["host_syncs_per_round"]["met"] is True
    assert set(report["goals"]) == {"host_syncs_per_round", "loop_overhead_over_verify", "speedup_over_bound"}


def test_a_run_out_of_time_reports_what_it_skipped(tmp_path):
    assert cli_main(bench_argv(tmp_path, attention="sdpa", time_limit="1e-9")) == 0
    report = json.loads((tmp_path / "synthetic.json").read_text())
    assert [variant["skipped_reason"] for variant in report["variants"]] == ["time limit (0 s) reached"]
    assert report["goals"]["host_syncs_per_round"]["met"] is None


def test_infeasible_tau_is_skipped_with_its_reason(tmp_path):
    argv = bench_argv(tmp_path, budgets="4", taus="2 5", attention="sdpa", max_new_tokens="12", verify_nodes="4")
    assert cli_main(argv) == 0
    rows = json.loads((tmp_path / "synthetic.json").read_text())["variants"][0]["forced"]
    assert rows[0]["skipped_reason"] is None
    assert rows[1]["skipped_reason"] == "a 4-node tree accepts at most 3 tokens"


def test_bench_help_names_the_synthetic_mode_and_the_mode_has_its_own_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["bench", "--help"])
    assert exit_info.value.code == 0 and "--synthetic" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["bench", "--synthetic", "--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and "--shapes" in out and "oracle drafter" in out


def test_the_gpu_check_script_runs_at_tiny_shapes_on_a_cpu(tmp_path):
    """The one command a GPU session runs, here with tiny shapes on the CPU: it must run the bench and leave the
    reports (the GPU itself is only exercised where one is lent)."""
    script = Path(__file__).resolve().parents[2] / "examples" / "gpu_check.sh"
    options = ["--shapes", "tiny", "--device", "cpu", "--threads", "1", "--attention", "sdpa", "--budgets", "16",
               "--taus", "2", "--verify-nodes", "1", "--max-new-tokens", "12", "--repeats", "1"]
    environment = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run(["bash", str(script), str(tmp_path), *options], capture_output=True, text=True,
                            env=environment, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Forced τ" in result.stdout
    report = json.loads((tmp_path / "synthetic.json").read_text())
    assert report["variants"][0]["forced"][0]["matches_plain"] is True
    assert "torch" in (tmp_path / "gpu_check.log").read_text()


def test_event_profiler_on_cuda_records_events_and_reads_them_once(monkeypatch):
    """The CUDA branch, with stand-in events (this CPU build has no CUDA): nothing is read inside the loop, every
    stage is read back by `summary()`."""
    class FakeEvent:
        clock = 0.0
        synchronized = 0

        def __init__(self, enable_timing):
            assert enable_timing

        def record(self):
            FakeEvent.clock += 1.0
            self.time = FakeEvent.clock

        def synchronize(self):
            FakeEvent.synchronized += 1

        def elapsed_time(self, end):
            return 1000.0 * (end.time - self.time)  # milliseconds, as CUDA events give them

    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    cuda = torch.device("cuda")
    profiler = EventRoundProfiler()
    with profiler.generation(cuda):
        for _ in range(2):
            for name in ROUND_STAGES:
                with profiler.stage(name, cuda):
                    pass
    assert FakeEvent.synchronized == 0 and profiler.seconds == {}
    summary = profiler.summary()
    assert FakeEvent.synchronized == 1
    assert all(summary[name] == 2.0 for name in ROUND_STAGES)  # two rounds of one second each
    # The generation's bracket: its start record, two per stage in between, its end record.
    assert summary["total"] == 2 * 2 * len(ROUND_STAGES) + 1


def test_cuda_sync_counter_counts_cuda_sync_warnings_and_restores_the_mode(monkeypatch):
    import warnings

    from jetspec_hf.bench.synthetic.host_syncs import CudaSyncCounter

    modes = ["default"]
    monkeypatch.setattr(torch.cuda, "get_sync_debug_mode", lambda: modes[-1])
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", modes.append)
    with CudaSyncCounter() as syncs:
        assert modes[-1] == "warn"
        warnings.warn("called a synchronizing CUDA operation")
        warnings.warn("called a synchronizing CUDA operation")
        warnings.warn("something else")
    assert syncs.count == 2 and modes[-1] == "default"


def test_goals_take_the_worst_row_of_each_variant():
    from jetspec_hf.bench.synthetic.report import goals

    def row(budget, overhead, ratio):
        return {"budget": budget, "loop_overhead_over_verify": overhead, "speedup_over_bound": ratio,
                "skipped_reason": None}

    report = {"variants": [
        {"name": "a", "skipped_reason": None, "host_syncs": {"per_round_max": 2},
         "forced": [row(64, 0.05, 0.9), row(64, 0.12, 0.95), row(16, 0.5, 0.8)]},
        {"name": "b", "skipped_reason": None, "host_syncs": {"per_round_max": 1}, "forced": [row(64, 0.02, 0.99)]},
        {"name": "c", "skipped_reason": "flash-attn is not installed"},
    ]}
    result = goals(report)
    assert result["host_syncs_per_round"] == {**result["host_syncs_per_round"], "measured_max": 2, "met": True}
    assert result["loop_overhead_over_verify"]["measured_worst"] == {"a": 0.12, "b": 0.02}
    assert result["loop_overhead_over_verify"]["met"] is False
    assert (result["speedup_over_bound"]["rows_met"], result["speedup_over_bound"]["rows"]) == (3, 4)
    assert result["speedup_over_bound"]["met"] is False


def test_a_failing_variant_is_reported_and_the_others_still_run(tmp_path, monkeypatch):
    import jetspec_hf.bench.synthetic.run as synthetic

    real_time_forwards, calls = synthetic.time_forwards, []

    def fails_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return real_time_forwards(*args, **kwargs)

    monkeypatch.setattr(synthetic, "time_forwards", fails_once)
    argv = bench_argv(tmp_path, attention="sdpa eager", budgets="16", taus="2", verify_nodes="1", max_new_tokens="12")
    assert cli_main(argv) == 1
    report = json.loads((tmp_path / "synthetic.json").read_text())
    failed, ran = report["variants"]
    assert failed["failed"] == "RuntimeError: boom" and "**failed**: RuntimeError: boom" in (
        tmp_path / "synthetic.md").read_text()
    assert ran["failed"] is None and ran["forced"][0]["matches_plain"] is True
