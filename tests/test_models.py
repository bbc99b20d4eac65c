import pytest
import torch

from genfast import models


def _images(n, low=-1.0, size=28, channels=1):
    g = torch.Generator().manual_seed(0)
    return low + (1 - low) * torch.rand(n, channels, size, size, generator=g)


def test_autoencoder_shapes_and_ranges():
    ae = models.Autoencoder(d=30)
    y = _images(5)
    out = ae(y)
    assert out.shape == y.shape and out.abs().max() <= 1
    assert ae.encoder[0].weight.shape == (30, 784)
    assert models.Autoencoder(d=1000).encoder[0].weight.shape == (1000, 784)  # over-complete
    assert ae.energy(y).shape == (5,)


def test_denoising_corruption_is_the_practicum_s():
    dae = models.DenoisingAutoencoder()
    y = _images(4)
    bad, keep = dae.corrupt(y)
    assert torch.equal(bad[keep], 2 * y[keep]) and (bad[~keep] == 0).all()
    assert dae.encoder[0].weight.shape == (500, 784)


def test_vae_shapes_ranges_and_eval_mode():
    vae = models.VAE()
    x = _images(6, low=0.0)
    recon, mu, logvar = vae(x)
    assert recon.shape == x.shape and mu.shape == logvar.shape == (6, 20)
    assert 0 <= recon.min() and recon.max() <= 1
    vae.eval()
    mu, _ = vae.encode(x)
    assert torch.equal(vae(x)[0], vae.decoder(mu).view_as(x))  # z = mu at test time
    samples = vae.generate(vae.noise(16))
    assert samples.shape == (16, 1, 28, 28) and 0 <= samples.min() and samples.max() <= 1


