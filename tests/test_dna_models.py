"""DNA models (Caduceus-style): BiMamba = forward block + flipped block, gradients through both directions,
reverse-complement equivariance of hidden states / masked-LM logits and invariance of the classifier,
post-hoc conjoining, save/load round trips, and what a non-causal model refuses to do."""

from __future__ import annotations

import zlib

import pytest
import torch

from mambaseq import (BiMamba, Mamba, MambaConfig, MambaForMaskedLM, MambaForSequenceClassification,
                      MambaLMHeadModel, load_pretrained)
from mambaseq.data.dna import VOCAB, complement, reverse_complement
from mambaseq.modules import rc
from tolerances import CLOSE

V = len(VOCAB)
VARIANTS = {"causal": {}, "bi": {"bidirectional": True}, "rc": {"rc_equivariant": True},
            "bi-rc": {"bidirectional": True, "rc_equivariant": True}}
EQUIVARIANT = ["rc", "bi-rc"]


def seed_of(request) -> int:
    """A seed derived from the test id (stable across runs and machines)."""
    return zlib.crc32(request.node.name.encode())


def dna(seed: int, b: int = 3, L: int = 41) -> torch.Tensor:
    """Random A/C/G/T/N ids with a few specials, (b, L)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 5, (b, L), generator=g)
    ids[:, 0] = VOCAB.index("[BOS]")
    return ids


def build(cls, variant: str, seed: int, **kw):
    torch.manual_seed(seed)
    cfg = MambaConfig.from_name("debug", vocab_size=V, **VARIANTS[variant], **kw)
    model = cls(cfg).eval()
    if hasattr(model, "head"):  # classifier heads start at zero (constant logits): give them weights to test with
        torch.nn.init.normal_(model.head.weight)
    return model


@pytest.mark.parametrize("cplx", [False, True], ids=["real", "cplx"])
def test_bimamba_is_forward_block_plus_flipped_block(request, cplx):
    torch.manual_seed(seed_of(request))
    bi = BiMamba(16, d_state=4, complex=cplx)
    fwd, rev = Mamba(16, d_state=4, complex=cplx), Mamba(16, d_state=4, complex=cplx)
    fwd.load_state_dict(bi.mamba_fwd.state_dict())
    rev.load_state_dict(bi.mamba_rev.state_dict())
    x = torch.randn(2, 23, 16)
    torch.testing.assert_close(bi(x), fwd(x) + rev(x.flip(1)).flip(1), **CLOSE["exact"])
    assert bi.mamba_rev.in_proj.weight is bi.mamba_fwd.in_proj.weight  # Caduceus' weight tying
    assert bi.mamba_rev.out_proj.weight is bi.mamba_fwd.out_proj.weight
    assert bi.mamba_rev.conv1d.weight is not bi.mamba_fwd.conv1d.weight
    # not causal: the first output now depends on the last input (through the reversed direction only)
    x2 = x.clone()
    x2[:, -1] += 1
    assert not torch.allclose(bi(x2)[:, 0], bi(x)[:, 0])
    torch.testing.assert_close(fwd(x2)[:, 0], fwd(x)[:, 0])


def test_bimamba_gradients_flow_through_both_directions(request):
    torch.manual_seed(seed_of(request))
    bi = BiMamba(16, d_state=4)
    fwd, rev = Mamba(16, d_state=4), Mamba(16, d_state=4)  # untied copies: their gradients must add up
    fwd.load_state_dict(bi.mamba_fwd.state_dict())
    rev.load_state_dict(bi.mamba_rev.state_dict())
    x = torch.randn(2, 19, 16, requires_grad=True)
    g = torch.randn(2, 19, 16)
    (bi(x) * g).sum().backward()
    x_ref = x.detach().clone().requires_grad_()
    ((fwd(x_ref) + rev(x_ref.flip(1)).flip(1)) * g).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad)
    for name in ("in_proj.weight", "out_proj.weight"):  # shared: the sum of both directions' gradients
        want = fwd.get_parameter(name).grad + rev.get_parameter(name).grad
        torch.testing.assert_close(bi.mamba_fwd.get_parameter(name).grad, want)
    for name in ("conv1d.weight", "x_proj.weight", "dt_proj.weight", "dt_proj.bias", "A_log", "D"):
        for mine, ref in ((bi.mamba_fwd, fwd), (bi.mamba_rev, rev)):
            got = mine.get_parameter(name).grad
            assert got.abs().sum() > 0, name
            torch.testing.assert_close(got, ref.get_parameter(name).grad)


@pytest.mark.parametrize("variant", EQUIVARIANT)
def test_rc_hidden_states_and_mlm_logits_are_equivariant(request, variant):
    mlm = build(MambaForMaskedLM, variant, seed_of(request))
    x = dna(seed_of(request))
    with torch.no_grad():
        h, h_rc = mlm.backbone(x), mlm.backbone(reverse_complement(x))
        logits, logits_rc = mlm(x), mlm(reverse_complement(x))
    assert h.shape == (3, 41, 2 * 16)
    assert (h_rc - rc.rc_hidden(h)).abs().max() <= 1e-5
    perm = complement(torch.arange(V))
    assert (logits_rc - logits[..., perm].flip(1)).abs().max() <= 1e-5
    assert logits.shape == (3, 41, V) and not torch.allclose(logits, logits_rc)


@pytest.mark.parametrize("pooling", ["mean", "last"])
@pytest.mark.parametrize("variant", EQUIVARIANT)
def test_rc_classifier_is_invariant(request, variant, pooling):
    clf = build(MambaForSequenceClassification, variant, seed_of(request), num_labels=4, pooling=pooling)
    x = dna(seed_of(request), L=57)
    with torch.no_grad():
        a, b = clf(x), clf(reverse_complement(x))
    assert (a - b).abs().max() <= 1e-5 and a.abs().max() > 1e-3


@pytest.mark.parametrize("variant", ["causal", "bi"])
def test_plain_models_are_not_invariant_and_conjoining_makes_them(request, variant, tmp_path):
    clf = build(MambaForSequenceClassification, variant, seed_of(request), num_labels=3, pooling="mean")
    x = dna(seed_of(request))
    with torch.no_grad():
        a, b = clf(x), clf(reverse_complement(x))
        assert (a - b).abs().max() > 1e-4
        clf.save_pretrained(tmp_path)  # post-hoc conjoining: the same weights with rc_equivariant=True
        conj = load_pretrained(tmp_path, rc_equivariant=True).eval()
        torch.testing.assert_close(conj(x), (a + b) / 2, **CLOSE["fp32_rc_average"])
        assert (conj(x) - conj(reverse_complement(x))).abs().max() <= 1e-5


def test_rc_embedding_maps_complements_consistently(request):
    table = {"A": "T", "C": "G", "G": "C", "T": "A", "N": "N", **{s: s for s in VOCAB[5:]}}
    assert [VOCAB[i] for i in complement(torch.arange(V)).tolist()] == [table[t] for t in VOCAB]
    emb = build(MambaForMaskedLM, "rc", seed_of(request)).backbone.embedding
    x = dna(seed_of(request))
    # the backbone's first layer sees Caduceus' RC-equivariant embedding [E(x), flip_c(E(comp x))] ...
    first = rc.merge_strands(emb(rc.both_strands(x)))
    assert torch.equal(first, torch.cat([emb(x), emb(complement(x)).flip(-1)], -1))
    # ... which maps the reverse complement of a sequence to the RC of its hidden states
    assert torch.equal(rc.merge_strands(emb(rc.both_strands(reverse_complement(x)))), rc.rc_hidden(first))


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("arch", [MambaForMaskedLM, MambaForSequenceClassification], ids=["mlm", "clf"])
def test_save_load_round_trip(request, tmp_path, variant, arch):
    kw = {"num_labels": 3, "pooling": "mean"} if arch is MambaForSequenceClassification else {}
    model = build(arch, variant, seed_of(request), **kw)
    model.save_pretrained(tmp_path)
    loaded = load_pretrained(tmp_path)
    assert type(loaded) is arch and loaded.cfg == model.cfg
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2), k1
    if variant.startswith("bi"):  # ties survive: one tensor for both directions' projections
        mixer = loaded.backbone.layers[0].mixer
        assert mixer.mamba_rev.in_proj.weight is mixer.mamba_fwd.in_proj.weight
    x = dna(seed_of(request))
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), model(x))


def test_from_name_fields_and_parameter_sharing():
    cfg = MambaConfig.from_name("tiny", rc_equivariant=True, bidirectional=True, vocab_size=V)
    assert cfg.rc_equivariant and cfg.bidirectional
    n = {v: sum(p.numel() for p in MambaForMaskedLM(MambaConfig.from_name("debug", vocab_size=V, **kw)).parameters())
         for v, kw in VARIANTS.items()}
    assert n["rc"] == n["causal"] and n["bi-rc"] == n["bi"] > n["causal"]  # RC shares every parameter


def test_non_causal_models_refuse_causal_uses():
    for variant in ("bi", "rc"):
        with pytest.raises(ValueError, match="MambaForMaskedLM"):
            MambaLMHeadModel(MambaConfig.from_name("debug", vocab_size=V, **VARIANTS[variant]))
    with pytest.raises(ValueError, match="DNA vocabulary"):
        MambaConfig.from_name("debug", vocab_size=3, rc_equivariant=True)
    for variant in ("bi", "rc"):
        with pytest.raises(ValueError, match="cache|decode"):
            build(MambaForMaskedLM, variant, 0).backbone.allocate_inference_cache(1)
    with pytest.raises(ValueError, match="no recurrent cache"):
        BiMamba(8)(torch.randn(1, 4, 8), cache=Mamba(8).allocate_cache(1))
