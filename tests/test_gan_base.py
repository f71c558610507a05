"""gan-mini: the StyleGAN2 networks, safetensors round trip, and a 3-second pretraining run."""

from __future__ import annotations

import inspect
import json

import pytest
import torch

from generators.gan.folder import load_discriminator, load_generator, save_discriminator, save_generator
from generators.gan.layers import HookedLayer, ModulatedConv2d, modulatable_layers
from generators.gan.pretrain import pretrain_gan
from generators.gan.stylegan2 import Discriminator, GANConfig, Generator
from generators.gan.widening import widen_discriminator, widen_generator
from generators.run import Run

TINY = GANConfig(resolution=16, z_dim=16, w_dim=16, mapping_layers=2, channels=(16, 16, 8))


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # The test machine's cores are shared: OpenMP threads fighting other processes are far slower than one.
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def tiny_g(seed=0) -> Generator:
    torch.manual_seed(seed)
    G = Generator(TINY).eval()
    with torch.no_grad():  # non-zero noise strengths and biases, so noise and bias paths matter
        for name, p in G.named_parameters():
            if name.endswith("noise_strength") or name.endswith(".bias"):
                p.normal_(0, 0.1)
    return G


def test_shapes_range_and_layers():
    G = tiny_g()
    z = torch.randn(5, TINY.z_dim)
    with torch.no_grad():
        img = G(z)
        logits = Discriminator(TINY)(img)
    assert img.shape == (5, 3, 16, 16) and img.dtype == torch.float32
    assert img.min() >= -1 and img.max() <= 1
    assert logits.shape == (5,) and torch.isfinite(logits).all()
    assert G.num_ws == 6
    # the LeFT hook: every conv/FC is reachable and holds an nn.Parameter weight
    layers = modulatable_layers(G)
    kinds = {type(m).__name__ for _, m in layers}
    assert kinds == {"EqualLinear", "ModulatedConv2d"}
    assert all(isinstance(m.weight, torch.nn.Parameter) for _, m in layers)
    assert len([1 for _, m in layers if isinstance(m, ModulatedConv2d)]) == 5 + 3  # 5 convs + 3 toRGB


def test_const_noise_is_deterministic_and_random_is_not():
    G = tiny_g()
    z = torch.randn(3, TINY.z_dim)
    with torch.no_grad():
        a, b = G(z, noise_mode="const"), G(z, noise_mode="const")
        c = G(z, noise_mode="random")
        # the grouped-conv path and the activation-scaling path agree
        d = G(z, noise_mode="const", fused_modconv=False)
        t = G(z, truncation_psi=0.5)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert torch.allclose(a, d, atol=1e-5)
    assert not torch.allclose(a, t)


def test_demodulation_normalizes_each_output_channel():
    G = tiny_g()
    conv = G.synthesis.blocks[1].conv0
    styles = conv.styles(torch.randn(4, TINY.w_dim) * 3)
    wm = conv.modulated_weight(styles)  # [N, out, in, k, k]
    norms = wm.square().sum(dim=(2, 3, 4)).sqrt()
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-4)
    # toRGB is modulated but not demodulated
    rgb = G.synthesis.blocks[1].torgb
    assert not rgb.demodulate


def test_weight_modulator_hook_changes_output():
    G = tiny_g()
    z = torch.randn(2, TINY.z_dim)
    with torch.no_grad():
        base = G(z)
        layer = G.synthesis.blocks[2].conv1
        assert isinstance(layer, HookedLayer)
        layer.weight_modulator = lambda w: w * 0.5 + 0.1
        changed = G(z)
        layer.weight_modulator = None
        again = G(z)
    assert not torch.allclose(base, changed)
    assert torch.equal(base, again)