def test_dcgan_is_the_pytorch_examples_architecture():
    gan = models.DCGAN()
    z = gan.noise(2)
    fake = gan.generator(z)
    assert z.shape == (2, 100) and fake.shape == (2, 1, 64, 64)
    assert torch.equal(gan.generator(z[:, :, None, None]), fake)  # pytorch/examples' noise shape too
    assert fake.abs().max() <= 1 and gan.discriminator(fake).shape == (2,)
    convs = [m for m in gan.generator if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [c.out_channels for c in convs] == [512, 256, 128, 64, 1]
    assert abs(convs[1].weight.std().item() - 0.02) < 0.002
    bns = [m for m in gan.discriminator if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(b.bias.abs().max() == 0 for b in bns)
    assert models.DCGAN(image_size=32, nc=3).generator(gan.noise(1)).shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match="power of two"):
        models.DCGAN(image_size=48)


def test_ebgan_losses():
    gan = models.EnergyGAN(margin=0.5, pull_away_weight=0.1).eval()
    real = _images(4)
    fake = gan.generate(gan.noise(4))
    assert fake.shape == (4, 1, 28, 28) and gan.cost(real).shape == (4,)
    # C(y) is the mean, not the sum, of the squared reconstruction error over the pixels.
    y = real.flatten(1)
    torch.testing.assert_close(gan.energy(real), (gan.cost.decoder(gan.cost.encoder(y)) - y).pow(2).mean(dim=1))
    energy, code = gan.cost(real, with_code=True)
    torch.testing.assert_close(energy, gan.energy(real))
    torch.testing.assert_close(code, gan.cost.encoder(y))
    energy_real = torch.tensor([0.1, 0.3])
    energy_fake = torch.tensor([0.2, 0.8], requires_grad=True)
    loss = gan.cost_loss(energy_real, energy_fake)  # 0.2 + mean([0.5 - 0.2]+, [0.5 - 0.8]+) = 0.2 + 0.15
    torch.testing.assert_close(loss, torch.tensor(0.35))
    (grad,) = torch.autograd.grad(loss, energy_fake)
    assert grad.tolist() == [-0.5, 0.0]  # no gradient once C(ŷ) >= m
    # 0.5 + 0.1 * 0.4: C(G(z)) averaged over the batch, plus λ_PT · f_PT.
    torch.testing.assert_close(gan.generator_loss(energy_fake, torch.tensor(0.4)), torch.tensor(0.54))


def test_ebgan_hinge_active_fraction():
    gan = models.EnergyGAN(margin=0.5)
    # Active strictly below m: at C(ŷ) = m the hinge has no gradient.
    assert gan.hinge_active(torch.tensor([0.2, 0.8, 0.5, 0.49])).item() == 0.5
    assert gan.hinge_active(torch.tensor([0.6, 0.7])).item() == 0.0


def test_ebgan_step_trains_the_generator_on_the_pulling_away_term():
    from genfast.models.ebgan import EnergyGANTrainer

    x = _images(16)
    trained = {}
    for weight in (0.0, 100.0):
        torch.manual_seed(0)  # the same weights and noise for both
        gan = models.EnergyGAN(nz=8, hidden=32, code=8, pull_away_weight=weight)
        trainer = EnergyGANTrainer(gan, 1e-3, (0.5, 0.999))
        metrics = [trainer.train_step(x) for _ in range(3)]
        trained[weight] = gan, metrics
    (plain, plain_metrics), (pulled, pulled_metrics) = trained[0.0], trained[100.0]
    # The first cost step sees the same fakes: only the generator's steps differ.
    assert plain_metrics[0]["loss_cost"] == pulled_metrics[0]["loss_cost"]
    assert not torch.equal(plain.generator[0].weight, pulled.generator[0].weight)
    assert pulled_metrics[0]["loss_generator"] > 100 * pulled_metrics[0]["pull_away"]


def _pull_away_by_loops(codes):
    n = len(codes)
    total = 0.0
    for i in range(n):
        for j in range(n):
            if i != j:
                cosine = codes[i] @ codes[j] / (codes[i].norm() * codes[j].norm())
                total += cosine.item() ** 2
    return total / (n * (n - 1))


def test_pull_away_hand_values():
    from genfast.models.ebgan import pull_away

    # cos(S_1, S_2) = 1/sqrt(2): f_PT = (1/2 + 1/2) / (2 · 1). Dividing by N² would give 0.25, and
    # keeping the diagonal (i = j) 1.5.
    torch.testing.assert_close(pull_away(torch.tensor([[1.0, 0.0], [1.0, 1.0]])), torch.tensor(0.5))
    # Identical directions at any length: 1; orthogonal codes: 0; one sample: 0.
    torch.testing.assert_close(pull_away(torch.tensor([[1.0, 2.0], [3.0, 6.0], [-0.5, -1.0]])), torch.tensor(1.0))
    assert pull_away(torch.eye(4)).item() == 0.0
    assert pull_away(torch.ones(1, 3)).item() == 0.0
    codes = torch.tensor([[1.0, 0.0], [1.0, 1.0]], requires_grad=True)
    (grad,) = torch.autograd.grad(pull_away(codes), codes)
    assert grad.abs().sum() > 0  # the generator learns through it


@pytest.mark.parametrize("n, d", [(2, 1), (3, 2), (5, 3), (8, 16), (64, 64)])
def test_pull_away_equals_the_definition(n, d):
    from genfast.models.ebgan import pull_away

    codes = torch.randn(n, d, generator=torch.Generator().manual_seed(n * 100 + d), dtype=torch.float64)
    codes = codes * torch.logspace(-2, 2, n, dtype=torch.float64)[:, None]  # lengths must not matter
    torch.testing.assert_close(pull_away(codes), torch.tensor(_pull_away_by_loops(codes), dtype=torch.float64))


@pytest.mark.parametrize("make", [
    lambda b: models.VAE(backend=b),
    lambda b: models.DenoisingAutoencoder(d=50, backend=b),
    lambda b: models.DCGAN(ngf=8, ndf=8, image_size=16, backend=b),
], ids=["vae", "dae", "dcgan"])
def test_fused_and_reference_backends_agree(make):
    """The same weights and inputs through each backend's ops: the VAE's loss, the DAE's
    corruption (the reference given the fused kernel's keep-mask), DCGAN's BCE on logits."""
    from genfast import reference as reference_ops

    torch.manual_seed(0)
    fused = make("fused")
    reference = make("reference")
    reference.load_state_dict(fused.state_dict())
    y = _images(4)
    masks = {}

    def loss_and_grads(model):
        torch.manual_seed(1)
        if isinstance(model, models.DCGAN):
            logits = model.discriminator(model.generator(model.noise(4)))
            loss = model.bce(logits, 1.0)
        elif isinstance(model, models.VAE):
            model.eval()  # z = mu: no noise, the two backends see the same z
            loss = model.loss(_images(4, low=0.0))
        elif model.backend == "fused":
            corrupted, masks["keep"] = model.corrupt(y)
            assert 0 < masks["keep"].sum() < y.numel()
            loss = model.loss(y, model(corrupted))
        else:
            corrupted, _ = reference_ops.dropout_corrupt(y, model.p, keep_mask=masks["keep"])
            loss = model.loss(y, model(corrupted))
        grads = torch.autograd.grad(loss, list(model.parameters()))
        return loss, grads

    loss_f, grads_f = loss_and_grads(fused)
    loss_r, grads_r = loss_and_grads(reference)
    torch.testing.assert_close(loss_f, loss_r, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads_f, grads_r):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_unknown_backend():
    with pytest.raises(ValueError, match="backend must be one of"):
        models.VAE(backend="triton")


def test_losses_under_bf16_autocast():
    """--amp bf16 runs the networks in bfloat16; the fused losses still get matching float32 inputs."""
    vae, gan = models.VAE(), models.DCGAN(ngf=8, ndf=8, image_size=16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = vae.loss(_images(3, low=0.0))
        d_loss = gan.bce(gan.discriminator(gan.generator(gan.noise(2))), 1.0)
    assert loss.dtype == d_loss.dtype == torch.float32
    assert torch.isfinite(loss) and torch.isfinite(d_loss)


def test_vae_loss_on_logits_equals_the_loss_on_probabilities():
    """Training uses the decoder's logits (no Sigmoid pass); it is the practicum's BCE on the
    Sigmoid's probabilities, up to rounding, for the fused and the reference backends."""
    torch.manual_seed(0)
    x = _images(5, low=0.0)
    for backend in ("fused", "reference"):
        vae = models.VAE(backend=backend).eval()
        on_probabilities = vae.loss(x, vae(x))
        on_logits = vae.loss(x, vae(x, logits=True), from_logits=True)
        torch.testing.assert_close(on_logits, on_probabilities, rtol=1e-5, atol=1e-3)
        torch.testing.assert_close(vae.loss(x), on_logits)
        assert torch.equal(torch.sigmoid(vae(x, logits=True)[0]), vae(x)[0])
