"""Joint image/text dictionaries and their cross-modal metrics (issue 4; SAE-V, VL-SAE, VISTA).

Two joint models besides the aligned-separate pair (`align.py`):

- `SharedSAE` ("shared", SAE-V style): one TopK SAE trained on image-patch and caption-token rows
  together; a latent is cross-modal when it fires on both.
- `VLSAE` ("vlsae", VL-SAE style): inputs are L2-normalised, the encoder scores each latent by the
  cosine between the input and the latent's encoder direction (a distance-based encoder), keeps the
  TopK, and decodes through modality-specific decoders (one for image rows, one for text rows) that
  share the latent code.

Both are a page of torch each, train with Adam on FVU, and save as safetensors + JSON (atomic).
Metric functions take plain arrays: codes pooled per scene, latent activation mass, directions.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from steerlang.atomic import write_text
from steerlang.dictionary.align import caption_recall, cosine_matrix, retrieval_recall, strict_ceiling

IMAGE, TEXT = 0, 1


# ------------------------------------------------------------------------------------------ models
@dataclass
class JointConfig:
    arch: str  # "shared" | "vlsae"
    d_in: int
    d_sae: int
    k: int
    seed: int = 0


class SharedSAE(nn.Module):
    """One TopK SAE over both modalities (modality argument ignored)."""

    def __init__(self, cfg: JointConfig) -> None:
        super().__init__()
        self.cfg = cfg
        g = torch.Generator().manual_seed(cfg.seed)
        w = torch.randn(cfg.d_sae, cfg.d_in, generator=g)
        w = w / w.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(w.clone())
        self.W_enc = nn.Parameter(w.T.clone())
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in))

    def encode(self, x: Tensor, modality: Tensor | None = None) -> Tensor:
        pre = (x - self.b_dec) @ self.W_enc + self.b_enc
        v, i = pre.topk(self.cfg.k, dim=-1)
        return torch.zeros_like(pre).scatter_(-1, i, v.relu())

    def decode(self, z: Tensor, modality: Tensor | None = None) -> Tensor:
        return z @ self.W_dec + self.b_dec

    def decoder(self, modality: int) -> Tensor:
        return self.W_dec.detach()


class VLSAE(nn.Module):
    """Cosine encoder + TopK + one decoder per modality (VL-SAE style)."""

    def __init__(self, cfg: JointConfig) -> None:
        super().__init__()
        self.cfg = cfg
        g = torch.Generator().manual_seed(cfg.seed)
        self.E = nn.Parameter(torch.randn(cfg.d_sae, cfg.d_in, generator=g))  # encoder directions
        w = torch.randn(2, cfg.d_sae, cfg.d_in, generator=g)
        self.W_dec = nn.Parameter(w / w.norm(dim=-1, keepdim=True))  # [modality, d_sae, d_in]
        self.b_dec = nn.Parameter(torch.zeros(2, cfg.d_in))
        self.scale = nn.Parameter(torch.ones(2))  # per-modality norm of the reconstruction

    def encode(self, x: Tensor, modality: Tensor | None = None) -> Tensor:
        xn = nn.functional.normalize(x, dim=-1)
        sim = xn @ nn.functional.normalize(self.E, dim=-1).T  # cosine to each latent direction
        v, i = sim.topk(self.cfg.k, dim=-1)
        return torch.zeros_like(sim).scatter_(-1, i, v.relu())

    def decode(self, z: Tensor, modality: Tensor) -> Tensor:
        m = modality.long()
        out = torch.zeros(z.shape[0], self.cfg.d_in)
        for j in (IMAGE, TEXT):
            sel = m == j
            out = out.index_put((sel,), z[sel] @ self.W_dec[j])
        return out + self.b_dec[m]

    def target(self, x: Tensor) -> Tensor:
        return nn.functional.normalize(x, dim=-1)

    def decoder(self, modality: int) -> Tensor:
        return self.W_dec[modality].detach()


def vlsae_as_saes(model: VLSAE, *, layer: int | None = None, model_name: str = "") -> dict[str, Any]:
    """The VL-SAE as two plain TopK SAEs (image, text) sharing its encoder, for the runtime.

    TopK of cos(x, e_j) picks the same latents as TopK of x . e_j / |e_j| (|x| is common to a row),
    and z'_j = |x| cos(x, e_j) decodes in the model's units through the modality's unit decoder
    rows, since the VL-SAE reconstructs x / |x|. The decoder bias (|x| b_dec) has no SAELens form and
    is left out: steering keeps the SAE error (h + D(z') - D(z)), where it cancels.
    """
    from steerlang.dictionary.sae import SAEConfig, make_sae

    cfg = model.cfg
    enc = nn.functional.normalize(model.E.detach(), dim=-1)
    out = {}
    for modality, j in (("image", IMAGE), ("text", TEXT)):
        sae = make_sae(SAEConfig(architecture="topk", d_in=cfg.d_in, d_sae=cfg.d_sae, k=cfg.k, apply_b_dec_to_input=False,
                                 model_name=model_name, layer=layer, modality=modality,
                                 metadata={"exported_from": "vlsae", "seed": cfg.seed}))
        with torch.no_grad():
            sae.W_enc.copy_(enc.T)
            sae.b_enc.zero_()
            sae.W_dec.copy_(model.W_dec[j].detach())
            sae.b_dec.zero_()
        out[modality] = sae
    return out


def make_joint(cfg: JointConfig) -> nn.Module:
    return {"shared": SharedSAE, "vlsae": VLSAE}[cfg.arch](cfg)


def train_joint(x: Tensor, modality: Tensor, cfg: JointConfig, *, steps: int = 600, batch: int = 1024,
                lr: float = 2e-3, progress: bool = False) -> tuple[nn.Module, list[float]]:
    """Adam on FVU over balanced batches (half image rows, half text rows), seeded."""
    torch.manual_seed(cfg.seed)
    model = make_joint(cfg)
    with torch.no_grad():
        if isinstance(model, SharedSAE):
            model.b_dec.copy_(x.mean(0))
        else:
            for j in (IMAGE, TEXT):
                if (modality == j).any():
                    model.b_dec[j].copy_(nn.functional.normalize(x[modality == j], dim=-1).mean(0))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(cfg.seed)
    pools = [torch.nonzero(modality == j).flatten() for j in (IMAGE, TEXT)]
    pools = [p for p in pools if len(p)]
    hist: list[float] = []
    it = range(steps)
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc=f"train {cfg.arch}", leave=False)
    for _ in it:
        idx = torch.cat([p[torch.randint(len(p), (batch // len(pools),), generator=g)] for p in pools])
        xb, mb = x[idx], modality[idx]
        tgt = model.target(xb) if isinstance(model, VLSAE) else xb
        rec = model.decode(model.encode(xb, mb), mb)
        loss = ((rec - tgt) ** 2).sum(-1).mean() / ((tgt - tgt.mean(0)) ** 2).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():  # unit-norm decoder rows
            model.W_dec.div_(model.W_dec.norm(dim=-1, keepdim=True).clamp(min=1e-8))
        hist.append(float(loss.detach()))
    return model, hist


def save_joint(model: nn.Module, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tmp = path / f".weights.safetensors.tmp-{os.getpid()}"
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(tmp))
    os.replace(tmp, path / "weights.safetensors")
    write_text(path / "cfg.json", json.dumps(asdict(model.cfg), indent=1))
    return path


def load_joint(path: str | os.PathLike) -> nn.Module:
    path = Path(path)
    cfg = JointConfig(**json.loads((path / "cfg.json").read_text()))
    model = make_joint(cfg)
    model.load_state_dict(load_file(str(path / "weights.safetensors")))
    return model


# ----------------------------------------------------------------------------------------- metrics
def recall_at_k(q: np.ndarray, keys: np.ndarray, captions: list[str] | None = None,
                ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, Any]:
    """R@k of query i against keys by cosine.

    strict: the own key i must rank in the top k, ties with other keys counted against.
    caption: a key counts as relevant when its caption equals the query's caption (`caption_recall`);
    strict_ceiling: the strict R@1 a matcher that cannot tell equal captions apart reaches.
    """
    out: dict[str, Any] = {"strict": retrieval_recall(q, keys, ks)}
    if captions is not None:
        out["caption"] = caption_recall(q, keys, captions, ks)
        out["strict_ceiling"] = strict_ceiling(captions)
    return out


def intra_inter_similarity(z_img: np.ndarray, z_txt: np.ndarray, emb_img: np.ndarray, emb_txt: np.ndarray, *,
                           top: int = 10, center: bool = True) -> dict[str, float]:
    """VL-SAE concept quality (paper: CLIP embeddings). z_*: [n_samples, n_concepts] pooled activations of the
    same concepts (columns) on each sample's image and text; emb_*: [n_samples, e] embeddings of
    each sample's image and text (ours: the model's mean hidden state over the sample's image
    patches and caption tokens). Per concept c with firing samples on both sides: I_c / T_c = its
    `top` most activating images / texts; intra = mean_c cos(mean emb(I_c), mean emb(T_c)), inter =
    mean over c != c' of cos(mean emb(I_c), mean emb(T_c')). Higher intra, lower inter is better.
    `center`: subtract each modality's mean embedding first (LM hidden states of image and text
    positions sit in different regions; CLIP's, which the paper used, are aligned)."""
    if center:
        emb_img, emb_txt = emb_img - emb_img.mean(0), emb_txt - emb_txt.mean(0)
    cols = [c for c in range(z_img.shape[1]) if (z_img[:, c] > 0).any() and (z_txt[:, c] > 0).any()]
    if not cols:
        return {"intra": float("nan"), "inter": float("nan"), "concepts": 0}
    ei = np.stack([emb_img[np.argsort(-z_img[:, c], kind="stable")[:top]].mean(0) for c in cols])
    et = np.stack([emb_txt[np.argsort(-z_txt[:, c], kind="stable")[:top]].mean(0) for c in cols])
    sim = cosine_matrix(ei, et)
    n = len(cols)
    inter = float((sim.sum() - np.trace(sim)) / (n * (n - 1))) if n > 1 else float("nan")
    return {"intra": float(np.trace(sim) / n), "inter": inter, "concepts": n}