def test_save_load_round_trip(tmp_path):
    G, D = tiny_g(), Discriminator(TINY)
    save_generator(G, TINY, tmp_path)
    save_discriminator(D, None, tmp_path)
    assert (tmp_path / "generator.safetensors").is_file() and (tmp_path / "config.json").is_file()
    G2, D2 = load_generator(tmp_path, "cpu"), load_discriminator(tmp_path, "cpu")
    assert G2.config == TINY
    z = torch.randn(4, TINY.z_dim)
    with torch.no_grad():
        assert torch.equal(G(z, truncation_psi=0.7), G2(z, truncation_psi=0.7))
        img = G(z)
        assert torch.equal(D.eval()(img), D2(img))
    with pytest.raises(FileNotFoundError):
        load_generator(tmp_path / "missing", "cpu")


def test_pretrain_writes_files_and_resumes(tmp_path):
    out = tmp_path / "run"
    seen = []
    first = pretrain_gan(out, TINY, seconds=3, device="cpu", batch_size=4, pool_images=64,
                         run=Run(progress=lambda done, total, **info: seen.append((done, total, info))))
    for name in ("generator.safetensors", "config.json", "discriminator.safetensors", "training_options.json",
                 "checkpoint.safetensors", "checkpoint.json", "samples.png"):
        assert (out / name).is_file(), name
    opts = json.loads((out / "training_options.json").read_text())
    assert opts["steps"] == first["steps"] >= 1
    assert opts["images_seen"] == 4 * opts["steps"] and opts["options"]["batch_size"] == 4
    assert opts["device_name"] and "command_line" in opts and opts["config"]["resolution"] == 16
    assert seen and all(torch.isfinite(torch.tensor(info["loss_D"])) for _, _, info in seen)
    # the progress unit is whole seconds of the budget: total fixed, done reaching it when the budget is spent
    done = [d for d, _, _ in seen]
    assert {total for _, total, _ in seen} == {3} and done == sorted(done) and done[-1] == 3
    assert first["stopped_by"] == "time"
    assert json.loads((out / "checkpoint.json").read_text())["step"] == first["steps"]
    G = load_generator(out, "cpu")
    with torch.no_grad():
        assert torch.isfinite(G(torch.randn(2, TINY.z_dim))).all()

    with pytest.raises(FileExistsError):
        pretrain_gan(out, TINY, seconds=1, device="cpu")
    second = pretrain_gan(out, None, seconds=1, device="cpu", batch_size=4, pool_images=64, resume=True)
    assert second["steps"] == first["steps"] + second["steps_this_run"] > first["steps"]
    assert json.loads((out / "checkpoint.json").read_text())["runs"] == 2


def test_feature_discriminator_trains_its_heads_only_and_resumes(tmp_path):
    from safetensors.torch import load_file

    from generators import evaluators as ev

    torch.manual_seed(0)
    config = ev.EvaluatorConfig(labels=ev.EvaluatorConfig.default().labels, widths=(8, 8, 12, 12, 16),
                                spatial_channels=4, feature_dim=16)
    ev.save_evaluator(ev.EvaluatorNet(config), tmp_path / "backbone")
    out = tmp_path / "run"
    first = pretrain_gan(out, TINY, seconds=2, device="cpu", batch_size=4, pool_images=32,
                         feature_d=tmp_path / "backbone", feature_d_weight=0.5)
    assert first["options"]["feature_d"] == str(tmp_path / "backbone") and first["options"]["feature_d_weight"] == 0.5
    assert {"loss_P", "loss_G_P"} <= set(first["final_losses"])
    saved = load_file(str(out / "checkpoint.safetensors"))
    heads = {k: v for k, v in saved.items() if k.startswith("P.")}
    assert heads and any(k.startswith("opt_P.") for k in saved)
    assert not any(k.startswith("P.backbone") for k in saved)  # the frozen network stays in its own folder
    # the heads learnt; a resumed run starts from them and their Adam moments (its step count goes on)
    from generators.gan.feature_d import load_feature_discriminator

    fresh = load_feature_discriminator(tmp_path / "backbone").heads.state_dict()
    assert any(not torch.equal(fresh[k[2:]], v) for k, v in heads.items() if "original" in k)
    assert saved["opt_P.0.step"].item() == first["steps"]
    second = pretrain_gan(out, None, seconds=1, device="cpu", batch_size=4, pool_images=32, resume=True,
                          feature_d=tmp_path / "backbone")
    assert second["steps"] > first["steps"] and "loss_P" in second["final_losses"]
    assert load_file(str(out / "checkpoint.safetensors"))["opt_P.0.step"].item() == second["steps"]
    with pytest.raises(FileNotFoundError, match="feature-d"):
        pretrain_gan(tmp_path / "n", TINY, seconds=1, device="cpu", feature_d=tmp_path / "missing")
    with pytest.raises(ValueError, match="feature_d_weight"):
        pretrain_gan(tmp_path / "w", TINY, seconds=1, device="cpu", feature_d=tmp_path / "backbone",
                     feature_d_weight=0)


def test_path_length_regularization_runs_and_its_target_resumes(tmp_path):
    out = tmp_path / "run"
    first = pretrain_gan(out, TINY, seconds=2, device="cpu", batch_size=4, pool_images=32, pl_weight=2.0,
                         pl_interval=2)
    assert first["steps"] >= 2 and first["options"]["pl_weight"] == 2.0 and first["options"]["pl_interval"] == 2
    assert "pl" in first["final_losses"] and first["final_losses"]["pl"] >= 0
    saved = json.loads((out / "checkpoint.json").read_text())["pl_mean"]
    assert saved > 0  # the running target a moved off 0 towards the generator's path lengths
    # a resumed run goes on from the saved target: after one more regularization step it moved by 1 %
    second = pretrain_gan(out, None, seconds=0.01, device="cpu", batch_size=4, pool_images=32, resume=True,
                          pl_weight=2.0, pl_interval=1)
    assert second["steps_this_run"] == 1
    resumed = json.loads((out / "checkpoint.json").read_text())["pl_mean"]
    assert 0.98 * saved < resumed != saved
    # from the final files alone (as committed, without the checkpoint) the target carries over too
    assert json.loads((out / "training_options.json").read_text())["pl_mean"] == resumed
    for name in ("checkpoint.json", "checkpoint.safetensors"):
        (out / name).unlink()
    pretrain_gan(out, None, seconds=0.01, device="cpu", batch_size=4, pool_images=32, resume=True,
                 pl_weight=2.0, pl_interval=1)
    assert 0.98 * resumed < json.loads((out / "training_options.json").read_text())["pl_mean"] != resumed
    off = pretrain_gan(tmp_path / "off", TINY, seconds=1, device="cpu", batch_size=4, pool_images=32)
    assert "pl" not in off["final_losses"] and off["options"]["pl_interval"] is None


def test_pretrain_user_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        pretrain_gan(tmp_path / "none", None, seconds=1, device="cpu", resume=True)
    with pytest.raises(ValueError):
        pretrain_gan(tmp_path / "x", TINY, seconds=1, device="cpu", precision="bf16")
    with pytest.raises(ValueError, match="ema_kimg"):
        pretrain_gan(tmp_path / "y", TINY, seconds=1, device="cpu", ema_kimg=0)
    with pytest.raises(ValueError, match="batch size"):  # 0 is refused, not taken for the default
        pretrain_gan(tmp_path / "b", TINY, seconds=1, device="cpu", batch_size=0)
    with pytest.raises(ValueError, match="style_mixing_prob"):
        pretrain_gan(tmp_path / "z", TINY, seconds=1, device="cpu", style_mixing_prob=1.5)
    with pytest.raises(ValueError, match="pl_weight"):
        pretrain_gan(tmp_path / "p", TINY, seconds=1, device="cpu", pl_weight=-1)
    with pytest.raises(ValueError):
        GANConfig(resolution=48)