def modality_mass(mass_img: np.ndarray, mass_txt: np.ndarray) -> np.ndarray:
    """Per latent: fraction of its activation mass on image rows (mean activation per row of each
    modality, so the two modalities weigh equally regardless of row counts). NaN for dead latents."""
    tot = mass_img + mass_txt
    return np.where(tot > 0, mass_img / np.where(tot > 0, tot, 1), np.nan)


def cross_modal_weight(z_img: Tensor, z_txt: Tensor, h_img: Tensor, h_txt: Tensor, *, top: int = 30,
                       each: int = 5) -> np.ndarray:
    """SAE-V cross-modal weight per latent (`cosimilarity`): among a latent's `top` highest-activating
    rows (image and text rows together, firing rows only), if at least `each` are text and `each`
    image, w = mean cosine between the hidden states (the SAE inputs h) of its top-`each` text rows
    and its top-`each` image rows (each^2 pairs); otherwise 0 (a single-modality latent).
    z_*: [N_*, d] codes, h_*: [N_*, d_in]; returns [d]."""
    z = torch.cat([z_img, z_txt]).float()
    h = torch.nn.functional.normalize(torch.cat([h_img, h_txt]).float(), dim=1)
    is_text = torch.cat([torch.zeros(len(z_img), dtype=torch.bool), torch.ones(len(z_txt), dtype=torch.bool)])
    val, idx = torch.topk(z, min(top, len(z)), dim=0)  # [top, d], rows in descending activation
    out = np.zeros(z.shape[1])
    for f in range(z.shape[1]):
        rows = idx[:, f][val[:, f] > 0]
        txt, img = rows[is_text[rows]][:each], rows[~is_text[rows]][:each]
        if len(txt) == each and len(img) == each:
            out[f] = float((h[txt] @ h[img].T).mean())
    return out