def test_pretrain_cli_sets_widths_and_pool(tmp_path, capsys):
    from generators import evaluators as ev
    from studio.cli import main
    from studio.commands.pretrain_gan import DEFAULT_CHANNELS, DEFAULT_LR, DEFAULT_R1_GAMMA, DEFAULT_STYLE_MIXING

    assert DEFAULT_CHANNELS == ",".join(map(str, GANConfig().channels))  # the help's defaults are the real ones
    defaults = inspect.signature(pretrain_gan).parameters
    assert (DEFAULT_R1_GAMMA, DEFAULT_LR, DEFAULT_STYLE_MIXING) == (
        defaults["r1_gamma"].default, defaults["lr"].default, defaults["style_mixing_prob"].default)
    out = tmp_path / "gan"
    assert main(["pretrain", "gan", "--out", str(out), "--seconds", "1", "--batch", "4", "--device", "cpu",
                 "--channels", "8,8,8,8,4", "--pool-images", "48", "--r1-gamma", "0.05", "--lr", "0.001",
                 "--ema-kimg", "0.5", "--style-mixing", "0", "--feature-d", str(ev.DEFAULT_FOLDER),
                 "--feature-d-weight", "0.5", "--pl-weight", "2"]) == 0
    assert json.loads((out / "config.json").read_text())["config"]["channels"] == [8, 8, 8, 8, 4]
    options = json.loads((out / "training_options.json").read_text())["options"]
    assert (options["pool_images"], options["r1_gamma"], options["lr"], options["ema_kimg"],
            options["style_mixing_prob"], options["feature_d"], options["feature_d_weight"], options["pl_weight"]) == (
        48, 0.05, 0.001, 0.5, 0.0, str(ev.DEFAULT_FOLDER), 0.5, 2.0)
    assert main(["pretrain", "gan", "--out", str(tmp_path / "b"), "--channels", "8;8"]) == 2
    assert "comma-separated integers" in capsys.readouterr().err
    assert main(["pretrain", "gan", "--out", str(out), "--resume", "--channels", "8,8,8,8,4"]) == 2
    assert "keeps its own" in capsys.readouterr().err


def test_widening_keeps_what_the_generator_draws():
    old = tiny_g(3)
    wide_cfg = GANConfig(**{**TINY.to_dict(), "channels": (24, 20, 8)})
    torch.manual_seed(0)
    wide = widen_generator(old, wide_cfg).eval()
    assert sum(p.numel() for p in wide.parameters()) > sum(p.numel() for p in old.parameters())
    z = torch.randn(4, TINY.z_dim)
    with torch.no_grad():
        for noise_mode in ("const", "none"):
            torch.testing.assert_close(wide(z, noise_mode=noise_mode), old(z, noise_mode=noise_mode), atol=1e-5, rtol=0)
        assert wide.synthesis.blocks[1].conv0.weight[16:].abs().sum() > 0  # new rows keep their fresh init
    with pytest.raises(ValueError, match="only grows"):
        widen_generator(old, GANConfig(**{**TINY.to_dict(), "channels": (8, 16, 8)}))
    with pytest.raises(ValueError, match="keeps w_dim"):
        widen_generator(old, GANConfig(**{**TINY.to_dict(), "w_dim": 32, "channels": (24, 20, 8)}))


def test_widening_keeps_the_discriminators_logits():
    torch.manual_seed(3)
    old = Discriminator(TINY).eval()
    wide_cfg = GANConfig(**{**TINY.to_dict(), "d_channels": (16, 24, 12)})
    torch.manual_seed(0)
    wide = widen_discriminator(old, wide_cfg).eval()
    assert sum(p.numel() for p in wide.parameters()) > sum(p.numel() for p in old.parameters())
    img = torch.randn(8, 3, TINY.resolution, TINY.resolution)
    with torch.no_grad():
        torch.testing.assert_close(wide(img), old(img), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="4 px width"):  # the minibatch-std channel follows it
        widen_discriminator(old, GANConfig(**{**TINY.to_dict(), "d_channels": (24, 24, 12)}))
    with pytest.raises(ValueError, match="only grows"):
        widen_discriminator(old, GANConfig(**{**TINY.to_dict(), "d_channels": (16, 8, 8)}))


def test_pretrain_cli_init_from_widens_both_networks(tmp_path, capsys):
    from studio.cli import main

    old = tmp_path / "old"
    pretrain_gan(old, TINY, seconds=1, device="cpu", batch_size=4, pool_images=32)
    new = tmp_path / "new"
    assert main(["pretrain", "gan", "--out", str(new), "--init-from", str(old), "--seconds", "1", "--batch", "4",
                 "--device", "cpu", "--channels", "32,16,8", "--pool-images", "32"]) == 0
    cfg = json.loads((new / "config.json").read_text())["config"]
    assert cfg["channels"] == [32, 16, 8] and cfg["d_channels"] == [16, 16, 8]  # its discriminator's widths kept
    opts = json.loads((new / "training_options.json").read_text())
    assert opts["options"]["init_from"] == str(old) and opts["steps"] >= 1
    assert main(["pretrain", "gan", "--out", str(tmp_path / "d"), "--init-from", str(old), "--seconds", "1",
                 "--batch", "4", "--device", "cpu", "--d-channels", "16,32,16", "--pool-images", "32"]) == 0
    cfg = json.loads((tmp_path / "d" / "config.json").read_text())["config"]
    assert cfg["channels"] == [16, 16, 8] and cfg["d_channels"] == [16, 32, 16]
    assert main(["pretrain", "gan", "--out", str(tmp_path / "e"), "--resume", "--d-channels", "16,32,16"]) == 2
    assert "keeps its own" in capsys.readouterr().err
    with pytest.raises(ValueError, match="4 px width"):
        pretrain_gan(tmp_path / "f", GANConfig(**{**TINY.to_dict(), "channels": (32, 16, 8)}), seconds=1,
                     device="cpu", init_from=old)


def test_eval_gan_reports_fid_beside_its_references(tmp_path, capsys):
    from PIL import Image

    from studio.cli import main

    torch.manual_seed(0)
    save_generator(Generator(TINY).eval(), TINY, tmp_path / "untrained")  # what the untrained reference rebuilds
    save_generator(tiny_g(), TINY, tmp_path / "g")
    results = []
    for name in ("untrained", "g", "g"):
        out = tmp_path / f"{name}.json"
        assert main(["eval", "gan", "--base", str(tmp_path / name), "--n", "24", "--json", str(out),
                     "--samples", str(tmp_path / "grid.png"), "--device", "cpu"]) == 0
        results.append({k: v for k, v in json.loads(out.read_text()).items() if k != "seconds"})
    same, g, again = results
    assert same["mini_fid"] == same["mini_fid_untrained"]  # samples and the untrained set meet the same reals
    assert g == again and g["mini_fid"] != g["mini_fid_untrained"]  # deterministic, and it measures the base
    assert g["mini_fid_real_vs_real"] < g["mini_fid_untrained"]  # the references bracket a base
    assert 0 <= g["kind_recognised_fraction"] <= 1 and g["kinds_total"] == 11 and g["n"] == 24
    assert Image.open(tmp_path / "grid.png").size == (8 * 16, 8 * 16)
    assert "mini-FID" in capsys.readouterr().out
    assert main(["eval", "gan", "--base", str(tmp_path / "none"), "--json", str(tmp_path / "x.json")]) == 2
    assert "no GAN base at" in capsys.readouterr().err
    truncated = tmp_path / "truncated.json"
    assert main(["eval", "gan", "--base", str(tmp_path / "g"), "--n", "24", "--truncation", "0.5", "--json", str(truncated),
                 "--device", "cpu"]) == 0
    t = json.loads(truncated.read_text())
    assert t["truncation_psi"] == 0.5 and t["mini_fid"] != g["mini_fid"]  # the samples changed,
    assert t["mini_fid_untrained"] == g["mini_fid_untrained"]  # the references did not
    assert main(["eval", "gan", "--base", str(tmp_path / "g"), "--truncation", "1.5", "--json", str(truncated)]) == 2
    assert "--truncation" in capsys.readouterr().err

    from generators.evaluators import load_evaluator
    from generators.gan.evaluate import evaluate_gan

    evaluator, G = load_evaluator(), tiny_g()
    rng = torch.get_rng_state()
    evaluate_gan(G, evaluator, n=4)
    assert torch.equal(torch.get_rng_state(), rng)  # evaluation leaves the caller's random stream alone