def ratio_histogram(ratio: np.ndarray, bins: int = 10) -> list[int]:
    r = ratio[~np.isnan(ratio)]
    return np.histogram(r, bins=bins, range=(0.0, 1.0))[0].tolist()


def direction_angles(dec_img: np.ndarray, dec_txt: np.ndarray) -> np.ndarray:
    """Angle in degrees between each joint concept's image direction and text direction (rows paired)."""
    c = np.sum(dec_img * dec_txt, 1) / np.maximum(
        np.linalg.norm(dec_img, axis=1) * np.linalg.norm(dec_txt, axis=1), 1e-12)
    return np.degrees(np.arccos(np.clip(c, -1, 1)))


def matching_rate(z_img: np.ndarray, names: list[str | None], captions: list[str], top: int = 3,
                  exclude: np.ndarray | None = None) -> float:
    """Per image: its top-`top` latents by pooled activation (minus `exclude`d ones); a match when
    any of their names is a word of the image's caption (VISTA's matching rate)."""
    z = z_img.copy()
    if exclude is not None:
        z[:, exclude] = -np.inf
    hits = 0
    for zi, cap in zip(z, captions, strict=True):
        words = set(cap.split())
        best = np.argsort(-zi)[:top]
        hits += any(names[j] is not None and names[j] in words and zi[j] > 0 for j in best)
    return hits / max(len(captions), 1)


def pool_max(z: Tensor, group: Tensor, n_groups: int) -> np.ndarray:
    """Max of every latent over the rows of each group (scene): [n_groups, d_sae]."""
    out = torch.zeros(n_groups, z.shape[1])
    out.scatter_reduce_(0, group.long()[:, None].expand_as(z), z.clamp(min=0).to(out.dtype), reduce="amax")
    return out.numpy()


def pool_mean(z: Tensor, group: Tensor, n_groups: int) -> np.ndarray:
    out = torch.zeros(n_groups, z.shape[1])
    out.index_add_(0, group.long(), z)
    cnt = torch.bincount(group.long(), minlength=n_groups).clamp(min=1)
    return (out / cnt[:, None]).numpy()


def evaluate_joint(model: nn.Module, x_img: Tensor, img_scene: Tensor, x_txt: Tensor, txt_scene: Tensor,
                   captions: list[str], pool: str = "mean") -> dict:
    """All metrics of a joint model on held-out rows (shared latent space: no mapping needed)."""
    n = len(captions)
    with torch.no_grad():
        zi = model.encode(x_img, torch.full((len(x_img),), IMAGE))
        zt = model.encode(x_txt, torch.full((len(x_txt),), TEXT))
    pf = pool_mean if pool == "mean" else pool_max
    pi, pt = pf(zi, img_scene, n), pf(zt, txt_scene, n)
    mi, mt = zi.mean(0).numpy(), zt.mean(0).numpy()
    ratio = modality_mass(mi, mt)
    cmw = cross_modal_weight(zi, zt, x_img, x_txt)
    both = (mi > 0) & (mt > 0)
    ang = direction_angles(model.decoder(IMAGE).numpy()[both], model.decoder(TEXT).numpy()[both])
    return {
        "i2t": recall_at_k(pi, pt, captions), "t2i": recall_at_k(pt, pi, captions),
        "similarity": intra_inter_similarity(pi, pt, pool_mean(x_img, img_scene, n), pool_mean(x_txt, txt_scene, n)),
        "cross_modal_latents": int((cmw != 0).sum()),  # SAE-V: >= 5 text and >= 5 image rows in its top 30
        "cross_modal_weight_mean": float(cmw[cmw != 0].mean()) if (cmw != 0).any() else 0.0,
        "ratio_histogram": ratio_histogram(ratio),
        "joint_latents": int(both.sum()),
        "angle_median_deg": float(np.median(ang)) if len(ang) else float("nan"),
    }


# ------------------------------------------------------------------------------- comparison driver
def aligned_separate_metrics(sae_img, sae_txt, train, held, pool: str = "max") -> dict:
    """Aligned-separate (align.py): Hungarian on training-scene correlation, held-out retrieval
    through the matching (image codes mapped into the text latent space)."""
    from steerlang.dictionary.align import align, map_image_to_text

    def pooled(split):
        with torch.no_grad():
            zi, zt = sae_img.encode(split.x_img), sae_txt.encode(split.x_txt)
        pf = pool_mean if pool == "mean" else pool_max
        return pf(zi, split.img_scene, split.n_scenes), pf(zt, split.txt_scene, split.n_scenes), zi, zt

    ti, tt, _, _ = pooled(train)
    al = align(ti, tt)
    hi, ht, zi, zt = pooled(held)
    mi = map_image_to_text(hi, al, ht.shape[1])
    ang = direction_angles(sae_img.W_dec.detach().numpy()[al.image], sae_txt.W_dec.detach().numpy()[al.text])
    # A matched pair acts as one latent: the image latent on image rows, the text latent on text rows.
    cmw = cross_modal_weight(zi[:, al.image], zt[:, al.text], held.x_img, held.x_txt)
    return {"i2t": recall_at_k(mi, ht, held.captions), "t2i": recall_at_k(ht, mi, held.captions),
            "similarity": intra_inter_similarity(mi[:, al.text], ht[:, al.text], pool_mean(held.x_img, held.img_scene, held.n_scenes),
                                                 pool_mean(held.x_txt, held.txt_scene, held.n_scenes)),
            "joint_latents": int(len(al.image)),
            "cross_modal_latents": int((cmw != 0).sum()),
            "cross_modal_weight_mean": float(cmw[cmw != 0].mean()) if (cmw != 0).any() else 0.0,
            "angle_median_deg": float(np.median(ang)) if len(ang) else float("nan")}


def compare_layer(layer: int, dict_dir, train, held, cache_dir, *, steps: int = 400, seed: int = 0,
                  pool: str = "max", progress: bool = True) -> dict[str, dict]:
    """aligned-separate vs shared vs vlsae at one layer, on the same held-out split."""
    from steerlang.dictionary.io import load_dictionary
    from steerlang.errors import InputError

    dict_dir = Path(dict_dir)
    if not (dict_dir / "saes.json").is_file():
        raise InputError(f"--dict: {dict_dir} has no saes.json; pass a concept set folder such as dictionaries/toyworld")
    index = json.loads((dict_dir / "saes.json").read_text())
    paths = {(int(e["layer"]), e["modality"]): dict_dir / e["path"] for e in index["saes"]}
    if (layer, "image") not in paths or (layer, "text") not in paths:
        have = sorted({lay for lay, _m in paths})
        raise InputError(f"--layer: {dict_dir} has no image and text SAEs at layer {layer}; it has layers {have}")
    out = {"aligned-separate": aligned_separate_metrics(load_dictionary(paths[(layer, "image")]),
                                                     load_dictionary(paths[(layer, "text")]), train, held, pool)}
    x = torch.cat([train.x_img, train.x_txt])
    m = torch.cat([torch.zeros(len(train.x_img)), torch.ones(len(train.x_txt))]).long()
    for arch in ("shared", "vlsae"):
        path = Path(cache_dir) / f"{arch}-L{layer}-s{seed}-n{steps}"
        if (path / "cfg.json").exists():
            model = load_joint(path)
        else:
            cfg = JointConfig(arch, x.shape[1], 1280, 16, seed)
            model, _ = train_joint(x, m, cfg, steps=steps, progress=progress)
            save_joint(model, path)
        out[arch] = evaluate_joint(model, held.x_img, held.img_scene, held.x_txt, held.txt_scene, held.captions, pool)
    return out
